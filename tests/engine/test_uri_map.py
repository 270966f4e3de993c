"""Working copies behind real URLs (--map-uri, AIB_LOCAL_MAP_URI, aib-local.json): the
template keeps its https URLs, the working copy is what validates and runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from engine.errors import UsageError
from engine.fetch import fetch
from engine.uri_map import UriMap
from tests.support import ROOT, template

URL = "https://raw.githubusercontent.com/me/images/main/"


def project(tmp_path: Path, script: bytes = b"echo working copy\n", checksum: str | None = None) -> Path:
    """A repository folder: scripts/app.sh, and template.json naming it by its URL."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.sh").write_bytes(script)
    step: dict[str, Any] = {"type": "Shell", "name": "app", "scriptUri": URL + "scripts/app.sh"}
    if checksum is not None:
        step["sha256Checksum"] = checksum
    path = tmp_path / "template.json"
    path.write_text(json.dumps(template("mapped", [step], distribute=[{"type": "VHD", "runOutputName": "v"}])))
    return path


def test_the_longest_prefix_wins_and_the_rest_of_the_path_is_kept(tmp_path: Path) -> None:
    (tmp_path / "a" / "x").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    mapping = UriMap.for_template(tmp_path / "t.json", (f"{URL}={tmp_path / 'a'}", f"{URL}x/={tmp_path / 'b'}"))
    found = mapping.find(URL + "x/deep/file%20name.sh?sv=1&sig=secret")
    assert found is not None and found.path == (tmp_path / "b" / "deep" / "file name.sh")
    found = mapping.find(URL + "y.sh")
    assert found is not None and found.path == tmp_path / "a" / "y.sh"
    assert mapping.find("https://elsewhere.example/y.sh") is None
    assert mapping.find("scripts/y.sh") is None


def test_the_command_line_wins_over_the_environment_and_the_project_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = project(tmp_path)
    for name in ("cli", "env"):
        (tmp_path / name).mkdir()
    (tmp_path / "aib-local.json").write_text(json.dumps({"mapUri": {URL: "scripts"}}))
    monkeypatch.setenv("AIB_LOCAL_MAP_URI", f"{URL}={tmp_path / 'env'}")
    assert UriMap.for_template(path, (f"{URL}={tmp_path / 'cli'}",)).find(URL + "a").path.parent.name == "cli"  # type: ignore[union-attr]
    assert UriMap.for_template(path).find(URL + "a").path.parent.name == "env"  # type: ignore[union-attr]
    monkeypatch.delenv("AIB_LOCAL_MAP_URI")
    found = UriMap.for_template(path).find(URL + "app.sh")
    assert found is not None and found.path == tmp_path / "scripts" / "app.sh"
    assert found.mapping.origin == str(tmp_path / "aib-local.json")


def test_the_project_file_is_looked_for_up_to_the_repository_root(tmp_path: Path) -> None:
    (tmp_path / "aib-local.json").write_text(json.dumps({"mapUri": {URL: "."}}))
    repository = tmp_path / "repo"
    (repository / ".git").mkdir(parents=True)
    (repository / "images").mkdir()
    assert not UriMap.for_template(repository / "images" / "t.json")  # above the repository: not its
    (repository / "aib-local.json").write_text(json.dumps({"mapUri": {URL: "images"}}))
    found = UriMap.for_template(repository / "images" / "t.json").find(URL + "a.sh")
    assert found is not None and found.path == repository / "images" / "a.sh"


@pytest.mark.parametrize("rest", ["../outside.sh", "scripts/../../outside.sh", "link/outside.sh", ""])
def test_nothing_outside_the_folder_is_read(tmp_path: Path, rest: str) -> None:
    inside = tmp_path / "inside"
    inside.mkdir()
    (tmp_path / "outside.sh").write_text("secret")
    (inside / "link").symlink_to(tmp_path)
    mapping = UriMap.for_template(tmp_path / "t.json", (f"{URL}={inside}",))
    with pytest.raises(UsageError, match="outside"):
        mapping.find(URL + rest)


@pytest.mark.parametrize(
    ("entry", "message"),
    [("nothing", "expected PREFIX=DIR"), ("ftp://x/=.", "not an http"), (f"{URL}=/no/such/folder", "not a folder")],
)
def test_a_bad_mapping_is_a_usage_error(entry: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=message):
        UriMap.for_template(tmp_path / "t.json", (entry,))


def test_a_mapped_url_validates_as_its_working_copy_without_an_aib_finding(cli: Any, tmp_path: Path) -> None:
    path = project(tmp_path)
    result = cli("validate", "--strict", str(path), "--map-uri", f"{URL}={tmp_path}")
    assert result.code == 0, result.output
    assert "AIB would reject" not in result.output and "path on this machine" not in result.output
    (tmp_path / "scripts" / "app.sh").unlink()
    result = cli("validate", str(path), "--map-uri", f"{URL}={tmp_path}")
    assert result.code == 2
    assert f"maps to {tmp_path / 'scripts' / 'app.sh'} (--map-uri), which is no file" in result.output
    result = cli("validate", str(path), "--map-uri", f"{URL}scripts/={tmp_path / 'scripts'}", "--map-uri", "x")
    assert result.code == 2 and "expected PREFIX=DIR" in result.output


def test_a_working_copy_that_differs_from_its_checksum_warns_and_strict_refuses(cli: Any, tmp_path: Path) -> None:
    stale = hashlib.sha256(b"the published version\n").hexdigest()
    path = project(tmp_path, checksum=stale)
    (tmp_path / "aib-local.json").write_text(json.dumps({"mapUri": {URL: "."}}))
    actual = hashlib.sha256(b"echo working copy\n").hexdigest()
    result = cli("validate", str(path))
    assert result.code == 0, result.output
    assert f"app.sh has changed: its sha256 is {actual}, the template says {stale}" in result.output
    assert "AIB would fail this step" in result.output and "checksums TEMPLATE --write" in result.output
    strict = cli("validate", "--strict", str(path))
    assert strict.code == 2 and "sha256Checksum" in strict.output


def test_fetch_reads_the_working_copy_and_names_it(tmp_path: Path) -> None:
    path = project(tmp_path, checksum="0" * 64)
    got = fetch(
        URL + "scripts/app.sh",
        tmp_path,
        tmp_path / "out" / "0",
        expected_sha256="0" * 64,
        uri_map=UriMap.for_template(path, (f"{URL}={tmp_path}",)),
    )
    assert got.path.read_bytes() == b"echo working copy\n"
    assert got.differs and got.working_copy.endswith(f"app.sh, the working copy of {URL}scripts/app.sh")


def test_the_quickstart_keeps_its_urls_and_has_no_aib_finding(cli: Any) -> None:
    quickstart = ROOT / "fixtures" / "templates" / "quickstart.json"
    assert "https://" in quickstart.read_text()
    result = cli("validate", "--strict", str(quickstart))
    assert result.code == 0, result.output
    assert "AIB would reject" not in result.output
