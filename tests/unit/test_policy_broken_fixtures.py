# ruff: noqa: E501 -- each expected message stays on one line, exactly as printed
"""Every broken policy fixture, with the exact located messages an operator sees.

The fixtures live in tests/fixtures/policies/broken/; each is named for its
mistake. The messages are part of the interface (operators grep for them, docs
quote them), so they are pinned here character for character.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import pytest

from remediator.policy.loader import load_policy_dir, load_policy_file

BROKEN_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "policies" / "broken"

EXPECTED: Dict[str, List[str]] = {
    "anchors.yaml": [
        "broken/anchors.yaml:9:5: actions[0]: anchors (&gentle) are not supported: write the value out",
        "broken/anchors.yaml:12:5: actions[1].<<: merge keys (<<) are not supported: write the keys out",
        "broken/anchors.yaml:15:13: rollback.calm_sec: anchors (&calm) are not supported: write the value out",
        "broken/anchors.yaml:16:13: verify_sec: aliases (*calm) are not supported: write the value out",
    ],
    "bad-size-suffix.yaml": [
        "broken/bad-size-suffix.yaml:10:5: actions[0].min_bytes: not a size: write bytes (an integer) or a number with Ki, Mi, Gi or Ti (got '16MB')",
        "broken/bad-size-suffix.yaml:11:5: actions[0].max_bytes: not a size: write bytes (an integer) or a number with Ki, Mi, Gi or Ti (got '1.5Gi')",
    ],
    "comments-only.yaml": [
        "broken/comments-only.yaml:1:1: (file): empty: a policy needs at least target, trigger and actions",
    ],
    "control-character.yaml": [
        "broken/control-character.yaml:3:20: (syntax): character #x0007 is not allowed in YAML (special characters are not allowed)",
    ],
    "duplicate-key.yaml": [
        "broken/duplicate-key.yaml:8:3: trigger.stall_ms: duplicate key (first at line 6)",
    ],
    "duplicate-rung.yaml": [
        "broken/duplicate-rung.yaml:11:5: actions[2].kind: duplicate rung 'reclaim' (already actions[0])",
    ],
    "empty-ladder-and-include.yaml": [
        "broken/empty-ladder-and-include.yaml:3:3: target.include: must not be empty",
        "broken/empty-ladder-and-include.yaml:8:1: actions: must not be empty",
    ],
    "empty.yaml": [
        "broken/empty.yaml:1:1: (file): empty: a policy needs at least target, trigger and actions",
    ],
    "fraction-too-big.yaml": [
        "broken/fraction-too-big.yaml:14:5: actions[1].fraction: must be <= 1 (got 1.5)",
    ],
    "glob-absolute.yaml": [
        "broken/glob-absolute.yaml:3:13: target.include[0]: can never match under the cgroup root: globs are relative to it (write 'system.slice/*.service', got '/system.slice/*.service')",
        "broken/glob-absolute.yaml:4:13: target.exclude[0]: can never match under the cgroup root: empty path component in 'system.slice//remediator.service'",
    ],
    "glob-brackets.yaml": [
        "broken/glob-brackets.yaml:3:13: target.include[0]: can never match under the cgroup root: unbalanced '[' in 'system.slice/app-[0-9.service'",
        "broken/glob-brackets.yaml:3:46: target.include[1]: can never match under the cgroup root: empty character class in 'system.slice/[!]x'",
    ],
    "glob-dotdot.yaml": [
        "broken/glob-dotdot.yaml:5:7: target.include[1]: can never match under the cgroup root: '..' is not a cgroup name (got 'system.slice/../init.scope')",
    ],
    "invalid-utf8.yaml": [
        "broken/invalid-utf8.yaml:1:18: (file): not valid UTF-8 (byte e9)",
    ],
    "leading-zero.yaml": [
        "broken/leading-zero.yaml:6:13: trigger.stall_ms: leading zero: write 493 or '0755'",
    ],
    "many-errors.yaml": [
        "broken/many-errors.yaml:5:39: target.include[1]: can never match under the cgroup root: globs are relative to it (write 'kubepods.slice/**', got '/kubepods.slice/**')",
        "broken/many-errors.yaml:7:3: trigger.pressure: must be 'some' or 'full' (got 'high')",
        "broken/many-errors.yaml:9:3: trigger.window_ms: must be >= 500 (got 100)",
        "broken/many-errors.yaml:12:5: actions[0].fraction: must be <= 1 (got 1.5)",
        "broken/many-errors.yaml:13:5: actions[0].min_bytes: not a size: write bytes (an integer) or a number with Ki, Mi, Gi or Ti (got '16 Mi')",
        "broken/many-errors.yaml:16:19: actions[1].cooldown_sec: 'no' is ambiguous in YAML 1.1 (read as false): write false, or quote it if a string is meant",
        "broken/many-errors.yaml:18:3: rollback.calm_sec: must be > 0 (got 0)",
        "broken/many-errors.yaml:19:1: enable: unknown key (expected one of: description, target, trigger, conditions, actions, verify_sec, rollback, allow_node_wide, enabled)",
    ],
    "memory-high-current-without-min.yaml": [
        "broken/memory-high-current-without-min.yaml:9:5: actions[0].min_bytes: required when relative_to is current (the target follows usage down)",
    ],
    "missing-target.yaml": [
        "broken/missing-target.yaml:1:1: target: required",
    ],
    "missing-trigger-keys.yaml": [
        "broken/missing-trigger-keys.yaml:4:1: trigger.pressure: required",
        "broken/missing-trigger-keys.yaml:4:1: trigger.window_ms: required",
        "broken/missing-trigger-keys.yaml:8:5: actions[1].kind: required (one of 'reclaim', 'memory_high', 'vfs_cache_pressure', 'drop_caches')",
    ],
    "missing-trigger.yaml": [
        "broken/missing-trigger.yaml:2:1: trigger: required",
    ],
    "node-wide-in-cgroups-policy.yaml": [
        "broken/node-wide-in-cgroups-policy.yaml:10:5: actions[1].kind: 'drop_caches' acts on the whole node: set allow_node_wide: true to allow it here",
    ],
    "node-with-conditions.yaml": [
        "broken/node-with-conditions.yaml:8:3: conditions.min_reclaimable_fraction: conditions are about a cgroup's memory: a node policy cannot use them",
    ],
    "node-with-include.yaml": [
        "broken/node-with-include.yaml:3:3: target.include: unknown key (expected one of: kind)",
    ],
    "node-with-reclaim.yaml": [
        "broken/node-with-reclaim.yaml:8:5: actions[0].kind: 'reclaim' needs a cgroup to act on: a node policy cannot use it",
    ],
    "non-string-keys.yaml": [
        "broken/non-string-keys.yaml:8:3: trigger.2000: keys must be strings: quote it ('2000')",
        "broken/non-string-keys.yaml:11:5: actions[0].yes: 'yes' is ambiguous in YAML 1.1 (read as true): write true, or quote it if a string is meant",
    ],
    "stall-over-window.yaml": [
        "broken/stall-over-window.yaml:6:3: trigger.stall_ms: must be <= window_ms (2000) (got 3000)",
    ],
    "tabs.yaml": [
        "broken/tabs.yaml:3:1: (syntax): found character '\\t' that cannot start any token (while scanning for the next token); YAML indents with spaces, not tabs",
    ],
    "tags.yaml": [
        "broken/tags.yaml:6:13: trigger.stall_ms: tags (!!int) are not supported: write a plain value",
    ],
    "top-level-list.yaml": [
        "broken/top-level-list.yaml:1:1: (document): a policy must be a mapping of keys (got a list)",
    ],
    "two-documents.yaml": [
        "broken/two-documents.yaml:1:1: actions: required",
        "broken/two-documents.yaml:1:1: trigger: required",
        "broken/two-documents.yaml:3:1: (document): only one YAML document per file (remove the second '---')",
    ],
    "unclosed-flow.yaml": [
        "broken/unclosed-flow.yaml:4:1: (syntax): expected ',' or ']', but got '<scalar>' (while parsing a flow sequence)",
    ],
    "unknown-action.yaml": [
        "broken/unknown-action.yaml:10:5: actions[1].kind: unknown kind 'shrink' (known: 'reclaim', 'memory_high', 'vfs_cache_pressure', 'drop_caches')",
    ],
    "unknown-key.yaml": [
        "broken/unknown-key.yaml:4:1: trigger.stall_ms: required",
        "broken/unknown-key.yaml:6:3: trigger.threshold_ms: unknown key (expected one of: pressure, stall_ms, window_ms, sustained_sec)",
    ],
    "vfs-cache-pressure-zero.yaml": [
        "broken/vfs-cache-pressure-zero.yaml:9:5: actions[0].value: 0 is dangerous: the kernel would never reclaim dentries and inodes (use 1..1000)",
    ],
    "window-too-short.yaml": [
        "broken/window-too-short.yaml:7:3: trigger.window_ms: must be >= 500 (got 100)",
    ],
    "wrong-types.yaml": [
        "broken/wrong-types.yaml:3:3: target.include: must be a list (got 'system.slice/*.service')",
        "broken/wrong-types.yaml:6:3: trigger.stall_ms: must be an integer (got '100')",
        "broken/wrong-types.yaml:7:3: trigger.window_ms: must be an integer (got 2000.5)",
        "broken/wrong-types.yaml:10:5: actions[0].mode: must be 1, 2 or 3 (got 4)",
        "broken/wrong-types.yaml:11:1: allow_node_wide: must be true or false (got 1)",
        "broken/wrong-types.yaml:12:1: verify_sec: must be > 0 (got -1)",
    ],
    "yaml11-boolean.yaml": [
        "broken/yaml11-boolean.yaml:5:13: trigger.pressure: 'on' is ambiguous in YAML 1.1 (read as true): write true, or quote it if a string is meant",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_policy_is_refused_with_exact_located_messages(name: str) -> None:
    policy, issues = load_policy_file(BROKEN_DIR / name, display_name=f"broken/{name}")

    assert policy is None
    assert [str(issue) for issue in issues] == EXPECTED[name]


def test_every_broken_fixture_has_its_expected_messages_pinned() -> None:
    on_disk = sorted(path.name for path in BROKEN_DIR.iterdir())

    assert on_disk == sorted(EXPECTED)
    assert len(on_disk) >= 20


def test_loading_the_broken_directory_yields_no_policy_and_names_files_relative_to_its_parent() -> None:
    policy_set = load_policy_dir(BROKEN_DIR)

    assert policy_set.policies == ()
    assert {issue.file for issue in policy_set.issues} == {f"broken/{name}" for name in EXPECTED}
    assert len(policy_set.files) == len(EXPECTED)
