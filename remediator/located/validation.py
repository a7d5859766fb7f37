"""pydantic ``ValidationError`` locations mapped back to YAML positions, with messages rewritten
into short ones that show the bad value (``must be <= 1 (got 1.5)``)."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from remediator.located.issues import PathElement, PolicyIssue, format_key_path
from remediator.located.yaml_doc import KeyPath, LocatedDocument


class KeyedValueError(ValueError):
    """Raised by model validators for cross-field rules.

    Each problem names the key it is about, relative to the model that raises
    it, so the issue points at ``trigger.stall_ms`` rather than ``trigger``.
    """

    def __init__(self, problems: Sequence[Tuple[KeyPath, str]]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{format_key_path(path)}: {message}" for path, message in self.problems))


def describe_value(value: Any) -> str:
    """A short, YAML-flavoured rendering of a bad value for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # a bound of 300 on a float field is shown as 300, not 300.0
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return repr(shown)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _strip_annotations(annotation: Any) -> Any:
    """Annotated[X, ...] -> X and Optional[X] -> X, repeatedly."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin is Union:
            members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _model_class(annotation: Any) -> Optional[Type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


# Every tagged union in these files is discriminated on this key.
DISCRIMINATOR = "kind"


def _tag_members(annotation: Any) -> Dict[str, Type[BaseModel]]:
    """For a union of models tagged on ``kind``: tag value -> model."""
    members: Dict[str, Type[BaseModel]] = {}
    if typing.get_origin(annotation) is not Union:
        return members
    for member in typing.get_args(annotation):
        model = _model_class(member)
        field = model.model_fields.get(DISCRIMINATOR) if model is not None else None
        if model is None or field is None or typing.get_origin(field.annotation) is not typing.Literal:
            continue
        for tag in typing.get_args(field.annotation):
            members.setdefault(str(tag), model)
    return members


@dataclass(frozen=True)
class _ResolvedLoc:
    path: KeyPath  # the loc with union tags dropped: a path in the data
    owner: Optional[Type[BaseModel]]  # the model that owns the last key, when known
    annotation: Any  # the (stripped) type at the path, when known


def _resolve_loc(model: Type[BaseModel], loc: Sequence[Union[str, int]]) -> _ResolvedLoc:
    """Follow pydantic's ``loc`` through the model's types.

    pydantic inserts the tag of a discriminated union into ``loc``
    (``actions.1.reclaim.fraction``); the data has no such key, so it is dropped.
    """
    current: Any = model
    owner: Optional[Type[BaseModel]] = None
    path: List[PathElement] = []
    for element in loc:
        current = _strip_annotations(current)
        members = _tag_members(current)
        if isinstance(element, str) and element in members:
            current = members[element]
            continue
        model_here = _model_class(current)
        if isinstance(element, str) and model_here is not None:
            owner = model_here
            field = model_here.model_fields.get(element)
            current = field.annotation if field is not None else None
        elif isinstance(element, int) and typing.get_origin(current) in (list, tuple):
            owner = None
            args = typing.get_args(current)
            current = args[0] if args else None
        else:
            owner = None
            current = None
        path.append(element)
    return _ResolvedLoc(tuple(path), owner, _strip_annotations(current))


_TYPE_WORDS = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "finite_number": "a finite number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dataclass_type": "a mapping",
    "path_type": "a path",
}

_COMPARISONS = {
    "less_than_equal": ("le", "<="),
    "less_than": ("lt", "<"),
    "greater_than_equal": ("ge", ">="),
    "greater_than": ("gt", ">"),
}


def _known(names: Sequence[str]) -> str:
    return ", ".join(repr(name) for name in names)


def translate_validation_error(
    error: ValidationError, model: Type[BaseModel], data: Any
) -> List[Tuple[KeyPath, str]]:
    """pydantic's errors as (data path, short message) pairs.

    ``data`` is what was validated; it supplies the bad values that pydantic
    does not keep in every error (a union tag, for example).
    """
    problems: List[Tuple[KeyPath, str]] = []
    for detail in error.errors(include_url=False):
        problems.extend(_translate_one(detail, model, data))
    return problems


def _value_at(data: Any, path: KeyPath) -> Any:
    current = data
    for element in path:
        in_mapping = isinstance(element, str) and isinstance(current, dict) and element in current
        in_list = isinstance(element, int) and isinstance(current, list) and 0 <= element < len(current)
        if not (in_mapping or in_list):
            return None
        current = current[element]
    return current


def _translate_one(detail: ErrorDetails, model: Type[BaseModel], data: Any) -> List[Tuple[KeyPath, str]]:
    kind = detail["type"]
    resolved = _resolve_loc(model, detail["loc"])
    path = resolved.path
    context: Dict[str, Any] = dict(detail.get("ctx") or {})
    got = describe_value(detail.get("input"))

    if kind == "missing":
        return [(path, "required")]
    if kind == "extra_forbidden":
        if resolved.owner is not None:
            return [(path, f"unknown key (expected one of: {', '.join(resolved.owner.model_fields)})")]
        return [(path, "unknown key")]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        members = _tag_members(resolved.annotation)
        tag_path = (*path, DISCRIMINATOR)
        if kind == "union_tag_not_found":
            return [(tag_path, f"required (one of {_known(list(members))})")]
        bad = _value_at(data, tag_path)
        return [(tag_path, f"unknown {DISCRIMINATOR} {describe_value(bad)} (known: {_known(list(members))})")]
    if kind in _COMPARISONS:
        bound_name, symbol = _COMPARISONS[kind]
        return [(path, f"must be {symbol} {describe_value(context.get(bound_name))} (got {got})")]
    if kind == "literal_error":
        return [(path, f"must be {context.get('expected')} (got {got})")]
    if kind == "too_short":
        return [(path, "must not be empty" if context.get("min_length") == 1 else detail["msg"])]
    if kind in ("string_too_short",) and context.get("min_length") == 1:
        return [(path, "must not be empty")]
    if kind in _TYPE_WORDS:
        return [(path, f"must be {_TYPE_WORDS[kind]} (got {got})")]
    if kind in ("value_error", "assertion_error"):
        cause = context.get("error")
        if isinstance(cause, KeyedValueError):
            return [((*path, *relative), message) for relative, message in cause.problems]
        return [(path, str(cause) if cause is not None else detail["msg"])]
    return [(path, detail["msg"])]


def validation_issues(
    document: LocatedDocument, error: ValidationError, model: Type[BaseModel]
) -> List[PolicyIssue]:
    """Located issues for a validation error of ``document.value`` against ``model``.

    Errors under a path that already has a YAML-level issue are dropped: the
    YAML issue is the real cause (``on`` where ``some`` was meant).
    """
    return [
        document.issue(path, message)
        for path, message in translate_validation_error(error, model, document.value)
        if not document.is_tainted(path)
    ]
