"""A reference cgroup-glob matcher, read off the documented semantics one character at a time.

For tests only: it is as plain as it can be, not fast (``len(pattern) x len(name)``
states, each trying every way a star can end, and one level of recursion per
character: ``SMALL`` characters of glob and name together at most), so the compiled
matcher of ``remediator.policy.compiled`` is checked against it on small inputs.

- ``**/``: zero or more whole components, each non-empty and ending in "/";
- ``**`` not followed by "/": any characters, "/" included;
- ``*``: any characters of one component; ``?``: one character of one component;
- ``[...]``: one character of one component in the class (``!`` or ``^`` first: not
  in it); only letters, digits and ``x-y`` ranges are understood here, which is
  what the strategies that use it generate; a ``[`` with no ``]`` after it is itself.
"""

from __future__ import annotations

import re
from functools import cache

# Glob and name together; well within Python's default recursion limit of 1000.
SMALL = 300


def _in_class(body: str, char: str) -> bool:
    negated = body[:1] in ("!", "^")
    if negated:
        body = body[1:]
    ranges = re.findall(r"(.)-(.)", body)
    singles = re.sub(r".-.", "", body)
    inside = char in singles or any(low <= char <= high for low, high in ranges)
    return inside != negated


def reference_match(pattern: str, name: str) -> bool:
    if len(pattern) + len(name) > SMALL:
        raise ValueError(f"the reference matcher takes at most {SMALL} characters")

    @cache
    def at(i: int, p: int) -> bool:
        if i == len(pattern):
            return p == len(name)
        if pattern.startswith("**/", i):
            if at(i + 3, p):
                return True
            slash = name.find("/", p)
            return slash > p and at(i, slash + 1)
        if pattern.startswith("**", i):
            return any(at(i + 2, q) for q in range(p, len(name) + 1))
        c = pattern[i]
        if c == "*":
            q = p
            while not at(i + 1, q):
                if q == len(name) or name[q] == "/":
                    return False
                q += 1
            return True
        if p == len(name):
            return False
        char = name[p]
        if c == "?":
            return char != "/" and at(i + 1, p + 1)
        if c == "[" and "]" in pattern[i + 1 :]:
            j = pattern.index("]", i + 1)
            return char != "/" and _in_class(pattern[i + 1 : j], char) and at(j + 1, p + 1)
        return char == c and at(i + 1, p + 1)

    return at(0, 0)
