"""Sizes: how they are shown, and a size of thousands of digits refused in plain words (issue 12 item 17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from remediator.policy.loader import load_policy_dir
from remediator.sizes import format_bytes, int_of_digits

POLICY = """\
target: {{kind: cgroups, include: ["system.slice/*.service"]}}
trigger: {{pressure: full, stall_ms: 100, window_ms: 2000}}
actions:
  - {{kind: reclaim, fraction: 0.5, max_bytes: {size}}}
"""


@pytest.mark.parametrize("size", ['"{digits}Mi"', '"{digits}"', "{digits}"])
def test_a_size_of_5000_digits_is_refused_located_without_python_advice(tmp_path: Path, size: str) -> None:
    (tmp_path / "big.yaml").write_text(POLICY.format(size=size.format(digits="9" * 5000)))

    policy_set = load_policy_dir(tmp_path)

    [issue] = [str(issue) for issue in policy_set.issues]
    assert "big.yaml:4:" in issue
    assert issue.endswith(
        " actions[0].max_bytes: a number of 5000 digits is out of range; no setting takes one"
    )
    assert "set_int_max_str_digits" not in issue


def test_int_of_digits_takes_what_a_size_needs_and_nothing_else() -> None:
    assert int_of_digits("18446744073709551616") == 2**64
    with pytest.raises(ValueError, match="a number of 65 digits is out of range"):
        int_of_digits("1" * 65)
    with pytest.raises(ValueError, match="not a number of digits"):
        int_of_digits("\u0661\u0662")  # Arabic-Indic digits: int() would take them


def test_format_bytes_uses_binary_units() -> None:
    assert [format_bytes(v) for v in (None, 512, 1536, 4294967296)] == ["max", "512 B", "1.5 KiB", "4.0 GiB"]
