"""The local store: records by resource ID, atomic writes, no partial files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.errors import UsageError
from engine.store import Store, StoreError

IMAGE = "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/images/Img"


def test_round_trip_is_case_insensitive_like_azure(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put(IMAGE, {"type": "Microsoft.Compute/images", "name": "Img"})
    record = store.get(IMAGE.lower())
    assert record == {"id": IMAGE, "type": "Microsoft.Compute/images", "name": "Img"}
    assert (tmp_path / "resources/subscriptions/s/resourcegroups/rg/providers/microsoft.compute/images/img").is_dir()


def test_records_filter_by_type(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put(IMAGE, {"type": "Microsoft.Compute/images"})
    store.put(IMAGE.replace("images/Img", "galleries/g"), {"type": "Microsoft.Compute/galleries"})
    assert [r["id"] for r in store.records("Microsoft.Compute/images")] == [IMAGE]
    assert len(list(store.records())) == 2


@pytest.mark.parametrize("bad", ["images/x", "/subscriptions/S/../../etc", "/resourceGroups/x", ""])
def test_bad_resource_ids_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(UsageError, match="not a resource ID"):
        Store(tmp_path).get(bad)


@pytest.mark.parametrize(
    ("errno_", "hint"),
    [(28, "free space on the store's filesystem"), (13, "check the store folder's permissions")],
)
def test_a_failed_write_leaves_the_old_record_and_no_partial_file(
    errno_: int, hint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(tmp_path)
    store.put(IMAGE, {"version": 1})

    def broken_fsync(_fd: int) -> None:
        raise OSError(errno_, os.strerror(errno_))

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(StoreError, match=f"{os.strerror(errno_)}; the record is unchanged") as raised:
        store.put(IMAGE, {"version": 2})
    assert raised.value.exit_code == 3
    assert raised.value.hint is not None and raised.value.hint.startswith(hint)
    monkeypatch.undo()
    assert store.get(IMAGE) == {"id": IMAGE, "version": 1}
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".partial")]


def test_update_changes_top_level_keys(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put(IMAGE, {"a": 1, "b": 2})
    store.update(IMAGE, {"b": 3})
    assert store.get(IMAGE) == {"id": IMAGE, "a": 1, "b": 3}


def test_store_location_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIB_LOCAL_STORE", str(tmp_path / "env-store"))
    assert Store.open().root == tmp_path / "env-store"
    assert Store.open(tmp_path / "flag").root == tmp_path / "flag"
