"""The AIB image template, declared once as typed models.

The models hold the structure (types, required fields, enums, defaults) of
`Microsoft.VirtualMachineImages/imageTemplates` across API versions. Field metadata
carries the API version a field first appeared in (`since`) and whether it is
read-only (`read_only`); `engine.template.loading` reads that metadata to apply the
version rules, so nothing here is declared twice. Each customizer and distribution
declares its own section (schema and rules) in its module; the unions here are built
from the registries, so a new type is one module and one registry line. The model is
data and runs nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel

import customizers
import distributors
from customizers.file import FileCustomizer
from customizers.powershell import PowerShellCustomizer
from customizers.shell import ShellCustomizer
from customizers.windows_restart import DEFAULT_RESTART_COMMAND, DURATION_PATTERN, WindowsRestartCustomizer
from customizers.windows_update import WindowsUpdateCustomizer
from distributors.managed_image import ManagedImageDistribute
from distributors.shared_image import SharedImageDistribute, TargetRegion, Versioning
from distributors.vhd import VhdDistribute
from engine import vmsizes
from engine.errors import key_path
from engine.template.sections import (
    IDENTITY_EXAMPLE,
    NAME_PATTERN,
    READ_ONLY,
    Check,
    CustomizerSection,
    DistributeSection,
    ExitCode,
    IdentityId,
    ImageVersionId,
    ManagedImageId,
    ResourceGroupId,
    Section,
    SubnetId,
    since,
)

API_VERSIONS = (
    "2018-02-01-preview",
    "2019-02-01-preview",
    "2019-05-01-preview",
    "2020-02-14",
    "2021-10-01",
    "2022-02-14",
    "2022-07-01",
    "2023-07-01",
    "2024-02-01",
    "2025-10-01",
)
LATEST_API_VERSION = API_VERSIONS[-1]
# From this version on AIB rejects unknown and mis-cased fields.
STRICT_FROM = "2024-02-01"

DEFAULT_BUILD_TIMEOUT_MINUTES = 240
MAX_BUILD_TIMEOUT_MINUTES = 960

__all__ = [
    "DEFAULT_RESTART_COMMAND",
    "DURATION_PATTERN",
    "NAME_PATTERN",
    "READ_ONLY",
    "Check",
    "CustomizerSection",
    "DistributeSection",
    "ExitCode",
    "FileCustomizer",
    "ManagedImageDistribute",
    "PowerShellCustomizer",
    "Section",
    "SharedImageDistribute",
    "ShellCustomizer",
    "TargetRegion",
    "Versioning",
    "VhdDistribute",
    "WindowsRestartCustomizer",
    "WindowsUpdateCustomizer",
    "since",
]

# --- customizers, validators and distributions: one section class per registered type ---

if TYPE_CHECKING:
    Customizer = CustomizerSection
    Validator = CustomizerSection
    Distribute = DistributeSection
else:
    _CUSTOMIZERS = tuple(c.schema for c in customizers.REGISTRY.values())
    _VALIDATORS = tuple(c.schema for c in customizers.REGISTRY.values() if c.validates)
    _DISTRIBUTIONS = tuple(d.schema for d in distributors.REGISTRY.values())
    Customizer = Annotated[Union[_CUSTOMIZERS], Field(discriminator="type")]  # noqa: UP007 - built at run time
    Validator = Annotated[Union[_VALIDATORS], Field(discriminator="type")]  # noqa: UP007
    Distribute = Annotated[Union[_DISTRIBUTIONS], Field(discriminator="type")]  # noqa: UP007


class ValidateSection(Section):
    continue_distribute_on_failure: bool = False
    source_validation_only: bool = False
    in_vm_validations: list[Validator] = Field(default_factory=list, alias="inVMValidations")


# --- sources -----------------------------------------------------------------------


class PlanInfo(Section):
    plan_name: str
    plan_product: str
    plan_publisher: str


class PlatformImageSource(Section):
    """A marketplace image; resolved to a container image through the catalogue."""

    type: Literal["PlatformImage"]
    publisher: str
    offer: str
    sku: str
    version: str
    plan_info: PlanInfo | None = Field(None, json_schema_extra=since("2020-02-14"))
    exact_version: str | None = Field(None, json_schema_extra=READ_ONLY)

    @property
    def urn(self) -> str:
        return f"{self.publisher}:{self.offer}:{self.sku}:{self.version}"

    def check(self, here: str, check: Check) -> None:
        if self.version and self.version.lower() != "latest":
            check.not_local(
                f"{here}.version",
                f"AIB builds from exactly version {self.version}",
                "locally the catalogue maps the URN to an image: its entry for this version if it has one, "
                "else the URN's 'latest' image",
            )


class ManagedImageSource(Section):
    """A managed image in the local store (for instance one an earlier build made)."""

    type: Literal["ManagedImage"]
    image_id: ManagedImageId


class SharedImageVersionSource(Section):
    """An image version in a local shared image gallery."""

    type: Literal["SharedImageVersion"]
    image_version_id: ImageVersionId
    exact_version: str | None = Field(None, json_schema_extra=READ_ONLY)


class IsoSource(Section):
    """Only ever in 2019-05-01-preview; rejected by validation."""

    type: Literal["ISO"]
    source_uri: str | None = None
    sha256_checksum: str | None = None


Source = Annotated[
    PlatformImageSource | ManagedImageSource | SharedImageVersionSource | IsoSource,
    Field(discriminator="type"),
]


# --- the rest of properties --------------------------------------------------------


class VnetConfig(Section):
    subnet_id: SubnetId | None = None
    proxy_vm_size: str | None = Field(None, json_schema_extra=since("2021-10-01"))
    container_instance_subnet_id: SubnetId | None = Field(None, json_schema_extra=since("2024-02-01"))
    # Deprecated in favour of subnetId; still accepted by older versions.
    subnet_name: str | None = None
    resource_group_name: str | None = None

    def check(self, here: str, check: Check) -> None:
        if self.proxy_vm_size and not self.subnet_id:
            check.error(f"{here}.proxyVmSize", "only configurable together with subnetId", rule="aib/proxy-vm-size")
        if self.proxy_vm_size and self.container_instance_subnet_id:
            check.error(
                f"{here}.proxyVmSize",
                "must not be set together with containerInstanceSubnetId",
                rule="aib/proxy-vm-size",
            )
        for old in ("subnet_name", "resource_group_name"):
            if old in self.model_fields_set:
                check.warning(
                    f"{here}.{to_camel(old)}",
                    "deprecated; use subnetId",
                    aib_rejects=False,
                    rule="aib/vnet-field-deprecated",
                )
        if self.proxy_vm_size:
            check.not_local(
                f"{here}.proxyVmSize", "AIB sizes the proxy VM of an isolated build with it", "there is none locally"
            )


class VmProfile(Section):
    vm_size: str = ""
    os_disk_size_gb: int = Field(0, ge=0, le=4095, alias="osDiskSizeGB", json_schema_extra=since("2020-02-14"))
    user_assigned_identities: list[IdentityId] = Field(default_factory=list, json_schema_extra=since("2021-10-01"))
    vnet_config: VnetConfig | None = Field(None, json_schema_extra=since("2020-02-14"))

    def check(self, here: str, check: Check) -> None:
        if self.vm_size and not vmsizes.known(self.vm_size):
            near = vmsizes.closest(self.vm_size)
            check.warning(
                f"{here}.vmSize",
                f"{self.vm_size!r} is not a size aib-local knows"
                + (f"; did you mean {near!r}?" if near else "")
                + " (a container's limits are guessed from the name)",
                aib_rejects=False,
                rule="aib/vm-size-unknown",
            )
        if self.user_assigned_identities:
            check.not_local(
                f"{here}.userAssignedIdentities",
                "AIB attaches these identities to the build VM",
                "the local build has none (give the scripts what they need with --secret NAME=VALUE)",
            )
        if self.vnet_config is not None:
            check.not_local(
                f"{here}.vnetConfig",
                "AIB puts the build VM in this virtual network",
                "the local build uses the container network of --network (bridge where it exists, else host) "
                "or the SSH host's own",
            )


class State(Section):
    state: Literal["Enabled", "Disabled"] = "Disabled"


class WorkloadOptimize(Section):
    state: Literal["Enabled", "Disabled"] = "Disabled"
    script_uri: str | None = None
    sha256_checksum: str = ""


class Optimize(Section):
    vm_boot: State | None = None
    workload: WorkloadOptimize | None = Field(None, json_schema_extra=since("2025-10-01"))

    def check(self, here: str, check: Check) -> None:
        if self.vm_boot is not None and self.vm_boot.state == "Enabled":
            check.not_local(f"{here}.vmBoot", "AIB optimizes the image's boot", "not done locally")


class ErrorHandling(Section):
    on_customizer_error: Literal["cleanup", "abort"] = "cleanup"
    on_validation_error: Literal["cleanup", "abort"] = "cleanup"


class DataDisk(Section):
    size_gb: int = Field(ge=1, alias="sizeGB")


class Properties(Section):
    """`properties` of an image template."""

    source: Source
    customize: list[Customizer] = Field(default_factory=list)
    distribute: list[Distribute]
    build_timeout_in_minutes: int = Field(0, ge=0, le=MAX_BUILD_TIMEOUT_MINUTES)
    vm_profile: VmProfile = Field(default_factory=lambda: VmProfile.model_validate({}))
    validate_: ValidateSection | None = Field(None, alias="validate", json_schema_extra=since("2022-02-14"))
    optimize: Optimize | None = Field(None, json_schema_extra=since("2022-07-01"))
    error_handling: ErrorHandling | None = Field(None, json_schema_extra=since("2023-07-01"))
    staging_resource_group: ResourceGroupId | None = Field(None, json_schema_extra=since("2022-02-14"))
    auto_run: State | None = Field(None, json_schema_extra=since("2024-02-01"))
    managed_resource_tags: dict[str, str] | None = Field(None, json_schema_extra=since("2024-02-01"))
    additional_data_disks: list[DataDisk] | None = Field(None, json_schema_extra=since("2025-10-01"))
    # Read-only fields that a GET returns and users paste back.
    exact_staging_resource_group: str | None = Field(None, json_schema_extra=READ_ONLY)
    provisioning_state: str | None = Field(None, json_schema_extra=READ_ONLY)
    provisioning_error: dict[str, Any] | None = Field(None, json_schema_extra=READ_ONLY)
    last_run_status: dict[str, Any] | None = Field(None, json_schema_extra=READ_ONLY)

    @property
    def timeout_minutes(self) -> int:
        return self.build_timeout_in_minutes or DEFAULT_BUILD_TIMEOUT_MINUTES

    def check(self, here: str, check: Check) -> None:
        if self.auto_run is not None and self.auto_run.state == "Enabled":
            check.not_local(
                f"{here}.autoRun",
                "AIB builds the image as soon as the template is created",
                "locally a build runs when aib-local build runs",
            )
        if self.staging_resource_group:
            check.not_local(
                f"{here}.stagingResourceGroup",
                "AIB creates the build's resources in this resource group",
                "nothing is staged locally: the build runs in a container or on the SSH host",
            )
        if self.managed_resource_tags:
            check.not_local(
                f"{here}.managedResourceTags",
                "AIB tags the resources it creates for the build",
                "there are none locally (containers carry aib-local's own labels)",
            )


class Identity(Section):
    type: Literal["UserAssigned", "None"]
    user_assigned_identities: dict[str, dict[str, Any]] | None = None

    def check(self, here: str, check: Check) -> None:
        identities = self.user_assigned_identities or {}
        where = f"{here}.userAssignedIdentities"
        for key in identities:
            try:
                TypeAdapter(IdentityId).validate_python(key)
            except ValidationError:
                check.error(
                    key_path(where, key),
                    f"expected /subscriptions/SUB/resourceGroups/RG{IDENTITY_EXAMPLE}",
                    rule="aib/identity-id",
                )
        if len(identities) > 1:
            check.error(
                where, f"AIB takes one user-assigned identity, got {len(identities)}", rule="aib/identity-count"
            )
        if self.type == "UserAssigned" and not identities:
            check.error(where, "type UserAssigned needs the identity's resource ID here", rule="aib/identity-id")


class ImageTemplate(Section):
    """The ARM resource `Microsoft.VirtualMachineImages/imageTemplates`."""

    type: str | None = None
    api_version: str | None = None
    name: str | None = None
    location: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    identity: Identity | None = None
    depends_on: list[Any] = Field(default_factory=list)
    properties: Properties
    # ARM resource envelope fields that a GET returns.
    id: str | None = Field(None, json_schema_extra=READ_ONLY)
    system_data: dict[str, Any] | None = Field(None, json_schema_extra=READ_ONLY)
