"""Windows exit codes: HRESULTs unwrapped, common codes explained."""

from __future__ import annotations

from engine.exitcodes import explain, unwrap


def test_hresult_wrapped_win32_codes_are_unwrapped() -> None:
    assert unwrap(2147942501) == (101, 0x80070065)  # Windows Update's restart code, wrapped
    assert unwrap(-2147024891) == (5, 0x80070005)  # the same value as a signed 32-bit integer
    assert "Win32 error 5: access is denied" in explain(-2147024891)


def test_plain_codes() -> None:
    assert unwrap(3010) == (None, 3010)
    assert "restart is required" in explain(3010)
    assert explain(4242) == ""


def test_other_hresults_say_how_to_look_them_up() -> None:
    assert "certutil -error 0x80240016" in explain(0x80240016)
