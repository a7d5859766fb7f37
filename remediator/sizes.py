"""Byte sizes as people read them (binary units, one decimal), and the digits of a size as written."""

from __future__ import annotations

from typing import Optional

from remediator.located.yaml_doc import MAX_INT_DIGITS


def int_of_digits(digits: str) -> int:
    """The value of a string of ASCII digits; ``ValueError`` with a plain message when it is too long.

    ``int()`` refuses more than 4300 digits with advice for programmers ("use
    sys.set_int_max_str_digits()"), and converting a few thousand digits is
    slow anyway; no size needs more than 20 (2**64 bytes). The bound and the
    message are the YAML reader's, so a number is refused alike quoted or not.
    """
    if len(digits) > MAX_INT_DIGITS:
        raise ValueError(f"a number of {len(digits)} digits is out of range; no setting takes one")
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"not a number of digits: {digits[:20]!r}")
    return int(digits)


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
