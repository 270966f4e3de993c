"""The fetch phase: every scriptUri/sourceUri (of customizers and validators) fetched and
verified before anything starts, and the customizers' fingerprints that the step cache's
keys are made of."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import urlsplit

from engine.errors import BuildFailed, UsageError
from engine.fetch import Fetched, fetch, redact_uri
from engine.pipeline.context import BuildContext


def fetch_inputs(ctx: BuildContext) -> None:
    """Fetch and verify every referenced file, then fingerprint the customizers."""
    inputs = [(name, c, item) for name, c in ctx.customizers + ctx.validators for item in c.inputs()]
    digests: dict[str, str] = {}
    for index, (name, customizer, item) in enumerate(inputs):
        if item.uri in ctx.fetched:
            continue
        started = time.monotonic()
        try:
            meter = ctx.events.meter(step="fetch", label=f"download {redact_uri(item.uri)}")
            got: Fetched = fetch(
                item.uri,
                ctx.loaded.base_dir,
                ctx.store.build_dir(ctx.build_id) / "inputs" / f"{index}",
                expected_sha256=item.sha256,
                progress=meter.add,
                retrying=lambda message: ctx.events.warning(message, step="fetch"),
                deadline=ctx.deadline.end,
                stall_timeout=ctx.options.download_timeout,
                uri_map=ctx.loaded.uri_map,
            )
        except UsageError as exc:  # FetchError, or a working copy outside its folder
            raise BuildFailed(str(exc.message), step=f"fetch ({name})", hint=exc.hint) from None
        ctx.fetched[item.uri] = got.path
        if got.differs:
            verified = f"sha256 {got.sha256}, not the template's (AIB would fail this step)"
        elif item.sha256:
            verified = "sha256 verified"
        else:
            verified = f"sha256 {got.sha256} (no checksum given)"
        what = got.working_copy or redact_uri(item.uri)
        ctx.events.info(
            f"fetched {what} for {name}: {got.size} bytes, {verified}",
            step="fetch",
            durationSeconds=round(time.monotonic() - started, 3),
        )
        limit = customizer.input_limit
        # A local file's size is validation's to report (engine.template.sections); a download's is known only now.
        downloaded = urlsplit(item.uri).scheme in ("http", "https") and not got.working_copy
        if limit is not None and got.size > limit and downloaded:
            megabytes = limit // (1024 * 1024)
            ctx.events.warning(
                f"{name}: {got.size} bytes is over AIB's {megabytes} MB {customizer.type_name} customizer limit"
            )
        digests[item.uri] = got.sha256
    # What each customizer does: its definition (the checksum aside: the bytes' own digest
    # stands for it) and the digest of each file it fetched. The step cache's keys chain them.
    ctx.fingerprints = [
        hashlib.sha256(
            (
                c.section.model_dump_json(by_alias=True, exclude={"sha256_checksum"})
                + "".join(digests.get(i.uri, "") for i in c.inputs())
            ).encode()
        ).hexdigest()
        for _, c in ctx.customizers
    ]
