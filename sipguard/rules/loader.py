"""Rule-file loader: read a YAML file and hand its located tree to the schema.

This module owns the edge between a file on disk and `validate()`:

- reading and decoding the file (UTF-8, an optional BOM);
- composing YAML with `yaml.compose()` (SafeLoader), so node marks survive,
  and converting nodes into the neutral located tree of
  `sipguard.rules.schema` (marks are 0-based; the tree is 1-based);
- turning every YAML problem into a `RuleFileError` at its position: syntax
  errors, an empty file, unsupported tags, recursive aliases. Duplicate keys,
  which YAML accepts silently, are kept in the tree for the schema to report.

YAML merge keys (`<<: *defaults`) are resolved here: explicit keys win over
merged ones, and an earlier merged mapping wins over a later one.

It also reads the files a rule file names (`refused_callees`, see
`sipguard.rules.schema.referenced_files`) and hands their text to the schema,
which checks the numbers in them at their own `path:line:col`. A relative
path is looked up first in the rule file's directory, then in the working
directory; an absolute path only where it points.

Ring 3: this is the only rules module that reads files or imports yaml.
`audit_log` is kept as written (relative to the working directory) and is
not opened here.
"""

from __future__ import annotations

import os
import zoneinfo
from datetime import date
from pathlib import Path

import yaml

from sipguard.errors import RuleFileError, RuleFileErrors
from sipguard.rules.schema import (
    Located,
    LocatedMapping,
    LocatedScalar,
    LocatedSequence,
    ReferencedFile,
    RuleSet,
    ScalarValue,
    referenced_files,
    validate,
)

__all__ = ["MAX_NODES", "compose_tree", "load_rules", "parse_rules", "read_referenced_file"]

# A ceiling on the values a file may expand to through YAML aliases. Real rule
# files hold tens of thousands of values; "billion laughs" files hold billions.
MAX_NODES = 5_000_000

_YAML = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(
    _YAML + name for name in ("str", "int", "float", "bool", "null", "timestamp")
)
_MERGE_TAG = _YAML + "merge"


def load_rules(path: str | os.PathLike[str]) -> RuleSet:
    """Read, parse and validate the rule file at `path`.

    Raises:
        RuleFileErrors: the file cannot be read or decoded, is not valid
            YAML, or breaks the schema; every problem found is listed.
    """
    name = os.fspath(path)
    try:
        data = Path(name).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RuleFileErrors([_error(f"cannot read the rule file: {reason}", name)]) from exc
    return parse_rules(_decode(data, name), path=name, directory=os.path.dirname(name))


def parse_rules(text: str, *, path: str = "<string>", directory: str | None = None) -> RuleSet:
    """Parse and validate rule-file text; `path` only names it in errors.

    Args:
        text: the rule file.
        path: the name errors and the `RuleSet` carry.
        directory: the rule file's directory, where relative paths written
            in it are looked up first ("" for the working directory); None
            to look them up in the working directory only.

    Raises:
        RuleFileErrors: every problem found.
    """
    tree = compose_tree(text, path=path)
    files = {
        written: read_referenced_file(written, directory=directory)
        for written in referenced_files(tree)
    }
    return validate(tree, path=path, known_timezones=_known_timezones(), files=files)


def read_referenced_file(written: str, *, directory: str | None) -> ReferencedFile:
    """Find and read a file a rule file names, never raising.

    A relative `written` path is looked up in `directory` first, then in the
    working directory; the first place where something exists is used.

    Returns:
        The file's text and where it was found, or why it cannot be used.
    """
    places = [written]
    if directory and not os.path.isabs(written):
        places.insert(0, os.path.join(directory, written))
    found = next((place for place in places if os.path.exists(place)), None)
    if found is None:
        tried = " or ".join(f"'{place}'" for place in dict.fromkeys(places))
        if len(places) > 1:
            tried += " (the rule file's directory, then the working directory)"
        return ReferencedFile(path=written, problem=f"no such file; looked for {tried}")
    try:
        data = Path(found).read_bytes()
    except OSError as exc:
        return ReferencedFile(path=found, problem=exc.strerror or str(exc))
    try:
        return ReferencedFile(path=found, text=data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        problem = f"not valid UTF-8 (byte 0x{data[exc.start]:02x})"
        return ReferencedFile(path=found, problem=problem, line=line, column=column)


def compose_tree(text: str, *, path: str = "<string>") -> Located:
    """Compose YAML text into a located tree, without checking the schema.

    Raises:
        RuleFileErrors: a YAML problem, or an empty document.
    """
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        raise RuleFileErrors([_reader_error(exc, text, path)]) from None
    try:
        node = loader.get_single_node()
        if node is None:
            message = "the rule file is empty; it needs at least 'numbering' and 'trunks'"
            raise RuleFileErrors([_error(message, path)])
        return _Converter(loader, path).tree(node)
    except yaml.MarkedYAMLError as exc:
        raise RuleFileErrors([_syntax_error(exc, path)]) from None
    finally:
        loader.dispose()


def _error(message: str, path: str, line: int = 1, column: int = 1) -> RuleFileError:
    return RuleFileError(message, path=path, line=line, column=column)


def _decode(data: bytes, path: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = data[exc.start]
        message = f"the rule file is not valid UTF-8 (byte 0x{byte:02x})"
        raise RuleFileErrors([_error(message, path, line, column)]) from None


def _reader_error(exc: yaml.reader.ReaderError, text: str, path: str) -> RuleFileError:
    """A character YAML refuses (a control character), at its position."""
    line, column = _position(text, exc.position)
    message = f"invalid YAML: character {chr(exc.character)!r} is not allowed in a YAML file"
    return _error(message, path, line, column)


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of a character index."""
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def _syntax_error(exc: yaml.MarkedYAMLError, path: str) -> RuleFileError:
    """A YAML error at its problem mark (or context mark), in plain words."""
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    problem = exc.problem or "unreadable YAML"
    if "'\\t'" in problem:
        message = "invalid YAML: a tab character here; YAML indents with spaces only"
    elif exc.context == "expected a single document in the stream":
        message = "the rule file must hold one YAML document; remove the second '---'"
    else:
        message = f"invalid YAML: {problem}"
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            context_line = exc.context_mark.line + 1
            context_column = exc.context_mark.column + 1
            message += f" ({exc.context} at {context_line}:{context_column})"
        elif exc.context:
            message += f" ({exc.context})"
    return _error(message, path, line, column)


def _known_timezones() -> frozenset[str]:
    """The IANA zone names this machine knows; empty when it has no database."""
    return frozenset(zoneinfo.available_timezones())


class _Converter:
    """Turns composed YAML nodes into located nodes.

    Nodes shared through aliases are converted once and shared in the result,
    so conversion is linear in the file; the expanded size is still counted
    against `MAX_NODES` because validation walks every expansion.
    """

    def __init__(self, loader: yaml.SafeLoader, path: str) -> None:
        self._loader = loader
        self._path = path
        self._done: dict[int, tuple[Located, int]] = {}
        self._active: set[int] = set()

    def tree(self, node: yaml.Node) -> Located:
        located, size = self._convert(node)
        if size > MAX_NODES:
            message = f"the rule file expands to more than {MAX_NODES} values through aliases"
            raise RuleFileErrors([_error(message, self._path)])
        return located

    def _fail(self, node: yaml.Node, message: str) -> RuleFileErrors:
        mark = node.start_mark
        return RuleFileErrors([_error(message, self._path, mark.line + 1, mark.column + 1)])

    def _convert(self, node: yaml.Node) -> tuple[Located, int]:
        """The located node and the number of values it expands to."""
        done = self._done.get(id(node))
        if done is not None:
            return done
        if id(node) in self._active:
            raise self._fail(node, "an alias refers to a mapping or list that contains it")
        self._active.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            result: tuple[Located, int] = (self._scalar(node), 1)
        elif isinstance(node, yaml.SequenceNode):
            result = self._sequence(node)
        else:
            assert isinstance(node, yaml.MappingNode)
            result = self._mapping(node)
        self._active.discard(id(node))
        self._done[id(node)] = result
        return result

    def _scalar(self, node: yaml.ScalarNode) -> LocatedScalar:
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if node.tag not in _SCALAR_TAGS:
            raise self._fail(node, f"unsupported YAML tag '{node.tag}'; write plain values")
        value: ScalarValue
        try:
            constructed = self._loader.construct_object(node)
        except (yaml.YAMLError, ValueError, OverflowError):
            # An impossible date such as 2027-13-01: keep the text and let
            # the schema say what is wrong with it.
            constructed = node.value
        value = constructed if isinstance(constructed, str | int | float | date) else None
        return LocatedScalar(value=value, text=node.value, line=line, column=column)

    def _sequence(self, node: yaml.SequenceNode) -> tuple[Located, int]:
        if node.tag != _YAML + "seq":
            raise self._fail(node, f"unsupported YAML tag '{node.tag}'; write a plain list")
        converted = [self._convert(item) for item in node.value]
        located = LocatedSequence(
            items=tuple(item for item, _ in converted),
            line=node.start_mark.line + 1,
            column=node.start_mark.column + 1,
        )
        return located, 1 + sum(size for _, size in converted)

    def _mapping(self, node: yaml.MappingNode) -> tuple[Located, int]:
        if node.tag != _YAML + "map":
            raise self._fail(node, f"unsupported YAML tag '{node.tag}'; write a plain mapping")
        explicit: list[tuple[Located, Located]] = []
        merged: list[tuple[Located, Located]] = []
        size = 1
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                entries, merged_size = self._merge(value_node)
                merged.extend(entries)
                size += merged_size
                continue
            key, key_size = self._convert(key_node)
            value, value_size = self._convert(value_node)
            explicit.append((key, value))
            size += key_size + value_size
        located = LocatedMapping(
            entries=_merge_entries(explicit, merged),
            line=node.start_mark.line + 1,
            column=node.start_mark.column + 1,
        )
        return located, size

    def _merge(self, node: yaml.Node) -> tuple[list[tuple[Located, Located]], int]:
        """The entries a `<<` key brings in: one mapping or a list of mappings."""
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        entries: list[tuple[Located, Located]] = []
        size = 0
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                raise self._fail(source, "'<<' merges mappings only, e.g. '<<: *defaults'")
            located, source_size = self._convert(source)
            assert isinstance(located, LocatedMapping)
            entries.extend(located.entries)
            size += source_size
        return entries, size


def _merge_entries(
    explicit: list[tuple[Located, Located]], merged: list[tuple[Located, Located]]
) -> tuple[tuple[Located, Located], ...]:
    """Explicit entries (duplicates kept), then merged ones not overridden."""
    seen = {key.text for key, _ in explicit if isinstance(key, LocatedScalar)}
    result = list(explicit)
    for key, value in merged:
        name = key.text if isinstance(key, LocatedScalar) else None
        if name is not None and name in seen:
            continue
        if name is not None:
            seen.add(name)
        result.append((key, value))
    return tuple(result)
