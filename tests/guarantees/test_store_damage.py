"""Guarantee: a damaged store is named, never read in silence. A record truncated, empty,
not JSON, or JSON of the wrong shape is named with its path by every command that meets
it, the others go on, and `clean --repair` moves it aside without deleting anything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.store import Store
from tests.support import SUBSCRIPTION

IMAGE = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.Compute/images/"
DAMAGE = {
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda _text: "",
    "not-json": lambda _text: "\x00\x01garbage",
    "wrong-shape": lambda _text: json.dumps(["a", "list"]),
}


def stored(store_root: Path) -> Store:
    """A store with two images and two builds (one of each to damage)."""
    store = Store(store_root)
    for name in ("good", "bad"):
        store.put(IMAGE + name, {"type": "Microsoft.Compute/images", "name": name})
        store.put_build(
            f"{name}-build",
            {"buildId": f"{name}-build", "template": "t.json", "templateName": "t", "status": "succeeded"},
        )
        (store.build_dir(f"{name}-build") / "customization.log").write_text(f"log of {name}\n")
    return store


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_image_record_is_named_and_the_rest_listed(cli: Any, store: Path, damage: str) -> None:
    path = next(p for p in stored(store).root.rglob("resource.json") if "bad" in str(p))
    path.write_text(DAMAGE[damage](path.read_text()))
    listed = cli("list", "--type", "images")
    assert listed.code == 0, listed.output
    assert IMAGE + "good" in listed.stdout and IMAGE + "bad" not in listed.stdout
    assert f"left out {path}: it is damaged" in listed.stderr and "clean --repair" in listed.stderr
    shown = cli("show", IMAGE + "bad")
    assert shown.code == 3 and f"the store record {path} is damaged" in shown.output
    assert "internal error" not in shown.output + listed.output


@pytest.mark.parametrize("damage", [*DAMAGE, "not-a-build"])
def test_a_damaged_build_record_is_named_by_list_and_logs(cli: Any, store: Path, damage: str) -> None:
    path = stored(store).build_dir("bad-build") / "build.json"
    text = json.dumps({"unrelated": True}) if damage == "not-a-build" else DAMAGE[damage](path.read_text())
    path.write_text(text)
    listed = cli("list", "--type", "builds")
    assert listed.code == 0 and "good-build" in listed.stdout and "bad-build" not in listed.stdout
    assert f"left out {path}: it is damaged" in listed.stderr
    logs = cli("logs", "bad-build")
    assert logs.code == 3 and f"the store record {path} is damaged" in logs.output
    assert "internal error" not in logs.output
    assert cli("logs", "good-build").stdout == "log of good\n"


def test_clean_repair_moves_damaged_records_aside_and_deletes_nothing(cli: Any, store: Path) -> None:
    the_store = stored(store)
    image = next(p for p in the_store.root.rglob("resource.json") if "bad" in str(p))
    build = the_store.build_dir("bad-build") / "build.json"
    image.write_text('{"type": "Microsoft.Compute/ima')
    build.write_text("")
    repaired = cli("clean", "--repair")
    assert repaired.code == 0, repaired.output
    assert f"moved {image}" in repaired.stdout and f"moved {build}" in repaired.stdout
    assert not image.exists() and not build.exists()
    kept = sorted(p.name for p in (store / "quarantine").rglob("*.json"))
    assert kept == ["build.json", "resource.json"]
    assert (store / "quarantine").rglob("resource.json").__next__().read_text() == '{"type": "Microsoft.Compute/ima'
    listed = cli("list")
    assert listed.code == 0 and "damaged" not in listed.stderr and IMAGE + "good" in listed.stdout


def test_a_record_from_a_newer_aib_local_is_named_as_such_and_left_where_it_is(cli: Any, store: Path) -> None:
    the_store = stored(store)
    image = next(p for p in the_store.root.rglob("resource.json") if "bad" in str(p))
    build = the_store.build_dir("bad-build") / "build.json"
    for path in (image, build):
        record = json.loads(path.read_text())
        assert record["aibLocalFormat"] == 1  # every record names its format
        path.write_text(json.dumps({**record, "aibLocalFormat": 2, "meaningChanged": True}))
    newer = "written by a newer aib-local (record format 2; this one reads format 1 and older)"
    listed = cli("list")
    assert listed.code == 0 and IMAGE + "good" in listed.stdout and IMAGE + "bad" not in listed.stdout
    assert f"left out {image}: it was {newer}" in listed.stderr and "damaged" not in listed.stderr
    logs = cli("logs", "bad-build")
    assert logs.code == 3 and f"the store record {build} was {newer}" in logs.output
    assert "upgrade" in logs.output and "damaged" not in logs.output
    repaired = cli("clean", "--repair")
    assert repaired.code == 0 and f"left {build} where it is" in repaired.stdout
    assert image.exists() and build.exists() and not (store / "quarantine").exists()


def test_a_record_names_its_format_on_disk_and_not_to_the_reader(store: Path) -> None:
    the_store = stored(store)
    assert the_store.get(IMAGE + "good") == {"id": IMAGE + "good", "type": "Microsoft.Compute/images", "name": "good"}
    old = the_store.build_dir("good-build") / "build.json"  # written before records named a format
    old.write_text(json.dumps({"buildId": "good-build", "template": "t.json", "templateName": "t", "status": "failed"}))
    assert the_store.get_build("good-build") == json.loads(old.read_text())
    old.write_text(json.dumps({"buildId": "good-build", "aibLocalFormat": "two"}))
    listed = Store(store)
    assert list(listed.builds()) and listed.damaged == {old: 'its aibLocalFormat is "two", not a format number'}
