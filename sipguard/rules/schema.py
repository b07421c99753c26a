"""Rule-file schema: a located tree in, a validated `RuleSet` (or every error) out.

This module owns:

- the neutral located tree (`LocatedScalar`, `LocatedSequence`,
  `LocatedMapping`) a front end builds, so every value still knows the line
  and column it was written at; the YAML loader is one such front end;
- `validate(tree, *, path, files)`, which checks every key of a rule file and
  turns the tree into the values of `sipguard.rules.values` (re-exported
  here);
- the files a rule file refers to (`referenced_files(tree)`), which the
  front end reads and hands back as `ReferencedFile` values, so the numbers
  in them are checked here too, at their own `path:line:col`;
- the lints across sections: an allocation listed twice in one list, a
  trunk's block that lies wholly inside `do_not_originate`, and a block
  allocated to two trunks (`sipguard.rules.allocations`), which are errors;
  and a trunk `route` that leads back to one of the file's own `listen`
  addresses (`sipguard.rules.loops`), which is a warning.

Invariants:

- Rule 1: a `RuleSet` returned by `validate()` is complete and consistent:
  every key is known, every value parsed, trunk names are unique, no source
  (network and port) and no number is claimed by two trunks.
- Rule 2: `validate()` never stops at the first problem. It raises one
  `RuleFileErrors` with every problem, sorted by position, each at the
  1-based line and column of the offending node (of the enclosing mapping
  for a missing key). A problem inside a referenced file carries that file's
  path and position and sorts where the rule file refers to it.
- Rule 3: an empty value (`key:` with nothing after it) of an optional key
  means the default, as if the key were absent.
- Rule 4: a warning never stops a file. The `RuleSet` carries the warnings
  of its file, and a `RuleFileErrors` those of the refused file, each
  sorted by position like the errors.

Messages start with where the problem is (`trunk 'sh-callcenter': `), name
the key path (`limits.per_caller.window`) and say what was expected and what
was found. Keys starting with `x-` are ignored, so they can hold YAML anchors.

Ring 1: pure and synchronous. Time-zone names are checked against a set the
caller passes in, and referenced files arrive as text; this module reads no
file and no clock.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TypeAlias, TypeVar

from sipguard.errors import RuleFileError, RuleFileErrors, RuleFileWarning
from sipguard.rules.allocations import CoverIndex, covers, first_overlaps, interval_of
from sipguard.rules.loops import is_wildcard, listen_reached
from sipguard.rules.values import (
    ANSWER_DETAILS,
    BACKEND_FAILURE_POLICIES,
    DEFAULT_INTERNATIONAL_PREFIX,
    DEFAULT_LISTEN,
    DEFAULT_NATIONAL_PREFIX,
    DEFAULT_RATETABLE_MAX_KEYS,
    DEFAULT_RATETABLE_SYNC_INTERVAL,
    DEFAULT_RATETABLE_TIMEOUT,
    DEFAULT_SIP_PORT,
    DISPLAY_NAME_POLICIES,
    E164_MAX_DIGITS,
    EXEMPTION_TYPES,
    HOME_CLI_POLICIES,
    MAX_RATETABLE_TIMEOUT,
    MODES,
    PROTECTION_BOUNDS,
    RATETABLE_BACKENDS,
    RATETABLE_SYNC_INTERVALS,
    RULE_IDS,
    RULES_VERSION,
    SERVICE_REFUSALS,
    STIR_IDENTITY_POLICIES,
    TRUNK_KINDS,
    UNKNOWN_SOURCE_ANSWERS,
    AnswerDetail,
    Answers,
    BackendFailurePolicy,
    CallingHours,
    DisplayNamePolicy,
    Endpoint,
    Exemption,
    ExemptionType,
    HomeCliPolicy,
    IdentitySettings,
    IPNetwork,
    Limits,
    Mode,
    Numbering,
    OneRing,
    Protection,
    RateTableBackend,
    RateTableSettings,
    Responses,
    ResponseSpec,
    RuleSet,
    SourceMatch,
    Suspension,
    Transport,
    Trunk,
    TrunkKind,
    Window,
    masked_url,
    parse_allocation,
    parse_duration,
    parse_endpoint,
    parse_host_port,
    parse_number,
    parse_reason_phrase,
    parse_redis_url,
    parse_server_header,
    parse_source,
    parse_time_window,
    parse_warn_agent,
)

__all__ = [
    "DEFAULT_INTERNATIONAL_PREFIX",
    "DEFAULT_LISTEN",
    "DEFAULT_NATIONAL_PREFIX",
    "DEFAULT_RATETABLE_MAX_KEYS",
    "DEFAULT_RATETABLE_TIMEOUT",
    "DEFAULT_SIP_PORT",
    "E164_MAX_DIGITS",
    "MAX_RATETABLE_TIMEOUT",
    "RULES_VERSION",
    "RULE_IDS",
    "AnswerDetail",
    "Answers",
    "BackendFailurePolicy",
    "CallingHours",
    "DisplayNamePolicy",
    "Endpoint",
    "Exemption",
    "ExemptionType",
    "HomeCliPolicy",
    "IPNetwork",
    "IdentitySettings",
    "Limits",
    "Located",
    "LocatedMapping",
    "LocatedScalar",
    "LocatedSequence",
    "Mode",
    "Numbering",
    "OneRing",
    "RateTableBackend",
    "Protection",
    "RateTableSettings",
    "ReferencedFile",
    "ResponseSpec",
    "Responses",
    "RuleSet",
    "ScalarValue",
    "SourceMatch",
    "Suspension",
    "Transport",
    "Trunk",
    "TrunkKind",
    "Window",
    "parse_allocation",
    "parse_duration",
    "parse_endpoint",
    "parse_host_port",
    "parse_number",
    "parse_reason_phrase",
    "parse_redis_url",
    "parse_server_header",
    "parse_source",
    "parse_time_window",
    "parse_warn_agent",
    "referenced_files",
    "validate",
]

# --------------------------------------------------------------------------
# The located tree: what a front end hands to validate().

ScalarValue: TypeAlias = str | int | float | bool | date | None


@dataclass(frozen=True, slots=True, kw_only=True)
class LocatedScalar:
    """A scalar: its typed `value`, its source `text`, its 1-based position.

    `text` matters for digit strings a typed reading would damage: YAML reads
    `00` as the integer 0 and `+869521` as 869521.
    """

    value: ScalarValue
    text: str
    line: int
    column: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LocatedSequence:
    """A list of located nodes and the position of the list."""

    items: tuple[Located, ...]
    line: int
    column: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LocatedMapping:
    """Key/value pairs in file order; duplicate keys are kept (and reported)."""

    entries: tuple[tuple[Located, Located], ...]
    line: int
    column: int


Located: TypeAlias = LocatedScalar | LocatedSequence | LocatedMapping


@dataclass(frozen=True, slots=True, kw_only=True)
class ReferencedFile:
    """A file named in a rule file (`refused_callees`), as the front end found it.

    Attributes:
        path: where the file was found (errors inside it name this path), or
            the path as written when it was not found.
        text: its decoded text; None when it could not be read.
        problem: why it could not be read, e.g. "No such file or directory".
        line: with `column`, where in the file the problem is (an undecodable
            byte); 0 when the problem is the file as a whole, which is then
            reported where the rule file names it.
        column: see `line`.
    """

    path: str
    text: str | None = None
    problem: str = ""
    line: int = 0
    column: int = 0


def referenced_files(tree: Located) -> tuple[str, ...]:
    """The paths, as written and each once, of the files `tree` refers to.

    These are the trunks' `refused_callees`; a front end reads them and
    passes them to `validate(files=...)` keyed by these strings.
    """
    found: dict[str, None] = {}
    for trunks in _entries_named(tree, "trunks"):
        items = trunks.items if isinstance(trunks, LocatedSequence) else ()
        for trunk in items:
            for node in _entries_named(trunk, "refused_callees"):
                text = _path_text(node)
                if text:
                    found[text] = None
    return tuple(found)


def _entries_named(node: Located, name: str) -> list[Located]:
    if not isinstance(node, LocatedMapping):
        return []
    return [
        value for key, value in node.entries if isinstance(key, LocatedScalar) and key.text == name
    ]


def _path_text(node: Located) -> str | None:
    """A path value as `_text` reads it; None when it is no string."""
    if isinstance(node, LocatedScalar) and not isinstance(node.value, bool):
        if isinstance(node.value, str):
            return node.value.strip()
        if isinstance(node.value, int):
            return node.text
    return None


# --------------------------------------------------------------------------
# Which keys each section accepts, and where a misplaced key belongs.

_KEYS: dict[str, tuple[str, ...]] = {
    "top": (
        "version",
        "mode",
        "numbering",
        "listen",
        "audit_log",
        "metrics",
        "do_not_originate",
        "suspended",
        "emergency_numbers",
        "trunks",
        "responses",
        "ratetable",
        "protection",
        "answers",
        "monitor_rules",
    ),
    "numbering": ("country_code", "national_prefix", "international_prefix"),
    "trunk": (
        "name",
        "kind",
        "sources",
        "route",
        "ranges",
        "identity",
        "limits",
        "calling_hours",
        "refused_callees",
        "mode",
        "home_cli",
        "home_cli_exempt",
        "responses",
        "answers",
        "monitor_rules",
    ),
    "identity": ("require_pai", "from_must_match_pai", "display_name", "trusted", "stir_identity"),
    "limits": ("cps", "burst", "concurrent", "per_caller", "per_callee", "one_ring"),
    "window": ("calls", "window", "warn", "block_for"),
    "one_ring": ("max_ring", "calls", "window", "block_for", "warn"),
    "calling_hours": ("tz", "allow"),
    "suspended": ("number", "until", "reason"),
    "exemption": ("type", "ranges", "note"),
    "response": ("code", "reason", "retry_after"),
    "answers": ("detail", "warn_agent", "server_header"),
    "ratetable": ("backend", "url", "max_keys", "on_backend_failure", "timeout", "sync_interval"),
    "protection": (
        "max_message_size",
        "max_header_lines",
        "max_line_length",
        "max_uri_length",
        "tcp_connections_per_source",
        "tcp_idle_timeout",
        "tcp_message_timeout",
        "calls_per_trunk",
        "transactions_per_trunk",
        "unknown_source_answer",
        "unknown_source_rate",
    ),
}
# A key of section S found in S's parent gets "put it under ...".
_PARENT = {
    "numbering": "top",
    "identity": "trunk",
    "limits": "trunk",
    "calling_hours": "trunk",
    "window": "limits",
    "one_ring": "limits",
    "ratetable": "top",
    "protection": "top",
    "answers": "top",
}
_UNDER = {
    "numbering": "'numbering'",
    "identity": "'identity'",
    "limits": "'limits'",
    "calling_hours": "'calling_hours'",
    "window": "'per_caller' or 'per_callee'",
    "one_ring": "'one_ring'",
    "ratetable": "'ratetable'",
    "protection": "'protection'",
    "answers": "'answers'",
}
_HOME = {
    "top": "at the top level of the file",
    "numbering": "under 'numbering'",
    "trunk": "in a trunk, under 'trunks'",
    "identity": "under a trunk's 'identity'",
    "limits": "under a trunk's 'limits'",
    "window": "under a trunk's 'limits.per_caller' or 'limits.per_callee'",
    "one_ring": "under a trunk's 'limits.one_ring'",
    "calling_hours": "under a trunk's 'calling_hours'",
    "suspended": "in an entry under 'suspended'",
    "exemption": "in an entry under a trunk's 'home_cli_exempt'",
    "response": "in a rule's entry under 'responses'",
    "ratetable": "under the top-level 'ratetable'",
    "protection": "under the top-level 'protection'",
    "answers": "under 'answers' (at the top level, or detail in a trunk's)",
}
_TRUNK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_TZ_NAME = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DIALLED = re.compile(rf"\+?[0-9]{{1,{E164_MAX_DIGITS}}}")
_COUNTRY_CODE = re.compile(r"[0-9]{1,3}")
_NATIONAL_PREFIX = re.compile(r"[0-9]{0,4}")
_INTERNATIONAL_PREFIX = re.compile(r"[0-9]{1,4}")

_T = TypeVar("_T")

# --------------------------------------------------------------------------
# Validation machinery.


_SortKey: TypeAlias = tuple[int, int, int, int]


@dataclass(slots=True, kw_only=True)
class _Checker:
    """Collects the errors of one validation run.

    Each error is kept with a sort key: its position in the rule file, or,
    for an error inside a referenced file, the position where the rule file
    names that file followed by the position inside it.
    """

    path: str
    timezones: frozenset[str] | None
    files: Mapping[str, ReferencedFile] | None
    errors: list[tuple[_SortKey, RuleFileError]] = field(default_factory=list)
    warnings: list[tuple[_SortKey, RuleFileWarning]] = field(default_factory=list)
    # Numbers of each referenced file read so far, by path as written; None
    # when the file could not be used. A file shared by trunks is read once.
    number_files: dict[str, frozenset[str] | None] = field(default_factory=dict)

    def fail(self, node: Located, message: str) -> None:
        error = RuleFileError(message, path=self.path, line=node.line, column=node.column)
        self.errors.append(((node.line, node.column, 0, 0), error))

    def fail_in(self, anchor: Located, path: str, line: int, column: int, message: str) -> None:
        """An error inside the file at `path`, which the rule file names at `anchor`."""
        error = RuleFileError(message, path=path, line=line, column=column)
        self.errors.append(((anchor.line, anchor.column, line, column), error))

    def warn(self, node: Located, message: str) -> None:
        """A finding that does not stop the file (Rule 4)."""
        warning = RuleFileWarning(
            message=message, path=self.path, line=node.line, column=node.column
        )
        self.warnings.append(((node.line, node.column, 0, 0), warning))

    def sorted_errors(self) -> list[RuleFileError]:
        """Errors by position; a node shared through a YAML alias reports once."""
        unique = {(key, error.path, error.message): error for key, error in self.errors}
        return [unique[key] for key in sorted(unique)]

    def sorted_warnings(self) -> tuple[RuleFileWarning, ...]:
        """Warnings by position; a node shared through a YAML alias reports once."""
        unique = {(key, item.message): item for key, item in self.warnings}
        return tuple(unique[key] for key in sorted(unique))


@dataclass(slots=True, kw_only=True)
class _Section:
    """An opened mapping whose keys are all known.

    `prefix` starts every message (`"trunk 'sh': "`); `rel` is the key path
    from there (`("limits", "per_caller")`).
    """

    ck: _Checker
    node: LocatedMapping
    prefix: str
    rel: tuple[str, ...]
    values: dict[str, Located]
    keys: dict[str, Located] = field(default_factory=dict)

    def label(self, key: str) -> str:
        return ".".join((*self.rel, key))

    def get(self, key: str) -> Located | None:
        """The value of an optional key; None when absent or empty."""
        node = self.values.get(key)
        if isinstance(node, LocatedScalar) and node.value is None:
            return None
        return node

    def require(self, key: str, hint: str = "") -> Located | None:
        """The value of a required key; reports it missing or empty."""
        node = self.values.get(key)
        if node is None:
            where = f" in {'.'.join(self.rel)}" if self.rel else ""
            self.fail(self.node, f"missing required key '{key}'{where}{hint}")
            return None
        if isinstance(node, LocatedScalar) and node.value is None:
            self.fail(node, f"{self.label(key)} needs a value{hint}")
            return None
        return node

    def fail(self, node: Located, message: str) -> None:
        self.ck.fail(node, f"{self.prefix}{message}")

    def wrong_type(self, node: Located, what: str, expected: str) -> None:
        self.fail(node, f"{what} must be {expected}, got {_show(node)}")

    def sub(self, key: str, home: str) -> _Section | None:
        """Open the optional sub-mapping under `key`."""
        node = self.get(key)
        if node is None:
            return None
        rel = (*self.rel, key)
        return _open(self.ck, node, home=home, prefix=self.prefix, rel=rel, what=self.label(key))


def _show(node: Located) -> str:
    """How a found value is named in a message."""
    if isinstance(node, LocatedSequence):
        return "a list"
    if isinstance(node, LocatedMapping):
        return "a mapping"
    value = node.value
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, datetime):
        return f"the date and time {node.text}"
    if isinstance(value, date):
        return f"the date {node.text}"
    return node.text


def _open(
    ck: _Checker,
    node: Located,
    *,
    home: str,
    prefix: str = "",
    rel: tuple[str, ...] = (),
    what: str,
) -> _Section | None:
    """Check that `node` is a mapping of known keys, each once, and open it."""
    if not isinstance(node, LocatedMapping):
        ck.fail(node, f"{prefix}{what} must be a mapping of keys, got {_show(node)}")
        return None
    section = _Section(ck=ck, node=node, prefix=prefix, rel=rel, values={})
    first: dict[str, Located] = {}
    for key, value in node.entries:
        if not isinstance(key, LocatedScalar):
            section.fail(key, f"keys are plain names, got {_show(key)}")
            continue
        name = key.text
        if name.startswith("x-"):
            continue
        if name in first:
            section.fail(key, f"duplicate key '{name}' (first at line {first[name].line})")
            continue
        first[name] = key
        if name in _KEYS[home]:
            section.keys[name] = key
            section.values[name] = value
        else:
            section.fail(key, _unknown_key(name, home, rel))
    return section


def _unknown_key(name: str, home: str, rel: tuple[str, ...]) -> str:
    """The message for an unknown key, with the most useful hint."""
    where = f" in {'.'.join(rel)}" if rel else ""
    message = f"unknown key '{name}'{where}"
    homes = [other for other, keys in _KEYS.items() if name in keys and other != home]
    if homes:
        other = homes[0]
        if _PARENT.get(other) == home:
            return f"{message}; put it under {_UNDER[other]}"
        return f"{message}; it belongs {_HOME[other]}"
    close = difflib.get_close_matches(name, _KEYS[home], n=1)
    if close:
        return f"{message}; did you mean '{close[0]}'?"
    return f"{message}; expected one of: {', '.join(_KEYS[home])}"


def _text(section: _Section, node: Located, what: str) -> str | None:
    """A scalar written as a string or digits, as it was written."""
    if isinstance(node, LocatedScalar) and not isinstance(node.value, bool):
        if isinstance(node.value, str):
            return node.value.strip()
        if isinstance(node.value, int):
            return node.text
    section.wrong_type(node, what, "a string")
    return None


def _written(node: Located) -> str:
    """A scalar's text as written, trimmed."""
    return node.text.strip() if isinstance(node, LocatedScalar) else ""


def _parsed(section: _Section, node: Located, what: str, parse: Callable[[str], _T]) -> _T | None:
    """Run a text parser on a scalar; report `<what> '<text>': <problem>`."""
    text = _text(section, node, what)
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError as exc:
        section.fail(node, f"{what} '{text}': {exc}")
        return None


def _optional_text(section: _Section, key: str) -> str | None:
    node = section.get(key)
    if node is None:
        return None
    text = _text(section, node, section.label(key))
    if text == "":
        section.fail(node, f"{section.label(key)} must not be empty")
        return None
    return text


def _items(section: _Section, key: str, *, required: bool = False) -> list[Located]:
    """The items of a list; a single scalar counts as a one-item list.

    An explicitly empty list is an error when the key is required.
    """
    node = section.require(key) if required else section.get(key)
    if node is None:
        return []
    if isinstance(node, LocatedSequence):
        if required and not node.items:
            section.fail(node, f"{section.label(key)} must not be empty")
        return list(node.items)
    if isinstance(node, LocatedScalar):
        return [node]
    section.wrong_type(node, section.label(key), "a list")
    return []


def _choice(section: _Section, key: str, choices: Mapping[str, _T], default: _T) -> _T:
    """One word of `choices`; a near miss gets a did-you-mean."""
    node = section.get(key)
    if node is None:
        return default
    word = (
        node.value.strip()
        if isinstance(node, LocatedScalar) and isinstance(node.value, str)
        else None
    )
    if word is not None and word in choices:
        return choices[word]
    options = _one_of(list(choices))
    message = f"{section.label(key)} must be {options}, got {_show(node)}"
    close = difflib.get_close_matches(word, list(choices), n=1) if word else []
    if close:
        message += f"; did you mean '{close[0]}'?"
    section.fail(node, message)
    return default


def _one_of(words: list[str]) -> str:
    """'a' or 'b'; 'a', 'b' or 'c'."""
    quoted = [f"'{word}'" for word in words]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _bool(section: _Section, key: str, default: bool) -> bool:
    node = section.get(key)
    if node is None:
        return default
    if isinstance(node, LocatedScalar) and isinstance(node.value, bool):
        return node.value
    section.wrong_type(node, section.label(key), "true or false")
    return default


def _whole(section: _Section, key: str, *, required: bool = False) -> int | None:
    """A whole number of at least 1."""
    node = section.require(key) if required else section.get(key)
    if node is None:
        return None
    value = node.value if isinstance(node, LocatedScalar) else None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    section.wrong_type(node, section.label(key), "a whole number of at least 1")
    return None


def _rate(section: _Section, key: str) -> float | None:
    """A finite number greater than 0; fractions allowed."""
    node = section.get(key)
    if node is None:
        return None
    value = node.value if isinstance(node, LocatedScalar) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        if math.isfinite(value) and value > 0:
            return float(value)
    section.wrong_type(node, section.label(key), "a number greater than 0")
    return None


def _duration(section: _Section, key: str, *, required: bool = False) -> float | None:
    """A duration with a unit, in seconds."""
    node = section.require(key) if required else section.get(key)
    if node is None:
        return None
    if isinstance(node, LocatedScalar) and isinstance(node.value, str):
        return _parsed(section, node, section.label(key), parse_duration)
    section.wrong_type(node, section.label(key), "a duration with a unit, such as '30m'")
    return None


# --------------------------------------------------------------------------
# Readers: one per section of the file.


def validate(
    tree: Located,
    *,
    path: str,
    known_timezones: Collection[str] | None = None,
    files: Mapping[str, ReferencedFile] | None = None,
) -> RuleSet:
    """Validate a located tree into a `RuleSet`.

    Args:
        tree: the top-level node, as built by a front end (the YAML loader).
        path: the file name that errors and the `RuleSet` carry.
        known_timezones: IANA zone names `calling_hours.tz` may use; when
            None or empty, only the shape of a zone name is checked.
        files: the files of `referenced_files(tree)`, keyed by the path as
            written. When None, referenced files are not checked and every
            trunk's `refused_callee_numbers` is empty; a path missing from a
            given mapping is an error.

    Returns:
        The validated rule set.

    Raises:
        RuleFileErrors: every problem found, sorted by line and column.
    """
    zones = frozenset(known_timezones) if known_timezones else None
    ck = _Checker(path=path, timezones=zones, files=files)
    ruleset = _read_ruleset(ck, tree)
    if ck.errors or ruleset is None:
        raise RuleFileErrors(ck.sorted_errors(), warnings=ck.sorted_warnings())
    return ruleset


def _read_ruleset(ck: _Checker, tree: Located) -> RuleSet | None:
    top = _open(ck, tree, home="top", what="the rule file")
    if top is None:
        return None
    _read_version(top)
    mode = _choice(top, "mode", MODES, "enforce")
    numbering = _read_numbering(top)
    listen = _read_listen(top)
    audit_log = _optional_text(top, "audit_log")
    metrics = _read_metrics(top)
    do_not_originate = _read_allocations(top, "do_not_originate", numbering, allow_any=False)
    suspended = _read_suspended(top, numbering)
    emergency = _read_emergency(top)
    responses = _read_responses(top, on_trunk=False)
    monitor_rules = _read_monitor_rules(top) or ()
    ratetable = _read_ratetable(top)
    protection = _read_protection(top)
    answers = _read_answers(top)
    trunks, claims = _read_trunks(top, numbering)
    _lint_do_not_originate(ck, do_not_originate, claims.allocations)
    _lint_overlaps(ck, claims.allocations)
    _lint_route_loops(ck, listen, claims.routes)
    if numbering is None:
        return None
    return RuleSet(
        version=RULES_VERSION,
        mode=mode,
        numbering=numbering,
        listen=tuple(listen) or DEFAULT_LISTEN,
        audit_log=audit_log,
        metrics=metrics,
        do_not_originate=tuple(entry.text for entry in do_not_originate),
        suspended=suspended,
        emergency_numbers=emergency,
        trunks=trunks,
        path=ck.path,
        responses=responses,
        monitor_rules=monitor_rules,
        ratetable=ratetable,
        protection=protection,
        warnings=ck.sorted_warnings(),
        answers=answers,
    )


def _read_version(top: _Section) -> None:
    node = top.get("version")
    if node is None:
        return
    value = node.value if isinstance(node, LocatedScalar) else None
    if value != RULES_VERSION or isinstance(value, bool):
        top.fail(node, f"version must be {RULES_VERSION}, got {_show(node)}")


def _read_numbering(top: _Section) -> Numbering | None:
    node = top.require("numbering", ' (e.g. numbering: {country_code: "86"})')
    if node is None:
        return None
    section = _open(top.ck, node, home="numbering", rel=("numbering",), what="numbering")
    if section is None:
        return None
    country_node = section.require("country_code", ' (e.g. country_code: "86")')
    country = _digits(section, country_node, "country_code", _COUNTRY_CODE, "1 to 3 digits")
    national = _digits(
        section,
        section.get("national_prefix"),
        "national_prefix",
        _NATIONAL_PREFIX,
        "at most 4 digits",
        DEFAULT_NATIONAL_PREFIX,
    )
    international = _digits(
        section,
        section.get("international_prefix"),
        "international_prefix",
        _INTERNATIONAL_PREFIX,
        "1 to 4 digits",
        DEFAULT_INTERNATIONAL_PREFIX,
    )
    if national is not None and national == international:
        at = section.values.get("international_prefix") or section.node
        section.fail(at, "numbering.international_prefix must differ from national_prefix")
        return None
    if country is None or national is None or international is None:
        return None
    return Numbering(
        country_code=country, national_prefix=national, international_prefix=international
    )


def _digits(
    section: _Section,
    node: Located | None,
    key: str,
    pattern: re.Pattern[str],
    shape: str,
    default: str | None = None,
) -> str | None:
    """A digit string (country code, prefix) exactly as written."""
    if node is None:
        return default
    what = section.label(key)
    text = _text(section, node, what)
    if text is None:
        return None
    if not text.isascii() or pattern.fullmatch(text) is None:
        section.fail(node, f"{what} must be {shape}, got '{text}'")
        return None
    if key == "country_code" and text.startswith("0"):
        hint = f"; did you mean '{text.lstrip('0')}'?" if text.strip("0") else ""
        section.fail(node, f"{what} must not start with 0, got '{text}'{hint}")
        return None
    return text


def _read_listen(top: _Section) -> dict[Endpoint, Located | None]:
    """The listen endpoints, each with where it is written (None: a default)."""
    if top.get("listen") is None:
        return dict.fromkeys(DEFAULT_LISTEN)
    endpoints: dict[Endpoint, Located | None] = {}
    for item in _items(top, "listen", required=True):
        endpoint = _parsed(top, item, "listen endpoint", _listen_endpoint)
        if endpoint is None:
            continue
        first = endpoints.get(endpoint)
        if first is not None:
            top.fail(
                item,
                f"listen endpoint '{_written(item)}' is listed twice (first at line {first.line})",
            )
            continue
        endpoints[endpoint] = item
    return endpoints


def _listen_endpoint(text: str) -> Endpoint:
    return parse_endpoint(text, allow_port_zero=True)


def _read_metrics(top: _Section) -> str | None:
    node = top.get("metrics")
    if node is None:
        return None
    return _parsed(top, node, "metrics", _metrics_address)


def _metrics_address(text: str) -> str:
    host, port = parse_host_port(text, require_brackets=True)
    if port is None:
        raise ValueError("add a port, e.g. '127.0.0.1:9060'")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Allocation:
    """A range, prefix or `*` as read: canonical `text`, the node it was at."""

    text: str
    node: Located
    # Whose it is, for messages: "trunk 'sh-callcenter'"; "" outside trunks.
    owner: str = ""
    # Which trunk, counting from 1; 0 outside trunks.
    index: int = 0
    # The prefix of messages about it: "trunk 'sh-callcenter': ".
    prefix: str = ""

    @property
    def written(self) -> str:
        return _written(self.node)


def _read_allocations(
    section: _Section, key: str, numbering: Numbering | None, *, allow_any: bool
) -> tuple[_Allocation, ...]:
    """Ranges, prefixes and (where allowed) `*`, canonical and each once."""
    what = f"{section.label(key)} entry"
    found: dict[str, _Allocation] = {}
    for item in _items(section, key):
        text = _text(section, item, what)
        if text is None:
            continue
        try:
            allocation = parse_allocation(text, allow_any=allow_any)
        except ValueError as exc:
            section.fail(item, f"{what} '{text}': {exc}{_e164_hint(text, numbering)}")
            continue
        first = found.get(allocation)
        if first is not None:
            section.fail(item, f"{what} '{text}' is listed twice (first at line {first.node.line})")
            continue
        found[allocation] = _Allocation(text=allocation, node=item, prefix=section.prefix)
    return tuple(found.values())


def _e164_hint(text: str, numbering: Numbering | None) -> str:
    """'; did you mean ...' for a number written in national or international form."""
    if numbering is None or not text.isascii() or not text.isdigit():
        return ""
    international, national = numbering.international_prefix, numbering.national_prefix
    if text.startswith(international):
        candidate = "+" + text[len(international) :]
    elif national and text.startswith(national):
        candidate = "+" + numbering.country_code + text[len(national) :]
    else:
        return ""
    try:
        return f"; did you mean '{parse_number(candidate)}'?"
    except ValueError:
        return ""


def _read_suspended(top: _Section, numbering: Numbering | None) -> tuple[Suspension, ...]:
    found: dict[str, Suspension] = {}
    lines: dict[str, int] = {}
    for item in _items(top, "suspended"):
        section = _open(top.ck, item, home="suspended", prefix="suspended: ", what="an entry")
        if section is None:
            continue
        suspension = _read_suspension(section, numbering)
        if suspension is None:
            continue
        if suspension.number in found:
            section.fail(
                section.values["number"],
                f"number '{suspension.number}' is already suspended "
                f"(line {lines[suspension.number]})",
            )
            continue
        found[suspension.number] = suspension
        lines[suspension.number] = section.values["number"].line
    return tuple(found.values())


def _read_suspension(section: _Section, numbering: Numbering | None) -> Suspension | None:
    number_node = section.require("number", ' (e.g. number: "+869521345678")')
    number = None
    if number_node is not None:
        text = _text(section, number_node, "number")
        if text is not None:
            try:
                number = parse_number(text)
            except ValueError as exc:
                section.fail(number_node, f"number '{text}': {exc}{_e164_hint(text, numbering)}")
    until = _read_date(section, "until")
    reason = _optional_text(section, "reason") or ""
    if number is None or until is None:
        return None
    return Suspension(number=number, until=until, reason=reason)


def _read_date(section: _Section, key: str) -> date | None:
    node = section.require(key, ' (e.g. until: "2027-05-01")')
    if node is None:
        return None
    what = section.label(key)
    value = node.value if isinstance(node, LocatedScalar) else None
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str) and _DATE.fullmatch(value.strip()):
        try:
            return date.fromisoformat(value.strip())
        except ValueError as exc:
            section.fail(node, f"{what} '{value.strip()}': not a valid date ({exc})")
            return None
    section.wrong_type(node, what, "a date written YYYY-MM-DD")
    return None


def _read_emergency(top: _Section) -> tuple[str, ...]:
    found: list[str] = []
    for item in _items(top, "emergency_numbers"):
        text = _text(top, item, "emergency_numbers entry")
        if text is None:
            continue
        if _DIALLED.fullmatch(text) is None or not text.isascii():
            top.fail(item, f"emergency_numbers entry '{text}': expected digits such as '110'")
            continue
        found.append(text)
    return tuple(found)


# --------------------------------------------------------------------------
# Trunks.


@dataclass(slots=True, kw_only=True)
class _Claims:
    """What the trunks read so far have claimed: names, sources and numbers."""

    names: dict[str, Located] = field(default_factory=dict)
    sources: dict[tuple[IPNetwork, int | None], tuple[str, Located]] = field(default_factory=dict)
    allocations: list[_Allocation] = field(default_factory=list)
    # (route, where it is written, the trunk's message prefix)
    routes: list[tuple[Endpoint, Located, str]] = field(default_factory=list)


def _read_trunks(top: _Section, numbering: Numbering | None) -> tuple[tuple[Trunk, ...], _Claims]:
    """The trunks, and what they claim (allocations and routes) for the lints."""
    claims = _Claims()
    trunks: list[Trunk] = []
    for index, item in enumerate(_items(top, "trunks"), start=1):
        trunk = _read_trunk(top.ck, item, index, numbering, claims)
        if trunk is not None:
            trunks.append(trunk)
    return tuple(trunks), claims


def _peek_name(node: Located) -> str | None:
    """The trunk's name if it reads cleanly, to prefix its messages."""
    if not isinstance(node, LocatedMapping):
        return None
    for key, value in node.entries:
        if isinstance(key, LocatedScalar) and key.text == "name":
            if isinstance(value, LocatedScalar) and isinstance(value.value, str | int):
                text = value.text.strip()
                return text if _TRUNK_NAME.fullmatch(text) else None
    return None


def _read_trunk(
    ck: _Checker, node: Located, index: int, numbering: Numbering | None, claims: _Claims
) -> Trunk | None:
    peeked = _peek_name(node)
    prefix = f"trunk '{peeked}': " if peeked else f"trunk #{index}: "
    section = _open(ck, node, home="trunk", prefix=prefix, what="a trunk")
    if section is None:
        return None
    name = _read_trunk_name(section, claims)
    owner = f"trunk '{name}'" if name else f"trunk #{index}"
    kind = _choice(section, "kind", TRUNK_KINDS, "national")
    sources = _read_sources(section, owner, claims)
    route = _read_route(section)
    if route is not None:
        claims.routes.append((route, section.values["route"], prefix))
    ranges = _read_allocations(section, "ranges", numbering, allow_any=True)
    claims.allocations.extend(
        _Allocation(text=entry.text, node=entry.node, owner=owner, index=index, prefix=prefix)
        for entry in ranges
        if entry.text != "*"
    )
    identity = _read_identity(section)
    limits = _read_limits(section)
    calling_hours = _read_calling_hours(section)
    refused_callees = _optional_text(section, "refused_callees")
    refused_numbers = _read_refused_callees(section, refused_callees, numbering)
    mode = _choice(section, "mode", MODES, None)
    home_cli, exemptions = _read_home_cli(section, numbering)
    responses = _read_responses(section, on_trunk=True)
    answer_detail = _read_trunk_answers(section)
    monitor_rules = _read_monitor_rules(section)
    if name is None or route is None or not sources:
        return None
    return Trunk(
        name=name,
        kind=kind,
        sources=sources,
        route=route,
        ranges=tuple(entry.text for entry in ranges),
        identity=identity,
        limits=limits,
        calling_hours=calling_hours,
        refused_callees=refused_callees,
        refused_callee_numbers=refused_numbers,
        mode=mode,
        home_cli=home_cli,
        home_cli_exempt=exemptions,
        responses=responses,
        answer_detail=answer_detail,
        monitor_rules=monitor_rules,
    )


def _read_trunk_name(section: _Section, claims: _Claims) -> str | None:
    node = section.require("name", " (e.g. name: sh-callcenter)")
    if node is None:
        return None
    name = _text(section, node, "name")
    if name is None:
        return None
    if _TRUNK_NAME.fullmatch(name) is None or not name.isascii():
        section.fail(node, f"name '{name}': use letters, digits, '.', '_' and '-' only")
        return None
    if name in claims.names:
        first = claims.names[name].line
        section.ck.fail(node, f"duplicate trunk name '{name}' (first at line {first})")
        return None
    claims.names[name] = node
    return name


def _read_sources(section: _Section, trunk: str, claims: _Claims) -> tuple[SourceMatch, ...]:
    hint = " (addresses the trunk's calls come from, e.g. ['10.1.0.0/24'])"
    if section.require("sources", hint) is None:
        return ()
    sources: list[SourceMatch] = []
    for item in _items(section, "sources", required=True):
        source = _parsed(section, item, "source", parse_source)
        if source is None:
            continue
        written = _written(item)
        key = (source.network, source.port)
        owner = claims.sources.get(key)
        if owner is None:
            claims.sources[key] = (trunk, item)
            sources.append(source)
        elif owner[0] == trunk:
            section.fail(
                item, f"source '{written}' is listed twice (first at line {owner[1].line})"
            )
        else:
            section.fail(
                item,
                f"source '{written}' is already claimed by {owner[0]} (line {owner[1].line})",
            )
    return tuple(sources)


def _read_route(section: _Section) -> Endpoint | None:
    node = section.require("route", ' (the next hop, e.g. route: "udp:192.0.2.10:5060")')
    if node is None:
        return None
    return _parsed(section, node, "route", parse_endpoint)


def _read_identity(trunk: _Section) -> IdentitySettings:
    section = trunk.sub("identity", "identity")
    if section is None:
        return IdentitySettings()
    policy: DisplayNamePolicy = _choice(section, "display_name", DISPLAY_NAME_POLICIES, "reject")
    trusted = _bool(section, "trusted", True)
    require_pai = _bool(section, "require_pai", False)
    if require_pai and not trusted:
        # RFC 3325 §5: only a trusted peer's P-Asserted-Identity counts; an
        # untrusted trunk's is stripped, so requiring one refuses every call.
        section.fail(
            section.values["require_pai"],
            "identity.require_pai: true contradicts identity.trusted: false "
            f"(line {section.values['trusted'].line}): an untrusted trunk cannot assert "
            "identity, its P-Asserted-Identity is ignored",
        )
        require_pai = False
    return IdentitySettings(
        trusted=trusted,
        require_pai=require_pai,
        from_must_match_pai=_bool(section, "from_must_match_pai", True),
        display_name=policy,
        stir_identity=_choice(section, "stir_identity", STIR_IDENTITY_POLICIES, "strip"),
    )


def _read_limits(trunk: _Section) -> Limits:
    section = trunk.sub("limits", "limits")
    if section is None:
        return Limits()
    cps = _rate(section, "cps")
    burst = _whole(section, "burst")
    if burst is not None and cps is None and section.get("cps") is None:
        section.fail(section.values["burst"], "limits.burst needs limits.cps (the refill rate)")
    if burst is None and cps is not None:
        # A bucket must hold at least one token, else no call could pass.
        burst = max(1, math.ceil(cps))
    return Limits(
        cps=cps,
        burst=burst,
        concurrent=_whole(section, "concurrent"),
        per_caller=_read_window(section, "per_caller"),
        per_callee=_read_window(section, "per_callee"),
        one_ring=_read_one_ring(section),
    )


def _read_window(limits: _Section, key: str) -> Window | None:
    section = limits.sub(key, "window")
    if section is None:
        return None
    calls = _whole(section, "calls", required=True)
    window = _duration(section, "window", required=True)
    warn = _warn(section, calls)
    block_for = _duration(section, "block_for")
    if calls is None or window is None:
        return None
    return Window(calls=calls, window=window, warn=warn, block_for=block_for)


def _read_one_ring(limits: _Section) -> OneRing | None:
    section = limits.sub("one_ring", "one_ring")
    if section is None:
        return None
    max_ring = _duration(section, "max_ring", required=True)
    calls = _whole(section, "calls", required=True)
    window = _duration(section, "window", required=True)
    block_for = _duration(section, "block_for", required=True)
    warn = _warn(section, calls)
    if max_ring is None or calls is None or window is None or block_for is None:
        return None
    return OneRing(max_ring=max_ring, calls=calls, window=window, block_for=block_for, warn=warn)


def _warn(section: _Section, calls: int | None) -> int | None:
    """The warn level: a whole number of at least 1, below the block level `calls`."""
    warn = _whole(section, "warn")
    if warn is None or calls is None or warn < calls:
        return warn
    section.fail(
        section.values["warn"],
        f"{section.label('warn')} must be less than {section.label('calls')} ({calls}), "
        f"got {warn}; a warn level at or past the block level never warns",
    )
    return None


# Servers that speak the Redis protocol, which the `redis` backend talks to.
_REDIS_COMPATIBLE = frozenset({"valkey", "keydb", "dragonfly"})


def _read_ratetable(top: _Section) -> RateTableSettings:
    section = top.sub("ratetable", "ratetable")
    if section is None:
        return RateTableSettings()
    written = section.get("backend")
    backend: RateTableBackend | None = None
    if written is None:
        backend = "memory"
    elif _written(written).lower() in _REDIS_COMPATIBLE:
        section.fail(
            written,
            f"ratetable.backend must be 'memory' or 'redis', got {_show(written)}; "
            "it speaks the Redis protocol, so write 'backend: redis'",
        )
    else:
        backend = _choice(section, "backend", RATETABLE_BACKENDS, None)
    url = _read_redis_url(section, backend)
    max_keys = _whole(section, "max_keys") or DEFAULT_RATETABLE_MAX_KEYS
    failure: BackendFailurePolicy = _choice(
        section, "on_backend_failure", BACKEND_FAILURE_POLICIES, "open"
    )
    timeout = _duration(section, "timeout")
    if timeout is not None and timeout > MAX_RATETABLE_TIMEOUT:
        section.fail(
            section.values["timeout"],
            f"ratetable.timeout '{_written(section.values['timeout'])}' is too long: at most "
            "500ms, since shared counters staler than a UDP caller's INVITE retransmission "
            "(T1 = 500ms, RFC 3261 §17.1.1.2) no longer describe the calls being decided",
        )
        timeout = None
    sync_interval = _duration(section, "sync_interval")
    low, high = RATETABLE_SYNC_INTERVALS
    if sync_interval is not None and not low <= sync_interval <= high:
        section.fail(
            section.values["sync_interval"],
            f"ratetable.sync_interval '{_written(section.values['sync_interval'])}' must be "
            "between 5ms and 1s: shorter loads Redis for nothing, longer lets the instances "
            "admit more past a shared limit",
        )
        sync_interval = None
    if backend is None or (backend == "redis") != (url is not None):
        return RateTableSettings()
    return RateTableSettings(
        backend=backend,
        url=url,
        max_keys=max_keys,
        on_backend_failure=failure,
        timeout=DEFAULT_RATETABLE_TIMEOUT if timeout is None else timeout,
        sync_interval=DEFAULT_RATETABLE_SYNC_INTERVAL if sync_interval is None else sync_interval,
    )


def _read_protection(top: _Section) -> Protection:
    section = top.sub("protection", "protection")
    if section is None:
        return Protection()
    values: dict[str, Any] = {}
    for key, (low, high) in PROTECTION_BOUNDS.items():
        value = _whole(section, key)
        if value is not None and not low <= value <= high:
            section.fail(
                section.values[key], f"protection.{key} must be from {low} to {high}, got {value}"
            )
        elif value is not None:
            values[key] = value
    for key in ("tcp_idle_timeout", "tcp_message_timeout"):
        seconds = _duration(section, key)
        if seconds is not None:
            values[key] = seconds
    rate = _rate(section, "unknown_source_rate")
    if rate is not None:
        values["unknown_source_rate"] = rate
    values["unknown_source_answer"] = _choice(
        section, "unknown_source_answer", UNKNOWN_SOURCE_ANSWERS, "reject"
    )
    return Protection(**values)


def _read_answers(top: _Section) -> Answers:
    """The top-level `answers`: what every trunk is told, and who tells it."""
    section = top.sub("answers", "answers")
    if section is None:
        return Answers()
    detail: AnswerDetail = _choice(section, "detail", ANSWER_DETAILS, "rule")
    warn_agent = server_header = None
    node = section.get("warn_agent")
    if node is not None:
        warn_agent = _parsed(section, node, section.label("warn_agent"), parse_warn_agent)
    node = section.get("server_header")
    if node is not None:
        server_header = _parsed(section, node, section.label("server_header"), parse_server_header)
    return Answers(detail=detail, warn_agent=warn_agent, server_header=server_header)


def _read_trunk_answers(trunk: _Section) -> AnswerDetail | None:
    """A trunk's `answers`: only `detail`, overriding the top-level one."""
    section = trunk.sub("answers", "answers")
    if section is None:
        return None
    for key in ("warn_agent", "server_header"):
        if key in section.keys:
            section.fail(
                section.keys[key],
                f"answers.{key} cannot be set on a trunk: it names this gateway in every "
                "answer; set it in the top-level answers",
            )
    return _choice(section, "detail", ANSWER_DETAILS, None)


def _read_redis_url(section: _Section, backend: RateTableBackend | None) -> str | None:
    """`ratetable.url`: required with the redis backend, an error with memory."""
    if backend is None:
        return None
    if backend == "memory":
        if section.get("url") is not None:
            section.fail(
                section.keys["url"],
                "ratetable.url needs 'backend: redis'; the memory backend keeps its counters "
                "in this process, so add 'backend: redis' or remove url",
            )
        return None
    hint = ' (backend redis needs the server, e.g. url: "redis://127.0.0.1:6379/0")'
    node = section.require("url", hint)
    if node is None:
        return None
    text = _text(section, node, "ratetable.url")
    if text is None:
        return None
    try:
        return parse_redis_url(text)
    except ValueError as exc:
        section.fail(node, f"ratetable.url '{masked_url(text)}': {exc}")
        return None


def _read_calling_hours(trunk: _Section) -> CallingHours | None:
    section = trunk.sub("calling_hours", "calling_hours")
    if section is None:
        return None
    tz = _read_tz(section)
    windows: list[tuple[int, int]] = []
    for item in _items(section, "allow", required=True):
        window = _parsed(section, item, "calling_hours.allow window", parse_time_window)
        if window is not None:
            windows.append(window)
    if tz is None or not windows:
        return None
    return CallingHours(tz=tz, allow=tuple(windows))


def _read_tz(section: _Section) -> str | None:
    node = section.require("tz", " (an IANA time zone, e.g. tz: Asia/Shanghai)")
    if node is None:
        return None
    text = _text(section, node, "calling_hours.tz")
    if text is None:
        return None
    zones = section.ck.timezones
    if _TZ_NAME.fullmatch(text) is None:
        section.fail(
            node,
            f"calling_hours.tz '{text}' is not a time zone name "
            "(use an IANA name such as 'Asia/Shanghai')",
        )
        return None
    if zones is not None and text not in zones:
        close = difflib.get_close_matches(text, sorted(zones), n=1)
        hint = (
            f"; did you mean '{close[0]}'?"
            if close
            else " (use an IANA name such as 'Asia/Shanghai')"
        )
        section.fail(node, f"calling_hours.tz '{text}' is not a known time zone{hint}")
        return None
    return text


def _read_refused_callees(
    trunk: _Section, written: str | None, numbering: Numbering | None
) -> frozenset[str]:
    """The numbers of the trunk's `refused_callees` file, when files were given."""
    files = trunk.ck.files
    if written is None or files is None:
        return frozenset()
    cache = trunk.ck.number_files
    if written in cache:
        return cache[written] or frozenset()
    key = trunk.keys["refused_callees"]
    found = files.get(written)
    numbers: frozenset[str] | None = None
    if found is None:
        trunk.fail(key, f"refused_callees '{written}': the file was not read")
    elif found.text is None and found.line:
        message = f"cannot use this refused-callees file: {found.problem}"
        trunk.ck.fail_in(key, found.path, found.line, found.column, message)
    elif found.text is None:
        trunk.fail(key, f"refused_callees '{written}': cannot read the file: {found.problem}")
    else:
        numbers = _read_number_file(trunk.ck, key, found.path, found.text, numbering)
    cache[written] = numbers
    return numbers or frozenset()


def _read_number_file(
    ck: _Checker, anchor: Located, path: str, text: str, numbering: Numbering | None
) -> frozenset[str] | None:
    """One E.164 number a line; `#` starts a comment; blank lines are skipped.

    Errors name `path` and the 1-based line and column inside it.
    """
    first: dict[str, int] = {}
    clean = True
    for line_number, line in enumerate(text.split("\n"), start=1):
        content = line.removesuffix("\r").split("#", 1)[0]
        written = content.strip()
        if not written:
            continue
        column = len(content) - len(content.lstrip()) + 1
        try:
            number = parse_number(written)
        except ValueError as exc:
            hint = _e164_hint(written, numbering)
            ck.fail_in(
                anchor, path, line_number, column, f"refused callee '{written}': {exc}{hint}"
            )
            clean = False
            continue
        if number in first:
            message = f"refused callee '{number}' is listed twice (first at line {first[number]})"
            ck.fail_in(anchor, path, line_number, column, message)
            clean = False
            continue
        first[number] = line_number
    return frozenset(first) if clean else None


def _kind_is(section: _Section, kind: TrunkKind) -> bool | None:
    """Whether the trunk's `kind` is `kind`; None when `kind` is misspelt."""
    node = section.get("kind")
    if node is None:
        return kind == "national"
    word = (
        node.value.strip()
        if isinstance(node, LocatedScalar) and isinstance(node.value, str)
        else None
    )
    if word is None or word not in TRUNK_KINDS:
        return None
    return TRUNK_KINDS[word] == kind


def _read_home_cli(
    trunk: _Section, numbering: Numbering | None
) -> tuple[HomeCliPolicy, tuple[Exemption, ...]]:
    """`home_cli` and `home_cli_exempt`, which only international trunks take."""
    international = _kind_is(trunk, "international")
    if international is None:
        return "reject", ()
    if not international:
        for key in ("home_cli", "home_cli_exempt"):
            if trunk.get(key) is not None:
                trunk.fail(
                    trunk.keys[key],
                    f"{key} applies to international trunks only; "
                    "add 'kind: international' or remove it",
                )
        return "reject", ()
    policy: HomeCliPolicy = _choice(trunk, "home_cli", HOME_CLI_POLICIES, "reject")
    exemptions: list[Exemption] = []
    for item in _items(trunk, "home_cli_exempt"):
        exemption = _read_exemption(trunk, item, numbering)
        if exemption is not None:
            exemptions.append(exemption)
    return policy, tuple(exemptions)


def _read_exemption(
    trunk: _Section, node: Located, numbering: Numbering | None
) -> Exemption | None:
    section = _open(
        trunk.ck,
        node,
        home="exemption",
        prefix=trunk.prefix,
        rel=("home_cli_exempt",),
        what="home_cli_exempt entry",
    )
    if section is None:
        return None
    kind: ExemptionType | None = None
    if section.require("type", " (mobile_roaming or bilateral)") is not None:
        kind = _choice(section, "type", EXEMPTION_TYPES, None)
    ranges: list[str] = []
    ranges_node = section.require("ranges", " (the home-country numbers it exempts)")
    if isinstance(ranges_node, LocatedSequence) and not ranges_node.items:
        section.fail(ranges_node, f"{section.label('ranges')} must not be empty")
    elif ranges_node is not None:
        for entry in _read_allocations(section, "ranges", numbering, allow_any=False):
            if _is_home(entry.text, numbering):
                ranges.append(entry.text)
                continue
            assert numbering is not None
            section.fail(
                entry.node,
                f"home_cli_exempt.ranges entry '{entry.written}' is not a home-country number "
                f"(country code {numbering.country_code}); only home-country numbers need "
                "an exemption",
            )
    note = _optional_text(section, "note") or ""
    if kind is None or not ranges:
        return None
    return Exemption(type=kind, ranges=tuple(ranges), note=note)


def _is_home(allocation: str, numbering: Numbering | None) -> bool:
    """Whether every number of `allocation` is a home-country number."""
    if numbering is None:
        return True
    home = numbering.country_code
    return covers((None, home, home), interval_of(allocation))


def _read_responses(section: _Section, *, on_trunk: bool) -> Responses:
    """`responses`: rule id to response, sorted by rule id."""
    node = section.get("responses")
    if node is None:
        return ()
    if not isinstance(node, LocatedMapping):
        section.wrong_type(node, section.label("responses"), "a mapping of rule ids to responses")
        return ()
    found: dict[str, ResponseSpec] = {}
    first: dict[str, Located] = {}
    for key, value in node.entries:
        if not isinstance(key, LocatedScalar) or isinstance(key.value, bool):
            section.fail(key, f"responses keys are rule ids, got {_show(key)}")
            continue
        rule = key.text.strip()
        if rule.startswith("x-"):
            continue
        if rule in first:
            section.fail(
                key, f"duplicate rule id '{rule}' in responses (first at line {first[rule].line})"
            )
            continue
        first[rule] = key
        if rule not in RULE_IDS:
            section.fail(key, _unknown_rule(rule))
            continue
        if on_trunk and rule == "unknown_source":
            section.fail(
                key,
                "responses.unknown_source cannot be set on a trunk: a call from no trunk's "
                "source has no trunk; set it in the top-level responses",
            )
            continue
        spec = _read_response(section, value, rule)
        if spec is not None:
            found[rule] = spec
    return tuple(sorted(found.items()))


def _read_monitor_rules(section: _Section) -> tuple[str, ...] | None:
    """`monitor_rules`: rule ids only reported, not enforced; None when absent."""
    if section.get("monitor_rules") is None:
        return None
    found: dict[str, Located] = {}
    for item in _items(section, "monitor_rules"):
        rule = _text(section, item, "monitor_rules entry")
        if rule is None:
            continue
        if rule in found:
            section.fail(
                item,
                f"duplicate rule id '{rule}' in monitor_rules (first at line {found[rule].line})",
            )
        elif rule == "unknown_source":
            section.fail(
                item,
                "unknown_source cannot be monitored: a call from no trunk's source is never "
                "relayed",
            )
        elif rule not in RULE_IDS:
            section.fail(item, _unknown_rule(rule, "monitor_rules"))
        else:
            found[rule] = item
    return tuple(found)


def _unknown_rule(rule: str, where: str = "responses") -> str:
    if rule in SERVICE_REFUSALS:
        return (
            f"'{rule}' in {where} is no rule of the rule file: sipguard's own 503 "
            "(with Reason and Retry-After) cannot be changed or monitored"
        )
    message = f"unknown rule id '{rule}' in {where}"
    close = difflib.get_close_matches(rule, RULE_IDS, n=1)
    if close:
        return f"{message}; did you mean '{close[0]}'?"
    return f"{message}; expected one of: {', '.join(RULE_IDS)}"


def _read_response(parent: _Section, node: Located, rule: str) -> ResponseSpec | None:
    rel = ("responses", rule)
    if isinstance(node, LocatedScalar):
        what = ".".join(rel)
        parent.fail(node, f"{what} must be a mapping such as {{code: 603}}, got {_show(node)}")
        return None
    section = _open(
        parent.ck, node, home="response", prefix=parent.prefix, rel=rel, what=".".join(rel)
    )
    if section is None:
        return None
    code = _code(section)
    reason_node = section.get("reason")
    reason = None
    if reason_node is not None:
        reason = _parsed(section, reason_node, section.label("reason"), parse_reason_phrase)
    retry_after = _duration(section, "retry_after")
    if retry_after is not None:
        at = section.values["retry_after"]
        if not retry_after.is_integer():
            # RFC 3261 §20.33: Retry-After = delta-seconds, a whole number.
            section.fail(
                at,
                f"{section.label('retry_after')} '{_written(at)}': Retry-After counts whole "
                "seconds (RFC 3261 §20.33)",
            )
            retry_after = None
        elif code is not None and not 500 <= code <= 599:
            section.fail(
                at,
                f"{section.label('retry_after')} goes with a 5xx code only, got code {code}",
            )
            retry_after = None
    if code is None:
        return None
    return ResponseSpec(code=code, reason=reason, retry_after=retry_after)


def _code(section: _Section) -> int | None:
    """A SIP final failure status: 400 to 699."""
    node = section.require("code", " (a SIP status from 400 to 699, e.g. code: 603)")
    if node is None:
        return None
    value = node.value if isinstance(node, LocatedScalar) else None
    if isinstance(value, int) and not isinstance(value, bool) and 400 <= value <= 699:
        return value
    section.wrong_type(node, section.label("code"), "a SIP status from 400 to 699")
    return None


# --------------------------------------------------------------------------
# Lints across sections.


def _lint_do_not_originate(
    ck: _Checker, do_not_originate: tuple[_Allocation, ...], allocated: list[_Allocation]
) -> None:
    """A trunk's block wholly inside `do_not_originate` can never pass."""
    if not do_not_originate:
        return
    index = CoverIndex([interval_of(entry.text) for entry in do_not_originate])
    for entry in allocated:
        found = index.covering(interval_of(entry.text))
        if found is None:
            continue
        outer = do_not_originate[found]
        ck.fail(
            entry.node,
            f"{entry.prefix}ranges entry '{entry.written}' can never pass: every number in it "
            f"is do_not_originate ('{outer.written}', {_at(outer.node)})",
        )


def _lint_overlaps(ck: _Checker, allocated: list[_Allocation]) -> None:
    """A number belongs to one trunk: report each block another trunk had first."""
    items = [(interval_of(entry.text), entry.index) for entry in allocated]
    for entry, earlier in zip(allocated, first_overlaps(items), strict=True):
        if earlier is None:
            continue
        other = allocated[earlier]
        ck.fail(
            entry.node,
            f"{entry.prefix}ranges entry '{entry.written}' overlaps '{other.written}' of "
            f"{other.owner} ({_at(other.node)}); allocate each number to one trunk",
        )


def _lint_route_loops(
    ck: _Checker,
    listen: Mapping[Endpoint, Located | None],
    routes: list[tuple[Endpoint, Located, str]],
) -> None:
    """Warn about a route that is sipguard's own listen address: a call
    relayed there comes back to sipguard instead of reaching a next hop."""
    for route, node, prefix in routes:
        reached = listen_reached(route, tuple(listen))
        if reached is None:
            continue
        where = listen[reached]
        named = f"'{reached}' " + (
            "(the default, as the file has no listen)" if where is None else f"({_at(where)})"
        )
        if is_wildcard(reached):
            how = f"sipguard listens on {named}, which takes that port on every local address"
        else:
            how = f"it is sipguard's own listen address {named}"
        ck.warn(
            node,
            f"{prefix}route '{_written(node)}' leads back to sipguard: {how}; "
            "allowed calls of this trunk would be relayed to sipguard itself, not to a next hop",
        )


def _at(node: Located) -> str:
    return f"line {node.line}, column {node.column}"
