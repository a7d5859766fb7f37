"""The import graph keeps its layers: the pure core does no I/O, the kernel knows no policy, the daemon
knows no command (issue 11). A module that needs to cross a line needs a lower home instead."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set, Tuple

REPO = Path(__file__).resolve().parent.parent.parent
PACKAGE = REPO / "remediator"

# (importer package, imported package): never allowed.
FORBIDDEN = {
    ("core", "daemon"),
    ("core", "commands"),
    ("core", "kernel"),  # the core decides on readings it is given; it reads nothing itself
    ("kernel", "policy"),
    ("kernel", "daemon"),
    ("kernel", "core"),
    ("kernel", "commands"),
    ("policy", "daemon"),
    ("policy", "commands"),
    ("policy", "core"),
    ("daemon", "commands"),
    ("located", "policy"),
    ("knobs", "daemon"),  # a knob's write is handed the executor's services; it does no I/O itself
    ("knobs", "kernel"),
    ("knobs", "commands"),
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else ""  # remediator.<layer>.<module>; top-level modules: ""


def _imports() -> Dict[str, Set[str]]:
    graph: Dict[str, Set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        targets: Set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[module] = {t for t in targets if t.startswith("remediator.")}
    return graph


def test_no_module_imports_across_a_forbidden_layer_line() -> None:
    crossings: List[Tuple[str, str]] = []
    for module, targets in _imports().items():
        for target in targets:
            if (_layer(module), _layer(target)) in FORBIDDEN:
                crossings.append((module, target))
    assert crossings == []


def test_no_class_is_defined_twice_under_one_name() -> None:
    seen: Dict[str, List[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef):
                seen.setdefault(node.name, []).append(path.relative_to(REPO).as_posix())
    assert {name: where for name, where in seen.items() if len(where) > 1} == {}


# A module a reviewer can hold in mind at once: past this, split it along a line of its own.
MAX_MODULE_LINES = 500


def test_every_module_is_under_the_size_a_reviewer_can_read_at_once() -> None:
    sizes = {
        path.relative_to(REPO).as_posix(): len(path.read_text().splitlines())
        for path in sorted(PACKAGE.rglob("*.py"))
    }
    assert {path: n for path, n in sizes.items() if n >= MAX_MODULE_LINES} == {}
