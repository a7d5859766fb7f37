"""Hypothesis strategies: bytes that look enough like each format to get past the first check.

Pure random bytes rarely reach a parser's interesting branches (a PSI file
must start with ``some``), so each strategy mixes three kinds of input:

- raw bytes, for the decoding and line-splitting layers;
- "line soup": lines built from the format's own tokens, with hostile
  variants spliced in (numbers of 5000 digits, non-ASCII digits, NUL, every
  Unicode line break, ``max``, ``nan``...);
- for the YAML and JSON files, valid documents with values replaced by
  hostile ones, and their text with YAML's sharp edges inserted.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

import yaml
from hypothesis import strategies as st

LINE_BREAKS = ["\n", "\r\n", "\r", "\x0b", "\x0c", "\x1c", "\x85", "\u2028"]
SPACES = [" ", "  ", "\t", "\u00a0", "\u3000", ""]
NUMBERS = [
    "0", "1", "42", "4096", "18446744073709551615", "18446744073709551616", "9" * 25, "9" * 5000,
    "-1", "+5", "1_000", "\u0661\u0662\u0663", "\u00b2", "1.5", "1e3", "nan", "inf", "0x10", "max", "",
    "007", "12.34", "99999.99", "1" + "0" * 400 + ".0", ".5", "5.", "1.2.3", "\x00", "\U0001d7d9",
]  # fmt: skip
WORDS = ["some", "full", "avg10", "avg60", "avg300", "total", "anon", "file", "shmem", "low", "high", "max",
         "oom", "oom_kill", "MemTotal", "MemAvailable", "SwapTotal", "SwapFree", "SReclaimable", "kB", "MB",
         ":", "=", "==", "some=", "\x00", "\ufeff", "é"]  # fmt: skip

numbers = st.sampled_from(NUMBERS) | st.integers(min_value=-(2**70), max_value=2**70).map(str)
words = st.sampled_from(WORDS) | st.text(max_size=6)
spaces = st.sampled_from(SPACES)
line_breaks = st.sampled_from(LINE_BREAKS)


def _join_tokens(tokens: List[str], separators: List[str]) -> str:
    out = []
    for i, token in enumerate(tokens):
        out.append(token)
        out.append(separators[i % len(separators)] if separators else " ")
    return "".join(out)


@st.composite
def _soup_line(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(words | numbers, min_size=1, max_size=8))
    return _join_tokens(tokens, draw(st.lists(spaces, min_size=1, max_size=3)))


def _lines(line: st.SearchStrategy[str], max_size: int = 12) -> st.SearchStrategy[bytes]:
    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        body = draw(st.lists(line | _soup_line(), max_size=max_size))
        breaks = draw(st.lists(line_breaks, min_size=1, max_size=3))
        text = "".join(b + breaks[i % len(breaks)] for i, b in enumerate(body))
        encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "latin-1-ish"]))
        if encoding == "latin-1-ish":
            return text.encode("utf-8", "replace") + draw(st.binary(max_size=4))
        return text.encode("utf-8", "surrogatepass")

    return build() | st.binary(max_size=256)


@st.composite
def _psi_line(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["some", "full", "some", "full", "SOME", "cpu", "some\x00"]))
    names = draw(st.permutations(["avg10", "avg60", "avg300", "total"]))
    fields = [f"{name}={draw(numbers)}" for name in names]
    if draw(st.booleans()):
        fields = draw(st.lists(st.sampled_from(fields) | _soup_line(), max_size=6))
    return kind + " " + " ".join(fields)


@st.composite
def _keyed_line(draw: st.DrawFn) -> str:
    return f"{draw(words)}{draw(spaces) or ' '}{draw(numbers)}"


@st.composite
def _meminfo_line(draw: st.DrawFn) -> str:
    unit = draw(st.sampled_from([" kB", "", " MB", " kB kB", "kB"]))
    return f"{draw(words)}:{draw(spaces)}{draw(numbers)}{unit}"


@st.composite
def _mount_line(draw: st.DrawFn) -> str:
    fields = [
        draw(st.sampled_from(["cgroup2", "proc", "none", "\\040", "\\777"]) | st.text(max_size=5)),
        draw(st.sampled_from(["/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/a\\040b", "/\\134"]) | words),
        draw(st.sampled_from(["cgroup2", "cgroup", "proc", "tmpfs"]) | words),
        draw(st.sampled_from(["rw,nosuid", "ro", "", ",,,"]) | words),
        "0",
        "0",
    ]
    return " ".join(fields[: draw(st.integers(min_value=0, max_value=6))])


@st.composite
def _status_line(draw: st.DrawFn) -> str:
    key = draw(st.sampled_from(["CapEff", "CapPrm", "Name", "6.1.0-18-amd64", "9" * 5000 + ".1"]))
    return f"{key}:\t{draw(st.sampled_from(['000001ffffffffff', '0', 'zz', '9' * 5000]) | numbers)}"


NAME_PIECES = ["..", ".", "/", "//", "\\x2d", "\n", "\0", "system.slice", "a.service", "init.scope", "~",
               " ", "é", "%2e%2e", "\udcff", "\u2028"]  # fmt: skip


@st.composite
def _cgroup_names(draw: st.DrawFn) -> bytes:
    pieces = draw(st.lists(st.sampled_from(NAME_PIECES) | st.text(max_size=4), max_size=10))
    return "".join(pieces).encode("utf-8", "surrogateescape")


# ---- YAML ------------------------------------------------------------------------------------

VALID_POLICY: Dict[str, Any] = {
    "description": "fuzz",
    "target": {"kind": "cgroups", "include": ["system.slice/*.service"], "exclude": ["init.scope"]},
    "trigger": {"pressure": "full", "stall_ms": 100, "window_ms": 2000, "sustained_sec": 0},
    "conditions": {"min_reclaimable_fraction": 0.2, "min_usage_fraction_of_max": 0.8},
    "actions": [
        {"kind": "reclaim", "fraction": 0.5, "min_bytes": "16Mi", "max_bytes": "1Gi", "timeout_sec": 5},
        {"kind": "memory_high", "relative_to": "max", "fraction": 0.9, "floor_margin_bytes": "64Mi"},
        {"kind": "vfs_cache_pressure", "value": 200},
        {"kind": "drop_caches", "mode": 1},
    ],
    "verify_sec": 10,
    "rollback": {"calm_sec": 300, "restore_on_exit": True},
    "allow_node_wide": True,
    "enabled": True,
}
VALID_SETTINGS: Dict[str, Any] = {
    "dry_run": True,
    "policies_dir": "/etc/remediator/policies.d",
    "state_file": "/run/remediator/state.json",
    "rescan_interval_sec": 10,
    "sampling_interval_sec": 2,
    "node_actions_max_per_hour": 4,
    "log_target": "json",
    "write_retry_budget_sec": 2.0,
}
HOSTILE_SCALARS: List[Any] = [
    None, True, False, 0, -1, 2**63, 10**30, 1e308, -0.0, 0.1, "", "max", "1Gi", "16Mi", "1.5Gi", "-1Mi",
    "9" * 5000, "1e999", "yes", "on", "0755", "0x1f", "1_000", "1:30", ".inf", ".nan", "~", "null",
    "**", "../../etc", "/abs/**", "[a-", "[!]", "a[b]c", "*" * 300, "\x00", "\u2028", "\udcff", "é" * 50,
    [], {}, [[[]]], {"kind": "reclaim"}, ["system.slice/*.service"] * 3,
]  # fmt: skip
YAML_EDGES = ["\t", "&a ", "*a", "!!python/object:os.system ", "<<: ", "{", "}", "[", "]", "---\n",
              "...\n", "%YAML 1.1\n", "? ", ": ", "- ", "#", "'", '"', "|\n", ">\n", "\ufeff", "\x00",
              "[" * 200, "{a: " * 50, "\n  ", "key: value\nkey: value\n"]  # fmt: skip
hostile_scalars = st.sampled_from(HOSTILE_SCALARS) | st.integers() | st.floats() | st.text(max_size=12)


KeyPath = Tuple[Union[str, int], ...]


def _paths(value: Any, prefix: KeyPath = ()) -> List[KeyPath]:
    """Every position in a JSON-like document, the document itself first."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(_paths(child, (*prefix, index)))
    return found


def _get(document: Any, path: KeyPath) -> Any:
    for key in path:
        document = document[key]
    return document


def _with(document: Any, path: KeyPath, new: Any, delete: bool = False) -> Any:
    """A copy of ``document`` with the value at ``path`` replaced (or deleted)."""
    if not path:
        return new
    copy: Any = dict(document) if isinstance(document, dict) else list(document)
    head, rest = path[0], path[1:]
    if not rest:
        if delete:
            del copy[head]
        else:
            copy[head] = new
    else:
        copy[head] = _with(copy[head], rest, new, delete)
    return copy


@st.composite
def _mutated_document(draw: st.DrawFn, valid: Dict[str, Any]) -> Any:
    """``valid`` with up to four edits: a value replaced, a key deleted, an unknown key added."""
    document: Any = json.loads(json.dumps(valid))
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        path = draw(st.sampled_from(_paths(document)))
        edit = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if edit == "delete" and path:
            document = _with(document, path, None, delete=True)
        elif edit == "add" and isinstance(_get(document, path), dict):
            document = _with(document, (*path, draw(st.text(max_size=8))), draw(hostile_scalars))
        else:
            document = _with(document, path, draw(hostile_scalars))
    return document


def _dump(value: Any) -> str:
    try:
        return yaml.safe_dump(value, default_flow_style=None, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:
        return repr(value)


@st.composite
def _text_mutation(draw: st.DrawFn, text: str) -> str:
    for _ in range(draw(st.integers(min_value=1, max_value=5))):
        at = draw(st.integers(min_value=0, max_value=len(text)))
        action = draw(st.integers(min_value=0, max_value=2))
        if action == 0:
            text = text[:at] + draw(st.sampled_from(YAML_EDGES) | st.text(max_size=4)) + text[at:]
        elif action == 1:
            end = draw(st.integers(min_value=at, max_value=min(len(text), at + 20)))
            text = text[:at] + text[end:]
        else:
            text = text[:at] + draw(st.sampled_from(NUMBERS)) + text[at:]
    return text


def _yaml_inputs(valid: Dict[str, Any]) -> st.SearchStrategy[bytes]:
    structured = _mutated_document(valid).map(_dump)
    mutated_text = _text_mutation(_dump(valid))
    soup = st.lists(st.sampled_from(YAML_EDGES) | words | numbers, max_size=30).map("".join)
    texts = structured | mutated_text | soup | st.text(max_size=200)
    return texts.map(lambda t: t.encode("utf-8", "surrogatepass")) | st.binary(max_size=200)


# ---- the state file (JSON) ---------------------------------------------------------------------

VALID_STATE: Dict[str, Any] = {
    "schema_version": 1,
    "entries": [
        {"kind": "memory_high", "cgroup": "system.slice/a.service", "original": "max", "ours": 3221225472,
         "pending": None, "policy": "p", "recorded_at": 1700000000.0},
        {"kind": "sysctl", "sysctl": "vfs_cache_pressure", "original": 100, "ours": 200,
         "pending": {"value": 200}, "policy": "node", "recorded_at": 1700000000.0},
    ],
}  # fmt: skip


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return "{"


def _state_inputs() -> st.SearchStrategy[bytes]:
    structured = _mutated_document(VALID_STATE).map(_json_text)
    mutated_text = _text_mutation(json.dumps(VALID_STATE))
    texts = structured | mutated_text | st.text(max_size=100)
    return texts.map(lambda t: t.encode("utf-8", "surrogatepass")) | st.binary(max_size=200)


CORPUS = Path(__file__).resolve().parent / "corpus"


def seeds(target: str) -> List[str]:
    """The target's seed files (real or realistic files, ``corpus/<target>/seed-*``)."""
    return [
        p.read_bytes().decode("utf-8", "surrogateescape") for p in sorted((CORPUS / target).glob("seed-*"))
    ]


@st.composite
def _token_mutation(draw: st.DrawFn, target: str) -> bytes:
    """A seed of ``target`` with a few of its tokens (split at spaces, '=' and ':') replaced,
    or lines dropped or repeated: most inputs then get past the first checks and reach the
    branches a random file never does."""
    valid = draw(st.sampled_from(seeds(target)))
    tokens = re.split(r"([ =:\n]+)", valid)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        at = draw(st.integers(min_value=0, max_value=len(tokens) - 1))
        tokens[at] = draw(numbers | words | spaces | line_breaks)
    text = "".join(tokens)
    lines = text.split("\n")
    if draw(st.booleans()):
        picked = draw(st.lists(st.sampled_from(lines), min_size=1, max_size=len(lines) + 2))
        text = "\n".join(picked)
    return text.encode("utf-8", "surrogatepass")


GLOB_PIECES = ["d", "x", "/", "*", "**", "**/", "?", "[d]", "[!d]", "[a-e]", "[", "]", ".", "\\", "[]"]


@st.composite
def _glob_and_name(draw: st.DrawFn) -> bytes:
    """A glob of globstars, stars and classes, and a name, often a deep ``d/d/d/...`` that is
    almost matched (the shape that made matching exponential), sometimes a short arbitrary one."""
    glob = "".join(draw(st.lists(st.sampled_from(GLOB_PIECES), min_size=1, max_size=12)))
    if draw(st.booleans()):
        depth = draw(st.integers(min_value=1, max_value=400))
        last = draw(st.sampled_from(["d", "x", "dx", "d" * 255, ""]))
        name = "/".join(["d"] * depth + ([last] if last else []))
    else:
        name = draw(st.text(alphabet="dx/[].*?", max_size=30))
    return f"{glob}\n{name}".encode("utf-8", "surrogatepass")


STRATEGIES: Dict[str, st.SearchStrategy[bytes]] = {
    "psi": _token_mutation("psi") | _lines(_psi_line(), max_size=4),
    "memory_stat": _token_mutation("memory_stat") | _lines(_keyed_line()),
    "memory_events": _token_mutation("memory_events") | _lines(_keyed_line()),
    "meminfo": _token_mutation("meminfo") | _lines(_meminfo_line()),
    "single_values": _lines(numbers, max_size=2),
    "capabilities": _token_mutation("capabilities") | _lines(_mount_line() | _status_line()),
    "cgroup_name": _cgroup_names() | st.binary(max_size=40),
    "cgroup_glob": _glob_and_name() | st.binary(max_size=60),
    "policy": _yaml_inputs(VALID_POLICY),
    "settings": _yaml_inputs(VALID_SETTINGS),
    "state_file": _state_inputs(),
}
