"""One escaping for every human output: no control, separator or bidi character survives it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from remediator.text import UNSAFE, escape_name, escape_text, plural

# Every character issue 12 names as unsafe for a terminal or a line-oriented reader.
UNSAFE_SAMPLES = [
    *map(chr, range(0x20)),
    "\x7f",
    *map(chr, range(0x80, 0xA0)),  # C1, the 8-bit CSI 0x9b and NEL 0x85 among them
    "\u2028",
    "\u2029",
    "\u061c",
    "\u200e",
    "\u200f",
    *map(chr, range(0x202A, 0x202F)),
    *map(chr, range(0x2066, 0x206A)),
    "\udc9b",  # the byte 0x9b of a name that is not UTF-8, as os.fsdecode gives it
]

# Text with the unsafe characters well represented (plain st.text() would rarely draw them).
hostile_text = st.text(
    alphabet=st.one_of(st.sampled_from(UNSAFE_SAMPLES), st.sampled_from("\\ax|= é漢"), st.characters())
)


@given(hostile_text)
def test_escaped_text_never_contains_an_unsafe_character(text: str) -> None:
    for escaped in (escape_text(text), escape_name(text)):
        assert UNSAFE.search(escaped) is None
        for char in UNSAFE_SAMPLES:
            assert char not in escaped


@given(hostile_text)
def test_one_input_line_stays_one_output_line(text: str) -> None:
    for escaped in (escape_text(text), escape_name(text)):
        # splitlines breaks on every line boundary Python knows (LF, CR, VT, FF, FS-RS, NEL, U+2028/9).
        assert len(escaped.splitlines()) <= 1
        escaped.encode("utf-8")  # no lone surrogate left for a stream to write back as a raw byte


@given(hostile_text, hostile_text)
def test_escaping_with_backslashes_is_unambiguous(first: str, second: str) -> None:
    if first != second:
        assert escape_text(first) != escape_text(second)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("x\rSPOOFED: every cgroup healthy.service", "x\\rSPOOFED: every cgroup healthy.service"),
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("csi\x9b2J", "csi\\x9b2J"),
        ("gnp.\u202eecivres", "gnp.\\u202eecivres"),
        ("isolate\u2066x\u2069", "isolate\\u2066x\\u2069"),
        ("ls\u2028ps\u2029", "ls\\u2028ps\\u2029"),
        ("mark\u200e\u200f\u061c", "mark\\u200e\\u200f\\u061c"),
        ("raw byte \udc9b", "raw byte \\udc9b"),
        ("system-systemd\\x2dfsck.slice", "system-systemd\\x2dfsck.slice"),
        ("café/漢字.service", "café/漢字.service"),
    ],
)
def test_names_are_shown_with_their_dangerous_characters_spelled_out(raw: str, shown: str) -> None:
    assert escape_name(raw) == shown


def test_records_escape_the_backslash_and_names_keep_it() -> None:
    assert escape_text("a\\x2db") == "a\\\\x2db"
    assert escape_name("a\\x2db") == "a\\x2db"


@pytest.mark.parametrize(
    ("count", "text"), [(0, "0 policies"), (1, "1 policy"), (2, "2 policies"), (21, "21 policies")]
)
def test_counts_agree_with_their_noun(count: int, text: str) -> None:
    assert plural(count, "policy", "policies") == text
    assert plural(count, "file") == text.replace("policies", "files").replace("policy", "file")
