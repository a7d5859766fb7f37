"""Compiled policies: the runtime form the decision core and the watcher use.

Produced only by ``remediator.policy.compile`` from validated models, so every
invariant the models check (stall <= window, fractions in (0, 1], ...) holds
here and is not re-checked. Durations are float seconds, sizes are bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from typing import FrozenSet, List, Optional, Set, Tuple, Union

from remediator.identity import Identity, QosClass
from remediator.kernel.psi_trigger import PsiTrigger, StallKind
from remediator.records import Knob


@dataclass(frozen=True)
class TriggerSpec:
    """A policy's pressure trigger: the kernel trigger, plus how long it must be sustained."""

    kind: StallKind
    stall_us: int
    window_us: int
    sustained_sec: float = 0.0

    @property
    def psi(self) -> PsiTrigger:
        """What the watcher arms (sustained_sec is the core's business, not the kernel's)."""
        return PsiTrigger(self.kind, self.stall_us, self.window_us)

    @property
    def threshold_fraction(self) -> float:
        """Stall share of wall time that counts as "under pressure" (stall / window)."""
        return self.psi.threshold_fraction


class _Glob(Enum):
    """The glob's tokens, in regular-expression terms."""

    LITERAL = "literal"  # one character, "/" included
    ONE = "one"  # "?" or a "[...]" class: one character of a component
    STAR = "star"  # "*": [^/]*
    DIRS = "dirs"  # "**/": (?:[^/]+/)*, zero or more whole components
    ANY = "any"  # "**" not followed by "/": .*


_Token = Tuple[_Glob, str]  # the kind and its regular-expression text


def _glob_tokens(pattern: str) -> List[_Token]:
    """Tokenize a glob; runs of stars that mean the same as one are merged.

    ``**/**/`` is ``**/`` and ``**`` next to ``*`` or ``**/`` is ``**``: the
    runs a tenant's deep tree made exponential are gone before matching.
    """
    tokens: List[_Token] = []
    i = 0
    n = len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    tokens.append((_Glob.DIRS, "(?:[^/]+/)*"))
                    i += 1
                else:
                    tokens.append((_Glob.ANY, ".*"))
                continue
            tokens.append((_Glob.STAR, "[^/]*"))
        elif c == "?":
            tokens.append((_Glob.ONE, "[^/]"))
        elif c == "[" and pattern.find("]", i + 1) != -1:
            j = pattern.find("]", i + 1)
            body = pattern[i + 1 : j]
            if body in ("", "!", "^"):
                raise re.error("empty character class", pattern, i)
            # Backslash, "[", "&", "~" and "|" are plain characters of the class
            # (re reads them as escapes or warns of future set operations).
            body = re.sub(r"([\\\[&~|])", r"\\\1", body)
            if body.startswith("!"):
                body = "^" + body[1:]
            # A class stays inside one component, whatever its body (a range
            # such as "+-0" or a negation would otherwise take "/").
            tokens.append((_Glob.ONE, "(?!/)[" + body + "]"))
            i = j
        else:
            tokens.append((_Glob.LITERAL, re.escape(c)))
        i += 1
    merged: List[_Token] = []
    for token in tokens:
        previous = merged[-1][0] if merged else None
        if token[0] is _Glob.DIRS and previous is _Glob.DIRS:
            continue
        if token[0] is _Glob.ANY:
            while merged and merged[-1][0] in (_Glob.STAR, _Glob.DIRS, _Glob.ANY):
                merged.pop()
        elif token[0] in (_Glob.STAR, _Glob.DIRS) and previous is _Glob.ANY:
            continue
        merged.append(token)
    return merged


def _at_boundary(tokens: List[_Token], index: int) -> bool:
    return index == 0 or tokens[index - 1] == (_Glob.LITERAL, "/")


def _is_component_wise(tokens: List[_Token]) -> bool:
    """Every ``**`` is a whole component (``a/**/b``, ``**/x``, ``a/**``): the usual globs."""
    for index, (kind, _) in enumerate(tokens):
        if kind is _Glob.DIRS and not _at_boundary(tokens, index):
            return False
        if kind is _Glob.ANY and not (index == len(tokens) - 1 and _at_boundary(tokens, index)):
            return False
    return True


class _GroupNames:
    def __init__(self) -> None:
        self.count = 0

    def atomic(self, regex: str) -> str:
        """``regex`` matched once, never backtracked into: Python 3.9's ``re`` has no atomic
        group, a lookahead (atomic in ``re``) captured and then matched by reference is one."""
        name = f"g{self.count}"
        self.count += 1
        return f"(?=(?P<{name}>{regex}))(?P={name})"


def _component_regex(tokens: List[_Token], groups: _GroupNames) -> str:
    # Between two stars of one component, the earliest place the fixed part
    # fits is as good as any later one (the next star takes up the slack), so
    # it is taken once: "*a*a*a*b" against 255 "a"s stays linear.
    chunks: List[str] = [""]
    for kind, regex in tokens:
        if kind is _Glob.STAR:
            chunks.append("")
        else:
            chunks[-1] += regex
    if len(chunks) == 1:
        return chunks[0]
    middle = "".join(groups.atomic(f"[^/]*?{chunk}") for chunk in chunks[1:-1])
    return chunks[0] + middle + "[^/]*" + chunks[-1]


def _segment_regex(tokens: List[_Token], groups: _GroupNames) -> str:
    parts: List[str] = []
    component: List[_Token] = []
    for token in tokens:
        if token == (_Glob.LITERAL, "/"):
            parts.append(_component_regex(component, groups) + "/")
            component = []
        elif token[0] is _Glob.ANY:
            parts.append(".*")
        else:
            component.append(token)
    parts.append(_component_regex(component, groups))
    return "".join(parts)


def _component_wise_regex(tokens: List[_Token]) -> str:
    # Split at "**/": the first segment is anchored at the start, the last at
    # the end, and each one between is taken at the earliest component it fits
    # (the next "**/" takes up the slack): one pass over the name per segment,
    # where the plain translation tried every split (depth^k for k "**/").
    segments: List[List[_Token]] = [[]]
    for token in tokens:
        if token[0] is _Glob.DIRS:
            segments.append([])
        else:
            segments[-1].append(token)
    groups = _GroupNames()
    out = [_segment_regex(segments[0], groups)]
    for segment in segments[1:-1]:
        out.append(groups.atomic("(?:[^/]+/)*?" + _segment_regex(segment, groups)))
    if len(segments) > 1:
        out.append("(?:[^/]+/)*" + _segment_regex(segments[-1], groups))
    return "".join(out) + r"\Z"


_Step = Tuple[_Glob, Optional["re.Pattern[str]"], int]


def _position_steps(tokens: List[_Token]) -> Tuple[_Step, ...]:
    steps: List[_Step] = []
    fixed: List[str] = []
    for kind, regex in tokens:
        if kind in (_Glob.LITERAL, _Glob.ONE):
            fixed.append(regex)
            continue
        if fixed:
            steps.append((_Glob.LITERAL, re.compile("".join(fixed)), len(fixed)))
            fixed = []
        steps.append((kind, None, 0))
    if fixed:
        steps.append((_Glob.LITERAL, re.compile("".join(fixed)), len(fixed)))
    return tuple(steps)


def _match_positions(steps: Tuple[_Step, ...], name: str) -> bool:
    """Match by the set of positions the glob so far can end at: each step is one
    pass over the name, so the cost is len(name) x len(steps) whatever the glob."""
    end = len(name)
    positions = {0}
    for kind, fixed, width in steps:
        if kind is _Glob.LITERAL:
            assert fixed is not None
            positions = {p + width for p in positions if fixed.match(name, p)}
        elif kind is _Glob.ANY:
            positions = set(range(min(positions), end + 1))
        elif kind is _Glob.STAR:
            reached: Set[int] = set()
            for p in sorted(positions):
                if p not in reached:  # else its whole component is in already
                    slash = name.find("/", p)
                    reached.update(range(p, end + 1 if slash == -1 else slash + 1))
            positions = reached
        else:  # DIRS: p, then the position after each later "/" while components are not empty
            reached = set()
            for start in sorted(positions):
                p = start
                while p not in reached:
                    reached.add(p)
                    slash = name.find("/", p)
                    if slash <= p:
                        break
                    p = slash + 1
            positions = reached
        if not positions:
            return False
    return end in positions


class GlobMatcher:
    """A compiled cgroup glob (see ``compile_glob``)."""

    __slots__ = ("_regex", "_steps", "pattern")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        tokens = _glob_tokens(pattern)
        self._regex: Optional[re.Pattern[str]] = None
        self._steps: Tuple[_Step, ...] = ()
        if _is_component_wise(tokens):
            self._regex = re.compile(_component_wise_regex(tokens))
        else:
            self._steps = _position_steps(tokens)

    def matches(self, name: str) -> bool:
        if self._regex is not None:
            return self._regex.match(name) is not None
        return _match_positions(self._steps, name)


def compile_glob(pattern: str) -> GlobMatcher:
    """Compile a cgroup glob: ``*`` and ``?`` stay inside one path component,
    ``**`` spans any number of components (including none), ``[...]`` is a class
    (``[!...]`` negated) of characters of one component.

    Matching costs time linear in the name's length (times the glob's): a
    tenant who can make a deep tree must not make discovery slow. The usual
    globs, where every ``**`` is a whole component, become one regular
    expression that never backtracks across a component it has settled; a
    ``**`` glued to other characters (``a**b``, ``**.scope``: any characters,
    "/" included) is matched by a pass over the name's positions per token.
    Raises ``re.error`` for a class the regular-expression syntax refuses
    (``[z-a]``).
    """
    return GlobMatcher(pattern)


@dataclass(frozen=True)
class KubernetesSelector:
    """``target.kubernetes``: which Kubernetes cgroups, by QoS class and namespace.

    ``None`` means "any". A cgroup that is not Kubernetes' (``identity.kubernetes``
    false) always matches: the selector narrows pods, it does not exclude services.
    With namespaces to select or exclude, a Kubernetes cgroup whose namespace is
    unknown does not match: unknown is not "outside kube-system".
    """

    qos: Optional[FrozenSet[QosClass]] = None
    namespaces: Optional[FrozenSet[str]] = None
    exclude_namespaces: FrozenSet[str] = frozenset()

    def matches(self, identity: Identity) -> bool:
        if not identity.kubernetes:
            return True
        if self.qos is not None and identity.qos_class not in self.qos:
            return False
        if self.namespaces is None and not self.exclude_namespaces:
            return True
        namespace = identity.pod_namespace
        if namespace is None:
            return False
        if self.namespaces is not None and namespace not in self.namespaces:
            return False
        return namespace not in self.exclude_namespaces


@dataclass(frozen=True)
class CgroupSelector:
    """Which cgroups a policy watches: globs relative to the cgroup root, narrowed for Kubernetes."""

    include: Tuple[str, ...]
    exclude: Tuple[str, ...] = ()
    kubernetes: Optional[KubernetesSelector] = None
    _include: Tuple[GlobMatcher, ...] = field(init=False, repr=False, compare=False)
    _exclude: Tuple[GlobMatcher, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_include", tuple(compile_glob(p) for p in self.include))
        object.__setattr__(self, "_exclude", tuple(compile_glob(p) for p in self.exclude))

    def matches(self, cgroup: str) -> bool:
        """The globs alone (no identity needed)."""
        if not any(g.matches(cgroup) for g in self._include):
            return False
        return not any(g.matches(cgroup) for g in self._exclude)

    def selects(self, identity: Identity) -> bool:
        """The globs on ``identity.cgroup``, then ``kubernetes`` on the identity."""
        if not self.matches(identity.cgroup):
            return False
        return self.kubernetes is None or self.kubernetes.matches(identity)


@dataclass(frozen=True)
class NodeTarget:
    """The node itself, watched through ``/proc/pressure/memory``."""


Target = Union[CgroupSelector, NodeTarget]


@dataclass(frozen=True)
class Conditions:
    """Preconditions on what the memory is made of; ``None`` = not checked.

    All must hold for the policy to act. They are evaluated on a fresh snapshot.
    """

    min_reclaimable_fraction: Optional[float] = None  # reclaimable cache / memory.current
    memory_high_unset: Optional[bool] = None
    min_usage_fraction_of_max: Optional[float] = None  # memory.current / memory.max


@dataclass(frozen=True)
class RateLimit:
    cooldown_sec: float
    max_per_hour: int


@dataclass(frozen=True)
class ReclaimFollowUp:
    """After a pressure the reclaim relieved: look every ``every_sec`` for ``for_sec`` and reclaim
    again once memory.current reaches ``min_usage_fraction_of_max`` of memory.max."""

    every_sec: float
    min_usage_fraction_of_max: float
    for_sec: float


@dataclass(frozen=True)
class ReclaimAction:
    """Write ``memory.reclaim``: ``fraction`` of the reclaimable-cache estimate, capped."""

    fraction: float
    min_bytes: int  # below this much reclaimable cache, skip (with a record)
    max_bytes: Optional[int]  # cap per write
    timeout_sec: float  # time budget for the write
    limits: RateLimit
    follow_up: Optional[ReclaimFollowUp] = None
    kind: Knob = field(default=Knob.RECLAIM, init=False)


@dataclass(frozen=True)
class MemoryHighAction:
    """Set ``memory.high`` to ``fraction`` x (memory.max | memory.current), never below the floor."""

    relative_to: str  # "max" | "current"
    fraction: float
    floor_margin_bytes: int  # added to the unreclaimable floor
    min_bytes: Optional[int]  # explicit floor set by the operator
    limits: RateLimit
    max_clamped_cgroups: int = 100  # cgroups of the policy holding a memory.high of ours at once
    kind: Knob = field(default=Knob.MEMORY_HIGH, init=False)


@dataclass(frozen=True)
class VfsCachePressureAction:
    """Node-wide ``vm.vfs_cache_pressure``; restored when the calm returns."""

    value: int
    limits: RateLimit
    kind: Knob = field(default=Knob.VFS_CACHE_PRESSURE, init=False)


@dataclass(frozen=True)
class DropCachesAction:
    """Node-wide ``vm.drop_caches`` (1 page cache, 2 slab, 3 both); not reversible, rate-limited."""

    mode: int
    limits: RateLimit
    kind: Knob = field(default=Knob.DROP_CACHES, init=False)


ActionSpec = Union[ReclaimAction, MemoryHighAction, VfsCachePressureAction, DropCachesAction]

NODE_WIDE_KINDS = frozenset({"vfs_cache_pressure", "drop_caches"})


@dataclass(frozen=True)
class Rollback:
    calm_sec: float  # pressure must stay below the threshold this long before changes are undone
    restore_on_exit: bool


@dataclass(frozen=True)
class Policy:
    name: str
    source: str  # the file it came from, for records
    target: Target
    trigger: TriggerSpec
    conditions: Conditions
    ladder: Tuple[ActionSpec, ...]
    verify_sec: float  # after a rung, wait this long for pressure to fall before the next
    rollback: Rollback
    # Node-wide rungs in a cgroup policy only when the operator says so.
    allow_node_wide: bool = False
    description: str = ""
    # Disabled policies are loaded and checked but not run.
    enabled: bool = True

    @property
    def is_node(self) -> bool:
        return isinstance(self.target, NodeTarget)
