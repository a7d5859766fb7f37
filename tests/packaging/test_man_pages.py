"""The man pages (issue 12, item 18): complete, generated where they list what the code defines, valid roff.

remediator(8) missed `--log-target json`, `record`, the settings keys and the policy language. Now its
SETTINGS section and the whole of remediator-policy(5) are written by packaging/man/generate.py from the
settings and policy models, and these tests hold the hand-written rest (commands and options) and
README's settings table to the code.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import typing
from typing import Iterator, List, Set, Tuple, Type

from pydantic import BaseModel

from remediator.cli import build_parser
from remediator.policy.models import PolicyDocument
from remediator.settings import ENV_PREFIX, Settings
from tests.packaging.conftest import REPO_ROOT
from tests.packaging.host_tools import require_commands

MAN_DIR = REPO_ROOT / "packaging" / "man"
MAIN_PAGE = MAN_DIR / "remediator.8"
POLICY_PAGE = MAN_DIR / "remediator-policy.5"
GENERATOR = MAN_DIR / "generate.py"


def roff(text: str) -> str:
    return text.replace("-", "\\-")


def test_generated_man_sections_match_the_models() -> None:
    completed = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False
    )

    assert completed.returncode == 0, completed.stdout + completed.stderr


def _commands_and_options(parser: argparse.ArgumentParser) -> Iterator[Tuple[str, List[str], List[str]]]:
    """(command, its option strings, the choices of its options), the global options under ""."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    yield "", [s for a in parser._actions for s in a.option_strings if s not in ("-h", "--help")], []
    for action in subparsers:
        for name, sub in action.choices.items():
            options = [s for a in sub._actions for s in a.option_strings if s not in ("-h", "--help")]
            choices = [str(c) for a in sub._actions if a.option_strings and a.choices for c in a.choices]
            yield name, options, choices


def test_every_command_option_and_choice_of_the_cli_is_in_the_man_page() -> None:
    page = MAIN_PAGE.read_text()
    missing = []
    for command, options, choices in _commands_and_options(build_parser()):
        if command and f".B {command}\n" not in page:
            missing.append(command)
        missing += [f"{command} {option}" for option in options if roff(option) not in page]
        missing += [f"{command} choice {choice}" for choice in choices if choice not in page]

    assert missing == []
    assert ".IR auto | journal | stderr | json ]" in page


def test_every_settings_key_and_its_variable_is_in_the_man_page() -> None:
    page = MAIN_PAGE.read_text()
    for key in Settings.model_fields:
        assert f'.BR {roff(key)} " (" {roff(ENV_PREFIX + key.upper())} )' in page


def test_readmes_settings_table_lists_exactly_the_settings_keys() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    table = readme.split("| key | default | meaning |", 1)[1].split("\n\n", 1)[0]
    keys: Set[str] = set()
    for row in table.splitlines()[2:]:
        keys.update(re.findall(r"`([a-z_]+)`", row.split("|")[1]))

    assert keys == set(Settings.model_fields)


def _field_names(model: Type[BaseModel]) -> Iterator[str]:
    # get_type_hints: pydantic keeps forward references (a model defined further down) unresolved.
    hints = typing.get_type_hints(model, vars(sys.modules[model.__module__]), include_extras=True)
    for name in model.model_fields:
        yield name
        for nested in _models(hints[name]):
            yield from _field_names(nested)


def _models(annotation: object) -> Iterator[Type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for argument in getattr(annotation, "__args__", ()):
        yield from _models(argument)
    for argument in getattr(annotation, "__metadata__", ()):
        yield from _models(argument)


def test_every_key_of_every_policy_model_is_in_the_policy_page() -> None:
    page = POLICY_PAGE.read_text()
    names = set(_field_names(PolicyDocument))

    assert {"stall_ms", "include", "qos", "follow_up", "every_sec", "floor_margin_bytes", "mode"} <= names
    assert sorted(n for n in names if not re.search(rf"\b{re.escape(roff(n))}\b", page)) == []
    for kind in ("reclaim", "memory_high", "vfs_cache_pressure", "drop_caches", "cgroups", "node"):
        assert f'kind: {roff(kind)}"' in page


def test_man_pages_are_valid_roff_and_point_to_each_other() -> None:
    require_commands("groff")
    for page in (MAIN_PAGE, POLICY_PAGE):
        completed = subprocess.run(
            ["groff", "-man", "-Tutf8", "-ww", "-z", str(page)], capture_output=True, text=True, check=False
        )
        assert (completed.returncode, completed.stderr) == (0, ""), page
    assert ".BR remediator\\-policy (5)," in MAIN_PAGE.read_text()
    assert ".BR remediator (8)," in POLICY_PAGE.read_text()
