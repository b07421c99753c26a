"""SIP requests and responses as immutable values.

A message keeps its header fields as they arrived (canonical names, raw
values, original order) and parses a header body only when asked, once:
typed accessors such as `Request.cseq` or `Request.vias` are cached properties
over the immutable fields (lazy parsing after Sippy's `SipHeader.getBody`, but
on a value that never changes). The messages are frozen dataclasses without
`__slots__` only so that those properties have a place to store.

Content-Length is not a stored header: it is framing, derived from `body`
when the message is written (see serializer.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from sipguard.errors import SipParseError
from sipguard.sip.headers import LIST_HEADERS, header_key, key_and_name
from sipguard.sip.uri import NameAddr, Uri, Via, parse_name_addr, parse_uri, parse_via, split_list

__all__ = ["CSeq", "Headers", "Request", "Response", "Message", "is_ascii_digits", "parse_cseq"]


T = TypeVar("T")


class _cached(Generic[T]):  # noqa: N801 - used as a decorator, like cached_property
    """`functools.cached_property` without its lock.

    Python 3.11's cached_property takes one RLock, shared by every instance,
    on each first access: a parsed INVITE reads eight or nine of these
    properties once each, so the lock was a measurable part of a refused
    call. A message is read by one thread, and computing a value twice
    would be harmless anyway (the values are pure functions of the fields).
    """

    def __init__(self, compute: Callable[[Any], T]) -> None:
        self._compute = compute
        self._name = compute.__name__
        self.__doc__ = compute.__doc__

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> _cached[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> T | _cached[T]:
        if instance is None:
            return self
        value = self._compute(instance)
        instance.__dict__[self._name] = value  # found before this descriptor from now on
        return value


class Headers:
    """An immutable, ordered multimap of header fields.

    Lookups accept any spelling: `get("v")`, `get("VIA")` and `get("via")`
    find the same field. Keys are computed once, at construction.
    """

    __slots__ = ("_fields", "_keys", "_first", "_repeated")

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        stored: list[tuple[str, str]] = []
        keys: list[str] = []
        first: dict[str, str] = {}
        repeated: set[str] = set()
        for name, value in fields:
            key, canonical = key_and_name(name)
            stored.append((canonical, value))
            keys.append(key)
            if key in first:
                repeated.add(key)
            else:
                first[key] = value
        self._fields = tuple(stored)
        self._keys = tuple(keys)
        self._first = first
        self._repeated = repeated

    @classmethod
    def from_keyed(cls, fields: list[tuple[str, str]], keys: list[str]) -> Headers:
        """Headers from (canonical name, value) pairs whose keys are already
        known (the parser's path: no name is looked up twice)."""
        headers = cls.__new__(cls)
        headers._fields = tuple(fields)
        headers._keys = tuple(keys)
        # The first value of each key: later duplicates are overwritten by
        # earlier ones when the pairs are read back to front.
        first = dict(zip(reversed(keys), (value for _, value in reversed(fields)), strict=True))
        headers._first = first
        headers._repeated = (
            set() if len(first) == len(keys) else {k for k in first if keys.count(k) > 1}
        )
        return headers

    def missing(self, keys: Iterable[str]) -> str | None:
        """The first of `keys` (lookup keys) with no field, or None."""
        first = self._first
        return next((key for key in keys if key not in first), None)

    def repeated(self, keys: Iterable[str]) -> str | None:
        """The first of `keys` (lookup keys) on more than one line, or None."""
        repeated = self._repeated
        if not repeated:
            return None
        return next((key for key in keys if key in repeated), None)

    @property
    def fields(self) -> tuple[tuple[str, str], ...]:
        """All (name, value) pairs in order."""
        return self._fields

    def keyed(self) -> Iterator[tuple[str, str, str]]:
        """(key, name, value) for every field, in order."""
        for key, (name, value) in zip(self._keys, self._fields, strict=True):
            yield key, name, value

    def get(self, name: str) -> str | None:
        """The first value of header `name`, or None."""
        return self._first.get(header_key(name))

    def get_all(self, name: str) -> list[str]:
        """Every value of `name` in order; list headers are split on commas."""
        key = header_key(name)
        if key not in self._first:
            return []
        if key in self._repeated:
            values = [v for k, (_, v) in zip(self._keys, self._fields, strict=True) if k == key]
        else:
            values = [self._first[key]]
        if key in LIST_HEADERS:
            return [item for value in values for item in split_list(value)]
        return values

    def count(self, name: str) -> int:
        """How many header lines carry `name`."""
        key = header_key(name)
        if key in self._repeated:
            return self._keys.count(key)
        return 1 if key in self._first else 0

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and header_key(name) in self._first

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._fields == other._fields

    def __hash__(self) -> int:
        return hash(self._fields)

    def __repr__(self) -> str:
        return f"Headers({list(self._fields)!r})"


@dataclass(frozen=True, slots=True)
class CSeq:
    """The CSeq header (RFC 3261 §20.16): sequence number and method."""

    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


# RFC 3261 §8.1.1.5: "The sequence number MUST be expressible as a 32-bit
# unsigned integer."
MAX_CSEQ = 2**32 - 1


def is_ascii_digits(text: str) -> bool:
    """RFC 3261 DIGIT: ASCII 0-9 only (str.isdigit also accepts '²' or '٣')."""
    return text.isascii() and text.isdigit()


def parse_cseq(value: str) -> CSeq:
    """Parse `1 INVITE`; raise SipParseError for anything else."""
    # RFC 3261 §20.16: CSeq = 1*DIGIT LWS Method; LWS may be a tab.
    number, _, method = value.strip(" \t").replace("\t", " ").partition(" ")
    method = method.strip(" ")
    if not is_ascii_digits(number) or len(number) > 10 or not method or " " in method:
        raise SipParseError(f"bad CSeq: {value[:40]!r}")
    seq = int(number)
    if seq > MAX_CSEQ:
        raise SipParseError(f"CSeq number out of range: {value!r}")
    return CSeq(seq, method)


class _MessageBase:
    """Accessors common to requests and responses (mixin over `headers`)."""

    headers: Headers

    @_cached
    def call_id(self) -> str:
        """The Call-ID (presence is checked by the parser)."""
        return self.headers.get("call-id") or ""

    @_cached
    def cseq(self) -> CSeq:
        """The parsed CSeq header."""
        return parse_cseq(self.headers.get("cseq") or "")

    @_cached
    def vias(self) -> tuple[Via, ...]:
        """Every Via value, top first."""
        return tuple(parse_via(value) for value in self.headers.get_all("via"))

    @_cached
    def top_via(self) -> Via:
        """The topmost Via value."""
        values = split_list(self.headers.get("via") or "")
        if not values:
            raise SipParseError("missing or empty Via")
        return parse_via(values[0])

    @_cached
    def from_(self) -> NameAddr:
        """The parsed From header."""
        return parse_name_addr(self.headers.get("from") or "")

    @_cached
    def to(self) -> NameAddr:
        """The parsed To header."""
        return parse_name_addr(self.headers.get("to") or "")

    @_cached
    def contacts(self) -> tuple[NameAddr, ...]:
        """Every Contact value (an empty tuple for `Contact: *` or none)."""
        values = self.headers.get_all("contact")
        return tuple(parse_name_addr(value) for value in values if value != "*")

    @_cached
    def record_routes(self) -> tuple[str, ...]:
        """Every Record-Route value as written, top first."""
        return tuple(self.headers.get_all("record-route"))


@dataclass(frozen=True, eq=True)
class Request(_MessageBase):
    """A SIP request. `uri` is the Request-URI as written."""

    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""

    @_cached
    def request_uri(self) -> Uri:
        """The parsed Request-URI."""
        return parse_uri(self.uri)

    @_cached
    def max_forwards(self) -> int | None:
        """Max-Forwards as an int, or None when the header is absent."""
        value = self.headers.get("max-forwards")
        if value is None:
            return None
        value = value.strip(" \t")
        # 1*DIGIT: leading zeros are legal (RFC 4475 §3.1.1.9 "0068").
        if not is_ascii_digits(value) or len(value) > 10 or int(value) > 255:
            raise SipParseError(f"bad Max-Forwards: {value!r}")
        return int(value)


@dataclass(frozen=True, eq=True)
class Response(_MessageBase):
    """A SIP response."""

    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""


Message = Request | Response
