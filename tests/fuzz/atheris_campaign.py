"""Coverage-guided fuzzing of every target with atheris (libFuzzer for Python).

    python -m tests.fuzz.atheris_campaign --runs 10000 --work /tmp/fuzz --out /tmp/atheris.json

atheris is not a project dependency (it is a 35 MB wheel with libFuzzer in
it, needed only here): the campaign installs it into a cache directory
outside the repository (``--tools``, default ``~/.cache/remediator/fuzz-tools``)
and runs each target in its own process with that directory on PYTHONPATH.
``remediator`` is instrumented for coverage; the seeds in ``corpus/<target>``
start each run and the inputs libFuzzer finds interesting accumulate in the
work directory, as do crash artifacts (``crash-<sha1>``), which the campaign
reports as findings.

One target's process: ``python -m tests.fuzz.atheris_campaign --one TARGET --
<libFuzzer flags> <corpus dirs>``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
ATHERIS_REQUIREMENT = "atheris==3.0.0"
DEFAULT_TOOLS = (
    Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "remediator" / "fuzz-tools"
)
# libFuzzer's per-input limit: an input slower than this is reported as a hang (timeout).
TIMEOUT_SEC = 10


@dataclass
class AtherisRun:
    target: str
    engine: str = "atheris"
    inputs: int = 0
    findings: List[str] = field(default_factory=list)
    hangs: int = 0
    corpus_size: int = 0
    coverage: int = 0
    exit_code: Optional[int] = None
    elapsed_sec: float = 0.0

    def summary(self) -> Dict[str, object]:
        out = asdict(self)
        out["distinct_findings"] = len(self.findings)
        return out


def ensure_atheris(tools: Path) -> Optional[str]:
    """The directory to put on PYTHONPATH for atheris, installing it there if needed; None if
    it cannot be had here (no wheel for this Python, no index reachable)."""
    if (tools / "atheris").is_dir():
        return str(tools)
    tools.mkdir(parents=True, exist_ok=True)
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
         "--only-binary=:all:", "--target", str(tools), ATHERIS_REQUIREMENT],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if install.returncode != 0:
        sys.stderr.write(f"atheris unavailable: {install.stderr.strip()[-500:]}\n")
        return None
    return str(tools)


_DONE = re.compile(r"Done (\d+) runs in")
_EXECUTED = re.compile(r"stat::number_of_executed_units:\s*(\d+)")
_COVERAGE = re.compile(r"cov: (\d+)")
_CORPUS = re.compile(r"corp: (\d+)/")
_FINDING_LINES = (
    "=== Uncaught Python exception",
    "==ERROR",
    "tests.fuzz.targets.FuzzFinding:",
    "FuzzFinding:",
)


def _parse_output(run: AtherisRun, output: str) -> None:
    executed = _EXECUTED.findall(output) or _DONE.findall(output)
    run.inputs = int(executed[-1]) if executed else 0
    coverage = _COVERAGE.findall(output)
    run.coverage = int(coverage[-1]) if coverage else 0
    corpus = _CORPUS.findall(output)
    run.corpus_size = int(corpus[-1]) if corpus else 0
    for line in output.splitlines():
        if "ALARM: working on the last Unit for" in line or "ERROR: libFuzzer: timeout" in line:
            run.hangs += 1
        elif line.startswith(_FINDING_LINES):
            run.findings.append(line.strip())


def write_dictionary(path: Path) -> Path:
    """libFuzzer's dictionary: the formats' own tokens and the hostile values of the Hypothesis
    strategies, so that mutations splice in "avg10=", "max" or a 5000-digit number."""
    from tests.fuzz.strategies import NAME_PIECES, NUMBERS, WORDS, YAML_EDGES

    def quoted(token: str) -> str:
        raw = token.encode("utf-8", "surrogateescape")
        return (
            '"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02x}" for b in raw) + '"'
        )

    tokens = sorted({t for t in (*WORDS, *NUMBERS, *YAML_EDGES, *NAME_PIECES) if t and len(t) < 200})
    path.write_text("".join(quoted(t) + "\n" for t in tokens))
    return path


def fuzz_target(name: str, runs: int, work: Path, tools: str, max_total_time: int) -> AtherisRun:
    target_work = work / name
    found = target_work / "corpus"
    found.mkdir(parents=True, exist_ok=True)
    artifacts = target_work / "artifacts"
    artifacts.mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([tools, str(REPO)]))
    argv = [
        sys.executable, "-m", "tests.fuzz.atheris_campaign", "--one", name, "--",
        f"-runs={runs}", f"-max_total_time={max_total_time}", f"-timeout={TIMEOUT_SEC}",
        "-rss_limit_mb=2048", "-print_final_stats=1", f"-artifact_prefix={artifacts}/", "-max_len=16384",
        "-len_control=0",
        f"-dict={write_dictionary(target_work / 'tokens.dict')}",
        str(found), str(CORPUS / name),
    ]  # fmt: skip
    started = os.times().elapsed
    completed = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    run = AtherisRun(name, exit_code=completed.returncode, elapsed_sec=round(os.times().elapsed - started, 1))
    output = completed.stdout + completed.stderr
    (target_work / "output.log").write_text(output)
    _parse_output(run, output)
    if completed.returncode != 0 and not run.findings and not run.hangs:
        run.findings.append(f"exit code {completed.returncode}: {output.strip()[-300:]}")
    return run


def _one(name: str, libfuzzer_args: List[str]) -> None:
    """Inside the per-target process: instrument remediator, hand the target to libFuzzer."""
    import atheris  # type: ignore[import-untyped, import-not-found, unused-ignore]

    with atheris.instrument_imports(include=["remediator"]):
        from tests.fuzz import targets

    def test_one_input(data: bytes) -> None:
        targets.run_target(name, data)

    atheris.Setup([sys.argv[0], *libfuzzer_args], test_one_input)
    atheris.Fuzz()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--one", metavar="TARGET", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=10_000, help="inputs per target (default 10000)")
    parser.add_argument("--max-total-time", type=int, default=900, help="seconds per target at most")
    parser.add_argument("--targets", default="", help="comma-separated target names (default: all)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/remediator-fuzz"), help="work directory")
    parser.add_argument("--tools", type=Path, default=DEFAULT_TOOLS, help="where atheris is installed")
    parser.add_argument("--out", type=Path, help="JSON summary to write")
    args, rest = parser.parse_known_args(argv)
    if args.one:
        _one(args.one, [a for a in rest if a != "--"])
        return 0
    from tests.fuzz.targets import TARGETS

    tools = ensure_atheris(args.tools)
    if tools is None:
        if args.out is not None:
            args.out.write_text(json.dumps({"unavailable": True}) + "\n")
        return 2
    names = args.targets.split(",") if args.targets else list(TARGETS)
    runs = []
    for name in names:
        run = fuzz_target(name, args.runs, args.work, tools, args.max_total_time)
        runs.append(run)
        print(
            f"{name}: {run.inputs} inputs, coverage {run.coverage}, corpus {run.corpus_size}, "
            f"{len(run.findings)} findings, {run.hangs} hangs, {run.elapsed_sec:.1f}s",
            flush=True,
        )
        for finding in run.findings:
            print(f"  FINDING: {finding}", flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps([run.summary() for run in runs], indent=2) + "\n")
    return 1 if any(run.findings or run.hangs for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
