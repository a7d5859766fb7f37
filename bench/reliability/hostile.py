"""Hostile trees and files (issue 12): what a tenant or a careless copy can put in front of remediator.

Each case builds a fake cgroup tree (tests/fakefs.py) or a file, runs the real command line in a
child process with a time limit (a hang is a finding, and must not hang the campaign), and checks
what a user expects:

- ``deep_glob``: glob matching against 1,000-deep names (the cases of tests/unit/test_bench_glob.py,
  median of the rounds against the 50 ms bound), then ``check`` and ``run --once --dry-run`` on a
  tree ``d/d/d/...`` with the policy glob ``**/**/**/x`` (before: over 120 s at depth 1,000);
- ``escape_names``: cgroups named with ESC sequences, CR, 8-bit CSI, DEL, U+2028 and bidi controls
  through ``status --all``, ``check`` and the stderr records of ``run --once --dry-run``: no raw
  control character may reach the output, and every such cgroup is still shown;
- ``oversized_state``: a state file one byte over the loader's limit, and one just under it packed
  with entries: the daemon starts, says so in one STATE_QUARANTINED record (or loads it) in time;
- ``fifo_and_hard_link``: a FIFO in place of ``memory.stat`` (``status --all`` and the daemon used to
  hang) and a ``memory.high`` hard-linked to a file outside the tree, under an enforcing
  ``run --once`` with pressure: everything ends, and the linked file keeps its bytes.

``quick`` builds the deep tree 200 levels deep instead of 1,000 and takes fewer timing rounds.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[2]

Json = Dict[str, Any]

# A command that does not end within this is a hang (the longest honest one here takes ~2 s).
COMMAND_TIMEOUT_SEC = 60.0
# check / run --once on the deep tree: the walk of 1,000 cgroups and their files, not the globs.
DEEP_TREE_COMMAND_BOUND_SEC = 10.0
GLOB_BOUND_SEC = 0.050
STATE_QUARANTINED_ID = "463d472e3df146d7a663ddb88ffa483e"
HOSTILE_NAMES = (
    "x\rSPOOFED: every cgroup healthy.service",
    "clear\x1b[2J\x1b[H.service",
    "title\x1b]0;owned\x07.service",
    "csi\x9b31m.service",
    "del\x7f.service",
    "line\u2028break.service",
    "bidi\u202eecivres.service",
)
NODE_PRESSURE_CALM = (
    "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
)


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    # A short path: the deep tree's paths come near PATH_MAX (4096) at depth 1,000.
    directory = tempfile.mkdtemp(prefix=prefix, dir="/dev/shm" if Path("/dev/shm").is_dir() else None)
    try:
        yield Path(directory)  # mkdtemp: mode 0700, as the state directory must be (root's alone)
    finally:
        # rm, not shutil.rmtree: Python's recursion limit is below the deep tree's 1,000 levels.
        subprocess.run(["rm", "-rf", "--", directory], check=False)


def remediator(
    kernel: Any, config: Path, policies: Path, *args: str
) -> Tuple[Optional[int], str, str, float]:
    """Run the command line in a child process: (exit code or None on a hang, stdout, stderr, seconds)."""
    argv = [sys.executable, "-m", "remediator", "--cgroup-root", str(kernel.cgroup_root), "--proc-root",
            str(kernel.proc_root), "--policies", str(policies), "--config", str(config), *args]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, timeout=COMMAND_TIMEOUT_SEC, env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode("utf-8", "replace")
        return None, out, (exc.stderr or b"").decode("utf-8", "replace"), time.monotonic() - started
    seconds = time.monotonic() - started
    return (
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
        seconds,
    )


def write_policy(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(text)
    path.chmod(0o644)
    return path


def write_settings(base: Path, **values: Any) -> Path:
    path = base / "settings.yaml"
    path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in values.items()) or "{}\n")
    path.chmod(0o644)
    return path


RECLAIM_POLICY = """\
target: {{kind: cgroups, include: {include}}}
trigger: {{pressure: full, stall_ms: 100, window_ms: 2000}}
actions: [{{kind: reclaim}}]
"""


# ---- deep globs -----------------------------------------------------------------------------------


def deep_glob(quick: bool) -> Json:
    from remediator.policy.compiled import compile_glob
    from tests.fakefs import FakeKernel
    from tests.unit.test_bench_glob import CASES, deep_name

    rounds = 5 if quick else 50
    matching: List[Json] = []
    for case, pattern, miss, hit in CASES:
        glob = compile_glob(pattern)
        name = deep_name(miss)
        timings = []
        for _ in range(rounds):
            started = time.perf_counter()
            matched = glob.matches(name)
            timings.append(time.perf_counter() - started)
        median = statistics.median(timings)
        matching.append({
            "case": case, "glob": pattern, "name_chars": len(name), "rounds": rounds,
            "median_ms": round(median * 1000, 3), "max_ms": round(max(timings) * 1000, 3),
            "verdict_right": matched is False and glob.matches(deep_name(hit)) is True,
            "within_bound": median < GLOB_BOUND_SEC,
        })  # fmt: skip
    depth = 200 if quick else 1000
    commands: List[Json] = []
    with scratch("rg") as base:
        kernel = FakeKernel(base / "k")
        name = ""
        for _ in range(depth):
            name = f"{name}/d" if name else "d"
            kernel.add_cgroup(name, with_reclaim=False)
        policies = base / "policies"
        write_policy(policies, "deep", RECLAIM_POLICY.format(include='["**/**/**/x"]'))
        # And one that selects every level, so the walk is seen to reach the bottom.
        write_policy(policies, "every", RECLAIM_POLICY.format(include='["**/**/d"]'))
        config = write_settings(base, state_file=str(base / "state" / "state.json"))
        (base / "state").mkdir(mode=0o700)
        for args in (("check",), ("run", "--once", "--dry-run", "--log-target", "json")):
            code, out, err, seconds = remediator(kernel, config, policies, *args)
            commands.append({
                "command": " ".join(args), "exit_code": code, "seconds": round(seconds, 2),
                "selects_every_level": f"selects: {depth} cgroups now" in out if args == ("check",) else None,
                "within_bound": code is not None and seconds < DEEP_TREE_COMMAND_BOUND_SEC,
                "stderr_tail": err.strip()[-300:] if code not in (0, None) else "",
            })  # fmt: skip
    passed = all(m["verdict_right"] and m["within_bound"] for m in matching) and all(
        c["within_bound"] and c["exit_code"] == 0 and c["selects_every_level"] is not False for c in commands
    )
    return {"passed": passed, "glob_bound_ms": GLOB_BOUND_SEC * 1000, "matching": matching,
            "tree_depth": depth, "command_bound_sec": DEEP_TREE_COMMAND_BOUND_SEC,
            "commands": commands}  # fmt: skip


# ---- names that are terminal escapes ----------------------------------------------------------------


def _shown(hostile: str) -> str:
    """How a table shows the name: escaped, the backslash kept (see remediator.text)."""
    from remediator.text import escape_text

    return escape_text(hostile, keep_backslash=True)


def escape_names() -> Json:
    from remediator.text import UNSAFE
    from tests.fakefs import FakeKernel

    outputs: List[Json] = []
    with scratch("rg") as base:
        kernel = FakeKernel(base / "k")
        for hostile in HOSTILE_NAMES:
            kernel.add_cgroup(f"system.slice/{hostile}", current=1 << 20, max_bytes=1 << 30)
        policies = base / "policies"
        write_policy(policies, "services", RECLAIM_POLICY.format(include='["system.slice/*"]'))
        config = write_settings(base, state_file=str(base / "state" / "state.json"))
        (base / "state").mkdir(mode=0o700)
        runs: Sequence[Tuple[str, ...]] = (
            ("status", "--all"),
            ("check",),
            ("run", "--once", "--dry-run", "--log-target", "stderr"),
        )
        for args in runs:
            code, out, err, _ = remediator(kernel, config, policies, *args)
            raw = sorted(
                {f"U+{ord(c):04X}" for text in (out, err) for c in UNSAFE.findall(text.replace("\n", ""))}
            )
            # Still shown, spelled out: a name is not dropped for being hostile.
            shown = sum(1 for hostile in HOSTILE_NAMES if _shown(hostile) in out + err)
            outputs.append({"command": " ".join(args), "exit_code": code, "raw_control_characters": raw,
                            "hostile_names_shown": shown})  # fmt: skip
    passed = all(o["exit_code"] == 0 and not o["raw_control_characters"] for o in outputs)
    passed = passed and all(o["hostile_names_shown"] == len(HOSTILE_NAMES) for o in outputs[:2])
    return {"passed": passed, "names": [repr(n) for n in HOSTILE_NAMES], "outputs": outputs}


# ---- state files the loader must refuse or load in time ---------------------------------------------


def _entries_file(target_bytes: int) -> bytes:
    entry = {"kind": "memory_high", "cgroup": "", "original": "max", "ours": 3221225472, "pending": None,
             "policy": "services", "recorded_at": 1700000000.0}  # fmt: skip
    entries = []
    size = 40
    index = 0
    while True:
        item = dict(entry, cgroup=f"system.slice/app{index:07d}.service")
        encoded = len(json.dumps(item)) + 2
        if size + encoded > target_bytes:
            break
        entries.append(item)
        size += encoded
        index += 1
    return json.dumps({"schema_version": 1, "entries": entries}).encode()


def oversized_state() -> Json:
    from remediator.daemon.state_schema import MAX_STATE_FILE_BYTES
    from tests.fakefs import FakeKernel

    files = {
        "one byte over the limit": b" " * (MAX_STATE_FILE_BYTES + 1 - 2) + b"{}",
        "just under the limit, packed with entries": _entries_file(MAX_STATE_FILE_BYTES - 64),
    }
    cases: List[Json] = []
    for what, content in files.items():
        with scratch("rg") as base:
            kernel = FakeKernel(base / "k")
            kernel.add_cgroup("system.slice/app.service", current=1 << 20, max_bytes=1 << 30)
            policies = base / "policies"
            write_policy(policies, "services", RECLAIM_POLICY.format(include='["system.slice/*"]'))
            state_dir = base / "state"
            state_dir.mkdir(mode=0o700)
            state = state_dir / "state.json"
            state.write_bytes(content)
            state.chmod(0o600)
            config = write_settings(base, state_file=str(state))
            code, _out, err, seconds = remediator(kernel, config, policies, "run", "--once", "--dry-run",
                                                  "--log-target", "json")  # fmt: skip
            records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
            quarantined = [r for r in records if r.get("MESSAGE_ID") == STATE_QUARANTINED_ID]
            cases.append({
                "file": what, "bytes": len(content), "exit_code": code, "seconds": round(seconds, 2),
                "quarantine_records": len(quarantined),
                "quarantine_message": quarantined[0].get("MESSAGE", "") if quarantined else "",
            })  # fmt: skip
    over, packed = cases
    passed = (
        over["exit_code"] == 0 and over["quarantine_records"] == 1
        and "too large" in over["quarantine_message"]
        and packed["exit_code"] == 0 and packed["quarantine_records"] <= 1
        and all(c["seconds"] < DEEP_TREE_COMMAND_BOUND_SEC for c in cases)
    )  # fmt: skip
    return {"passed": passed, "limit_bytes": MAX_STATE_FILE_BYTES, "cases": cases}


# ---- FIFOs and hard links in the tree ----------------------------------------------------------------


def fifo_and_hard_link() -> Json:
    from tests.fakefs import FakeKernel

    with scratch("rg") as base:
        kernel = FakeKernel(base / "k")
        full = ("some avg10=90.00 avg60=90.00 avg300=90.00 total=900000000\n"
                "full avg10=80.00 avg60=80.00 avg300=80.00 total=800000000\n")  # fmt: skip
        kernel.add_cgroup("system.slice/fifo.service", current=1 << 20, max_bytes=1 << 30)
        kernel.add_cgroup("system.slice/link.service", current=900 << 20, max_bytes=1 << 30, pressure=full,
                          stat={"anon": 100 << 20, "file": 800 << 20, "active_file": 400 << 20,
                                "inactive_file": 400 << 20})  # fmt: skip
        kernel.add_cgroup("system.slice/seed.service", current=1 << 20, max_bytes=1 << 30)
        fifo = kernel.cgroup_root / "system.slice" / "fifo.service" / "memory.stat"
        fifo.unlink()
        os.mkfifo(fifo)
        outside = base / "outside.conf"
        # It reads as a memory.high value ("max"), so the daemon takes it for one.
        outside.write_text("max\n")
        before = outside.read_bytes()
        linked = kernel.cgroup_root / "system.slice" / "link.service" / "memory.high"
        linked.unlink()
        os.link(outside, linked)
        policies = base / "policies"
        write_policy(policies, "clamp", (
            "target: {kind: cgroups, include: [\"system.slice/*\"]}\n"
            "trigger: {pressure: full, stall_ms: 100, window_ms: 2000}\n"
            "actions: [{kind: memory_high, fraction: 0.5}]\n"
        ))  # fmt: skip
        (base / "state").mkdir(mode=0o700)
        config = write_settings(base, state_file=str(base / "state" / "state.json"))
        runs: List[Json] = []
        for args in (("status", "--all"), ("status", "system.slice/fifo.service"), ("check",),
                     ("run", "--once", "--enforce", "--log-target", "json")):  # fmt: skip
            code, out, err, seconds = remediator(kernel, config, policies, *args)
            runs.append({"command": " ".join(args), "exit_code": code, "seconds": round(seconds, 2),
                         "names_the_fifo": "FIFO" in err or "FIFO" in out,
                         "stderr_tail": err.strip()[-300:]})  # fmt: skip
        # `run --once` takes one look (no stall figure yet, so no write): the daemon's writer itself is
        # asked to write the hard-linked memory.high and to read a FIFO memory.high, as its executor
        # would (it re-reads before every write), in a child process so that a hang ends.
        fifo_high = kernel.cgroup_root / "system.slice" / "fifo.service" / "memory.high"
        fifo_high.unlink()
        os.mkfifo(fifo_high)
        writer = _writer_probe(kernel.base)
        after = outside.read_bytes()
    ended = all(r["exit_code"] is not None for r in runs) and writer.get("ended", False)
    passed = (
        ended and after == before and runs[0]["exit_code"] == 0 and runs[1]["exit_code"] == 1
        and writer.get("write_to_hard_link", "").startswith("refused")
        and writer.get("read_of_fifo", "").startswith("refused")
    )  # fmt: skip
    return {"passed": passed, "linked_file_unchanged": after == before, "runs": runs, "writer": writer}


WRITER_PROBE = """
import json, sys
from pathlib import Path
from remediator.daemon.confined_io import CgroupFile, ConfinedIO, ConfinementError
from remediator.errors import KernelError
from remediator.kernel.roots import KernelRoots

base = Path(sys.argv[1])
io = ConfinedIO(KernelRoots(cgroup_root=base / "cgroup", proc_root=base / "proc"))
out = {}
for what, call in (
    ("write_to_hard_link",
     lambda: io.write(CgroupFile("system.slice/link.service", "memory.high"), b"536870912")),
    ("read_of_fifo", lambda: io.read(CgroupFile("system.slice/fifo.service", "memory.high"))),
):
    try:
        call()
        out[what] = "done"
    except (ConfinementError, KernelError) as exc:
        out[what] = f"refused: {exc}"
print(json.dumps(out))
"""


def _writer_probe(kernel_base: Path) -> Json:
    argv = [sys.executable, "-c", WRITER_PROBE, str(kernel_base)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))  # fmt: skip
    except subprocess.TimeoutExpired:
        return {"ended": False, "hang": "the writer blocked for 20 s"}
    try:
        result: Json = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"ended": True, "error": done.stderr.strip()[-500:]}
    result["ended"] = True
    return result


def hostile_trees(quick: bool) -> Json:
    """Every case; each says whether it passed and what it saw."""
    cases: Sequence[Tuple[str, Callable[[], Json]]] = (
        ("deep_glob", lambda: deep_glob(quick)),
        ("escape_names", escape_names),
        ("oversized_state", oversized_state),
        ("fifo_and_hard_link", fifo_and_hard_link),
    )
    out: Json = {}
    for name, run in cases:
        started = time.monotonic()
        try:
            out[name] = run()
        except Exception as exc:  # a case that cannot run is a finding too, with what went wrong
            out[name] = {"passed": False, "error": f"{type(exc).__name__}: {exc}"}
        out[name]["seconds"] = round(time.monotonic() - started, 1)
    return out


if __name__ == "__main__":
    result = hostile_trees(quick="--quick" in sys.argv)
    print(json.dumps(result, indent=1, default=str))
    sys.exit(0 if all(case["passed"] for case in result.values()) else 1)
