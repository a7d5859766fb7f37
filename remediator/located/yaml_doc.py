"""Strict YAML with positions: every key and list item keeps its line and column.

PyYAML's composer (``SafeLoader``) gives nodes with marks; this module turns
them into plain Python values itself instead of using PyYAML's constructor,
because the constructor (a) forgets positions, so a pydantic error could not
be pointed at a line, and (b) implements YAML 1.1, where ``on``, ``no`` and
``y`` are booleans and ``0755`` is octal: silent surprises in a file that
decides what the daemon does to production memory.

Resolution of scalars (the whole language):

- quoted and block scalars (``'...'``, ``"..."``, ``|``, ``>``) are strings;
- plain ``true`` / ``false`` are booleans; plain ``null``, ``~`` and the empty
  value are None;
- plain decimal integers (no leading zero except ``0`` itself) and decimal
  floats (``0.5``, ``1e3``, ``.5``) are numbers;
- every other plain scalar is a string, except the ones YAML 1.1 would read
  as something else (``yes``/``no``/``on``/``off``/``y``/``n`` in any case,
  ``True``, ``0755``, ``0x1f``, ``1_000``, ``1:30``, ``.inf``): those are
  errors that ask for an explicit spelling.

Also refused, to keep files simple and explicit: duplicate keys, anchors,
aliases and merge keys (``<<``), tags (``!!str``), keys that are not strings,
and more than one document per file. All problems are collected (not only
the first) as ``PolicyIssue`` values; the YAML parser's own syntax errors stop
the parse, so there is at most one of those.

``remediator.located.validation`` maps pydantic ``ValidationError`` locations
back to these positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import (
    Any,
    Dict,
    FrozenSet,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

import yaml
from yaml.events import AliasEvent, StreamEndEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from remediator.located.issues import (
    DOCUMENT_KEY,
    FILE_KEY,
    SYNTAX_KEY,
    PathElement,
    PolicyIssue,
    format_key_path,
)

KeyPath = Tuple[PathElement, ...]

# Deeper than any policy or settings file needs; stops pathological input
# (``[[[[...``) before Python's recursion limit does.
MAX_DEPTH = 32


@dataclass(frozen=True)
class Position:
    """1-based line and column."""

    line: int
    column: int


START = Position(1, 1)


# --------------------------------------------------------------------------
# Scalars


_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z")
_FLOAT = re.compile(r"[-+]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z")
_LEADING_ZERO_INT = re.compile(r"[-+]?0[0-9]+\Z")
_LEADING_ZERO_FLOAT = re.compile(r"[-+]?0[0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?\Z")
_YAML11_TRUE = frozenset({"y", "yes", "on", "true"})
_YAML11_FALSE = frozenset({"n", "no", "off", "false"})
_NON_DECIMAL = re.compile(r"[-+]?0(?:x[0-9a-fA-F_]+|o[0-7_]+|b[01_]+)\Z")
_DIGIT_SEPARATORS = re.compile(r"[-+]?[0-9][0-9_]*_[0-9_]*(?:\.[0-9_]*)?\Z|[-+]?[0-9]*\.[0-9_]*_[0-9_]*\Z")
_SEXAGESIMAL = re.compile(r"[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?\Z")
_SPECIAL_FLOAT = re.compile(r"[-+]?\.(?:inf|Inf|INF|nan|NaN|NAN)\Z")


# Far more than any size in bytes (20 digits) needs, far less than int()'s limit.
MAX_INT_DIGITS = 64


class _AmbiguousScalar(Exception):
    """A plain scalar that YAML 1.1 and this language would read differently."""


def resolve_plain_scalar(text: str) -> Union[bool, int, float, str, None]:
    """The value of a plain (unquoted) scalar; raises _AmbiguousScalar with the reason."""
    if text in ("", "~", "null"):
        return None
    if text == "true":
        return True
    if text == "false":
        return False
    if _INT.match(text) or _LEADING_ZERO_INT.match(text):
        length = len(text.lstrip("+-"))
        if length > MAX_INT_DIGITS:
            # int() of thousands of digits raises ValueError: an issue, not a crash.
            raise _AmbiguousScalar(f"a number of {length} digits is out of range; no setting takes one")
    if _INT.match(text):
        return int(text)
    if _FLOAT.match(text) and any(c in text for c in ".eE"):
        return float(text)
    lowered = text.lower()
    if lowered in _YAML11_TRUE or lowered in _YAML11_FALSE:
        meaning = "true" if lowered in _YAML11_TRUE else "false"
        raise _AmbiguousScalar(
            f"{text!r} is ambiguous in YAML 1.1 (read as {meaning}): write {meaning}, "
            "or quote it if a string is meant"
        )
    if lowered == "null":
        raise _AmbiguousScalar(f"{text!r}: write null (lower case), or quote it if a string is meant")
    if _LEADING_ZERO_INT.match(text):
        digits = text.lstrip("+-")
        sign = "-" if text.startswith("-") else ""
        # YAML 1.1 reads 0755 as octal; say what it would have become.
        value = int(digits, 8) if set(digits) <= set("01234567") else int(digits, 10)
        raise _AmbiguousScalar(f"leading zero: write {sign}{value} or '{text}'")
    if _LEADING_ZERO_FLOAT.match(text):
        raise _AmbiguousScalar(f"leading zero: write {float(text)} or '{text}'")
    if _NON_DECIMAL.match(text):
        raise _AmbiguousScalar(f"only decimal numbers are allowed: write {text!r} in decimal, or quote it")
    if _DIGIT_SEPARATORS.match(text):
        raise _AmbiguousScalar(
            f"digit separators are not allowed: write {text.replace('_', '')}, "
            "or quote it if a string is meant"
        )
    if _SEXAGESIMAL.match(text):
        raise _AmbiguousScalar(f"{text!r} is a base-60 number in YAML 1.1: quote it if a string is meant")
    if _SPECIAL_FLOAT.match(text):
        raise _AmbiguousScalar(f"{text!r}: infinities and NaN are not allowed; write a decimal number")
    return text


# --------------------------------------------------------------------------
# Composing


class _StrictComposingLoader(yaml.SafeLoader):
    """PyYAML's safe composer that refuses aliases, anchors and tags.

    The refusals are remembered per node (``flagged``) and reported by the
    converter, which knows the key path. An alias becomes a fresh null node so
    that a recursive alias (``&a [*a]``) cannot create a cycle.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.flagged: Dict[int, str] = {}
        # Keeps flagged nodes alive so that their id() stays unique.
        self._flagged_nodes: List[Node] = []

    # PyYAML's parser methods are untyped in its stubs.
    def _next_event(self) -> Any:
        return self.get_event()  # type: ignore[no-untyped-call]

    def _peek_event(self) -> Any:
        return self.peek_event()  # type: ignore[no-untyped-call]

    def _flag(self, node: Node, message: str) -> None:
        self.flagged.setdefault(id(node), message)
        self._flagged_nodes.append(node)

    def compose_node(self, parent: Optional[Node], index: Any) -> Node:
        if self.check_event(AliasEvent):
            event = self._next_event()
            placeholder = ScalarNode("tag:yaml.org,2002:null", "", event.start_mark, event.end_mark)
            self._flag(placeholder, f"aliases (*{event.anchor}) are not supported: write the value out")
            return placeholder
        event = self._peek_event()
        anchor = getattr(event, "anchor", None)
        tag = getattr(event, "tag", None)
        # Dropping the anchor keeps the composer from complaining about
        # duplicates; the node is reported instead.
        if anchor is not None:
            event.anchor = None
        node: Node = super().compose_node(parent, index)  # type: ignore[assignment]
        if anchor is not None:
            self._flag(node, f"anchors (&{anchor}) are not supported: write the value out")
        elif tag is not None:
            shown = tag.replace("tag:yaml.org,2002:", "!!")
            self._flag(node, f"tags ({shown}) are not supported: write a plain value")
        return node

    def compose_single_document(self) -> Tuple[Optional[Node], Optional[Position]]:
        """Like ``get_single_node`` but returns the position of a second document instead of raising."""
        self._next_event()  # STREAM-START
        document: Optional[Node] = None
        if not self.check_event(StreamEndEvent):
            document = self.compose_document()
        if not self.check_event(StreamEndEvent):
            event = self._next_event()
            return document, _position(event.start_mark)
        self._next_event()  # STREAM-END
        return document, None


def _position(mark: Any) -> Position:
    return Position(mark.line + 1, mark.column + 1)


def _position_at_index(text: str, index: int) -> Position:
    before = text[:index]
    line = before.count("\n") + 1
    column = index - (before.rfind("\n") + 1) + 1
    return Position(line, column)


@dataclass(frozen=True)
class LocatedDocument:
    """A YAML document as plain values, with the position of every key and item.

    ``positions`` maps a key path (``("actions", 1, "fraction")``) to the
    position of that key (for a mapping entry) or item (for a list entry);
    ``()`` is the document itself. ``tainted`` holds the paths whose values
    already have a YAML-level issue: schema errors there would only repeat it.
    """

    file: str
    value: Any
    positions: Mapping[KeyPath, Position]
    tainted: FrozenSet[KeyPath]

    def position_of(self, path: Sequence[PathElement]) -> Position:
        """The position of ``path``, or of its nearest existing parent.

        A missing key is thereby reported at the mapping that should hold it.
        """
        key = tuple(path)
        while key:
            found = self.positions.get(key)
            if found is not None:
                return found
            key = key[:-1]
        return self.positions.get((), START)

    def is_tainted(self, path: Sequence[PathElement]) -> bool:
        key = tuple(path)
        return any(key[: i + 1] in self.tainted for i in range(len(key))) or () in self.tainted

    def issue(self, path: Sequence[PathElement], message: str) -> PolicyIssue:
        where = self.position_of(path)
        return PolicyIssue(self.file, where.line, where.column, format_key_path(path), message)


class _Converter:
    def __init__(self, file: str, flagged: Mapping[int, str]) -> None:
        self.file = file
        self.flagged = flagged
        self.issues: List[PolicyIssue] = []
        self.positions: Dict[KeyPath, Position] = {}
        self.tainted: Set[KeyPath] = set()

    def _report(self, path: KeyPath, where: Position, message: str) -> None:
        self.issues.append(PolicyIssue(self.file, where.line, where.column, format_key_path(path), message))
        self.tainted.add(path)

    def convert(self, node: Node, path: KeyPath) -> Any:
        flag = self.flagged.get(id(node))
        if flag is not None:
            self._report(path, _position(node.start_mark), flag)
        if len(path) > MAX_DEPTH:
            self._report(path, _position(node.start_mark), f"nested deeper than {MAX_DEPTH} levels")
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if isinstance(node, SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                item_path = (*path, index)
                self.positions[item_path] = _position(item.start_mark)
                items.append(self.convert(item, item_path))
            return items
        if isinstance(node, MappingNode):
            return self._mapping(node, path)
        raise TypeError(f"unexpected YAML node {node!r}")  # pragma: no cover - PyYAML has no other kind

    def _scalar(self, node: ScalarNode, path: KeyPath) -> Any:
        text: str = node.value
        if node.style is not None:  # quoted or block scalar
            return text
        try:
            return resolve_plain_scalar(text)
        except _AmbiguousScalar as problem:
            self._report(path, _position(node.start_mark), str(problem))
            return text

    def _key(self, node: Node, parent: KeyPath) -> Optional[str]:
        """The key as a string, or None (reported) when it is not a usable key."""
        where = _position(node.start_mark)
        if not isinstance(node, ScalarNode):
            kind = "a list" if isinstance(node, SequenceNode) else "a mapping"
            self._report(parent, where, f"keys must be strings (got {kind})")
            return None
        text: str = node.value
        flag = self.flagged.get(id(node))
        if flag is not None:
            self._report((*parent, text), where, flag)
            return None
        if node.style is not None:
            return text
        if text == "<<":
            self._report((*parent, text), where, "merge keys (<<) are not supported: write the keys out")
            # The mapping misses the merged keys: what the schema would say about it is noise.
            self.tainted.add(parent)
            return None
        try:
            value = resolve_plain_scalar(text)
        except _AmbiguousScalar as problem:
            self._report((*parent, text), where, str(problem))
            return None
        if not isinstance(value, str):
            self._report((*parent, text), where, f"keys must be strings: quote it ('{text}')")
            return None
        return value

    def _mapping(self, node: MappingNode, path: KeyPath) -> Dict[str, Any]:
        result: Dict[str, Any] = {}
        first_seen: Dict[str, Position] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, path)
            if key is None:
                continue
            key_path = (*path, key)
            where = _position(key_node.start_mark)
            if key in first_seen:
                # Reported on the second occurrence; the first one stays in force
                # so that its own problems are still checked.
                self.issues.append(
                    PolicyIssue(
                        self.file,
                        where.line,
                        where.column,
                        format_key_path(key_path),
                        f"duplicate key (first at line {first_seen[key].line})",
                    )
                )
                continue
            first_seen[key] = where
            self.positions[key_path] = where
            result[key] = self.convert(value_node, key_path)
        return result


def _syntax_issue(file: str, text: str, error: yaml.YAMLError) -> PolicyIssue:
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        where = _position(error.problem_mark)
        message = error.problem or "invalid YAML"
        if error.context:
            message = f"{message} ({error.context})"
        if "'\\t'" in message:
            message += "; YAML indents with spaces, not tabs"
        return PolicyIssue(file, where.line, where.column, SYNTAX_KEY, message)
    if isinstance(error, yaml.reader.ReaderError):
        where = _position_at_index(text, error.position)
        message = f"character #x{error.character:04x} is not allowed in YAML ({error.reason})"
        return PolicyIssue(file, where.line, where.column, SYNTAX_KEY, message)
    return PolicyIssue(file, 1, 1, SYNTAX_KEY, str(error))


def decode_utf8(data: bytes, file: str) -> Tuple[Optional[str], List[PolicyIssue]]:
    """Decode a file's bytes, locating the first invalid byte (line, byte column)."""
    try:
        return data.decode("utf-8"), []
    except UnicodeDecodeError as error:
        before = data[: error.start]
        line = before.count(b"\n") + 1
        column = error.start - (before.rfind(b"\n") + 1) + 1
        bad = data[error.start : error.end]
        return None, [PolicyIssue(file, line, column, FILE_KEY, f"not valid UTF-8 (byte {bad[:1].hex()})")]


def parse_located_yaml(text: str, file: str) -> Tuple[LocatedDocument, List[PolicyIssue]]:
    """Parse one YAML document strictly. Never raises on bad input.

    The document's value is None when the text holds no document (empty or
    only comments) or when the YAML could not be parsed (then the issues say why).
    """
    nothing = LocatedDocument(file, None, {}, frozenset())
    try:
        # The reader checks the characters in its constructor: keep it inside the try.
        loader = _StrictComposingLoader(text)
        try:
            root, second_document = loader.compose_single_document()
            flagged = dict(loader.flagged)
        finally:
            loader.dispose()
    except yaml.YAMLError as error:
        return nothing, [_syntax_issue(file, text, error)]
    except RecursionError:
        return nothing, [PolicyIssue(file, 1, 1, SYNTAX_KEY, "nested too deeply")]

    converter = _Converter(file, flagged)
    issues: List[PolicyIssue] = []
    if second_document is not None:
        issues.append(
            PolicyIssue(
                file,
                second_document.line,
                second_document.column,
                DOCUMENT_KEY,
                "only one YAML document per file (remove the second '---')",
            )
        )
    if root is None:
        return nothing, issues
    converter.positions[()] = _position(root.start_mark)
    value = converter.convert(root, ())
    document = LocatedDocument(file, value, dict(converter.positions), frozenset(converter.tainted))
    return document, issues + converter.issues
