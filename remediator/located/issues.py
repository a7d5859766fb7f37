"""Located problems in policy and settings files.

Every problem the policy language finds is a ``PolicyIssue`` that names the
file, the position and the key, so an operator can go straight to the line:

    policies.d/web.yaml:14:7: actions[1].fraction: must be <= 1 (got 1.5)

Loading never raises on bad input: problems are collected (all of them, not
only the first) and returned as a list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Sequence, Tuple, Union

# Key paths for problems that are not about one key.
FILE_KEY = "(file)"  # the file could not be read, is empty, is not UTF-8, ...
SYNTAX_KEY = "(syntax)"  # the YAML parser gave up
DOCUMENT_KEY = "(document)"  # the document as a whole (not a mapping, ...)

PathElement = Union[str, int]


def format_key_path(path: Sequence[PathElement]) -> str:
    """``("actions", 1, "fraction")`` -> ``actions[1].fraction``; ``()`` -> ``(document)``."""
    text = ""
    for element in path:
        if isinstance(element, int):
            text += f"[{element}]"
        elif text:
            text += f".{element}"
        else:
            text = element
    return text or DOCUMENT_KEY


@dataclass(frozen=True)
class PolicyIssue:
    """One problem, located.

    ``line`` and ``column`` are 1-based. They are None only where no position
    exists at all (a value from the environment or a command-line flag); the
    string form then leaves them out: ``env:REMEDIATOR_DRY_RUN: dry_run: ...``.
    """

    file: str
    line: Optional[int]
    column: Optional[int]
    key_path: str
    message: str

    def __str__(self) -> str:
        if self.line is None or self.column is None:
            return f"{self.file}: {self.key_path}: {self.message}"
        return f"{self.file}:{self.line}:{self.column}: {self.key_path}: {self.message}"

    @property
    def sort_key(self) -> Tuple[str, int, int, str, str]:
        return (self.file, self.line or 0, self.column or 0, self.key_path, self.message)


def sorted_issues(issues: Iterable[PolicyIssue]) -> List[PolicyIssue]:
    """Issues in reading order (file, line, column), without exact duplicates."""
    return sorted(set(issues), key=lambda issue: issue.sort_key)


def format_issues(issues: Iterable[PolicyIssue]) -> str:
    """One issue per line, as compilers print them."""
    return "\n".join(str(issue) for issue in issues)
