"""`aib-local checksums`: every file of every customizer and validator, with the template's
sha256Checksum and the digest of what a build would fetch (the working copy of a mapped
URL, a local file, or the download), and with `--write` the template's values updated in
place: only the digest strings change, every other byte of the file (comments,
formatting, an ARM deployment around the template) stays as it was. A digest that comes
from an ARM expression is not written: which parameter or expression to change is said.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import customizers
from engine.fetch import fetch, redact_uri
from engine.pipeline.context import customizer_name, validations, validator_name
from engine.template.jsonc import BLANK, STRING
from engine.template.loading import LoadedTemplate
from engine.template.locations import locate

DIGEST = re.compile(r"[0-9A-Fa-f]{64}")


@dataclass
class Entry:
    step: str  # customize[0] name
    path: str  # the JSON path of its sha256Checksum in the file
    uri: str
    shown: str  # what was read: the URI, or "X, the working copy of URI"
    template: str  # the template's digest ("" when it gives none)
    actual: str

    @property
    def status(self) -> str:
        if not self.template:
            return "none given"
        return "ok" if self.template.lower() == self.actual else "differs"

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "path": self.path,
            "uri": redact_uri(self.uri),
            "read": self.shown,
            "template": self.template,
            "actual": self.actual,
            "status": self.status,
        }


def entries(loaded: LoadedTemplate) -> list[Entry]:
    """Every fetched file of the template's customizers and validators, with both digests."""
    props = loaded.properties
    steps = [(customizer_name(i, c), f"customize[{i}]", c) for i, c in enumerate(props.customize)] + [
        (validator_name(i, v), f"validate.inVMValidations[{i}]", v) for i, v in enumerate(validations(props))
    ]
    base = loaded.prefix + ("" if loaded.bare else "properties.")
    found: list[Entry] = []
    with tempfile.TemporaryDirectory(prefix="aib-local-checksums-") as work:
        for index, (name, where, section) in enumerate(steps):
            for item in customizers.create(section).inputs():
                got = fetch(item.uri, loaded.base_dir, Path(work) / str(index), uri_map=loaded.uri_map)
                shown = got.working_copy or redact_uri(item.uri)
                found.append(Entry(name, f"{base}{where}.sha256Checksum", item.uri, shown, item.sha256, got.sha256))
    return found


def write(path: Path, found: list[Entry]) -> tuple[list[str], list[str]]:
    """Update the digests that differ, in place; what was written, and what could not be
    (a digest given by an expression: which parameter or expression to change)."""
    with path.open(encoding="utf-8", newline="") as handle:  # CRLF and all: only the digests change
        text = handle.read()
    places = locate(text)
    edits: list[tuple[int, int, str]] = []
    written: list[str] = []
    refused: list[str] = []
    offsets = _line_offsets(text)
    for entry in found:
        if entry.status != "differs":
            continue
        at = places.get(entry.path)
        literal = _value_after_key(text, offsets[at[0] - 1] + at[1] - 1) if at else None
        if literal is None:
            refused.append(f"{entry.step}: its sha256Checksum is not written in {path} as a string ({entry.path})")
            continue
        value = literal[1]
        if DIGEST.fullmatch(value):
            edits.append((literal.start(1), literal.end(1), entry.actual))
            written.append(f"{entry.step}: {value.lower()} -> {entry.actual}")
        else:
            refused.append(f"{entry.step}: {_source_of(value)} gives its sha256Checksum; set it to {entry.actual}")
    for start, end, digest in sorted(edits, reverse=True):
        text = text[:start] + digest + text[end:]
    if edits:
        staging = path.with_name(f".{path.name}.checksums")
        with staging.open("w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        staging.replace(path)
    return written, refused


def _value_after_key(text: str, key: int) -> re.Match[str] | None:
    """The string literal that is the value of the member whose key starts at `key`
    (comments allowed around the colon, as the JSONC lexer takes them); None when it is not one."""
    after_key = STRING.match(text, key)
    if after_key is None:
        return None
    colon = BLANK.match(text, after_key.end()).end()  # type: ignore[union-attr]  # matches empty text too
    if not text.startswith(":", colon):
        return None
    value = BLANK.match(text, colon + 1).end()  # type: ignore[union-attr]
    literal = STRING.match(text, value)
    return literal if literal is not None and literal.group().endswith('"') and len(literal.group()) > 1 else None


def _line_offsets(text: str) -> list[int]:
    return [0] + [m.end() for m in re.finditer("\n", text)]


def _source_of(value: str) -> str:
    """Which parameter (or expression, or placeholder) a written value stands for."""
    named = re.fullmatch(r"\[\s*parameters\(\s*'([^']*)'\s*\)\s*\]", value)
    if named:
        return f"the parameter {named[1]!r}"
    if value.startswith("["):
        return f"the expression {value}"
    return f"the value {value!r} (a <placeholder> filled with --set?)"
