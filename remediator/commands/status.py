"""``remediator status``: where each cgroup's memory is, how pressured it is, and why.

Human output is an aligned table in binary units followed by one diagnosis
line per cgroup; ``--json`` is a stable schema (``remediator.status/v1``,
documented in the README): fields are only ever added, never renamed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO, Tuple

from remediator.diagnosis.composition import compose
from remediator.diagnosis.explain import diagnose
from remediator.errors import CgroupGone, KernelError, KernelParseError
from remediator.identity import Identity, parse_cgroup
from remediator.kernel.capabilities import Capabilities, probe
from remediator.kernel.cgroup_tree import walk_cgroups
from remediator.kernel.roots import InvalidCgroupName, KernelRoots, normalize_cgroup
from remediator.kernel.snapshot import read_cgroup_snapshot, read_node_snapshot
from remediator.policy.compiled import CgroupSelector, Policy
from remediator.readings import CgroupSnapshot, NodeSnapshot, Pressure, PressureLine
from remediator.sizes import format_bytes
from remediator.text import escape_name

SCHEMA = "remediator.status/v1"

Identify = Callable[[str], Identity]


@dataclass(frozen=True)
class StatusRow:
    snapshot: CgroupSnapshot
    policies: Tuple[str, ...]
    diagnosis: str
    identity: Optional[Identity] = None


def matching_policies(
    cgroup: str, policies: Sequence[Policy], identify: Identify = parse_cgroup
) -> Tuple[str, ...]:
    """The cgroup policies that select ``cgroup`` as the daemon would (globs, then target.kubernetes)."""
    identity: Optional[Identity] = None
    names = []
    for p in policies:
        if not isinstance(p.target, CgroupSelector) or not p.target.matches(cgroup):
            continue
        if p.target.kubernetes is not None:
            identity = identity if identity is not None else identify(cgroup)
            if not p.target.kubernetes.matches(identity):
                continue
        names.append(p.name)
    return tuple(names)


def select_cgroups(
    roots: KernelRoots,
    explicit: Sequence[str],
    all_cgroups: bool,
    policies: Sequence[Policy],
    identify: Identify = parse_cgroup,
) -> List[str]:
    if explicit:
        return [normalize_cgroup(c) for c in explicit]
    if all_cgroups:
        return [c for c in walk_cgroups(roots, memory_only=True) if c != ""]
    return [
        c
        for c in walk_cgroups(roots, memory_only=True)
        if c != "" and matching_policies(c, policies, identify)
    ]


def display_name(identity: Optional[Identity]) -> str:
    """``namespace/pod/container`` or the unit; ``-`` when that would only repeat the cgroup."""
    if identity is None:
        return "-"
    name = identity.readable_name
    return "-" if name == (identity.cgroup or "/") else name


def identity_json(identity: Optional[Identity]) -> Dict[str, str]:
    """The identity fields known, by their journal names in lower case (``unit``, ``pod_uid``, ...)."""
    if identity is None:
        return {}
    return {key.lower(): value for key, value in identity.journal_fields().items()}


def _line_json(line: Optional[PressureLine]) -> Optional[Dict[str, Any]]:
    if line is None:
        return None
    return {"avg10": line.avg10, "avg60": line.avg60, "avg300": line.avg300, "total_us": line.total_us}


def _pressure_json(p: Pressure) -> Dict[str, Any]:
    return {"some": _line_json(p.some), "full": _line_json(p.full)}


def row_json(row: StatusRow, node: Optional[NodeSnapshot]) -> Dict[str, Any]:
    s = row.snapshot
    comp = compose(s, node)
    return {
        "cgroup": s.cgroup,
        "memory": {
            "current": s.current_bytes,
            "max": s.max_bytes,
            "high": s.high_bytes,
            "min": s.min_bytes,
            "low": s.low_bytes,
        },
        "composition": {
            "anon": comp.anon_bytes,
            "file": comp.file_bytes,
            "shmem": comp.shmem_bytes,
            "file_mapped": comp.file_mapped_bytes,
            "file_dirty_writeback": comp.dirty_bytes,
            "reclaimable_cache": comp.reclaimable_cache_bytes,
            "unreclaimable": comp.unreclaimable_bytes,
            "slab": comp.slab_bytes,
            "kernel_stack": s.stat.get("kernel_stack"),
            "sock": comp.sock_bytes,
        },
        "events": {
            "low": s.events.low,
            "high": s.events.high,
            "max": s.events.max,
            "oom": s.events.oom,
            "oom_kill": s.events.oom_kill,
            "oom_group_kill": s.events.oom_group_kill,
        },
        "pressure": _pressure_json(s.pressure),
        "policies": list(row.policies),
        "diagnosis": row.diagnosis,
        "name": row.identity.readable_name if row.identity is not None else (s.cgroup or "/"),
        "identity": identity_json(row.identity),
    }


def _avgs(line: Optional[PressureLine]) -> str:
    if line is None:
        return "-"
    return f"{line.avg10:.2f}/{line.avg60:.2f}/{line.avg300:.2f}"


_HEADERS = (
    "CGROUP", "NAME", "CURRENT", "MAX", "HIGH", "ANON", "FILE", "SHMEM", "MAPPED", "DIRTY+WB", "RECLAIMABLE",
    "SLAB", "KSTACK", "SOCK", "EV high/max/oom_kill", "SOME 10/60/300", "FULL 10/60/300", "POLICY",
)  # fmt: skip


def render_table(rows: Sequence[StatusRow], node: Optional[NodeSnapshot], out: TextIO) -> None:
    """The table and the diagnosis lines; nothing at all without rows (a header alone says nothing).

    Names are escaped (``remediator.text``): a tenant's ``x\\rSPOOFED ...`` cannot overwrite its row.
    """
    if not rows:
        return
    table: List[Tuple[str, ...]] = [_HEADERS]
    for row in rows:
        s = row.snapshot
        comp = compose(s, node)
        table.append(
            (
                escape_name(s.cgroup or "/"),
                escape_name(display_name(row.identity)),
                format_bytes(s.current_bytes),
                format_bytes(s.max_bytes),
                format_bytes(s.high_bytes),
                format_bytes(comp.anon_bytes),
                format_bytes(comp.file_bytes),
                format_bytes(comp.shmem_bytes),
                format_bytes(comp.file_mapped_bytes),
                format_bytes(comp.dirty_bytes),
                format_bytes(comp.reclaimable_cache_bytes),
                format_bytes(comp.slab_bytes),
                format_bytes(s.stat.get("kernel_stack")),
                format_bytes(comp.sock_bytes),
                f"{s.events.high}/{s.events.max}/{s.events.oom_kill}",
                _avgs(s.pressure.some),
                _avgs(s.pressure.full),
                escape_name(",".join(row.policies)) or "-",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(_HEADERS))]
    for r in table:
        # Names left-aligned, figures right-aligned, so columns of sizes line up.
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1])]
        cells += [r[i].rjust(widths[i]) for i in range(2, len(r) - 1)]
        cells.append(r[-1])
        out.write("  ".join(cells).rstrip() + "\n")
    out.write("\n")
    for row in rows:
        out.write(escape_name(f"{row.snapshot.cgroup or '/'}: {row.diagnosis}") + "\n")


def node_pressure_text(node_pressure: Pressure) -> str:
    return (
        f"node memory pressure (/proc/pressure/memory): some {_avgs(node_pressure.some)}, "
        f"full {_avgs(node_pressure.full)} (avg10/avg60/avg300, %)"
    )


def unsupported_paragraph(caps: Capabilities) -> str:
    return " ".join(caps.summary_lines())


def collect_rows(
    roots: KernelRoots,
    cgroups: Sequence[str],
    policies: Sequence[Policy],
    node: Optional[NodeSnapshot],
    identify: Identify = parse_cgroup,
) -> Tuple[List[StatusRow], List[str]]:
    rows: List[StatusRow] = []
    problems: List[str] = []
    for cgroup in cgroups:
        try:
            snap = read_cgroup_snapshot(roots, cgroup)
        except CgroupGone:
            # Gone now: it was there when named or listed (a walk found it), or it never was.
            existed = cgroup == "" or os.path.lexists(roots.cgroup_dir(cgroup))
            problems.append(
                f"{cgroup or '/'}: {'gone (removed while reading)' if existed else 'no such cgroup'}"
            )
            continue
        except (KernelError, KernelParseError) as exc:
            problems.append(f"{cgroup or '/'}: {exc}")
            continue
        identity = identify(cgroup)
        policy_names = matching_policies(cgroup, policies, identify)
        rows.append(StatusRow(snap, policy_names, diagnose(snap, node), identity))
    return rows, problems


def _say(stream: TextIO, line: str) -> None:
    stream.write(escape_name(line) + "\n")


def _dump_json(out: TextIO, doc: Dict[str, Any]) -> None:
    json.dump(doc, out, indent=2)
    out.write("\n")


def run_status(
    roots: KernelRoots,
    policies: Sequence[Policy],
    explicit: Sequence[str],
    all_cgroups: bool,
    as_json: bool,
    out: TextIO,
    err: TextIO,
    identify: Identify = parse_cgroup,
) -> int:
    """0; 1 when a named cgroup cannot be read or the cgroup root does not exist; 2 for a bad name."""
    if not os.path.isdir(roots.cgroup_root):
        # A mistyped --cgroup-root is not "no cgroups selected".
        _say(
            err,
            f"remediator: the cgroup root {roots.cgroup_root} is not a directory (--cgroup-root, "
            "setting cgroup_root)",
        )
        return 1
    caps = probe(roots)
    node: Optional[NodeSnapshot] = None
    try:
        node = read_node_snapshot(roots)
    except (KernelError, KernelParseError) as exc:
        _say(err, f"remediator: node readings unavailable: {exc}")
    if not caps.memory_controller_v2:
        if as_json:
            _dump_json(
                out,
                {
                    "schema": SCHEMA,
                    "capabilities": caps.as_json(),
                    "explanation": unsupported_paragraph(caps),
                    "node": {"pressure": _pressure_json(node.pressure)} if node else None,
                    "cgroups": [],
                },
            )
        else:
            _say(out, unsupported_paragraph(caps))
            out.write("\n")
            if node is not None:
                _say(out, node_pressure_text(node.pressure))
        # The paragraph is the answer to "what is selected"; a cgroup named and not shown is a failure.
        for name in explicit:
            _say(
                err,
                f"remediator: {name}: cannot be read: no cgroup v2 memory controller here (see above)",
            )
        return 1 if explicit else 0
    try:
        cgroups = select_cgroups(roots, explicit, all_cgroups, policies, identify)
    except InvalidCgroupName as exc:
        _say(err, f"remediator: {exc}")
        return 2
    rows, problems = collect_rows(roots, cgroups, policies, node, identify)
    for p in problems:
        _say(err, f"remediator: {p}")
    if as_json:
        _dump_json(
            out,
            {
                "schema": SCHEMA,
                "capabilities": caps.as_json(),
                "node": {"pressure": _pressure_json(node.pressure)} if node else None,
                "cgroups": [row_json(r, node) for r in rows],
            },
        )
    else:
        if node is not None:
            _say(out, node_pressure_text(node.pressure))
            out.write("\n")
        if not rows and not explicit:
            out.write("no cgroups selected (name cgroups, or use --all)\n")
        render_table(rows, node, out)
    return 1 if explicit and problems else 0
