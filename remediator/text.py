"""One escaping for every line a person reads: ``status``, ``check``, errors and stderr records.

Cgroup names, policy file names and values read from kernel files are
untrusted strings: any tenant who can ``mkdir`` in a delegated subtree picks
a name. Written raw to a terminal, a name can clear the screen (ESC, or the
8-bit CSI 0x9b), return to the start of its own row and overwrite it (CR),
start a new line (LF, VT, FF, NEL, U+2028/U+2029: ``str.splitlines`` breaks on
all of them, and so do some viewers) or reverse the text around it (the bidi
controls U+202A-U+202E, U+2066-U+2069, U+200E/U+200F, U+061C). So every human
output goes through ``escape_text``, which spells each of them out
(``\\x1b``, ``\\r``, ``\\u202e``): one input line is one output line, and what
is shown is what is there.

Lone surrogates are escaped as well: a name whose bytes are not UTF-8 reaches
Python as surrogate escapes (``os.fsdecode``), which a stream with
``errors="surrogateescape"`` would write back as the raw byte (0x9b is the
8-bit CSI), and a strict stream would refuse with a traceback.

The backslash is escaped too by default, so the output is unambiguous and the
stderr records parse back to exactly their fields. Tables of names for people
(``status``, ``check``) keep it (``keep_backslash=True``): systemd spells a
``-`` inside a unit name ``\\x2d`` (``system-systemd\\x2dfsck.slice``, on
every node), and an operator copies the name from the table into
``remediator status NAME``. The price is that a name that *contains* the four
characters ``\\x1b`` looks like one that contains ESC; neither moves the
cursor.
"""

from __future__ import annotations

import re

_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}

# The characters no human output may contain raw:
#   C0 controls and DEL, C1 controls (0x80-0x9f, the 8-bit CSI 0x9b and NEL 0x85 among them);
#   U+2028 LINE SEPARATOR, U+2029 PARAGRAPH SEPARATOR;
#   the Unicode bidi controls (property Bidi_Control): U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069;
#   lone surrogates U+D800-U+DFFF (undecodable bytes, see above).
UNSAFE_CHARACTERS = "\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE = re.compile(f"[\\\\{UNSAFE_CHARACTERS}]")
_UNSAFE_KEEPING_BACKSLASH = re.compile(f"[{UNSAFE_CHARACTERS}]")
UNSAFE = re.compile(f"[{UNSAFE_CHARACTERS}]")
"""Matches any character that must never reach a human output raw (for tests and checks)."""


def _escape_char(match: re.Match[str]) -> str:
    char = match.group(0)
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_text(text: str, *, keep_backslash: bool = False) -> str:
    """``text`` with every unsafe character spelled out (``\\n``, ``\\x1b``, ``\\u202e``, ...).

    ``keep_backslash`` leaves ``\\`` as it is (tables of names; see the module
    docstring); otherwise it becomes ``\\\\`` so that every escape is unambiguous.
    """
    pattern = _UNSAFE_KEEPING_BACKSLASH if keep_backslash else _UNSAFE
    return pattern.sub(_escape_char, text)


def escape_name(text: str) -> str:
    """A name (cgroup, file, policy) for a human table or message: unsafe characters escaped, ``\\`` kept."""
    return escape_text(text, keep_backslash=True)


def plural(count: int, singular: str, plural_form: str = "") -> str:
    """``1 policy``, ``2 policies``, ``0 files``: the count and the noun that agrees with it."""
    if count == 1:
        return f"{count} {singular}"
    return f"{count} {plural_form or singular + 's'}"


__all__ = ["UNSAFE", "UNSAFE_CHARACTERS", "escape_name", "escape_text", "plural"]
