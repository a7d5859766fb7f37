"""Reading policy files: bytes -> located YAML -> validated model -> runtime ``Policy``.

Nothing here raises on bad input. Every problem is a located ``PolicyIssue``
(``policies.d/web.yaml:14:7: actions[1].fraction: must be <= 1 (got 1.5)``);
problems that have no better position (a missing directory, an empty file,
an unreadable file) are at line 1, column 1.

A policy's name is its file's stem (``web.yaml`` -> ``web``). The directory
is read in sorted order, ``*.yaml`` and ``*.yml``, skipping hidden files
(editors' lock files such as ``.#web.yaml``). Two files with the same stem
(``web.yaml`` and ``web.yml``) are both refused: which one the operator means
is a guess this daemon does not make.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from pydantic import ValidationError

from remediator.located.issues import DOCUMENT_KEY, FILE_KEY, PolicyIssue, sorted_issues
from remediator.located.validation import describe_value, validation_issues
from remediator.located.yaml_doc import (
    decode_utf8,
    parse_located_yaml,
)
from remediator.policy.compile import compile_policy
from remediator.policy.compiled import Policy
from remediator.policy.models import PolicyDocument
from remediator.trust import check_directory, check_file

POLICY_SUFFIXES = (".yaml", ".yml")
# Far above any real policy; keeps a stray large file from being parsed by the daemon.
MAX_POLICY_FILE_BYTES = 1 << 20
# Names end up in journal fields and the state file: keep them plain.
_POLICY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]*\Z")


def _file_issue(file: str, message: str) -> PolicyIssue:
    return PolicyIssue(file, 1, 1, FILE_KEY, message)


@dataclass(frozen=True)
class PolicySet:
    """Everything read from a policy directory.

    ``policies`` are the valid policies in file order, disabled ones included
    (``Policy.enabled`` is False: checked and shown, not run); ``issues`` are
    every problem found; ``files`` are the policy files seen.
    """

    policies: Tuple[Policy, ...]
    issues: List[PolicyIssue]
    files: List[Path]

    @property
    def enabled(self) -> Tuple[Policy, ...]:
        return tuple(policy for policy in self.policies if policy.enabled)

    @property
    def ok(self) -> bool:
        return not self.issues


def parse_policy_text(text: str, file: str) -> Tuple[Optional[PolicyDocument], List[PolicyIssue]]:
    """Validate one policy document. The model is None whenever there is any issue."""
    document, issues = parse_located_yaml(text, file)
    if document.value is None:
        if not issues:
            issues = [_file_issue(file, "empty: a policy needs at least target, trigger and actions")]
        return None, sorted_issues(issues)
    if not isinstance(document.value, dict):
        issues.append(
            document.issue((), f"a policy must be a mapping of keys (got {describe_value(document.value)})")
        )
        return None, sorted_issues(issues)
    try:
        model = PolicyDocument.model_validate(document.value)
    except ValidationError as error:
        issues.extend(validation_issues(document, error, PolicyDocument))
        return None, sorted_issues(issues)
    if issues:
        return None, sorted_issues(issues)
    return model, []


def load_policy_text(
    text: str, file: str, name: str, source: Optional[str] = None
) -> Tuple[Optional[Policy], List[PolicyIssue]]:
    """Load a policy from text. ``file`` is used in messages; ``source`` (default:
    ``file``) is what the runtime policy records as its origin."""
    model, issues = parse_policy_text(text, file)
    if model is None:
        return None, issues
    return compile_policy(model, name=name, source=source if source is not None else file), []


def load_policy_file(
    path: Path, display_name: Optional[str] = None, *, allow_untrusted: bool = False
) -> Tuple[Optional[Policy], List[PolicyIssue]]:
    """Load one policy file, enabled or not. Never raises on bad input.

    ``display_name`` names the file in issues (default: the path as given);
    the policy's ``source`` is always the path. A file that someone other than
    root could have written is refused (``remediator.trust``) unless
    ``allow_untrusted`` (the development override) says otherwise.
    """
    file = display_name if display_name is not None else str(path)
    name = path.stem
    if not _POLICY_NAME.match(name):
        return None, [
            _file_issue(
                file,
                f"the policy name is the file's stem and must be letters, digits, '.', '_', '-' or '@', "
                f"starting with a letter or digit (got {name!r})",
            )
        ]
    try:
        status = os.stat(path)
        if not stat.S_ISREG(status.st_mode):
            return None, [_file_issue(file, "not a regular file")]
        if status.st_size > MAX_POLICY_FILE_BYTES:
            return None, [
                _file_issue(file, f"too large ({status.st_size} bytes; at most {MAX_POLICY_FILE_BYTES})")
            ]
        untrusted = None if allow_untrusted else check_file(path)
        if untrusted is not None:
            return None, [_file_issue(file, untrusted.message())]
        data = path.read_bytes()
    except OSError as error:
        return None, [_file_issue(file, f"cannot read: {error.strerror or error}")]
    text, issues = decode_utf8(data, file)
    if text is None:
        return None, issues
    # Records name the real path; messages use the display name.
    return load_policy_text(text, file, name, source=str(path))


def _display_name(directory: Path, path: Path) -> str:
    # Relative to the directory's parent, as operators know it: policies.d/web.yaml
    return f"{directory.name}/{path.name}" if directory.name else str(path)


def list_policy_files(directory: Path) -> Tuple[List[Path], List[PolicyIssue]]:
    """The policy files of a directory, sorted, or the issue that prevents listing them."""
    shown = str(directory)
    try:
        if not directory.exists():
            return [], [_file_issue(shown, "policy directory does not exist")]
        if not directory.is_dir():
            return [], [_file_issue(shown, "not a directory")]
        entries = sorted(directory.iterdir(), key=lambda entry: entry.name)
    except OSError as error:
        return [], [_file_issue(shown, f"cannot read the policy directory: {error.strerror or error}")]
    files = [entry for entry in entries if entry.suffix in POLICY_SUFFIXES and not entry.name.startswith(".")]
    if not files:
        return [], [_file_issue(shown, "no policy files (*.yaml, *.yml): nothing would be watched")]
    return files, []


def load_policy_dir(directory: Path, *, allow_untrusted: bool = False) -> PolicySet:
    """Load every policy file of ``directory``. Never raises on bad input.

    A directory someone other than root could write to is refused as a whole
    (anyone could have added or replaced any file in it), and so is each file
    that is not trusted on its own (``remediator.trust``), unless
    ``allow_untrusted`` (the development override) says otherwise.
    """
    files, issues = list_policy_files(directory)
    untrusted_dir = None if allow_untrusted or issues else check_directory(directory)
    if untrusted_dir is not None:
        return PolicySet(
            policies=(), issues=[_file_issue(str(directory), untrusted_dir.message())], files=list(files)
        )
    by_name: Dict[str, List[Path]] = {}
    for path in files:
        by_name.setdefault(path.stem, []).append(path)

    policies: List[Policy] = []
    for path in files:
        display = _display_name(directory, path)
        same_name = by_name[path.stem]
        if len(same_name) > 1:
            others = ", ".join(_display_name(directory, other) for other in same_name if other != path)
            message = f"policy {path.stem!r} is also defined by {others}: keep one file"
            issues.append(PolicyIssue(display, 1, 1, DOCUMENT_KEY, message))
            continue
        policy, file_issues = load_policy_file(path, display, allow_untrusted=allow_untrusted)
        issues.extend(file_issues)
        if policy is not None:
            policies.append(policy)
    return PolicySet(policies=tuple(policies), issues=sorted_issues(issues), files=list(files))
