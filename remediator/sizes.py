"""Byte sizes as people read them: binary units (KiB, MiB, GiB), one decimal."""

from __future__ import annotations

from typing import Optional

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(value: Optional[int]) -> str:
    """``None`` is a limit that is not set (the kernel's "max")."""
    if value is None:
        return "max"
    amount = float(value)
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    for unit in _UNITS:
        if amount < 1024 or unit == _UNITS[-1]:
            if unit == "B":
                return f"{sign}{int(amount)} B"
            return f"{sign}{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def format_percent(fraction: float) -> str:
    return f"{fraction * 100:.0f} %"
