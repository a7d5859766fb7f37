"""The fuzz campaign's short version, run by CI: the corpus of worst cases, the crashes the campaign
found (each pinned by name), and a few generated inputs per target.

The full campaign (>= 10,000 inputs per target and engine) is ``make reliability``; see
tests/fuzz/ and bench/reliability/.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import pytest

from remediator.errors import KernelParseError
from remediator.kernel.capabilities import parse_kernel_version
from remediator.kernel.memory_stat import parse_memory_stat
from remediator.kernel.psi import parse_pressure
from remediator.policy.loader import load_policy_text
from tests.fuzz.hypothesis_campaign import fuzz_target
from tests.fuzz.targets import TARGETS, run_target

CORPUS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus"
BIG = "9" * 5000


def corpus_files() -> List[Tuple[str, Path]]:
    return [(target, path) for target in TARGETS for path in sorted((CORPUS / target).iterdir())]


def test_every_target_has_a_corpus_with_seeds() -> None:
    for target in TARGETS:
        assert sorted((CORPUS / target).glob("seed-*")), f"no seeds for {target}"


@pytest.mark.parametrize(
    ("target", "path"), corpus_files(), ids=lambda v: v if isinstance(v, str) else v.name
)
def test_corpus_input_is_accepted_or_rejected_with_a_located_error(target: str, path: Path) -> None:
    # run_target raises FuzzFinding on a crash, an unlocated rejection or a broken invariant.
    run_target(target, path.read_bytes())


def test_seeds_of_kernel_files_are_accepted() -> None:
    for target in ("psi", "memory_stat", "memory_events", "meminfo", "single_values"):
        for path in sorted((CORPUS / target).glob("seed-*")):
            assert run_target(target, path.read_bytes()).accepted, path


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_generated_inputs_find_nothing(target: str) -> None:
    run = fuzz_target(target, budget=30)

    assert run.inputs == 30
    assert run.findings == []


# ---- what the campaign found, pinned by name ----------------------------------------------


def test_a_counter_of_5000_digits_is_a_parse_error_not_a_crash() -> None:
    # int() refuses more than 4300 digits with ValueError, which no caller expected.
    with pytest.raises(KernelParseError, match="more than a 64-bit counter holds"):
        parse_memory_stat(f"anon {BIG}\n", "memory.stat")


def test_a_percentage_that_overflows_to_infinity_is_a_parse_error() -> None:
    with pytest.raises(KernelParseError, match="not a percentage"):
        parse_pressure("some avg10=1" + "0" * 400 + ".00 avg60=0.00 avg300=0.00 total=0\n", "memory.pressure")


def test_a_kernel_release_of_5000_digits_is_unrecognised_not_a_crash() -> None:
    assert parse_kernel_version(BIG + ".1.0-amd64") is None
    assert parse_kernel_version("6.1.0-18-amd64") == (6, 1)


def test_a_policy_integer_of_5000_digits_is_a_located_issue_not_a_crash() -> None:
    text = f'target: {{kind: cgroups, include: ["a/*"]}}\ntrigger: {{pressure: full, stall_ms: {BIG}}}\n'

    policy, issues = load_policy_text(text, "policies.d/x.yaml", "x")

    assert policy is None
    assert any(
        str(issue).startswith("policies.d/x.yaml:2:") and "5000 digits" in str(issue) for issue in issues
    )
