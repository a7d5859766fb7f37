"""Fuzz targets: every parser of untrusted input, with the contract each one must keep.

A target takes raw bytes (what a kernel file, a policy, a settings file or
the state file could hold) and returns a ``Verdict``: accepted, or rejected
with a *located* error (the file it names, and for YAML the line and column).
Anything else is a finding and raises ``FuzzFinding``:

- an exception other than the parser's documented one (a crash: the daemon
  would die on that input);
- a rejection that does not say where (an operator could not fix it);
- an accepted value that breaks an invariant the rest of the program relies
  on (a negative counter, a cgroup name that escapes the root, ...).

Hangs are the campaign runner's business (it times every input); the targets
themselves do no timing. Both engines (Hypothesis and atheris) and the CI
corpus test use these same functions.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional

from remediator.daemon.confined_io import CgroupFile, ConfinedIO, WriteNotAllowed
from remediator.daemon.state_schema import KIND_MEMORY_HIGH, MAX_LIMIT_BYTES, OWNABLE_SYSCTLS
from remediator.daemon.state_store import StateStore
from remediator.errors import KernelError, KernelParseError
from remediator.kernel.capabilities import parse_cap_sys_resource, parse_kernel_version, parse_mounts
from remediator.kernel.meminfo import parse_meminfo
from remediator.kernel.memory_events import parse_memory_events
from remediator.kernel.memory_limits import parse_bytes, parse_limit, parse_protection
from remediator.kernel.memory_stat import parse_memory_stat
from remediator.kernel.psi import parse_pressure
from remediator.kernel.roots import InvalidCgroupName, KernelRoots, normalize_cgroup
from remediator.kernel.sysctl_vm import parse_sysctl_int
from remediator.located.issues import PolicyIssue
from remediator.located.yaml_doc import decode_utf8
from remediator.policy.compiled import CgroupSelector, compile_glob
from remediator.policy.loader import load_policy_text
from remediator.policy.models import check_cgroup_glob
from remediator.records import RecordType
from remediator.settings import read_settings_file
from tests.fuzz.glob_reference import SMALL as GLOB_REFERENCE_SMALL
from tests.fuzz.glob_reference import reference_match

# The name a rejection must carry: what a kernel reader passes as ``source``.
SOURCE = "/fuzz/kernel-file"
POLICY_FILE = "policies.d/fuzz.yaml"
FAKE_ROOT = Path("/fuzz-cgroup-root")


class FuzzFinding(AssertionError):
    """The input made a parser break its contract (crash, unlocated rejection, broken invariant)."""


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    # For a rejection: the located message, as an operator would see it.
    where: str = ""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise FuzzFinding(message)


def _decode_kernel(data: bytes) -> str:
    # As remediator.kernel.file_io.read_text decodes what it reads.
    return data.decode("utf-8", errors="surrogateescape")


def _kernel_rejection(exc: KernelParseError) -> Verdict:
    require(exc.path == SOURCE, f"rejection names {exc.path!r}, not the file read")
    require(bool(exc.message.strip()), "rejection without a message")
    return Verdict(False, str(exc))


def _non_negative(values: Iterable[int], what: str) -> None:
    for value in values:
        require(isinstance(value, int) and value >= 0, f"{what}: accepted {value!r}")


def _finite_percent(value: float, what: str) -> None:
    require(math.isfinite(value) and value >= 0, f"{what}: accepted {value!r}")


# ---- kernel files ----------------------------------------------------------------------


def psi(data: bytes) -> Verdict:
    try:
        pressure = parse_pressure(_decode_kernel(data), SOURCE)
    except KernelParseError as exc:
        return _kernel_rejection(exc)
    for kind in ("some", "full"):
        line = pressure.line(kind)
        if line is None:
            continue
        for name in ("avg10", "avg60", "avg300"):
            _finite_percent(getattr(line, name), f"{kind} {name}")
        _non_negative([line.total_us], f"{kind} total")
    return Verdict(True)


def memory_stat(data: bytes) -> Verdict:
    try:
        stat = parse_memory_stat(_decode_kernel(data), SOURCE)
    except KernelParseError as exc:
        return _kernel_rejection(exc)
    _non_negative(stat.values.values(), "memory.stat value")
    return Verdict(True)


def memory_events(data: bytes) -> Verdict:
    try:
        events = parse_memory_events(_decode_kernel(data), SOURCE)
    except KernelParseError as exc:
        return _kernel_rejection(exc)
    counters = [events.low, events.high, events.max, events.oom, events.oom_kill, events.oom_group_kill]
    _non_negative([*counters, *events.other.values()], "memory.events counter")
    return Verdict(True)


def meminfo(data: bytes) -> Verdict:
    try:
        info = parse_meminfo(_decode_kernel(data), SOURCE)
    except KernelParseError as exc:
        return _kernel_rejection(exc)
    _non_negative(info.values.values(), "meminfo value")
    # The properties the node snapshot uses must never fail once parsing succeeded.
    _non_negative(
        [info.mem_total_bytes, info.mem_available_bytes, info.swap_total_bytes, info.swap_free_bytes,
         info.slab_reclaimable_bytes],
        "meminfo field",
    )  # fmt: skip
    return Verdict(True)


def single_values(data: bytes) -> Verdict:
    """memory.current/max/high/min/low/swap.max and vm sysctls: one number (or ``max``) per file."""
    text = _decode_kernel(data)
    accepted = False
    rejection = ""
    for parse in (parse_limit, parse_bytes, parse_protection, parse_sysctl_int):
        try:
            value = parse(text, SOURCE)
        except KernelParseError as exc:
            rejection = _kernel_rejection(exc).where
            continue
        accepted = True
        if value is not None:
            _non_negative([value], parse.__name__)
    return Verdict(True) if accepted else Verdict(False, rejection)


def capabilities(data: bytes) -> Verdict:
    """/proc/self/mounts, the kernel release and /proc/self/status as the capability probe reads them."""
    text = _decode_kernel(data)
    try:
        mounts = parse_mounts(text, SOURCE)
    except KernelParseError as exc:
        verdict = _kernel_rejection(exc)
    else:
        for mount in mounts:
            require(bool(mount.fstype), "mount without a file system type")
        verdict = Verdict(True)
    version = parse_kernel_version(text)
    require(version is None or all(part >= 0 for part in version), f"kernel version {version!r}")
    parse_cap_sys_resource(text)
    return verdict


# ---- cgroup names and paths -------------------------------------------------------------


def cgroup_name(data: bytes) -> Verdict:
    """A cgroup name from a walk, a record, /proc/<pid>/cgroup or the state file."""
    text = _decode_kernel(data)
    try:
        name = normalize_cgroup(text)
    except InvalidCgroupName as exc:
        require(bool(str(exc)), "rejection without a message")
        return Verdict(False, str(exc))
    require(normalize_cgroup(name) == name, f"not idempotent: {text!r} -> {name!r}")
    parts = name.split("/") if name else []
    require(all(p not in ("", ".", "..") for p in parts), f"escaping component in {name!r}")
    require("\n" not in name and "\0" not in name, f"control character kept in {name!r}")
    roots = KernelRoots(cgroup_root=FAKE_ROOT, proc_root=Path("/fuzz-proc"))
    directory = os.path.normpath(roots.cgroup_dir(name))
    require(directory == str(FAKE_ROOT) or directory.startswith(f"{FAKE_ROOT}/"), f"{name!r} -> {directory}")
    try:
        # The writer must agree that the name is valid: it gets as far as the
        # (missing) root, and fails there, not on the name.
        ConfinedIO(roots).write(CgroupFile(text, "memory.high"), b"")
    except WriteNotAllowed as exc:
        raise FuzzFinding(f"normalize_cgroup accepted {text!r} but the writer refuses it: {exc}") from exc
    except KernelError:
        pass
    return Verdict(True)


def cgroup_glob(data: bytes) -> Verdict:
    """A policy's cgroup glob (first line) and a cgroup name (the rest) to match it against.

    The validator refuses the glob with a message, or the compiled glob matches the name as the
    plain reference matcher of tests/fuzz/glob_reference.py does (on inputs small enough for it).
    Time is the campaign runner's: matching must stay linear in the name, so a deep name a tenant
    made cannot hang discovery (issue 12: ``**/**/**/x`` against ``d/d/d/...`` took minutes).
    """
    pattern, _, name = _decode_kernel(data).partition("\n")
    try:
        check_cgroup_glob(pattern)
    except ValueError as exc:
        require(bool(str(exc)), "rejection without a message")
        return Verdict(False, str(exc))
    matched = compile_glob(pattern).matches(name)
    require(CgroupSelector(include=(pattern,)).matches(name) is matched, "the selector and its glob disagree")
    if len(pattern) + len(name) <= GLOB_REFERENCE_SMALL:
        expected = reference_match(pattern, name)
        require(matched is expected, f"{pattern!r} against {name!r}: {matched}; the reference: {expected}")
    return Verdict(True)


# ---- YAML files -----------------------------------------------------------------------------


def _located(issues: List[PolicyIssue], file: str) -> str:
    require(bool(issues), "rejected without an issue")
    for issue in issues:
        require(issue.file == file, f"issue names {issue.file!r}, not {file!r}")
        require(
            issue.line is not None and issue.column is not None and issue.line >= 1 and issue.column >= 1,
            f"issue without a position: {issue}",
        )
        require(bool(issue.message.strip()), f"issue without a message: {issue}")
    return "\n".join(str(issue) for issue in issues)


def policy(data: bytes) -> Verdict:
    text, issues = decode_utf8(data, POLICY_FILE)
    if text is None:
        return Verdict(False, _located(issues, POLICY_FILE))
    compiled, issues = load_policy_text(text, POLICY_FILE, "fuzz")
    if compiled is None:
        return Verdict(False, _located(issues, POLICY_FILE))
    require(issues == [], "a policy was returned together with issues")
    trigger = compiled.trigger
    require(0 < trigger.stall_us <= trigger.window_us, f"trigger {trigger}")
    require(len(compiled.ladder) >= 1, "a policy without actions")
    return Verdict(True)


class _Scratch:
    """A private directory for the file-backed targets, made once per process."""

    _path: Optional[Path] = None

    @classmethod
    def path(cls) -> Path:
        if cls._path is None:
            cls._path = Path(tempfile.mkdtemp(prefix="remediator-fuzz-"))
            cls._path.chmod(0o700)
        return cls._path


def settings_file(data: bytes) -> Verdict:
    path = _Scratch.path() / "remediator.yaml"
    path.write_bytes(data)
    path.chmod(0o644)
    _values, issues = read_settings_file(path, explicit=True)
    if issues:
        return Verdict(False, _located(issues, str(path)))
    return Verdict(True)


def state_file(data: bytes) -> Verdict:
    directory = _Scratch.path() / "state"
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / "state.json"
    path.write_bytes(data)
    path.chmod(0o600)
    store = StateStore.read_only(path)
    records = store.load()
    if records:
        require([r.type for r in records] == [RecordType.STATE_QUARANTINED], f"records {records}")
        require(store.entries() == (), "a quarantined file left entries behind")
        require(str(path) in records[0].message, "quarantine record does not name the file")
        return Verdict(False, records[0].message)
    for owned in store.entries():
        if owned.kind == KIND_MEMORY_HIGH:
            require(bool(owned.name) and normalize_cgroup(owned.name) == owned.name, f"cgroup {owned.name!r}")
            for value in (owned.original, owned.ours):
                require(value is None or 0 <= value <= MAX_LIMIT_BYTES, f"limit {value!r}")
        else:
            require(owned.name in OWNABLE_SYSCTLS, f"sysctl {owned.name!r}")
    return Verdict(True)


Target = Callable[[bytes], Verdict]

TARGETS: Dict[str, Target] = {
    "psi": psi,
    "memory_stat": memory_stat,
    "memory_events": memory_events,
    "meminfo": meminfo,
    "single_values": single_values,
    "capabilities": capabilities,
    "cgroup_name": cgroup_name,
    "cgroup_glob": cgroup_glob,
    "policy": policy,
    "settings": settings_file,
    "state_file": state_file,
}


def run_target(name: str, data: bytes) -> Verdict:
    """Run one input; any exception other than ``FuzzFinding`` is a crash, reported as a finding."""
    try:
        return TARGETS[name](data)
    except FuzzFinding:
        raise
    except RecursionError as exc:
        raise FuzzFinding(f"crash: RecursionError: {exc}") from exc
    except Exception as exc:
        raise FuzzFinding(f"crash: {type(exc).__name__}: {exc}") from exc
