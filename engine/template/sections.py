"""What every template section shares: the model base, field metadata, common field
types, and `Check`, the context a section's own rules see.

A section (a customizer, a distribution, a source, ...) declares its schema and its
rules in one class, in its own module: what one value alone decides (a pattern, a
digest, a blank string) as pydantic validators on its field type; rules across fields,
rules on the template's context (its API version, OS, local folder, command-line flags)
and warnings in `check`. `check` runs whatever else is wrong with the template, as AIB
reports every problem at once: a field that is itself invalid (and reported as such)
is None there. `engine.template.loading` runs both and keeps what is about the template as a
whole (field names by API version, the wording of pydantic's errors).
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from engine.errors import Finding, UsageError
from engine.uri_map import UriMap

NAME_PATTERN = r"^[A-Za-z0-9\-_.]{1,64}$"
SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
# Azure region names (as `az account list-locations` gives them), lower case, no spaces.
REGIONS = frozenset(json.loads(resources.files("engine").joinpath("data/regions.json").read_text()))


def since(version: str) -> dict[str, Any]:
    """Field metadata: the first API version that knows the field."""
    return {"since": version}


READ_ONLY: dict[str, Any] = {"read_only": True}


def normalize_region(name: str) -> str:
    return name.replace(" ", "").lower()


def _sha256(value: str) -> str:
    if value and not SHA256.match(value):
        raise ValueError("expected 64 hexadecimal digits (a SHA-256 digest)")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("empty")
    return value


def resource_id(provider_path: str, example: str) -> Any:
    """A string type that must be an Azure resource ID under `provider_path` (a regex of
    what follows /subscriptions/SUB/resourceGroups/RG), e.g. Microsoft.Compute/images/NAME."""
    pattern = re.compile(rf"^/subscriptions/[^/]+/resourceGroups/[^/]+{provider_path}$", re.I)

    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"expected /subscriptions/SUB/resourceGroups/RG{example}")
        return value

    return Annotated[str, AfterValidator(check)]


ResourceGroupId = resource_id("", "")
ManagedImageId = resource_id(r"/providers/Microsoft\.Compute/images/[^/]+", "/providers/Microsoft.Compute/images/NAME")
ImageVersionId = resource_id(
    r"/providers/Microsoft\.Compute/galleries/[^/]+/images/[^/]+/versions/[^/]+",
    "/providers/Microsoft.Compute/galleries/GALLERY/images/DEFINITION/versions/VERSION (or latest)",
)
IDENTITY_PATH = r"/providers/Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+"
IDENTITY_EXAMPLE = "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/NAME"
IdentityId = resource_id(IDENTITY_PATH, IDENTITY_EXAMPLE)
SubnetId = resource_id(
    r"/providers/Microsoft\.Network/virtualNetworks/[^/]+/subnets/[^/]+",
    "/providers/Microsoft.Network/virtualNetworks/VNET/subnets/SUBNET",
)

# An exit code: int32 as the AIB schema types it, or the same 32 bits unsigned (a Windows DWORD).
ExitCode = Annotated[int, Field(ge=-(2**31), le=2**32 - 1)]
Sha256 = Annotated[str, AfterValidator(_sha256)]
Uri = Annotated[str, AfterValidator(_not_blank)]


@dataclass
class Check:
    """What a section's `check` may know besides the section: the template around it."""

    version: str  # the template's apiVersion
    os_type: str  # Linux | Windows, as the source and customizers say
    findings: list[Finding]
    allow_any_destination: bool = False
    local_root: Path | None = None  # local scripts and files must lie under it (None: anywhere)
    template_dir: Path | None = None  # where relative paths start (None: no file to look at)
    source_known: bool = False  # the catalogue knows the PlatformImage source (so its OS is sure)
    uri_map: UriMap = field(default_factory=UriMap)  # working copies behind https URLs (--map-uri)

    def error(self, path: str, message: str, *, rule: str, aib_rejects: bool = True) -> None:
        self.findings.append(Finding(path, message, "error", aib_rejects, rule))

    def warning(self, path: str, message: str, *, rule: str, aib_rejects: bool = True) -> None:
        self.findings.append(Finding(path, message, "warning", aib_rejects, rule))

    def not_local(self, path: str, in_aib: str, locally: str) -> None:
        """A field that means something in Azure only: what AIB does, and what happens here
        instead (a note at validate and at the start of every build)."""
        self.findings.append(Finding(path, f"{in_aib}; {locally}", "note", False, "aib/not-local"))


class Section(BaseModel):
    """Base of every template section: camelCase names, strict types, extras kept.

    Unknown fields are kept (not rejected here) so that the validation pass can report
    them by API version: a warning where AIB ignores them, an error where it rejects them.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=False,
        extra="allow",
        strict=True,
        frozen=True,
        defer_build=True,  # one schema for the whole template, built on first use
    )

    def check(self, here: str, check: Check) -> None:
        """This section's rules across fields, on the template's context, and its warnings;
        `here` is its JSON path. A field that is itself invalid is None here."""


class CustomizerSection(Section):
    """A customizer (or an in-VM validator: AIB gives them the same fields and rules)."""

    name: str | None = None
    type: str  # each type narrows it to its Literal, the union's discriminator


class DistributeSection(Section):
    """An entry of properties.distribute."""

    run_output_name: str = Field(pattern=NAME_PATTERN)
    artifact_tags: dict[str, str] = Field(default_factory=dict)
    type: str  # each type narrows it to its Literal, the union's discriminator


def check_local_file(
    uri: str | None, here: str, check: Check, *, limit: int | None = None, sha256: str | None = None
) -> None:
    """A script or file the build reads from this machine (a path, file://, or an https URL
    mapped to a working copy): it must be there, inside its folder, small enough for AIB
    (`limit`), and (with `sha256`) match the template's checksum, or AIB fails the step."""
    if not uri:
        return
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme in ("http", "https"):
        try:
            mapped = check.uri_map.find(uri)
        except UsageError as exc:
            check.error(here, exc.message, aib_rejects=False, rule="aib/working-copy-outside-folder")
            return
        if mapped is None:
            return  # fetched at build time, with retries
        if not mapped.path.is_file():
            check.error(
                here,
                f"{uri!r} maps to {mapped.path} ({mapped.mapping.origin}), which is no file",
                aib_rejects=False,
                rule="aib/working-copy-missing",
            )
            return
        _check_working_copy(mapped.path, here, check, limit, sha256)
        return
    if parts.scheme and len(parts.scheme) > 1 and parts.scheme != "file":
        check.error(
            here, f"unsupported URI scheme {parts.scheme!r} (use https, http, file or a path)", rule="aib/uri-scheme"
        )
        return
    local = Path(urllib.request.url2pathname(parts.path)) if parts.scheme == "file" else Path(uri)
    root = check.local_root
    if root is not None:
        try:
            resolved = (root / local).resolve()  # an absolute `local` replaces `root`; links are followed
        except (OSError, RuntimeError, ValueError):
            resolved = root / local
        if not resolved.is_relative_to(root):
            check.error(
                here,
                f"{uri!r} is outside the template's folder {root}; refused "
                "(local opt-out: --allow-outside-template-dir)",
                aib_rejects=False,
                rule="aib/local-file-outside-folder",
            )
            return
    if check.template_dir is None:
        return
    path = local if local.is_absolute() else check.template_dir / local
    if not path.is_file():
        check.error(here, f"{uri!r}: no such file ({path})", aib_rejects=False, rule="aib/local-file-missing")
        return
    check.warning(
        here,
        f"{uri!r} is a path on this machine: AIB fetches from an http(s) URL (a local build reads it)",
        rule="aib/local-path-not-url",
    )
    _check_working_copy(path, here, check, limit, sha256)


def _check_working_copy(path: Path, here: str, check: Check, limit: int | None, sha256: str | None) -> None:
    """A local file's size against AIB's limit, and its digest against the template's."""
    try:
        size = path.stat().st_size
        digest = file_sha256(path) if sha256 and SHA256.match(sha256) else ""
    except OSError as exc:
        check.error(here, f"cannot read {path}: {exc.strerror}", aib_rejects=False, rule="aib/local-file-unreadable")
        return
    if limit is not None and size > limit:
        check.warning(
            here,
            f"{size} bytes is over AIB's {limit // (1024 * 1024)} MB limit for this file",
            rule="aib/file-over-limit",
        )
    if digest and sha256 and digest != sha256.lower():
        parent = here.rsplit(".", 1)[0]
        check.warning(
            f"{parent}.sha256Checksum",
            f"{path.name} has changed: its sha256 is {digest}, the template says {sha256.lower()}; the build runs "
            "the working copy, and AIB would fail this step (aib-local checksums TEMPLATE --write updates it)",
            rule="aib/checksum-stale",
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_region(region: str | None, here: str, check: Check) -> None:
    """An Azure region name (checked in `check`, so that a wrong one hides no other rule)."""
    if region is not None and normalize_region(region) not in REGIONS:
        check.error(here, f"unknown Azure region {region!r}", rule="aib/region-unknown")


def check_digest(digest: str | None, here: str, check: Check) -> None:
    """A valid digest in upper case: accepted here, not by AIB."""
    if digest and SHA256.match(digest) and digest != digest.lower():
        check.warning(
            f"{here}.sha256Checksum",
            "upper-case digest: accepted locally, but AIB expects lower case",
            rule="aib/checksum-upper-case",
        )
