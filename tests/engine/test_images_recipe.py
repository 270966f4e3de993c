"""The engine knows which fixture-image recipe is current, to tell a user whose image is older."""

from __future__ import annotations

import re

from engine import images
from tests.support import ROOT


def test_the_engine_and_the_image_script_agree_on_the_recipe() -> None:
    script = (ROOT / "fixtures" / "images" / "build-image.sh").read_text()
    (recipe,) = re.findall(r"^RECIPE=(\d+)", script, re.MULTILINE)
    assert int(recipe) == images.FIXTURE_RECIPE
    assert f"LABEL={images.RECIPE_LABEL}" in script
