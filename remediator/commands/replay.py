"""``remediator replay``: what the daemon would have done with a recorded incident.

The trace (``remediator.trace/v1``) is run through the daemon's own loop on
a simulated clock (``remediator.replay.engine``), with the policies and
settings given (``--policies``, ``--config``), in dry-run. Printed: the
records the daemon would have written, each with its time in the trace
(the daemon's stderr line form; ``--json``: the journal's field names), then
a summary per cgroup (``remediator.replay.summary``).

Exit codes: 0 replayed; 1 the trace cannot be read (the error names the
file, the line and the field); 2 usage. A trace cut by a crash (a node that
died, a recorder killed) is replayed up to its last complete record, and
where it stops is said on stderr.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Sequence, TextIO

from remediator.daemon.journal import SYSLOG_IDENTIFIER, format_stderr_line, iso_time, record_fields
from remediator.replay.engine import ReplayResult, replay_trace
from remediator.replay.summary import CgroupSummary, summarize
from remediator.settings import Settings
from remediator.sizes import format_bytes
from remediator.trace.format import TraceError, TraceHeader
from remediator.trace.provenance import policy_digests

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
SCHEMA = "remediator.replay/v1"


def policy_comparison(header: TraceHeader, policies_dir: Path) -> str:
    """Whether the policies replayed are the files the trace was recorded with (by sha256)."""
    recorded = {p.file: p.sha256 for p in header.policies}
    current = {p.file: p.sha256 for p in policy_digests(policies_dir)}
    if recorded == current:
        return "the policies the trace was recorded with"
    changes = [
        f"{name} changed" for name in sorted(set(recorded) & set(current)) if recorded[name] != current[name]
    ]
    changes += [f"{name} added" for name in sorted(set(current) - set(recorded))]
    changes += [f"{name} not there" for name in sorted(set(recorded) - set(current))]
    return "not the policies the trace was recorded with: " + ", ".join(changes)


def _when(header: TraceHeader) -> str:
    moment = datetime.fromtimestamp(header.start_wall, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(t: float) -> str:
    return f"+{t:.1f} s"


def _introduction(trace: Path, result: ReplayResult, policies: str, policies_dir: Path) -> List[str]:
    header = result.header
    every = f" every {header.interval_sec:g} s" if header.interval_sec else ""
    return [
        f"replay of {trace}: node {header.node or '?'}, kernel {header.kernel_release or 'unknown'}, "
        f"recorded {_when(header)} by {header.source.value}{every}, {result.end_t:.1f} s",
        f"policies: {policies_dir} ({policies})",
        "PSI triggers: " + _triggers_text(result),
    ]


_NO_RECORDS = "(the trace has no trigger records)"


def _triggers_text(result: ReplayResult) -> str:
    recorded = result.header.triggers
    if recorded is not None:
        armed = sum(1 for t in recorded.targets if t.armed)
        text = (
            f"fired as the trace records them where the recorder armed them ({armed} of "
            f"{len(recorded.targets)} targets at its start"
        )
        if not result.synthesized_triggers:
            return text + ")"
        return text + "); elsewhere where the recorded stall counters cross their thresholds"
    if result.synthesized_triggers:
        return "fired where the recorded stall counters cross their thresholds " + _NO_RECORDS
    return "fired as the trace records them"


def _owned_text(summary: CgroupSummary) -> str:
    parts = []
    for owned in summary.owned:
        value = format_bytes(owned.ours) if owned.knob == "memory_high" else str(owned.ours)
        if owned.before is None:
            before = "max"
        else:
            before = format_bytes(owned.before) if owned.knob == "memory_high" else str(owned.before)
        parts.append(f"{owned.knob} {value} (was {before}; policy {owned.policy})")
    return "; ".join(parts) or "nothing"


def summary_lines(summaries: Sequence[CgroupSummary]) -> List[str]:
    lines = ["summary:"]
    if not summaries:
        lines.append("  nothing recorded")
    for s in summaries:
        lines.append(f"  {s.label}")
        pressure = (
            "none"
            if s.first_pressure is None
            else f"{_seconds(s.first_pressure)} ({s.first_pressure_source})"
        )
        lines.append(f"    first pressure:   {pressure}")
        if s.first_action is None:
            action = "none"
        else:
            delay = s.action_delay
            after = "" if delay is None else f", {delay:.1f} s after the first pressure"
            action = f"{_seconds(s.first_action)} {s.first_action_kind}{after}"
        lines.append(f"    first action:     {action}")
        actions = ", ".join(f"{kind} {result} x{n}" for (kind, result), n in sorted(s.actions.items()))
        lines.append(f"    actions:          {actions or 'none'}")
        declines = ", ".join(f"{reason} x{n}" for reason, n in sorted(s.declines.items()))
        lines.append(f"    declines:         {declines or 'none'}")
        lines.append(f"    owned at the end: {_owned_text(s)}")
    return lines


def _record_json(t: float, wall: float, fields: Sequence[tuple[str, str]]) -> Dict[str, Any]:
    doc: Dict[str, Any] = {
        "T": round(t, 6),
        "TIMESTAMP": iso_time(wall),
        "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
    }
    for name, value in fields:
        doc.setdefault(name, value)
    return doc


def _write_json(out: TextIO, trace: Path, result: ReplayResult, policies: str, policies_dir: Path) -> None:
    header = result.header
    doc = {
        "schema": SCHEMA,
        "trace": {
            "path": str(trace),
            "node": header.node,
            "kernel_release": header.kernel_release,
            "source": header.source.value,
            "interval_sec": header.interval_sec,
            "start_wall": header.start_wall,
            "duration_sec": result.end_t,
            "truncated_at_line": None if result.truncation is None else result.truncation.line,
        },
        "policies": {"dir": str(policies_dir), "compared_with_recorded": policies},
        "triggers": "synthesized" if result.synthesized_triggers else "recorded",
        "records": [_record_json(r.t, r.wall, record_fields(r.record)) for r in result.records],
        "summary": [s.as_json() for s in summarize(result)],
    }
    out.write(json.dumps(doc, indent=1) + "\n")


def run_replay(settings: Settings, trace: Path, as_json: bool, out: TextIO, err: TextIO) -> int:
    """Replay ``trace`` with ``settings`` and print the records and the summary; the exit code."""
    try:
        result = replay_trace(trace, settings)
    except TraceError as exc:
        err.write(f"remediator: replay: {exc}\n")
        return EXIT_FAILED
    if result.truncation is not None:
        err.write(
            f"remediator: replay: {trace}:{result.truncation.line}: {result.truncation.reason.value}; "
            "replayed up to the last complete record\n"
        )
    for cgroup in result.unrecorded_targets:
        err.write(
            f"remediator: replay: {cgroup} is selected by a policy but not in the trace (only as an "
            "ancestor of a recorded cgroup): replayed as idle\n"
        )
    policies = policy_comparison(result.header, settings.policies_dir)
    if as_json:
        _write_json(out, trace, result, policies, settings.policies_dir)
        return EXIT_OK
    lines = _introduction(trace, result, policies, settings.policies_dir)
    lines.append("")
    for timed in result.records:
        record = timed.record
        line = format_stderr_line(timed.wall, record.effective_priority, record_fields(record))
        lines.append(f"{_seconds(timed.t):>9} {line}")
    lines.append("")
    lines.extend(summary_lines(summarize(result)))
    out.write("\n".join(lines) + "\n")
    return EXIT_OK


__all__ = ["run_replay", "policy_comparison", "summary_lines"]
