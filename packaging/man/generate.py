"""Write the man pages' reference sections from the code they document, so they cannot drift.

    .venv/bin/python packaging/man/generate.py          # rewrite them
    .venv/bin/python packaging/man/generate.py --check  # exit 1 if a committed page is out of date

- ``remediator.8``: the SETTINGS section, between its ``GENERATED`` markers, from the
  settings model (``remediator.settings.Settings``: every key, its environment
  variable, its default and its description). The rest of the page is prose.
- ``remediator-policy.5``: the whole page, from the policy schema
  (``remediator.policy.models``: the module's description of the language, then
  every key of every model with its description, which carries the default).

Both outputs are committed (the package build uses only the standard library and
cannot import the models); tests/packaging/test_man_pages.py runs ``--check``, so
a key added to a model without regenerating fails CI.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Type

MAN_DIR = Path(__file__).resolve().parent
REPO_ROOT = MAN_DIR.parents[1]
sys.path.insert(0, str(REPO_ROOT))

from pydantic import BaseModel  # noqa: E402

from remediator.policy import models  # noqa: E402
from remediator.settings import ENV_PREFIX, Settings  # noqa: E402

MAIN_PAGE = MAN_DIR / "remediator.8"
POLICY_PAGE = MAN_DIR / "remediator-policy.5"
BEGIN = '.\\" BEGIN GENERATED SETTINGS (packaging/man/generate.py; edit remediator/settings.py instead)'
END = '.\\" END GENERATED SETTINGS'


def roff_text(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, ``code`` bold, no line starting with a dot."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = re.sub(r"``([^`]+)``", r"\\fB\1\\fR", text)
    text = re.sub(r"\*\*([A-Za-z][^*]*)\*\*", r"\\fB\1\\fR", text)  # Markdown-style **bold**
    lines = [line.strip() for line in text.split("\n")]
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in lines)


def paragraphs(docstring: str) -> List[str]:
    return [" ".join(part.split()) for part in inspect.cleandoc(docstring).split("\n\n") if part.strip()]


def language_paragraphs() -> List[str]:
    """The policy module's description of the language, without what speaks to programmers
    (pydantic's ``extra="forbid"``, the JSON schema)."""
    out = []
    for paragraph in paragraphs(models.__doc__ or "")[1:]:
        if "model_json_schema" in paragraph:
            continue
        out.append(re.sub(r" \(``extra=[^)]*``\)", "", paragraph))
    return out


# ---- remediator.8: SETTINGS ----------------------------------------------------------------------


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def settings_section() -> str:
    prefix = ENV_PREFIX
    out = [
        BEGIN,
        ".SH SETTINGS",
        "Keys of the settings file",
        ".RI ( /etc/remediator/remediator.yaml ).",
        "Each can also be given as an environment variable, named after the key in capitals with the prefix",
        f".BR {roff_text(prefix)} .",
        "Unknown keys are errors, located like policy errors.",
    ]
    for name, field in Settings.model_fields.items():
        description = field.description or ""
        text = description
        if "default" not in description.lower():
            text = f"{description} Default {_default_text(field.default)}."
        out += [
            ".TP",
            f'.BR {roff_text(name)} " (" {roff_text(prefix + name.upper())} )',
            roff_text(text),
        ]
    out.append(END)
    return "\n".join(out)


def main_page() -> str:
    text = MAIN_PAGE.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start == -1 or end == -1:
        raise SystemExit(f"{MAIN_PAGE}: no {BEGIN!r} ... {END!r} markers")
    return text[:start] + settings_section() + text[end + len(END) :]


# ---- remediator-policy.5 -------------------------------------------------------------------------


def _models_in(annotation: Any) -> Iterator[Type[BaseModel]]:
    """The models a field's type holds (through Optional, List, Union, Annotated)."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for argument in typing.get_args(annotation):
        yield from _models_in(argument)


def _annotation(model: Type[BaseModel], name: str) -> Any:
    """A field's type, resolved: pydantic keeps a forward reference (``Optional[X]`` of a model
    defined further down, under ``from __future__ import annotations``) as it was written."""
    hints = typing.get_type_hints(model, vars(sys.modules[model.__module__]), include_extras=True)
    return hints[name]


def _kind(model: Type[BaseModel]) -> Optional[str]:
    field = model.model_fields.get("kind")
    if field is None:
        return None
    (value,) = typing.get_args(field.annotation)
    return str(value)


def _keys(model: Type[BaseModel], path: str) -> Iterator[Tuple[str, str]]:
    """(dotted key, description) for every key of ``model`` and of the models inside it."""
    for name, field in model.model_fields.items():
        if name == "kind":
            continue
        key = f"{path}{name}"
        yield key, field.description or ""
        annotation = _annotation(model, name)
        nested = list(_models_in(annotation))
        if len(nested) == 1:  # (a union of models by kind is documented kind by kind)
            yield from _keys(nested[0], f"{key}[]." if _is_list(annotation) else f"{key}.")


def _is_list(annotation: Any) -> bool:
    if typing.get_origin(annotation) is list:
        return True
    return any(_is_list(argument) for argument in typing.get_args(annotation))


def _key_entries(pairs: Sequence[Tuple[str, str]]) -> List[str]:
    out = []
    for key, description in pairs:
        out += [".TP", f".B {roff_text(key)}", roff_text(description)]
    return out


def policy_page() -> str:
    document = models.PolicyDocument
    out = [
        '.\\" remediator-policy(5). Generated from remediator/policy/models.py by packaging/man/generate.py:',
        '.\\" do not edit; change the models and run the generator (CI checks the two agree).',
        '.TH REMEDIATOR\\-POLICY 5 "" "remediator" "File Formats"',
        ".SH NAME",
        "remediator\\-policy \\- the policy files of remediator(8)",
        ".SH SYNOPSIS",
        ".I /etc/remediator/policies.d/*.yaml",
        ".SH DESCRIPTION",
    ]
    for paragraph in language_paragraphs():
        out += [roff_text(paragraph), ".PP"]
    out += [
        "After editing, run",
        ".B remediator check",
        "(every error with its file, line and column), then",
        '.BR "systemctl reload remediator" :',
        "a set with any invalid policy is refused as a whole and the running policies stay.",
        ".SH KEYS",
        "Top-level keys; a key inside a mapping is written with a dot",
        ".RB ( trigger.stall_ms ),",
        "one inside each item of a list with",
        ".BR [] .",
    ]
    plain = [field for field in document.model_fields if field not in ("target", "actions")]
    out += _key_entries([pair for name in plain for pair in _keys_of_field(document, name)])
    out += [".SH TARGET", roff_text(document.model_fields["target"].description or "")]
    for model in _models_in(_annotation(document, "target")):
        out += ['.SS "target.kind: ' + roff_text(_kind(model) or "?") + '"']
        out += [roff_text(" ".join(paragraphs(model.__doc__ or "")[:1]))]
        out += _key_entries(list(_keys(model, "target.")))
    out += [".SH ACTIONS", roff_text(document.model_fields["actions"].description or "")]
    for model in _models_in(_annotation(document, "actions")):
        out += ['.SS "actions[].kind: ' + roff_text(_kind(model) or "?") + '"']
        out += [roff_text(" ".join(paragraphs(model.__doc__ or "")))]
        out += _key_entries(list(_keys(model, "actions[].")))
    out += [
        ".SH FILES",
        ".TP",
        ".I /etc/remediator/policies.d/*.yaml",
        "One policy per file; the policy's name is the file's stem.",
        ".SH SEE ALSO",
        ".BR remediator (8),",
        ".I /usr/share/doc/remediator/README.md",
    ]
    return "\n".join(out) + "\n"


def _keys_of_field(model: Type[BaseModel], name: str) -> List[Tuple[str, str]]:
    field = model.model_fields[name]
    pairs = [(name, field.description or "")]
    annotation = _annotation(model, name)
    nested = list(_models_in(annotation))
    if len(nested) == 1:
        pairs += list(_keys(nested[0], f"{name}[]." if _is_list(annotation) else f"{name}."))
    return pairs


# ---- main ----------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed page differs")
    arguments = parser.parse_args(argv)
    stale = []
    for path, content in ((MAIN_PAGE, main_page()), (POLICY_PAGE, policy_page())):
        current = path.read_text() if path.exists() else ""
        if current == content:
            continue
        if arguments.check:
            stale.append(path)
            diff = difflib.unified_diff(
                current.splitlines(True), content.splitlines(True), str(path), "generated", n=1
            )
            sys.stdout.writelines(list(diff)[:40])
        else:
            path.write_text(content)
            print(f"wrote {path.relative_to(REPO_ROOT)}")
    if stale:
        names = ", ".join(str(p.relative_to(REPO_ROOT)) for p in stale)
        print(f"out of date: {names}; run .venv/bin/python packaging/man/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
