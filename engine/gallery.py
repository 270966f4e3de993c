"""Local shared image galleries, with Azure's rules.

Galleries, image definitions and image versions are records in the store under their
resource IDs. As in Azure: a definition needs its gallery, a version needs its
definition; the publisher/offer/sku triple is unique within a gallery; versions are
`major.minor.patch` of 32-bit integers and are assigned monotonically; each
subscription may hold, per region, 100 galleries, 1000 definitions and 10000 versions;
disks are at most 1 TB.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from engine.errors import UsageError
from engine.store import Store, split_id

GALLERY_TYPE = "Microsoft.Compute/galleries"
DEFINITION_TYPE = "Microsoft.Compute/galleries/images"
VERSION_TYPE = "Microsoft.Compute/galleries/images/versions"
LIMITS = {GALLERY_TYPE: 100, DEFINITION_TYPE: 1000, VERSION_TYPE: 10000}
MAX_DISK_GB = 1024
GALLERY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.]{0,78}[A-Za-z0-9]$|^[A-Za-z0-9]$")
DEFINITION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,78}[A-Za-z0-9]$|^[A-Za-z0-9]$")
VERSION_NAME = re.compile(r"^\d+\.\d+\.\d+$")


class GalleryError(UsageError):
    """A gallery rule was broken; the message says which, and how to fix it."""


def gallery_id(subscription: str, group: str, gallery: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{GALLERY_TYPE}/{gallery}"


def definition_id(subscription: str, group: str, gallery: str, definition: str) -> str:
    return f"{gallery_id(subscription, group, gallery)}/images/{definition}"


def parse_version(text: str) -> tuple[int, int, int]:
    """`major.minor.patch` as integers, each a 32-bit signed value as Azure allows."""
    if not VERSION_NAME.match(text):
        raise GalleryError(f"version {text!r}: expected MAJOR.MINOR.PATCH, e.g. 1.0.0")
    parts = tuple(int(p) for p in text.split("."))
    if any(p > 2**31 - 1 for p in parts):
        raise GalleryError(f"version {text!r}: each part must fit in a 32-bit integer")
    return parts[0], parts[1], parts[2]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _region(name: str) -> str:
    return name.replace(" ", "").lower()


class Galleries:
    """Gallery operations on a store; version allocation happens under the store lock."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _count(self, kind: str, subscription: str, location: str) -> int:
        prefix = f"/subscriptions/{subscription}/".lower()
        return sum(
            1
            for r in self.store.records(kind)
            if str(r.get("type", "")).lower() == kind.lower()
            and str(r["id"]).lower().startswith(prefix)
            and _region(str(r.get("location", ""))) == _region(location)
        )

    def _check_limit(self, kind: str, subscription: str, location: str) -> None:
        if self._count(kind, subscription, location) >= LIMITS[kind]:
            noun = kind.rsplit("/", 1)[-1]
            raise GalleryError(
                f"limit reached: {LIMITS[kind]} {noun} per subscription per region ({location}) in Azure"
            )

    # --- galleries and definitions --------------------------------------------------

    def create_gallery(
        self, subscription: str, group: str, name: str, location: str, description: str = ""
    ) -> dict[str, Any]:
        if not GALLERY_NAME.match(name):
            raise GalleryError(
                f"gallery name {name!r}: letters, digits, '_' and '.' only (no '-'), at most 80 characters"
            )
        resource_id = gallery_id(subscription, group, name)
        with self.store.lock():
            existing = self.store.get(resource_id)
            if existing is not None and _region(str(existing.get("location", ""))) != _region(location):
                raise GalleryError(
                    f"gallery {name} exists in {existing.get('location')}; a gallery's location cannot change "
                    f"(Azure refuses {location})",
                    hint=f"use --location {existing.get('location')}, or another gallery name",
                )
            if existing is not None:
                return existing
            self._check_limit(GALLERY_TYPE, subscription, location)
            record = {
                "name": name,
                "type": GALLERY_TYPE,
                "location": _region(location),
                "tags": {},
                "properties": {
                    "description": description,
                    "identifier": {"uniqueName": f"{subscription}-{name.upper()}"},
                    "provisioningState": "Succeeded",
                },
            }
            self.store.put(resource_id, record)
        return self.store.get(resource_id) or record

    def create_definition(
        self,
        subscription: str,
        group: str,
        gallery: str,
        name: str,
        *,
        publisher: str,
        offer: str,
        sku: str,
        os_type: str,
        os_state: str = "Generalized",
        hyper_v_generation: str = "V1",
        location: str | None = None,
        end_of_life_date: str | None = None,
        description: str = "",
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """`extra`: further definition properties as Azure names them (eula, features, ...)."""
        parent = self.require_gallery(gallery_id(subscription, group, gallery))
        if not DEFINITION_NAME.match(name):
            raise GalleryError(f"image definition name {name!r}: letters, digits, '-', '_' and '.' only")
        resource_id = definition_id(subscription, group, gallery, name)
        location = _region(location or parent["location"])
        with self.store.lock():
            existing = self.store.get(resource_id)
            if existing is not None:
                return existing
            triple = (publisher.lower(), offer.lower(), sku.lower())
            for other in self.definitions(resource_id.rsplit("/images/", 1)[0]):
                ident = other["properties"]["identifier"]
                if (ident["publisher"].lower(), ident["offer"].lower(), ident["sku"].lower()) == triple:
                    raise GalleryError(
                        f"publisher/offer/sku {publisher}/{offer}/{sku} is already used by image definition "
                        f"{other['name']!r} in gallery {gallery!r}; each definition needs a unique triple"
                    )
            self._check_limit(DEFINITION_TYPE, subscription, location)
            properties: dict[str, Any] = {
                "identifier": {"publisher": publisher, "offer": offer, "sku": sku},
                "osType": os_type,
                "osState": os_state,
                "hyperVGeneration": hyper_v_generation,
                "description": description,
                "provisioningState": "Succeeded",
            }
            if end_of_life_date:
                properties["endOfLifeDate"] = end_of_life_date
            properties.update(extra or {})
            record = {"name": name, "type": DEFINITION_TYPE, "location": location, "tags": {}, "properties": properties}
            self.store.put(resource_id, record)
        return self.store.get(resource_id) or record

    def require_gallery(self, resource_id: str) -> dict[str, Any]:
        record = self.store.get(resource_id)
        if record is None:
            parts = split_id(resource_id)
            raise GalleryError(
                f"gallery {resource_id} does not exist in the local store",
                hint=f"create it: aib-local sig create --subscription {parts[1]} --resource-group {parts[3]} "
                f"--gallery-name {parts[-1]} --location REGION",
            )
        return record

    def require_definition(self, resource_id: str) -> dict[str, Any]:
        parts = split_id(resource_id)
        self.require_gallery("/" + "/".join(parts[:8]))
        record = self.store.get(resource_id)
        if record is None:
            raise GalleryError(
                f"image definition {resource_id} does not exist in the local store",
                hint=f"create it: aib-local sig image-definition create --subscription {parts[1]} "
                f"--resource-group {parts[3]} --gallery-name {parts[7]} --gallery-image-definition {parts[9]} "
                "--publisher P --offer O --sku S --os-type Linux",
            )
        return record

    def galleries(self) -> list[dict[str, Any]]:
        return [r for r in self.store.records(GALLERY_TYPE) if r.get("type") == GALLERY_TYPE]

    def definitions(self, gallery: str) -> list[dict[str, Any]]:
        prefix = gallery.lower() + "/images/"
        return [
            r
            for r in self.store.records(DEFINITION_TYPE)
            if r.get("type") == DEFINITION_TYPE and str(r["id"]).lower().startswith(prefix)
        ]

    def versions(self, definition: str) -> list[dict[str, Any]]:
        prefix = definition.lower() + "/versions/"
        found = [
            r
            for r in self.store.records(VERSION_TYPE)
            if r.get("type") == VERSION_TYPE and str(r["id"]).lower().startswith(prefix)
        ]
        return sorted(found, key=lambda r: parse_version(str(r["name"])))

    # --- updates and deletes, with Azure's rules ------------------------------------

    def update_definition(self, resource_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change the updatable properties of a definition (Azure keeps its identity, OS and generation)."""
        with self.store.lock():
            record = self.require_definition(resource_id)
            record["properties"].update(changes)
            self.store.put(resource_id, record)
        return record

    def update_version(
        self,
        resource_id: str,
        *,
        target_regions: list[dict[str, Any]] | None = None,
        exclude_from_latest: bool | None = None,
        end_of_life_date: str | None = None,
    ) -> dict[str, Any]:
        """Change what Azure lets a version change: its regions, excludeFromLatest, end of life."""
        with self.store.lock():
            record = self.store.get(resource_id)
            if record is None:
                raise GalleryError(f"image version {resource_id} does not exist in the local store")
            profile = record["properties"]["publishingProfile"]
            if target_regions is not None:
                gallery = self.require_gallery(resource_id.split("/images/", maxsplit=1)[0])
                if _region(gallery["location"]) not in [_region(r["name"]) for r in target_regions]:
                    raise GalleryError(
                        f"the target regions must include the gallery's region ({gallery['location']}), as in Azure"
                    )
                profile["targetRegions"] = target_regions
                record["properties"]["replicationStatus"]["summary"] = [
                    {"region": r["name"], "state": "Completed", "progress": 100} for r in target_regions
                ]
            if exclude_from_latest is not None:
                profile["excludeFromLatest"] = exclude_from_latest
            if end_of_life_date is not None:
                profile["endOfLifeDate"] = end_of_life_date
            self.store.put(resource_id, record)
        return record

    def delete_version(self, resource_id: str) -> dict[str, Any]:
        with self.store.lock():
            record = self.store.get(resource_id)
            if record is None:
                raise GalleryError(f"image version {resource_id} does not exist in the local store")
            self.store.delete(resource_id)
        return record

    def delete_definition(self, resource_id: str) -> None:
        with self.store.lock():
            self.require_definition(resource_id)
            versions = self.versions(resource_id)
            if versions:
                raise GalleryError(
                    f"image definition {resource_id} has {len(versions)} version(s); Azure deletes a definition "
                    "only once its versions are gone",
                    hint="aib-local sig image-version delete ... for each of them first",
                )
            self.store.delete(resource_id)

    def delete_gallery(self, resource_id: str) -> None:
        with self.store.lock():
            self.require_gallery(resource_id)
            definitions = self.definitions(resource_id)
            if definitions:
                raise GalleryError(
                    f"gallery {resource_id} has {len(definitions)} image definition(s); Azure deletes a gallery "
                    "only once its definitions are gone",
                    hint="aib-local sig image-definition delete ... for each of them first",
                )
            self.store.delete(resource_id)

    # --- versions -------------------------------------------------------------------

    def latest(self, definition: str) -> dict[str, Any] | None:
        """The highest version not excluded from latest, as Azure resolves `latest`."""
        eligible = [
            v for v in self.versions(definition) if not v["properties"]["publishingProfile"].get("excludeFromLatest")
        ]
        return eligible[-1] if eligible else None

    def resolve(self, version_id: str) -> dict[str, Any] | None:
        """A version record; `.../versions/latest` resolves to the latest eligible one."""
        base, _, name = version_id.rpartition("/versions/")
        if name.lower() == "latest":
            return self.latest(base)
        return self.store.get(version_id)

    @staticmethod
    def next_version(existing: list[tuple[int, int, int]], major: int | None, now: datetime) -> str:
        """The next version number, as AIB assigns it.

        With `versioning.scheme: Latest`: the highest version (within `major` when it is
        set) with its patch raised by one. Without versioning: AIB's legacy scheme
        `0.YYDDD.SECONDS`, raised past the highest existing version when needed.
        """
        if major is not None:
            pool = [v for v in existing if major < 0 or v[0] == major]
            if pool:
                top = max(pool)
                return f"{top[0]}.{top[1]}.{top[2] + 1}"
            return f"{major}.0.0" if major >= 0 else "1.0.0"
        seconds = now.hour * 3600 + now.minute * 60 + now.second
        candidate = (0, int(now.strftime("%y")) * 1000 + now.timetuple().tm_yday, seconds)
        top = max((v for v in existing if v[0] == 0), default=(0, 0, 0))
        if candidate <= top:
            candidate = (top[0], top[1], top[2] + 1)
        return ".".join(str(p) for p in candidate)

    def add_version(
        self,
        definition: str,
        *,
        version: str | None,
        major: int | None,
        location: str,
        target_regions: list[dict[str, Any]],
        exclude_from_latest: bool,
        source: dict[str, Any],
        local: dict[str, Any],
        tags: dict[str, str],
        disk_size_gb: int = 0,
    ) -> str:
        """Allocate a version number and write the version record, atomically; its ID."""
        parts = split_id(definition)
        subscription = parts[1]
        if disk_size_gb > MAX_DISK_GB:
            raise GalleryError(f"osDiskSizeGB {disk_size_gb}: gallery image disks are at most 1 TB")
        with self.store.lock():
            existing = [parse_version(str(v["name"])) for v in self.versions(definition)]
            if version is not None:
                parse_version(version)
                if parse_version(version) in existing:
                    raise GalleryError(f"image version {definition}/versions/{version} already exists")
                name = version
            else:
                name = self.next_version(existing, major, datetime.now(UTC))
            self._check_limit(VERSION_TYPE, subscription, location)
            resource_id = f"{definition}/versions/{name}"
            os_disk: dict[str, Any] = {"hostCaching": "ReadWrite"}
            if disk_size_gb:
                os_disk["sizeInGB"] = disk_size_gb
            record: dict[str, Any] = {
                "name": name,
                "type": VERSION_TYPE,
                "location": _region(location),
                "tags": tags,
                "properties": {
                    "publishingProfile": {
                        "targetRegions": target_regions,
                        "replicaCount": 1,
                        "excludeFromLatest": exclude_from_latest,
                        "publishedDate": _now(),
                        "storageAccountType": target_regions[0].get("storageAccountType", "Standard_LRS"),
                    },
                    "storageProfile": {"source": source, "osDiskImage": os_disk},
                    "replicationStatus": {
                        "aggregatedState": "Completed",
                        "summary": [
                            {"region": r["name"], "state": "Completed", "progress": 100} for r in target_regions
                        ],
                    },
                    "provisioningState": "Succeeded",
                },
                "aibLocal": local,
            }
            self.store.put(resource_id, record)
        return resource_id
