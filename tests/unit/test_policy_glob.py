"""Cgroup globs: the documented semantics, on small inputs and on a tenant's deep tree (issue 12, item 5).

The compiled matcher has two ways of matching (one regular expression for the
usual globs, a pass over positions for a ``**`` glued to other characters);
both are checked against the plain reference of tests/fuzz/glob_reference.py.
How fast a deep tree is matched is measured by tests/unit/test_bench_glob.py
and the reliability campaign, not asserted here.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediator.policy.compiled import (
    CgroupSelector,
    _glob_tokens,
    _match_positions,
    _position_steps,
    compile_glob,
)
from remediator.policy.models import check_cgroup_glob
from tests.fuzz.glob_reference import reference_match

PIECES = ["a", "b", "d", "/", "*", "**", "**/", "?", "[ab]", "[!a]", "[^b]", "[a-c]", "[", "]", "."]
globs = st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join)
components = st.text(alphabet="abcd[].", min_size=1, max_size=4)
cgroup_names = st.lists(components, min_size=1, max_size=6).map("/".join)
# Not cgroup names (empty components, a leading or trailing "/"): the matcher agrees there too.
any_strings = st.text(alphabet="ab/", max_size=8)

DEEP = 1000


def deep(depth: int, last: str = "d") -> str:
    return "/".join(["d"] * (depth - 1) + [last])


def positions_match(pattern: str, name: str) -> bool:
    """The pass over positions, whatever the glob (the matcher picks it only for glued ``**``)."""
    return _match_positions(_position_steps(_glob_tokens(pattern)), name)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(globs, cgroup_names | any_strings)
def test_compiled_glob_matches_exactly_what_the_reference_matches(pattern: str, name: str) -> None:
    try:
        glob = compile_glob(pattern)
    except re.error:  # "[]", "[!]", "[z-a]": refused by the policy validator too
        with pytest.raises(ValueError):
            check_cgroup_glob(pattern)
        return

    expected = reference_match(pattern, name)

    assert glob.matches(name) == expected
    assert positions_match(pattern, name) == expected


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("**/**/**/x", deep(DEEP, "x"), True),
        ("**/**/**/x", deep(DEEP), False),
        ("**/d/**/d/**/x", deep(DEEP, "x"), True),
        ("**/d/**/d/**/x", deep(DEEP), False),
        ("**/*d*d*d*x", deep(DEEP, "d" * 254 + "x"), True),
        ("**/*d*d*d*x", deep(DEEP, "d" * 255), False),
        ("d**/**d/**x", deep(DEEP, "x"), True),
        ("d**/**d/**x", deep(DEEP), False),
        ("d/**", deep(DEEP), True),
    ],
    ids=[
        "globstars-hit",
        "globstars-miss",
        "segments-hit",
        "segments-miss",
        "stars-hit",
        "stars-miss",
        "glued-hit",
        "glued-miss",
        "trailing",
    ],
)
def test_a_thousand_deep_tree_is_matched_as_the_globs_say(pattern: str, name: str, expected: bool) -> None:
    # The probe: "**/**/**/x" against d/d/d/... took over 120 s at this depth.
    assert compile_glob(pattern).matches(name) is expected
    assert positions_match(pattern, name) is expected


def test_runs_of_globstars_select_what_one_globstar_selects() -> None:
    many = CgroupSelector(include=("**/**/**/*.service", "a/**/**/**"))
    one = CgroupSelector(include=("**/*.service", "a/**"))
    names = ["x.service", "a/b/x.service", "a", "a/b", "a/b/c", "b/c", "x.scope"]

    assert [many.matches(n) for n in names] == [one.matches(n) for n in names]
    assert [one.matches(n) for n in names] == [True, True, False, True, True, False, False]


def test_a_character_class_never_matches_a_slash() -> None:
    # Before: "[!x]" became the regex "[^x]" and "[+-0]" a range holding "/", so both
    # joined two components; the validator has always said a class cannot match "/".
    assert not compile_glob("a[!x]b").matches("a/b")
    assert not compile_glob("a[+-0]b").matches("a/b")
    assert compile_glob("a[+-0]b").matches("a.b")


def test_a_glob_with_globstar_glued_to_text_keeps_its_meaning() -> None:
    # "**" not followed by "/" is any characters, "/" included (as before).
    glob = compile_glob("**.scope")

    assert glob.matches("machine.slice/a/b.scope")
    assert glob.matches(".scope")
    assert not glob.matches("machine.slice/b.service")
