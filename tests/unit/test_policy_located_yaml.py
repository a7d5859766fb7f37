"""The strict, located YAML layer under policies and settings."""

from __future__ import annotations

from typing import Any, List, Tuple

import pytest

from remediator.located.issues import PolicyIssue, format_key_path
from remediator.located.yaml_doc import (
    LocatedDocument,
    Position,
    decode_utf8,
    parse_located_yaml,
)


def parse(text: str) -> Tuple[LocatedDocument, List[str]]:
    document, issues = parse_located_yaml(text, "t.yaml")
    return document, [str(issue) for issue in issues]


def value_of(scalar: str) -> Any:
    document, issues = parse(f"v: {scalar}\n")
    assert issues == []
    return document.value["v"]


def test_issue_string_is_file_line_column_key_message() -> None:
    issue = PolicyIssue("policies.d/web.yaml", 14, 7, "actions[1].fraction", "must be <= 1 (got 1.5)")

    assert str(issue) == "policies.d/web.yaml:14:7: actions[1].fraction: must be <= 1 (got 1.5)"


def test_issue_without_position_leaves_line_and_column_out() -> None:
    issue = PolicyIssue(
        "env:REMEDIATOR_DRY_RUN", None, None, "dry_run", "must be true or false (got 'maybe')"
    )

    assert str(issue) == "env:REMEDIATOR_DRY_RUN: dry_run: must be true or false (got 'maybe')"


def test_key_paths_use_dots_for_keys_and_brackets_for_items() -> None:
    assert format_key_path(("actions", 1, "fraction")) == "actions[1].fraction"
    assert format_key_path(("target", "include", 0)) == "target.include[0]"
    assert format_key_path(()) == "(document)"


@pytest.mark.parametrize(("scalar", "expected"), [("true", True), ("false", False)])
def test_plain_true_and_false_are_booleans(scalar: str, expected: bool) -> None:
    assert value_of(scalar) is expected


@pytest.mark.parametrize("scalar", ["", "~", "null"])
def test_plain_null_forms_are_none(scalar: str) -> None:
    assert value_of(scalar) is None


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [
        ("0", 0),
        ("-5", -5),
        ("+3", 3),
        ("2000", 2000),
        ("1.5", 1.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("1.0e-05", 1e-05),
    ],
)
def test_plain_decimal_numbers_are_numbers(scalar: str, expected: float) -> None:
    value = value_of(scalar)

    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("scalar", ["'yes'", '"0755"', "'true'", '"1.5"', "'null'", "|\n  on\n"])
def test_quoted_and_block_scalars_are_strings(scalar: str) -> None:
    assert isinstance(value_of(scalar), str)


@pytest.mark.parametrize("scalar", ["16Mi", "system.slice/*.service", "kubepods/**/pod*/*", "some", "a b"])
def test_other_plain_scalars_are_strings(scalar: str) -> None:
    assert value_of(scalar) == scalar


@pytest.mark.parametrize(
    ("scalar", "meaning"),
    [("yes", "true"), ("No", "false"), ("ON", "true"), ("off", "false"), ("y", "true"), ("N", "false")],
)
def test_yaml11_booleans_are_refused_in_any_case(scalar: str, meaning: str) -> None:
    _, issues = parse(f"v: {scalar}\n")

    assert issues == [
        f"t.yaml:1:4: v: {scalar!r} is ambiguous in YAML 1.1 (read as {meaning}): write {meaning}, "
        "or quote it if a string is meant"
    ]


def test_capitalised_true_is_refused_rather_than_guessed() -> None:
    _, issues = parse("v: True\n")

    assert len(issues) == 1
    assert "write true" in issues[0]


def test_leading_zero_is_refused_with_the_octal_value_yaml11_would_read() -> None:
    _, issues = parse("mode: 0755\n")

    assert issues == ["t.yaml:1:7: mode: leading zero: write 493 or '0755'"]


@pytest.mark.parametrize("scalar", ["0x1f", "0o17", "1_000", "1:30", ".inf", "-.Inf", ".nan", "00.5", "089"])
def test_numbers_yaml11_reads_differently_are_refused(scalar: str) -> None:
    _, issues = parse(f"v: {scalar}\n")

    assert len(issues) == 1
    assert issues[0].startswith("t.yaml:1:4: v: ")


def test_positions_are_one_based_for_every_key_and_item() -> None:
    document, _ = parse("a:\n  b: 1\n  c:\n    - x\n    - y\n")

    assert document.positions[("a",)] == Position(1, 1)
    assert document.positions[("a", "b")] == Position(2, 3)
    assert document.positions[("a", "c", 0)] == Position(4, 7)
    assert document.positions[("a", "c", 1)] == Position(5, 7)


def test_a_missing_key_is_located_at_the_mapping_that_should_hold_it() -> None:
    document, _ = parse("x: 1\ntrigger:\n  stall_ms: 5\n")

    assert document.position_of(("trigger", "window_ms")) == Position(2, 1)
    assert document.issue(("trigger", "window_ms"), "required").line == 2


def test_duplicate_key_is_reported_at_the_second_and_the_first_value_stays() -> None:
    document, issues = parse("a: 1\nb: 2\na: 3\n")

    assert issues == ["t.yaml:3:1: a: duplicate key (first at line 1)"]
    assert document.value == {"a": 1, "b": 2}


def test_every_problem_is_collected_not_only_the_first() -> None:
    _, issues = parse("a: yes\nb: 0755\nc: &x 1\nd: *x\ne: !!str 1\n")

    assert [issue.split(": ")[1] for issue in issues] == ["a", "b", "c", "d", "e"]


def test_keys_must_be_strings() -> None:
    document, issues = parse("1: a\nnull: b\n'2': c\n")

    assert issues == [
        "t.yaml:1:1: 1: keys must be strings: quote it ('1')",
        "t.yaml:2:1: null: keys must be strings: quote it ('null')",
    ]
    assert document.value == {"2": "c"}


def test_merge_keys_are_refused() -> None:
    _, issues = parse("base: {a: 1}\nother:\n  <<: {a: 2}\n")

    assert issues == ["t.yaml:3:3: other.<<: merge keys (<<) are not supported: write the keys out"]


def test_a_recursive_alias_is_reported_without_looping() -> None:
    document, issues = parse("a: &x [*x]\n")

    assert len(issues) == 2
    assert document.value == {"a": [None]}


def test_a_second_document_is_refused() -> None:
    _, issues = parse("a: 1\n---\nb: 2\n")

    assert issues == ["t.yaml:2:1: (document): only one YAML document per file (remove the second '---')"]


def test_an_explicit_start_and_end_marker_is_one_document() -> None:
    document, issues = parse("---\na: 1\n...\n")

    assert issues == []
    assert document.value == {"a": 1}


def test_deep_nesting_is_an_issue_not_a_crash() -> None:
    _, issues = parse("a: " + "[" * 3000 + "]" * 3000 + "\n")

    assert len(issues) == 1


def test_a_document_of_only_comments_has_no_value_and_no_issue() -> None:
    document, issues = parse("# nothing here\n")

    assert document.value is None
    assert issues == []


def test_invalid_utf8_is_located_at_the_first_bad_byte() -> None:
    text, issues = decode_utf8(b"a: 1\nb: caf\xe9\n", "t.yaml")

    assert text is None
    assert [str(issue) for issue in issues] == ["t.yaml:2:7: (file): not valid UTF-8 (byte e9)"]
