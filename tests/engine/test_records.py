"""The store's own records: one definition each, camelCase on disk, nothing lost on a round trip."""

from __future__ import annotations

from pathlib import Path

from engine.records import (
    BuildRecord,
    RunStatus,
    TemplateRecord,
    builds,
    mark_failed,
    read_build,
    read_template,
    write_build,
    write_template,
)
from engine.store import Store
from tests.support import template_id


def test_a_build_record_is_camel_case_on_disk_and_keeps_what_a_newer_version_wrote(tmp_path: Path) -> None:
    store = Store(tmp_path)
    raw = {
        "buildId": "b1",
        "status": "failed",
        "template": "/t.json",
        "templateName": "t",
        "failedIndex": 2,
        "checkpoints": {"0": "aib-local/checkpoints/b1:0"},
        "options": {"target": "ssh://me@host", "powershellStrict": True},
        "futureField": {"kept": "as it was"},
    }
    store.put_build("b1", raw)
    record = read_build(store, "b1")
    assert record is not None
    assert record.failed_index == 2 and record.options.powershell_strict and record.options.target == "ssh://me@host"
    write_build(store, record.model_copy(update={"kept": True}))
    again = store.get_build("b1")
    assert again is not None and again["futureField"] == {"kept": "as it was"} and again["kept"] is True
    assert "failed_index" not in again and again["failedIndex"] == 2


def test_unreadable_build_records_are_skipped_not_fatal(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.put_build("good", BuildRecord(build_id="good", status="running", template="/t", template_name="t").dump())
    store.put_build("bad", {"buildId": "bad"})  # no status, no template
    assert [b.build_id for b in builds(store)] == ["good"]


def test_a_dead_build_is_marked_failed_with_its_templates_last_run(tmp_path: Path) -> None:
    store = Store(tmp_path)
    write_build(store, BuildRecord(build_id="b1", status="running", template="/t", template_name="t"))
    record = TemplateRecord(name="t", properties={"source": {}})
    record.set_last_run(RunStatus(run_state="Running", run_sub_state="Customizing", start_time="then"))
    record.aib_local.last_build_id = "b1"
    write_template(store, template_id("t"), record)
    mark_failed(store, "b1", template_id("t"), "the process died")
    build = read_build(store, "b1")
    assert build is not None and build.status == "failed" and build.message == "the process died"
    template = read_template(store, template_id("t"))
    assert template is not None
    status = template.properties["lastRunStatus"]
    assert status["runState"] == "Failed" and "runSubState" not in status and status["endTime"]
    assert status["startTime"] == "then"


def test_a_build_that_ended_is_not_marked_again(tmp_path: Path) -> None:
    store = Store(tmp_path)
    write_build(store, BuildRecord(build_id="b1", status="succeeded", template="/t", template_name="t"))
    mark_failed(store, "b1", template_id("t"), "the process died")
    build = read_build(store, "b1")
    assert build is not None and build.status == "succeeded" and build.message is None
