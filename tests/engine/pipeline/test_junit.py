"""JUnit reports (`--junit`), checked against the JUnit XML schema CI tools read."""

from __future__ import annotations

import http.server
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import xmlschema

from engine.events import read_events
from engine.junit import JunitReport
from engine.pipeline import BuildOptions, BuildRun
from engine.template.loading import load_templates
from tests.engine.pipeline.conftest import Builds
from tests.support import ROOT, base_url, http_server, managed_image_id, template

SCHEMA = xmlschema.XMLSchema(str(ROOT / "fixtures" / "schemas" / "junit.xsd"))


def run(builds: Builds, report: JunitReport, name: str, customize: list[dict[str, Any]]) -> None:
    path = builds.folder / f"{name}.json"
    distribute = [
        {"type": "ManagedImage", "imageId": managed_image_id(name), "location": "westeurope", "runOutputName": "o"}
    ]
    path.write_text(json.dumps(template(name, customize, distribute=distribute)))
    (loaded,) = load_templates(path)
    build = BuildRun(loaded, BuildOptions(target="fake"), builds.store, builds.events.append)
    build.run()
    report.add_build(name, read_events(builds.store.build_dir(build.build_id)))


def cases(path: Path) -> dict[str, ET.Element]:
    SCHEMA.validate(str(path))
    return {f"{c.get('classname')}/{c.get('name')}": c for c in ET.parse(path).iter("testcase")}


def test_a_build_is_a_suite_with_a_case_per_step(builds: Builds, tmp_path: Path) -> None:
    builds.rule("exit 3", 3, ["about to fail", "the reason"])
    report = JunitReport()
    run(builds, report, "good", [{"type": "Shell", "name": "setup", "inline": ["echo ok"]}])
    run(
        builds,
        report,
        "bad",
        [
            {"type": "Shell", "name": "first", "inline": ["echo first"]},
            {"type": "Shell", "name": "second", "inline": ["echo x; exit 3"]},
        ],
    )
    out = tmp_path / "junit.xml"
    report.write(out)
    found = cases(out)
    root = ET.parse(out).getroot()
    assert root.get("tests") == str(len(found)) and root.get("failures") == "1"
    good = [name for name in found if name.startswith("aib-local.good/")]
    assert good == [
        "aib-local.good/customize[0] setup",
        "aib-local.good/deprovision",
        "aib-local.good/distribute[0] o (ManagedImage)",
    ]
    assert found["aib-local.good/customize[0] setup"].find("failure") is None
    failed = found["aib-local.bad/customize[1] second"].find("failure")
    assert failed is not None and failed.get("type") == "exit code 3"
    assert "customize[1] second failed with exit code 3" in (failed.get("message") or "")
    assert "the reason" in (failed.text or "")
    assert "aib-local.bad/deprovision" not in found  # it never ran
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert suites["bad"].get("failures") == "1" and suites["good"].get("failures") == "0"
    assert float(suites["good"].get("time") or 0) > 0


def test_a_build_that_fails_outside_its_steps_has_a_failing_build_case(builds: Builds, tmp_path: Path) -> None:
    class Served(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "8")
            self.end_headers()
            self.wfile.write(b"echo ok\n")

        def log_message(self, *_args: Any) -> None:
            pass

    report = JunitReport()
    with http_server(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Served)) as server:
        wrong = {
            "type": "Shell",
            "name": "setup",
            "scriptUri": f"{base_url(server)}/setup.sh",
            "sha256Checksum": "0" * 64,
        }
        run(builds, report, "nostart", [wrong])  # a download's checksum fails the fetch, before any step
    out = tmp_path / "junit.xml"
    report.write(out)
    found = cases(out)
    assert list(found) == ["aib-local.nostart/build"]
    assert found["aib-local.nostart/build"].find("failure") is not None


def test_validate_writes_one_case_per_template_with_its_findings(cli: Any, tmp_path: Path) -> None:
    good = ROOT / "fixtures" / "templates" / "quickstart.json"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "Microsoft.VirtualMachineImages/imageTemplates", "properties": {}}))
    out = tmp_path / "validate.xml"
    result = cli("validate", str(good), str(bad), "--junit", str(out))
    assert result.code == 2
    found = cases(out)
    assert set(found) == {"aib-local.validate quickstart/quickstart", f"aib-local.validate {bad}/{bad}"}
    failure = found[f"aib-local.validate {bad}/{bad}"].find("failure")
    assert failure is not None and "properties.source: required field is missing" in (failure.text or "")
    assert found["aib-local.validate quickstart/quickstart"].find("failure") is None


def test_build_writes_junit_and_html_reports_for_each_template(builds: Builds, cli: Any, tmp_path: Path) -> None:
    builds.rule("exit 3", 3)
    paths = []
    for name, line in (("one", "echo ok"), ("two", "exit 3")):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(template(name, [{"type": "Shell", "name": "s", "inline": [line]}])))
        paths.append(str(path))
    out, page = tmp_path / "build.xml", tmp_path / "report.html"
    store = str(builds.store.root)
    result = cli("build", *paths, "--target", "fake", "--store", store, "--junit", str(out), "--report", str(page))
    assert result.code == 1, result.output
    found = cases(out)
    assert "aib-local.one/customize[0] s" in found and found["aib-local.one/customize[0] s"].find("failure") is None
    assert found["aib-local.two/customize[0] s"].find("failure") is not None
    pages = sorted(tmp_path.glob("report-*.html"))
    assert len(pages) == 2 and all("customize[0] s" in p.read_text() for p in pages)


def test_coloured_and_control_character_output_leaves_a_well_formed_report(builds: Builds, tmp_path: Path) -> None:
    """Failing steps print colour when CI needs the report most: escape sequences go, and
    characters XML cannot hold (NUL, other control characters) become U+FFFD."""
    hostile = ["\x1b[31merror:\x1b[0m red", "nul\x00here", "bell\x07 back\x08 form\x0c", "\x1b]0;title\x07tab\tkept"]
    builds.rule("exit 7", 7, hostile)
    report = JunitReport()
    run(builds, report, "colour", [{"type": "Shell", "name": "paint", "inline": ["exit 7"]}])
    path = tmp_path / "report.xml"
    report.write(path)
    found = cases(path)  # parses, and passes the schema
    (case,) = [c for key, c in found.items() if "paint" in key]
    failure = case.find("failure")
    assert failure is not None and failure.text is not None
    assert "error: red" in failure.text and "\x1b" not in failure.text
    assert "nul\ufffdhere" in failure.text and "bell\ufffd back\ufffd form\ufffd" in failure.text
    assert "tab\tkept" in failure.text and "title" not in failure.text
    out = case.find("system-out")
    assert out is not None and out.text is not None and "\x00" not in out.text and "error: red" in out.text
