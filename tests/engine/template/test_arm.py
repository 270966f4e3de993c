"""ARM as deployments use it: names compared without case, as ARM compares them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.template.loading import LoadOptions, load_templates
from tests.support import template


def deployment() -> dict[str, Any]:
    resource = template("placeholder", [{"type": "Shell", "inline": ["[concat('echo ', variables('GREETING'))]"]}])
    resource["name"] = "[parameters('imagetemplatename')]"
    resource["properties"]["distribute"] = [
        {
            "type": "ManagedImage",
            "imageId": "[resourceId('Microsoft.Compute/images', parameters('MANAGEDIMAGENAME'))]",
            "location": "westeurope",
            "runOutputName": "[variables('runoutput')]",
        }
    ]
    return {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": {
            "imageTemplateName": {"type": "string"},
            "managedImageName": {"type": "string", "defaultValue": "web-image"},
        },
        "variables": {"greeting": "hello", "runOutput": "[concat(parameters('ManagedImageName'), '-out')]"},
        "resources": [resource],
    }


def test_parameter_and_variable_names_are_compared_without_case(tmp_path: Path) -> None:
    path = tmp_path / "deploy.json"
    path.write_text(json.dumps(deployment()))
    # The command line's names too: az passes -p IMAGETEMPLATENAME=web to the declared imageTemplateName.
    (loaded,) = load_templates(path, options=LoadOptions(parameters={"IMAGETEMPLATENAME": "web"}))
    assert loaded.name == "web"
    (image,) = loaded.properties.distribute
    assert image.image_id.endswith("/providers/Microsoft.Compute/images/web-image")
    assert image.run_output_name == "web-image-out"
    assert loaded.properties.customize[0].inline == ["echo hello"]
