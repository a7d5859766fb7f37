"""Micro-benchmark of cgroup-glob matching against a tenant's deep tree (issue 12, item 5).

A tenant who may create cgroups under a selected subtree can make ``d/d/d/...``
1,000 deep. Before, ``**/**/**/x`` took 1.3 s against 200 levels and over 120 s
against 1,000 (every way of splitting the name between the ``**`` was tried);
the bound is 50 ms at depth 1,000 for every case below. Each case is a glob
against the deep name it does *not* match (a miss tries the most).

Cheap by default (a few rounds, asserting the verdicts, so it can fail); the
reliability campaign (``make reliability``, bench/reliability) runs it with
more rounds (REMEDIATOR_BENCH_ROUNDS) and holds the figures to the bound.
Timing is reported, never asserted: speed belongs to the benchmark, not to a test.
"""

from __future__ import annotations

import os
from typing import Any, List, Tuple

import pytest

from remediator.policy.compiled import compile_glob

ROUNDS = int(os.environ.get("REMEDIATOR_BENCH_ROUNDS", "3"))
DEPTH = 1000
BOUND_SEC = 0.050
LONGEST_NAME = "d" * 255  # NAME_MAX: the longest component a tenant can make

# (id, glob, the deep name's last component for a miss, and for a hit): each a way the
# old translation backtracked.
CASES: List[Tuple[str, str, str, str]] = [
    ("globstar-run", "**/**/**/x", "d", "x"),  # the probe: a run of "**/"
    ("segments", "**/d/**/d/**/x", "d", "x"),  # components between "**/" (depth^3 before)
    ("stars-in-a-component", "**/*d*d*d*x", LONGEST_NAME, LONGEST_NAME[1:] + "x"),  # one long component
    ("glued-globstar", "d**/**d/**x", "d", "x"),  # "**" glued to text: the pass over positions
]


def deep_name(last: str) -> str:
    return "/".join(["d"] * (DEPTH - 1) + [last])


@pytest.mark.parametrize(("case", "pattern", "miss", "hit"), CASES, ids=[c[0] for c in CASES])
def test_bench_glob_misses_a_thousand_deep_name(
    benchmark: Any, case: str, pattern: str, miss: str, hit: str
) -> None:
    glob = compile_glob(pattern)
    name = deep_name(miss)

    matched = benchmark.pedantic(glob.matches, args=(name,), rounds=ROUNDS, iterations=1, warmup_rounds=1)

    assert matched is False
    assert glob.matches(deep_name(hit)) is True  # the same depth, ending as the glob wants
    benchmark.extra_info.update(depth=DEPTH, name_chars=len(name), bound_ms=BOUND_SEC * 1000)
