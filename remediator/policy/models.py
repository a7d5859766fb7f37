"""The policy file schema (pydantic v2): what an operator may write, and the defaults.

One policy per file. The policy's **name is the file's stem**: ``web.yaml``
holds the policy ``web``; records and the state file use that name.

Everything is explicit: unknown keys are errors (``extra="forbid"``), values
are not coerced (``"5"`` is not a number, ``1`` is not ``true``), units are in
the key names (``stall_ms``, ``cooldown_sec``, ``min_bytes``).

Sizes (keys ending in ``_bytes``) are an integer number of bytes or a string
with a binary suffix: ``Ki``, ``Mi``, ``Gi``, ``Ti`` (``K``, ``M``, ``G``,
``T`` are accepted and mean the same binary multiples: ``64M`` is 64 MiB, as
in the kernel's own ``memory.high`` syntax). Nothing else: ``64MB``,
``1.5Gi`` and ``64 Mi`` are errors.

Cgroup globs are relative to the cgroup root: ``*`` and ``?`` stay within one
path component, ``**`` spans any number of components, ``[...]`` is a
character class (``[!...]`` negated). A glob that can never match a cgroup
(absolute, with ``.``/``..``/empty components, NUL or newline, unbalanced
brackets) is an error rather than a policy that silently watches nothing.

The defaults below are part of the documentation: they are in each field's
description, so ``PolicyDocument.model_json_schema()`` carries them too.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Dict, List, Literal, Optional, Tuple, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from remediator.k8s_names import is_dns_label
from remediator.located.validation import KeyedValueError, describe_value
from remediator.located.yaml_doc import KeyPath
from remediator.policy.compiled import NODE_WIDE_KINDS, compile_glob
from remediator.sizes import int_of_digits

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

_SIZE_UNITS = {"": 1, "K": KiB, "Ki": KiB, "M": MiB, "Mi": MiB, "G": GiB, "Gi": GiB, "T": TiB, "Ti": TiB}
_SIZE = re.compile(r"([0-9]+)(Ki|Mi|Gi|Ti|K|M|G|T)?\Z")


def parse_size(value: Any) -> Any:
    """An int of bytes, or a string like ``64Mi`` -> bytes. Anything else is refused."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match is not None:
            return int_of_digits(match.group(1)) * _SIZE_UNITS[match.group(2) or ""]
    raise ValueError(
        "not a size: write bytes (an integer) or a number with Ki, Mi, Gi or Ti "
        f"(got {describe_value(value)})"
    )


Size = Annotated[int, BeforeValidator(parse_size)]
PositiveSize = Annotated[int, BeforeValidator(parse_size), Field(gt=0)]

_NEVER_MATCHES = "can never match under the cgroup root"


def check_cgroup_glob(pattern: str) -> str:
    """Refuse globs that can never match a cgroup name (see the module docstring)."""
    if pattern == "":
        raise ValueError("must not be empty")
    if "\0" in pattern or "\n" in pattern:
        raise ValueError(f"{_NEVER_MATCHES}: cgroup names contain no NUL or newline")
    if pattern.startswith("/"):
        raise ValueError(
            f"{_NEVER_MATCHES}: globs are relative to it (write {pattern.lstrip('/')!r}, got {pattern!r})"
        )
    for component in pattern.split("/"):
        if component == "":
            raise ValueError(f"{_NEVER_MATCHES}: empty path component in {pattern!r}")
        if component in (".", ".."):
            raise ValueError(f"{_NEVER_MATCHES}: {component!r} is not a cgroup name (got {pattern!r})")
    _check_brackets(pattern)
    try:
        compile_glob(pattern)
    except re.error as error:
        raise ValueError(f"{_NEVER_MATCHES}: {error} (got {pattern!r})") from None
    return pattern


def _check_brackets(pattern: str) -> None:
    # Mirrors compile_glob: a class runs from "[" to the next "]".
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "]":
            raise ValueError(f"{_NEVER_MATCHES}: unbalanced ']' in {pattern!r}")
        if char == "[":
            end = pattern.find("]", index + 1)
            if end == -1:
                raise ValueError(f"{_NEVER_MATCHES}: unbalanced '[' in {pattern!r}")
            body = pattern[index + 1 : end]
            if body in ("", "!"):
                raise ValueError(f"{_NEVER_MATCHES}: empty character class in {pattern!r}")
            if "/" in body:
                raise ValueError(f"{_NEVER_MATCHES}: a character class cannot match '/' (got {pattern!r})")
            index = end
        index += 1


CgroupGlob = Annotated[str, AfterValidator(check_cgroup_glob)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# --------------------------------------------------------------------------
# Target


class CgroupsTargetModel(_Strict):
    """Watch every cgroup (v2) whose path matches ``include`` and no ``exclude``."""

    kind: Literal["cgroups"]
    include: List[CgroupGlob] = Field(
        min_length=1,
        description="Required, non-empty. Globs relative to the cgroup root, e.g. 'system.slice/*.service'.",
    )
    exclude: List[CgroupGlob] = Field(
        default_factory=list, description="Globs never watched even if included. Default: none."
    )
    kubernetes: Optional[KubernetesSelectionModel] = Field(
        None,
        description="Narrow the Kubernetes cgroups selected by QoS class and namespace "
        "(qos, namespaces, exclude_namespaces). Default: no narrowing.",
    )


def check_namespace(name: str) -> str:
    """A Kubernetes namespace name is a DNS label: a name that is not one can never match a pod."""
    if not is_dns_label(name):
        raise ValueError(
            "not a Kubernetes namespace name: lower-case letters, digits and '-', at most 63, "
            f"starting and ending with a letter or digit (got {describe_value(name)})"
        )
    return name


Namespace = Annotated[str, AfterValidator(check_namespace)]


class KubernetesSelectionModel(_Strict):
    """Narrow which Kubernetes cgroups (those in the kubelet's kubepods tree) the globs select.

    Cgroups that are not Kubernetes' (systemd services) are selected by the globs alone. The
    namespace is read from the node's /var/log/pods: with ``namespaces`` or ``exclude_namespaces``
    set, a Kubernetes cgroup whose namespace is unknown (a QoS-class cgroup, a pod without a log
    directory) is not selected.
    """

    qos: Optional[List[Literal["guaranteed", "burstable", "besteffort"]]] = Field(
        None,
        min_length=1,
        description="QoS classes to select (guaranteed, burstable, besteffort). Default: every class.",
    )
    namespaces: Optional[List[Namespace]] = Field(
        None, min_length=1, description="Only pods in these namespaces. Default: every namespace."
    )
    exclude_namespaces: List[Namespace] = Field(
        default_factory=list, description="Never pods in these namespaces. Default: none."
    )

    @model_validator(mode="after")
    def _not_both(self) -> KubernetesSelectionModel:
        selected = set(self.namespaces or ())
        problems: List[Tuple[KeyPath, str]] = [
            (("exclude_namespaces", index), f"{name!r} is also in namespaces: select it or exclude it")
            for index, name in enumerate(self.exclude_namespaces)
            if name in selected
        ]
        if problems:
            raise KeyedValueError(problems)
        return self


class NodeTargetModel(_Strict):
    """Watch the node as a whole through ``/proc/pressure/memory``. Takes no other keys."""

    kind: Literal["node"]


TargetModel = Annotated[Union[CgroupsTargetModel, NodeTargetModel], Field(discriminator="kind")]


# --------------------------------------------------------------------------
# Trigger and conditions


class TriggerModel(_Strict):
    """The PSI trigger: act when tasks stalled ``stall_ms`` within any ``window_ms``."""

    pressure: Literal["some", "full"] = Field(
        description="Required. 'some': at least one task stalled on memory; "
        "'full': all non-idle tasks at once."
    )
    stall_ms: int = Field(
        gt=0, description="Required. Stall time within the window that fires; <= window_ms."
    )
    window_ms: int = Field(
        ge=500,
        le=10000,
        description=(
            "Required, 500..10000 (the kernel's range). Windows under 2000 ms need privilege and give every "
            "watched cgroup its own SCHED_FIFO psimon kernel thread: prefer multiples of 2000 for many "
            "cgroups."
        ),
    )
    sustained_sec: float = Field(
        0.0, ge=0, description="Pressure must last this long before acting. Default 0 (the first event)."
    )

    @model_validator(mode="after")
    def _stall_fits_window(self) -> TriggerModel:
        if self.stall_ms > self.window_ms:
            raise KeyedValueError(
                [(("stall_ms",), f"must be <= window_ms ({self.window_ms}) (got {self.stall_ms})")]
            )
        return self


UnitFraction = Annotated[float, Field(gt=0, le=1)]


class ConditionsModel(_Strict):
    """Checked on a fresh reading before acting; all that are set must hold. Default: none."""

    min_reclaimable_fraction: Optional[UnitFraction] = Field(
        None,
        description="(0, 1]: reclaimable page cache / memory.current must be at least this. "
        "Default: unchecked.",
    )
    memory_high_unset: Optional[bool] = Field(
        None, description="true: only if memory.high is 'max'; false: only if it is set. Default: unchecked."
    )
    min_usage_fraction_of_max: Optional[UnitFraction] = Field(
        None, description="(0, 1]: memory.current / memory.max must be at least this. Default: unchecked."
    )


# --------------------------------------------------------------------------
# Actions (the ladder)


class ReclaimFollowUpModel(_Strict):
    """After a pressure that this reclaim relieved, keep looking and reclaim again as the cache refills."""

    every_sec: float = Field(
        1.0, ge=0.1, le=60, description="How often to look at the cgroup meanwhile, [0.1, 60]. Default 1."
    )
    min_usage_fraction_of_max: UnitFraction = Field(
        0.85,
        description="(0, 1]: reclaim again once memory.current / memory.max is at least this. Default 0.85.",
    )
    for_sec: float = Field(
        300.0,
        gt=0,
        le=3600,
        description="How long after the relieved pressure; then a new pressure must show the need "
        "again. (0, 3600]. Default 300.",
    )


class ReclaimModel(_Strict):
    """Ask the kernel to reclaim page cache from the cgroup (``memory.reclaim``)."""

    kind: Literal["reclaim"]
    fraction: UnitFraction = Field(0.5, description="(0, 1] of the reclaimable-cache estimate. Default 0.5.")
    min_bytes: Size = Field(
        16 * MiB,
        ge=0,
        description="Skip (with a record) when less cache than this is reclaimable. Default 16Mi.",
    )
    max_bytes: Optional[PositiveSize] = Field(None, description="Cap per write. Default: no cap.")
    timeout_sec: float = Field(5.0, gt=0, le=30, description="Time budget of one write, (0, 30]. Default 5.")
    cooldown_sec: float = Field(30.0, ge=0, description="Minimum time between two writes. Default 30.")
    max_per_hour: int = Field(
        20, ge=1, description="At most this many writes per hour per cgroup. Default 20."
    )
    follow_up: Optional[ReclaimFollowUpModel] = Field(
        None,
        description="Reclaim again before the next stall while the cache refills, for a while after a "
        "pressure this reclaim relieved (needs memory.max). Default: off.",
    )


class MemoryHighModel(_Strict):
    """Set ``memory.high`` to ``fraction`` x memory.max (or memory.current), never below the floor."""

    kind: Literal["memory_high"]
    relative_to: Literal["max", "current"] = Field("max", description="'max' or 'current'. Default 'max'.")
    fraction: UnitFraction = Field(0.9, description="(0, 1]. Default 0.9.")
    floor_margin_bytes: Size = Field(
        64 * MiB,
        ge=0,
        description="Added to the memory that cannot be reclaimed (anon without swap, shmem, kernel) to "
        "make the floor memory.high never goes below. Default 64Mi.",
    )
    min_bytes: Optional[PositiveSize] = Field(
        None,
        description="Explicit floor. Required when relative_to is 'current': that target follows usage down, "
        "so the operator must say where it stops. Default: none.",
    )
    cooldown_sec: float = Field(60.0, ge=0, description="Minimum time between two writes. Default 60.")
    max_per_hour: int = Field(6, ge=1, description="At most this many writes per hour per cgroup. Default 6.")
    max_clamped_cgroups: int = Field(
        100,
        ge=1,
        le=100_000,
        description="At most this many cgroups of the policy hold a memory.high of ours at once; a new clamp "
        "beyond it is declined (a tenant who creates many cgroups cannot make the daemon clamp them all). "
        "Default 100.",
    )

    @model_validator(mode="after")
    def _current_needs_floor(self) -> MemoryHighModel:
        if self.relative_to == "current" and self.min_bytes is None:
            raise KeyedValueError(
                [(("min_bytes",), "required when relative_to is current (the target follows usage down)")]
            )
        return self


class VfsCachePressureModel(_Strict):
    """Raise node-wide ``vm.vfs_cache_pressure`` (dentry/inode cache reclaim); restored after the calm."""

    kind: Literal["vfs_cache_pressure"]
    value: int = Field(
        le=1000,
        description="Required, 1..1000 (kernel default 100). 0 is refused: the kernel would never reclaim "
        "dentries and inodes.",
    )
    cooldown_sec: float = Field(600.0, ge=0, description="Minimum time between two writes. Default 600.")
    max_per_hour: int = Field(2, ge=1, description="At most this many writes per hour. Default 2.")

    @model_validator(mode="after")
    def _value_is_safe(self) -> VfsCachePressureModel:
        if self.value == 0:
            raise KeyedValueError(
                [
                    (
                        ("value",),
                        "0 is dangerous: the kernel would never reclaim dentries and inodes (use 1..1000)",
                    )
                ]
            )
        if self.value < 0:
            raise KeyedValueError([(("value",), f"must be >= 1 (got {self.value})")])
        return self


def _refuse_bool(value: Any) -> Any:
    # True == 1 in Python, so a Literal[1, 2, 3] would quietly take `true` for mode 1.
    if isinstance(value, bool):
        raise ValueError(f"must be 1, 2 or 3 (got {describe_value(value)})")  # noqa: TRY004 (pydantic wants ValueError)
    return value


DropCachesMode = Annotated[Literal[1, 2, 3], BeforeValidator(_refuse_bool)]


class DropCachesModel(_Strict):
    """Write node-wide ``vm.drop_caches``: drops clean caches of every tenant. A rate-limited last resort."""

    kind: Literal["drop_caches"]
    mode: DropCachesMode = Field(description="Required. 1 page cache, 2 reclaimable slab, 3 both.")
    cooldown_sec: float = Field(1800.0, ge=0, description="Minimum time between two writes. Default 1800.")
    max_per_hour: int = Field(1, ge=1, description="At most this many writes per hour. Default 1.")


ActionModel = Annotated[
    Union[ReclaimModel, MemoryHighModel, VfsCachePressureModel, DropCachesModel], Field(discriminator="kind")
]

CGROUP_KINDS = frozenset({"reclaim", "memory_high"})


class RollbackModel(_Strict):
    calm_sec: float = Field(
        300.0,
        gt=0,
        description="Pressure must stay calm this long before our changes are undone. Default 300.",
    )
    restore_on_exit: bool = Field(True, description="Undo our changes when the daemon stops. Default true.")


# --------------------------------------------------------------------------
# The file


class PolicyDocument(_Strict):
    """One policy file. The policy's name is the file's stem."""

    description: str = Field("", description="Free text, shown in records and status. Default empty.")
    target: TargetModel = Field(description="Required. kind: cgroups (with include/exclude) or kind: node.")
    trigger: TriggerModel = Field(description="Required. pressure, stall_ms, window_ms.")
    conditions: Optional[ConditionsModel] = Field(None, description="Optional preconditions. Default: none.")
    actions: List[ActionModel] = Field(
        min_length=1,
        description="Required, non-empty: the ladder, gentlest rung first; each kind at most once.",
    )
    verify_sec: float = Field(
        10.0,
        gt=0,
        description="After a rung, how long pressure has to fall before the next rung. Default 10.",
    )
    rollback: RollbackModel = Field(
        default_factory=RollbackModel, description="Default: calm 300 s, restore."
    )
    allow_node_wide: bool = Field(
        False,
        description="Allow vfs_cache_pressure/drop_caches in a kind: cgroups policy (they affect every "
        "tenant of the node). Default false.",
    )
    enabled: bool = Field(
        True, description="false: the policy is loaded and checked but not run. Default true."
    )

    @model_validator(mode="after")
    def _ladder_fits_target(self) -> PolicyDocument:
        problems: List[Tuple[KeyPath, str]] = []
        is_node = isinstance(self.target, NodeTargetModel)
        first_index: Dict[str, int] = {}
        for index, action in enumerate(self.actions):
            where: KeyPath = ("actions", index, "kind")
            if action.kind in first_index:
                problems.append(
                    (where, f"duplicate rung {action.kind!r} (already actions[{first_index[action.kind]}])")
                )
            else:
                first_index[action.kind] = index
            if is_node and action.kind in CGROUP_KINDS:
                problems.append(
                    (where, f"{action.kind!r} needs a cgroup to act on: a node policy cannot use it")
                )
            if not is_node and action.kind in NODE_WIDE_KINDS and not self.allow_node_wide:
                problems.append(
                    (
                        where,
                        f"{action.kind!r} acts on the whole node: set allow_node_wide: true to allow it here",
                    )
                )
        if is_node and self.conditions is not None:
            for key in sorted(self.conditions.model_fields_set):
                if getattr(self.conditions, key) is not None:
                    problems.append(
                        (
                            ("conditions", key),
                            "conditions are about a cgroup's memory: a node policy cannot use them",
                        )
                    )
        if problems:
            raise KeyedValueError(problems)
        return self
