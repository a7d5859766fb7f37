"""What a refusal says: the culprit named as what it is (issue 12, item 17)."""

from __future__ import annotations

from pathlib import Path

import pytest

from remediator.trust import check_file, state_path_problem


@pytest.mark.parametrize("reached_by", ["relative path", "symlink"])
def test_a_group_writable_policy_file_is_called_a_file_however_it_is_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reached_by: str
) -> None:
    directory = tmp_path / "policies.d"
    directory.mkdir(mode=0o755)
    real = directory / "web.yaml"
    real.write_text("{}\n")
    real.chmod(0o664)
    if reached_by == "symlink":
        subject = tmp_path / "link.yaml"
        subject.symlink_to(real)
    else:
        monkeypatch.chdir(tmp_path)
        subject = Path("policies.d/web.yaml")

    found = check_file(subject)

    assert found is not None
    assert found.message().startswith(f"not trusted: {real} (mode 0664, owner uid ")
    assert "is writable by group" in found.message()


def test_a_writable_directory_above_the_file_is_called_a_directory(tmp_path: Path) -> None:
    directory = tmp_path / "policies.d"
    directory.mkdir()
    directory.chmod(0o775)
    (directory / "web.yaml").write_text("{}\n")

    found = check_file(directory / "web.yaml")

    assert found is not None
    assert found.message().startswith(f"not trusted: directory {directory} (mode 0775")


def test_a_state_path_that_is_not_absolute_is_refused_by_the_shared_check() -> None:
    # The state store calls the same function as the settings: it must not trust a Path it did not build.
    assert (state_path_problem(Path("state.json")) or "").startswith(
        "must be an absolute path (got 'state.json')"
    )
    assert state_path_problem(Path("/run/x\0y")) == "must not contain a NUL byte"
