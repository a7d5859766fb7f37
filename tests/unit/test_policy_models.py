"""Schema rules that the fixture table does not spell out one by one."""

from __future__ import annotations

from typing import Any, Dict, List, Type

import pytest
from pydantic import BaseModel, ValidationError

from remediator.located.validation import KeyedValueError
from remediator.policy.models import (
    CgroupsTargetModel,
    ConditionsModel,
    DropCachesModel,
    MemoryHighModel,
    PolicyDocument,
    ReclaimModel,
    RollbackModel,
    TriggerModel,
    VfsCachePressureModel,
    check_cgroup_glob,
)


def policy(**overrides: Any) -> Dict[str, Any]:
    document: Dict[str, Any] = {
        "target": {"kind": "cgroups", "include": ["system.slice/*.service"]},
        "trigger": {"pressure": "full", "stall_ms": 100, "window_ms": 2000},
        "actions": [{"kind": "reclaim"}],
    }
    document.update(overrides)
    return document


@pytest.mark.parametrize(
    "glob",
    [
        "system.slice/*.service",
        "kubepods.slice/**/*.scope",
        "kubepods/**/pod*/*",
        "a/[0-9]?",
        "a/[!x]b",
        "**",
    ],
)
def test_globs_that_can_match_are_accepted(glob: str) -> None:
    assert check_cgroup_glob(glob) == glob


@pytest.mark.parametrize(
    "glob",
    [
        "",
        "/a",
        "a/",
        "a//b",
        "./a",
        "a/..",
        "a\nb",
        "a\0b",
        "a[b",
        "a]b",
        "a/[]",
        "a/[!]",
        "a/[a/b]",
        "[z-a]",
    ],
)
def test_globs_that_can_never_match_are_refused(glob: str) -> None:
    with pytest.raises(ValueError, match=r"can never match under the cgroup root|must not be empty"):
        check_cgroup_glob(glob)


def test_node_wide_rungs_are_allowed_in_a_cgroups_policy_only_when_the_operator_says_so() -> None:
    actions = [{"kind": "reclaim"}, {"kind": "vfs_cache_pressure", "value": 200}]

    with pytest.raises(ValidationError):
        PolicyDocument.model_validate(policy(actions=actions))
    accepted = PolicyDocument.model_validate(policy(actions=actions, allow_node_wide=True))

    assert [action.kind for action in accepted.actions] == ["reclaim", "vfs_cache_pressure"]


@pytest.mark.parametrize("kind", ["reclaim", "memory_high"])
def test_a_node_policy_cannot_use_cgroup_rungs(kind: str) -> None:
    with pytest.raises(ValidationError, match="needs a cgroup to act on"):
        PolicyDocument.model_validate(policy(target={"kind": "node"}, actions=[{"kind": kind}]))


def test_memory_high_relative_to_current_is_accepted_with_an_explicit_floor() -> None:
    rung = MemoryHighModel.model_validate(
        {"kind": "memory_high", "relative_to": "current", "min_bytes": "512Mi"}
    )

    assert rung.min_bytes == 512 << 20


@pytest.mark.parametrize("value", [-1, 1001])
def test_vfs_cache_pressure_outside_1_to_1000_is_refused(value: int) -> None:
    with pytest.raises(ValidationError):
        VfsCachePressureModel.model_validate({"kind": "vfs_cache_pressure", "value": value})


def test_stall_equal_to_window_is_allowed() -> None:
    trigger = TriggerModel.model_validate({"pressure": "some", "stall_ms": 2000, "window_ms": 2000})

    assert trigger.stall_ms == trigger.window_ms


@pytest.mark.parametrize(("window_ms", "ok"), [(499, False), (500, True), (10000, True), (10001, False)])
def test_window_bounds_are_the_kernels(window_ms: int, ok: bool) -> None:
    data = {"pressure": "some", "stall_ms": 100, "window_ms": window_ms}
    if ok:
        assert TriggerModel.model_validate(data).window_ms == window_ms
    else:
        with pytest.raises(ValidationError):
            TriggerModel.model_validate(data)


@pytest.mark.parametrize(("field", "value"), [("fraction", 0), ("fraction", 1.0000001), ("timeout_sec", 31)])
def test_reclaim_bounds(field: str, value: float) -> None:
    with pytest.raises(ValidationError):
        ReclaimModel.model_validate({"kind": "reclaim", field: value})


def test_drop_caches_mode_true_is_not_mode_1() -> None:
    with pytest.raises(ValidationError, match="must be 1, 2 or 3"):
        DropCachesModel.model_validate({"kind": "drop_caches", "mode": True})


def test_numbers_are_not_coerced_from_strings() -> None:
    with pytest.raises(ValidationError):
        TriggerModel.model_validate({"pressure": "some", "stall_ms": "100", "window_ms": 2000})


def test_keyed_value_error_reads_as_key_and_message() -> None:
    error = KeyedValueError([(("stall_ms",), "must be <= window_ms (1000) (got 2000)")])

    assert str(error) == "stall_ms: must be <= window_ms (1000) (got 2000)"


DOCUMENTED_MODELS: List[Type[BaseModel]] = [
    PolicyDocument,
    CgroupsTargetModel,
    TriggerModel,
    ConditionsModel,
    ReclaimModel,
    MemoryHighModel,
    VfsCachePressureModel,
    DropCachesModel,
    RollbackModel,
]


@pytest.mark.parametrize("model", DOCUMENTED_MODELS, ids=lambda m: m.__name__)
def test_every_optional_field_documents_its_default(model: Type[BaseModel]) -> None:
    for name, field in model.model_fields.items():
        if name == "kind":
            continue
        description = field.description or ""
        if field.is_required():
            assert "Required" in description, f"{model.__name__}.{name}"
        else:
            assert "Default" in description, f"{model.__name__}.{name}"
