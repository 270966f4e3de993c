"""What a Windows exit code means: HRESULT-wrapped codes unwrapped, common ones named."""

from __future__ import annotations

WIN32 = {
    1: "incorrect function (often: a PowerShell script threw an error)",
    2: "the system cannot find the file specified",
    3: "the system cannot find the path specified",
    5: "access is denied",
    87: "the parameter is incorrect",
    101: "Windows Update: a restart is required",
    1115: "a system shutdown is in progress",
    1190: "a system shutdown has already been scheduled",
    1602: "the installation was cancelled by the user",
    1603: "fatal error during installation (MSI)",
    1618: "another installation is already in progress (MSI)",
    1619: "the installation package could not be opened (MSI)",
    1638: "another version of this product is already installed (MSI)",
    1641: "the installer has initiated a restart (MSI)",
    3010: "a restart is required to complete the installation (MSI)",
    267014: "FSLogix installer: success, a restart is pending (add it to validExitCodes)",
}


def unwrap(code: int) -> tuple[int | None, int]:
    """(Win32 code or None, unsigned 32-bit value) of an exit code that may be an HRESULT."""
    unsigned = code & 0xFFFFFFFF
    if unsigned & 0xFFFF0000 == 0x80070000:
        return unsigned & 0xFFFF, unsigned
    return None, unsigned


def explain(code: int) -> str:
    """A short explanation of an exit code, or '' when there is nothing useful to say."""
    win32, unsigned = unwrap(code)
    if win32 is not None:
        meaning = WIN32.get(win32, "no description known")
        return f"HRESULT 0x{unsigned:08X} = Win32 error {win32}: {meaning}"
    if unsigned & 0x80000000:
        return f"HRESULT 0x{unsigned:08X} (not a Win32 error; look it up with 'certutil -error 0x{unsigned:08X}')"
    return WIN32.get(code, "")
