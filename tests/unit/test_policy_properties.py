"""Properties of the policy loader (Hypothesis).

- Whatever the input (text, bytes, YAML-shaped junk, policy-shaped junk), the
  loader returns issues and never raises; a policy comes back only without issues.
- A valid policy written out as YAML loads back to the same compiled policy.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from remediator.located.issues import PolicyIssue
from remediator.located.yaml_doc import decode_utf8
from remediator.policy.compile import compile_policy
from remediator.policy.compiled import Policy
from remediator.policy.loader import load_policy_text, parse_policy_text
from remediator.policy.models import PolicyDocument

FILE = "policies.d/p.yaml"
PROPERTY_SETTINGS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


def assert_well_formed_outcome(text: str, policy: Optional[Policy], issues: List[PolicyIssue]) -> None:
    assert (policy is None) == bool(issues)
    # YAML also breaks lines at CR, NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR.
    line_count = sum(text.count(brk) for brk in "\n\r\x85\u2028\u2029") + 2
    for issue in issues:
        assert issue.file == FILE
        assert issue.line is not None
        assert issue.column is not None
        assert 1 <= issue.line <= line_count
        assert issue.column >= 1
        assert str(issue).startswith(f"{FILE}:{issue.line}:{issue.column}: ")
        assert issue.message


def load(text: str) -> Tuple[Optional[Policy], List[PolicyIssue]]:
    return load_policy_text(text, FILE, "p")


# --------------------------------------------------------------------------
# Never raises

YAML_TOKENS = [
    "a", "kind", "target", "actions", "trigger", ":", ": ", " ", "  ", "\n", "- ", "[", "]", "{", "}", ",",
    "&x ", "*x", "!!str ", "!t ", "'", '"', "# c", "\t", "yes", "0755", "1.5", "null", "~", "---\n", "...\n",
    "<<: ", "? ", "|\n", ">\n", "%YAML 1.1\n", "\\", "\x00", "\ufeff", "\u2028", "é",
]  # fmt: skip


@PROPERTY_SETTINGS
@given(st.text())
def test_arbitrary_text_gives_issues_never_an_exception(text: str) -> None:
    policy, issues = load(text)

    assert_well_formed_outcome(text, policy, issues)


@PROPERTY_SETTINGS
@given(st.lists(st.sampled_from(YAML_TOKENS), max_size=60).map("".join))
def test_yaml_token_soup_gives_issues_never_an_exception(text: str) -> None:
    policy, issues = load(text)

    assert_well_formed_outcome(text, policy, issues)


@PROPERTY_SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes_give_issues_never_an_exception(data: bytes) -> None:
    text, issues = decode_utf8(data, FILE)
    if text is None:
        assert len(issues) == 1
        return
    policy, issues = load(text)

    assert_well_formed_outcome(text, policy, issues)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["some", "full"]),
)
yamlish = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=16,
)
action_junk = st.one_of(
    yamlish,
    st.fixed_dictionaries(
        {
            "kind": st.one_of(
                st.sampled_from(["reclaim", "memory_high", "vfs_cache_pressure", "drop_caches"]), yamlish
            )
        },
        optional=dict.fromkeys(
            ("fraction", "min_bytes", "max_bytes", "value", "mode", "relative_to", "cooldown_sec"), yamlish
        ),
    ),
)
policyish = st.fixed_dictionaries(
    {},
    optional={
        "description": yamlish,
        "target": st.one_of(
            yamlish,
            st.fixed_dictionaries(
                {"kind": st.one_of(st.sampled_from(["cgroups", "node"]), yamlish)},
                optional={"include": st.lists(st.one_of(st.text(max_size=12), yamlish), max_size=3)},
            ),
        ),
        "trigger": st.one_of(
            yamlish,
            st.fixed_dictionaries(
                {}, optional={"pressure": yamlish, "stall_ms": yamlish, "window_ms": yamlish}
            ),
        ),
        "conditions": yamlish,
        "actions": st.one_of(yamlish, st.lists(action_junk, max_size=4)),
        "rollback": yamlish,
        "verify_sec": yamlish,
        "enabled": yamlish,
        "extra": yamlish,
    },
)


@PROPERTY_SETTINGS
@given(st.one_of(yamlish, policyish))
def test_arbitrary_yaml_structures_give_issues_never_an_exception(value: Any) -> None:
    text = yaml.safe_dump(value)
    policy, issues = load(text)

    assert_well_formed_outcome(text, policy, issues)


# --------------------------------------------------------------------------
# Round trip


class _QuotingDumper(yaml.SafeDumper):
    """Writes every string double-quoted, so no string can be read back as something else."""


def _quoted_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style='"')


_QuotingDumper.add_representer(str, _quoted_str)

component = st.one_of(
    st.from_regex(r"[a-z][a-z0-9_@-]{0,8}(\.slice|\.service|\.scope)?", fullmatch=True),
    st.sampled_from(["*", "**", "*.service", "pod*", "app-[0-9]", "x?"]),
)
cgroup_glob = st.lists(component, min_size=1, max_size=4).map("/".join)
fraction = st.floats(min_value=0, max_value=1, exclude_min=True)
seconds = st.floats(min_value=0, max_value=1e6)
positive_seconds = st.floats(min_value=0, max_value=1e6, exclude_min=True)
size = st.integers(min_value=0, max_value=1 << 50)
positive_size = st.integers(min_value=1, max_value=1 << 50)
per_hour = st.integers(min_value=1, max_value=1000)


@st.composite
def trigger_dicts(draw: st.DrawFn) -> Dict[str, Any]:
    window = draw(st.integers(min_value=500, max_value=10000))
    return {
        "pressure": draw(st.sampled_from(["some", "full"])),
        "stall_ms": draw(st.integers(min_value=1, max_value=window)),
        "window_ms": window,
        "sustained_sec": draw(seconds),
    }


@st.composite
def action_dict(draw: st.DrawFn, kind: str) -> Dict[str, Any]:
    limits = {"cooldown_sec": draw(seconds), "max_per_hour": draw(per_hour)}
    if kind == "reclaim":
        return {
            "kind": kind,
            "fraction": draw(fraction),
            "min_bytes": draw(size),
            "max_bytes": draw(st.one_of(st.none(), positive_size)),
            "timeout_sec": draw(st.floats(min_value=0, max_value=30, exclude_min=True)),
            **limits,
        }
    if kind == "memory_high":
        relative_to = draw(st.sampled_from(["max", "current"]))
        minimum = (
            draw(positive_size) if relative_to == "current" else draw(st.one_of(st.none(), positive_size))
        )
        return {
            "kind": kind,
            "relative_to": relative_to,
            "fraction": draw(fraction),
            "floor_margin_bytes": draw(size),
            "min_bytes": minimum,
            **limits,
        }
    if kind == "vfs_cache_pressure":
        return {"kind": kind, "value": draw(st.integers(min_value=1, max_value=1000)), **limits}
    return {"kind": kind, "mode": draw(st.sampled_from([1, 2, 3])), **limits}


@st.composite
def valid_policy_dicts(draw: st.DrawFn) -> Dict[str, Any]:
    is_node = draw(st.booleans())
    kinds = ["vfs_cache_pressure", "drop_caches"] if is_node else [
        "reclaim", "memory_high", "vfs_cache_pressure", "drop_caches"
    ]  # fmt: skip
    ladder = draw(st.lists(st.sampled_from(kinds), min_size=1, unique=True))
    uses_node_wide = any(kind in ("vfs_cache_pressure", "drop_caches") for kind in ladder)
    document: Dict[str, Any] = {
        "description": draw(st.text(max_size=30)),
        "target": {"kind": "node"}
        if is_node
        else {
            "kind": "cgroups",
            "include": draw(st.lists(cgroup_glob, min_size=1, max_size=3)),
            "exclude": draw(st.lists(cgroup_glob, max_size=2)),
        },
        "trigger": draw(trigger_dicts()),
        "actions": [draw(action_dict(kind)) for kind in ladder],
        "verify_sec": draw(positive_seconds),
        "rollback": {"calm_sec": draw(positive_seconds), "restore_on_exit": draw(st.booleans())},
        "allow_node_wide": True if (uses_node_wide and not is_node) else draw(st.booleans()),
        "enabled": draw(st.booleans()),
    }
    if not is_node:
        document["conditions"] = draw(
            st.one_of(
                st.none(),
                st.fixed_dictionaries(
                    {},
                    optional={
                        "min_reclaimable_fraction": fraction,
                        "memory_high_unset": st.booleans(),
                        "min_usage_fraction_of_max": fraction,
                    },
                ),
            )
        )
    return document


@PROPERTY_SETTINGS
@given(valid_policy_dicts())
def test_a_valid_policy_written_as_yaml_loads_back_to_the_same_compiled_policy(
    document: Dict[str, Any],
) -> None:
    model = PolicyDocument.model_validate(document)
    text = yaml.dump(model.model_dump(), Dumper=_QuotingDumper, sort_keys=False)

    policy, issues = load(text)

    assert [str(issue) for issue in issues] == []
    assert policy == compile_policy(model, name="p", source=FILE)


@PROPERTY_SETTINGS
@given(valid_policy_dicts())
def test_a_valid_policy_written_as_yaml_parses_back_to_an_equal_model(document: Dict[str, Any]) -> None:
    model = PolicyDocument.model_validate(document)
    text = yaml.dump(model.model_dump(), Dumper=_QuotingDumper, sort_keys=False)

    reparsed, issues = parse_policy_text(text, FILE)

    assert issues == []
    assert reparsed == model
