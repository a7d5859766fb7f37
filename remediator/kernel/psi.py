"""PSI files: ``/proc/pressure/memory`` and a cgroup's ``memory.pressure``.

Format (Documentation/accounting/psi.rst)::

    some avg10=0.00 avg60=0.00 avg300=0.00 total=0
    full avg10=0.00 avg60=0.00 avg300=0.00 total=0

avgs are percent with two decimals, ``total`` is cumulative microseconds. The
``full`` line is missing on old kernels' cpu file; later kernels may add
fields or lines, which are ignored.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

from remediator.errors import KernelParseError
from remediator.kernel.file_io import parse_uint, read_text
from remediator.kernel.roots import KernelRoots
from remediator.readings import Pressure, PressureLine

PRESSURE_FILE = "memory.pressure"
NODE_PRESSURE_FILE = "pressure/memory"

_KINDS = ("some", "full")
_AVG_FIELDS = ("avg10", "avg60", "avg300")


def _parse_percent(token: str, source: str, what: str) -> float:
    # "12.34" only: float() would also take "nan", "inf", "1e3" and "1_0".
    whole, dot, fraction = token.partition(".")
    if not (whole.isascii() and whole.isdigit()) or (dot and not (fraction.isascii() and fraction.isdigit())):
        raise KernelParseError(source, f"{what}: expected a decimal percentage, got {token!r}")
    value = float(token)
    if not math.isfinite(value):
        # Hundreds of digits pass the check above and overflow to inf.
        raise KernelParseError(source, f"{what}: {token[:20]!r}... is not a percentage")
    return value


def _parse_line(kind: str, fields: list[str], source: str) -> PressureLine:
    values: Dict[str, str] = {}
    for item in fields:
        key, eq, value = item.partition("=")
        if not eq:
            raise KernelParseError(source, f"{kind}: expected key=value, got {item!r}")
        values[key] = value
    missing = [key for key in (*_AVG_FIELDS, "total") if key not in values]
    if missing:
        raise KernelParseError(source, f"{kind}: missing {', '.join(missing)}")
    return PressureLine(
        avg10=_parse_percent(values["avg10"], source, f"{kind} avg10"),
        avg60=_parse_percent(values["avg60"], source, f"{kind} avg60"),
        avg300=_parse_percent(values["avg300"], source, f"{kind} avg300"),
        total_us=parse_uint(values["total"], source, f"{kind} total"),
    )


def parse_pressure(text: str, source: str = "") -> Pressure:
    """Parse a PSI file. Raises only ``KernelParseError`` (naming ``source``)."""
    lines: Dict[str, Optional[PressureLine]] = {}
    for raw in text.splitlines():
        fields = raw.split()
        if not fields or fields[0] not in _KINDS:
            continue  # blank, or a line kind this program does not use
        kind = fields[0]
        if kind in lines:
            raise KernelParseError(source, f"more than one {kind!r} line")
        lines[kind] = _parse_line(kind, fields[1:], source)
    some = lines.get("some")
    if some is None:
        raise KernelParseError(source, "no 'some' line")
    return Pressure(some=some, full=lines.get("full"))


def read_cgroup_pressure(roots: KernelRoots, cgroup: str) -> Pressure:
    """The cgroup's ``memory.pressure``."""
    path = roots.cgroup_file(cgroup, PRESSURE_FILE)
    return parse_pressure(read_text(path, roots.cgroup_dir(cgroup)), str(path))


def read_node_pressure(roots: KernelRoots) -> Pressure:
    """The node's ``/proc/pressure/memory``."""
    path = roots.proc_file(NODE_PRESSURE_FILE)
    return parse_pressure(read_text(path), str(path))
