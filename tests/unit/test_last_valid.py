"""The last valid policy set is kept beside the state file, replaced whole, and loaded with the same trust."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from remediator.daemon.last_valid import LastValidPolicies, PoliciesNotKept, kept_directory

REPO = Path(__file__).resolve().parent.parent.parent
SHIPPED = sorted((REPO / "policies").glob("*.yaml"))


@pytest.fixture
def keeper(tmp_path: Path) -> LastValidPolicies:
    state = tmp_path / "lib" / "remediator"
    state.mkdir(parents=True, mode=0o700)
    return LastValidPolicies(kept_directory(state))


def test_a_kept_set_loads_as_the_set_that_was_running(keeper: LastValidPolicies) -> None:
    assert keeper.load() is None  # nothing kept yet
    keeper.keep(SHIPPED)
    kept = keeper.load()
    assert kept is not None and kept.ok
    assert sorted(p.name for p in kept.policies) == sorted(path.stem for path in SHIPPED)
    assert (keeper.directory.stat().st_mode & 0o777) == 0o700


def test_keeping_replaces_the_whole_copy(keeper: LastValidPolicies) -> None:
    keeper.keep(SHIPPED)
    keeper.keep(SHIPPED[:1])
    kept = keeper.load()
    assert kept is not None
    assert [p.name for p in kept.policies] == [SHIPPED[0].stem]
    assert sorted(entry.name for entry in keeper.directory.parent.iterdir()) == ["last-valid-policies"]


def test_a_copy_that_became_invalid_is_no_fallback(keeper: LastValidPolicies) -> None:
    keeper.keep(SHIPPED)
    (keeper.directory / SHIPPED[0].name).write_text("name: [broken\n")
    assert keeper.load() is None


def test_a_copy_that_cannot_be_written_is_a_domain_error_and_the_old_copy_stays(
    keeper: LastValidPolicies, tmp_path: Path
) -> None:
    keeper.keep(SHIPPED)
    missing = tmp_path / "gone.yaml"
    with pytest.raises(PoliciesNotKept):
        keeper.keep([*SHIPPED, missing])
    kept = keeper.load()
    assert kept is not None and len(kept.policies) == len(SHIPPED)
    shutil.rmtree(keeper.directory)
    assert keeper.load() is None
