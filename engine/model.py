"""The AIB image template, declared once as typed models.

The models hold the structure (types, required fields, enums, defaults) of
`Microsoft.VirtualMachineImages/imageTemplates` across API versions. Field metadata
carries the API version a field first appeared in (`since`) and whether it is
read-only (`read_only`); `engine.validation` reads that metadata to apply the
version rules, so nothing here is declared twice. The model is data and runs nothing.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

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

DEFAULT_RESTART_COMMAND = 'shutdown /r /f /t 0 /c "packer restart"'
DEFAULT_BUILD_TIMEOUT_MINUTES = 240
MAX_BUILD_TIMEOUT_MINUTES = 960
NAME_PATTERN = r"^[A-Za-z0-9\-_.]{1,64}$"
DURATION_PATTERN = re.compile(r"^(\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+$")
# An exit code: int32 as the AIB schema types it, or the same 32 bits unsigned (a Windows DWORD).
ExitCode = Annotated[int, Field(ge=-(2**31), le=2**32 - 1)]


def since(version: str) -> dict[str, Any]:
    """Field metadata: the first API version that knows the field."""
    return {"since": version}


READ_ONLY: dict[str, Any] = {"read_only": True}


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


# --- customizers -----------------------------------------------------------------


class CustomizerBase(Section):
    name: str | None = None


class ShellCustomizer(CustomizerBase):
    """Runs a shell script (scriptUri) or inline commands on a Linux target."""

    type: Literal["Shell"]
    script_uri: str | None = None
    inline: list[str] | None = None
    sha256_checksum: str = ""


class PowerShellCustomizer(CustomizerBase):
    """Runs PowerShell on a Windows target (or Linux with pwsh)."""

    type: Literal["PowerShell"]
    script_uri: str | None = None
    inline: list[str] | None = None
    sha256_checksum: str = ""
    run_elevated: bool = False
    run_as_system: bool = Field(False, json_schema_extra=since("2020-02-14"))
    valid_exit_codes: list[ExitCode] = Field(default_factory=lambda: [0])


class FileCustomizer(CustomizerBase):
    """Downloads one file and places it at `destination` on the target."""

    type: Literal["File"]
    source_uri: str
    destination: str
    sha256_checksum: str = ""


class WindowsRestartCustomizer(CustomizerBase):
    """Restarts the target and waits for it to come back."""

    type: Literal["WindowsRestart"]
    restart_command: str = DEFAULT_RESTART_COMMAND
    restart_check_command: str = ""
    restart_timeout: str = "5m"

    @field_validator("restart_timeout")
    @classmethod
    def _duration(cls, value: str) -> str:
        if value and not DURATION_PATTERN.match(value):
            raise ValueError("expected a duration such as '5m', '90s' or '2h'")
        return value


class WindowsUpdateCustomizer(CustomizerBase):
    """Searches, filters and installs Windows updates until none are left."""

    since_version: ClassVar[str] = "2020-02-14"
    type: Literal["WindowsUpdate"]
    search_criteria: str = ""
    filters: list[str] = Field(default_factory=list)
    update_limit: int = Field(0, ge=0)


Customizer = Annotated[
    ShellCustomizer | PowerShellCustomizer | FileCustomizer | WindowsRestartCustomizer | WindowsUpdateCustomizer,
    Field(discriminator="type"),
]


# --- validators (properties.validate.inVMValidations) ------------------------------


class ShellValidator(CustomizerBase):
    type: Literal["Shell"]
    script_uri: str | None = None
    inline: list[str] | None = None
    sha256_checksum: str = ""


class PowerShellValidator(CustomizerBase):
    type: Literal["PowerShell"]
    script_uri: str | None = None
    inline: list[str] | None = None
    sha256_checksum: str = ""
    run_elevated: bool = False
    run_as_system: bool = False
    valid_exit_codes: list[ExitCode] = Field(default_factory=lambda: [0])


class FileValidator(CustomizerBase):
    type: Literal["File"]
    source_uri: str
    destination: str
    sha256_checksum: str = ""


Validator = Annotated[ShellValidator | PowerShellValidator | FileValidator, Field(discriminator="type")]


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


class ManagedImageSource(Section):
    """A managed image in the local store (for instance one an earlier build made)."""

    type: Literal["ManagedImage"]
    image_id: str


class SharedImageVersionSource(Section):
    """An image version in a local shared image gallery."""

    type: Literal["SharedImageVersion"]
    image_version_id: str
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


# --- distributions -----------------------------------------------------------------


class DistributeBase(Section):
    run_output_name: str = Field(pattern=NAME_PATTERN)
    artifact_tags: dict[str, str] = Field(default_factory=dict)


class ManagedImageDistribute(DistributeBase):
    type: Literal["ManagedImage"]
    image_id: str
    location: str


class TargetRegion(Section):
    name: str
    replica_count: int = Field(1, ge=1)
    storage_account_type: Literal["Standard_LRS", "Standard_ZRS", "Premium_LRS"] | None = None


class Versioning(Section):
    scheme: Literal["Latest", "Source"]
    major: int = Field(-1, ge=-1)


class SharedImageDistribute(DistributeBase):
    type: Literal["SharedImage"]
    gallery_image_id: str
    replication_regions: list[str] | None = None
    target_regions: list[TargetRegion] | None = Field(None, json_schema_extra=since("2022-07-01"))
    exclude_from_latest: bool = Field(False, json_schema_extra=since("2020-02-14"))
    storage_account_type: Literal["Standard_LRS", "Standard_ZRS", "Premium_LRS"] | None = Field(
        None, json_schema_extra=since("2020-02-14")
    )
    versioning: Versioning | None = Field(None, json_schema_extra=since("2022-07-01"))
    replication_mode: Literal["Full", "Shallow"] | None = Field(None, json_schema_extra=since("2025-10-01"))


class VhdDistribute(DistributeBase):
    type: Literal["VHD"]
    uri: str | None = Field(None, json_schema_extra=since("2022-07-01"))


Distribute = Annotated[
    ManagedImageDistribute | SharedImageDistribute | VhdDistribute,
    Field(discriminator="type"),
]


# --- the rest of properties --------------------------------------------------------


class VnetConfig(Section):
    subnet_id: str | None = None
    proxy_vm_size: str | None = Field(None, json_schema_extra=since("2021-10-01"))
    container_instance_subnet_id: str | None = Field(None, json_schema_extra=since("2024-02-01"))
    # Deprecated in favour of subnetId; still accepted by older versions.
    subnet_name: str | None = None
    resource_group_name: str | None = None


class VmProfile(Section):
    vm_size: str = ""
    os_disk_size_gb: int = Field(0, ge=0, le=4095, alias="osDiskSizeGB", json_schema_extra=since("2020-02-14"))
    user_assigned_identities: list[str] = Field(default_factory=list, json_schema_extra=since("2021-10-01"))
    vnet_config: VnetConfig | None = Field(None, json_schema_extra=since("2020-02-14"))


class State(Section):
    state: Literal["Enabled", "Disabled"] = "Disabled"


class WorkloadOptimize(Section):
    state: Literal["Enabled", "Disabled"] = "Disabled"
    script_uri: str | None = None
    sha256_checksum: str = ""


class Optimize(Section):
    vm_boot: State | None = None
    workload: WorkloadOptimize | None = Field(None, json_schema_extra=since("2025-10-01"))


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
    staging_resource_group: str | None = Field(None, json_schema_extra=since("2022-02-14"))
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


class Identity(Section):
    type: Literal["UserAssigned", "None"]
    user_assigned_identities: dict[str, dict[str, Any]] | None = None


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
