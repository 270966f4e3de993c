"""Gallery rules: definitions need galleries, unique triples, versions, latest, limits."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from engine import gallery as g
from engine.gallery import Galleries, GalleryError
from engine.store import Store

SUB = "sub"


@pytest.fixture
def galleries(tmp_path: Path) -> Galleries:
    return Galleries(Store(tmp_path))


def make_definition(galleries: Galleries, name: str = "def", **kw: Any) -> str:
    galleries.create_gallery(SUB, "rg", "gal", "westeurope")
    params = {"publisher": "p", "offer": "o", "sku": name, "os_type": "Linux", **kw}
    galleries.create_definition(SUB, "rg", "gal", name, **params)
    return g.definition_id(SUB, "rg", "gal", name)


def add(galleries: Galleries, definition: str, version: str | None = None, **kw: Any) -> str:
    params: dict[str, Any] = {
        "version": version,
        "major": None,
        "location": "westeurope",
        "target_regions": [{"name": "westeurope"}],
        "exclude_from_latest": False,
        "source": {},
        "local": {},
        "tags": {},
        **kw,
    }
    return galleries.add_version(definition, **params)


def test_definition_needs_its_gallery(galleries: Galleries) -> None:
    with pytest.raises(GalleryError) as caught:
        galleries.create_definition(SUB, "rg", "nogal", "d", publisher="p", offer="o", sku="s", os_type="Linux")
    assert "aib-local sig create" in str(caught.value)


def test_publisher_offer_sku_is_unique_per_gallery(galleries: Galleries) -> None:
    make_definition(galleries, "one", sku="same")
    with pytest.raises(GalleryError, match="already used by image definition 'one'"):
        galleries.create_definition(SUB, "rg", "gal", "two", publisher="P", offer="O", sku="SAME", os_type="Linux")


def test_a_gallery_keeps_its_location(galleries: Galleries) -> None:
    first = galleries.create_gallery(SUB, "rg", "gal", "westeurope")
    assert galleries.create_gallery(SUB, "rg", "gal", "West Europe") == first  # the same region, as Azure names it
    with pytest.raises(GalleryError, match="gallery gal exists in westeurope; a gallery's location cannot change"):
        galleries.create_gallery(SUB, "rg", "gal", "eastus")


def test_gallery_names_refuse_dashes(galleries: Galleries) -> None:
    with pytest.raises(GalleryError, match="no '-'"):
        galleries.create_gallery(SUB, "rg", "my-gallery", "westeurope")


@pytest.mark.parametrize(
    ("major", "expected"),
    [(-1, "2.1.1"), (1, "1.2.1"), (0, "0.1.3"), (5, "5.0.0")],
)
def test_versioning_latest_follows_the_aib_documentation(major: int, expected: str) -> None:
    existing = [(0, 1, 1), (0, 1, 2), (1, 0, 0), (1, 2, 0), (2, 1, 0)]
    assert Galleries.next_version(existing, major, datetime.now(UTC)) == expected


def test_legacy_versions_are_monotonic() -> None:
    now = datetime(2024, 4, 14, 14, 39, 15, tzinfo=UTC)
    assert Galleries.next_version([], None, now) == "0.24105.52755"
    assert Galleries.next_version([(0, 24105, 52755)], None, now) == "0.24105.52756"
    # After an explicit 3.0.0, a build without versioning still gets AIB's 0.YYDDD.SECONDS.
    assert Galleries.next_version([(3, 0, 0)], None, now) == "0.24105.52755"
    assert Galleries.next_version([(3, 0, 0), (0, 24105, 60000)], None, now) == "0.24105.60001"


def test_explicit_version_must_be_new_and_well_formed(galleries: Galleries) -> None:
    definition = make_definition(galleries)
    add(galleries, definition, "1.0.0")
    with pytest.raises(GalleryError, match="already exists"):
        add(galleries, definition, "1.0.0")
    with pytest.raises(GalleryError, match=r"expected MAJOR\.MINOR\.PATCH"):
        add(galleries, definition, "1.0")


def test_latest_skips_versions_excluded_from_latest(galleries: Galleries) -> None:
    definition = make_definition(galleries)
    add(galleries, definition, "1.0.0")
    add(galleries, definition, "1.0.10")
    add(galleries, definition, "1.1.0", exclude_from_latest=True)
    latest = galleries.resolve(f"{definition}/versions/latest")
    assert latest is not None and latest["name"] == "1.0.10"  # numeric order, not text order


def test_limits_per_subscription_and_region(galleries: Galleries, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(g.LIMITS, g.VERSION_TYPE, 2)
    definition = make_definition(galleries)
    add(galleries, definition, "1.0.0")
    add(galleries, definition, "1.0.1")
    with pytest.raises(GalleryError, match="limit reached: 2 versions per subscription per region"):
        add(galleries, definition, "1.0.2")


def test_disks_over_1_tb_are_refused(galleries: Galleries) -> None:
    definition = make_definition(galleries)
    with pytest.raises(GalleryError, match="at most 1 TB"):
        add(galleries, definition, "1.0.0", disk_size_gb=2048)
