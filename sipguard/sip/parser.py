"""Bytes to messages (RFC 3261 §7, §25), sans-IO.

`parse_message(data)` turns one complete message into a `Request` or
`Response`, or raises `SipParseError` (status hint 400, or 505 for another
SIP version). It never raises anything else, whatever the bytes.

`StreamFramer` cuts a TCP byte stream into messages using Content-Length,
which is mandatory on streams (RFC 3261 §18.3).

Rules enforced here:
1. The head is UTF-8; NUL and bare CR or LF inside the head are refused.
2. A request carries Via, From, To, Call-ID and CSeq (RFC 3261 §8.1.1), and
   the CSeq method equals the request method (§8.1.1.5).
3. Content-Length, when present, is a non-negative integer no greater than
   the bytes that follow on a datagram (§18.3: then the message is dropped or
   answered 400); surplus datagram bytes are discarded.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipguard.errors import MessageTooLarge, SipParseError
from sipguard.sip.headers import header_key, key_and_name
from sipguard.sip.message import Headers, Request, Response, is_ascii_digits
from sipguard.sip.uri import Via, parse_via, split_list

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_PARSE_LIMITS",
    "ParseLimits",
    "StreamFramer",
    "parse_message",
    "peek_top_via",
]

# UDP datagrams cannot exceed 65,535 bytes; a message over this size on TCP is
# answered 513 (RFC 3261 §21.5.14) rather than buffered without bound.
DEFAULT_MAX_MESSAGE_SIZE = 65_535


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """How much one message may ask the parser to look at.

    Attributes:
        max_header_lines: header lines (folded continuation lines count).
        max_line_length: characters of any one line of the head.
        max_uri_length: characters of the Request-URI (over it: 414).
    """

    max_header_lines: int = 100
    max_line_length: int = 8192
    max_uri_length: int = 1024


DEFAULT_PARSE_LIMITS = ParseLimits()

_MANDATORY = ("via", "from", "to", "call-id", "cseq")
# Headers that RFC 3261 §7.3.1 does not allow to repeat and whose second copy
# would make the message ambiguous.
_SINGLETONS = ("from", "to", "call-id", "cseq", "max-forwards", "content-type")
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_MAX_CONTENT_LENGTH_DIGITS = 10
# Header names as written (before the colon) -> (key, canonical name). Real
# traffic uses a few dozen spellings; the bound keeps invented ones out.
_KNOWN_NAMES: dict[str, tuple[str, str]] = {}
_MAX_KNOWN_NAMES = 1024
# RFC 3261 §25.1: linear white space is SP and HTAB only (not Unicode spaces).
_LWS = " \t"


def parse_message(data: bytes, limits: ParseLimits = DEFAULT_PARSE_LIMITS) -> Request | Response:
    """Parse one complete message (a datagram, or a frame from StreamFramer).

    Raises:
        SipParseError: the bytes are not a valid SIP message, or pass one of
            `limits` (status hint 400, or 414 for the Request-URI).
    """
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2  # RFC 3261 §7.5: ignore CRLFs before the start-line
    head_end = data.find(b"\r\n\r\n", start)
    if head_end < 0:
        raise SipParseError("no blank line after the headers")
    try:
        head = data[start:head_end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SipParseError(f"header bytes are not UTF-8 at offset {exc.start}") from None
    _check_characters(head)
    lines = head.split("\r\n")
    _check_size(lines, limits)
    start_line = lines[0]
    fields, keys = _header_fields(lines[1:])
    body = _body(fields, keys, data[head_end + 4 :])
    headers = Headers.from_keyed(fields, keys)
    if start_line[:4].upper() == "SIP/":
        message: Request | Response = _response(start_line, headers, body)
    else:
        message = _request(start_line, headers, body)
        if len(message.uri) > limits.max_uri_length:
            raise SipParseError(
                f"Request-URI of {len(message.uri)} characters; at most {limits.max_uri_length}",
                status_hint=414,
            )
    _check_mandatory(message)
    return message


def _check_characters(head: str) -> None:
    """No NUL, and CR and LF only as the CRLF that ends a line."""
    if "\x00" in head:
        raise SipParseError("NUL byte in the headers")
    crlf = head.count("\r\n")
    if head.count("\r") != crlf or head.count("\n") != crlf:
        first_line = head.split("\r\n", 1)[0]
        if "\r" in first_line or "\n" in first_line:
            raise SipParseError("bare CR or LF in the start line")
        raise SipParseError("bare CR or LF inside a header line")


def peek_top_via(data: bytes) -> Via | None:
    """The top Via of a message, read without parsing anything else.

    For a lookup before the full parse (a retransmission, or the ACK of a
    stateless answer, is recognised by its top Via alone). None whenever the
    answer is not plain: no head, a folded or non-ASCII Via line, a bad value.
    """
    head_end = data.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    lines = data[:head_end].split(b"\r\n")
    for index in range(1, len(lines)):
        name, colon, value = lines[index].partition(b":")
        if not colon or name.rstrip(b" \t").lower() not in (b"via", b"v"):
            continue
        if lines[index + 1 : index + 2] and lines[index + 1][:1] in (b" ", b"\t"):
            return None
        try:
            values = split_list(value.decode("ascii"))
            return parse_via(values[0]) if values else None
        except (UnicodeDecodeError, SipParseError):
            return None
    return None


def _check_size(lines: list[str], limits: ParseLimits) -> None:
    if len(lines) - 1 > limits.max_header_lines:
        raise SipParseError(f"{len(lines) - 1} header lines; at most {limits.max_header_lines}")
    longest = max(map(len, lines))
    if longest > limits.max_line_length:
        # The Request-URI has its own answer (414) when it is what is long.
        first = lines[0]
        if len(first) == longest and len(first.split(" ")) == 3:
            uri = first.split(" ")[1]
            if len(uri) > limits.max_uri_length:
                raise SipParseError(
                    f"Request-URI of {len(uri)} characters; at most {limits.max_uri_length}",
                    status_hint=414,
                )
        raise SipParseError(f"a line of {longest} characters; at most {limits.max_line_length}")


def _header_fields(lines: list[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """(canonical name, value) of every header line, and each one's lookup key."""
    fields: list[tuple[str, str]] = []
    keys: list[str] = []
    known_names = _KNOWN_NAMES
    for line in lines:
        name, colon, value = line.partition(":")
        known = known_names.get(name) if colon else None
        if known is None:
            if line[:1] in (" ", "\t"):
                _fold(fields, line)
                continue
            known = _read_name(name, colon, line)
        fields.append((known[1], value.strip(_LWS)))
        keys.append(known[0])
    return fields, keys


def _fold(fields: list[tuple[str, str]], line: str) -> None:
    """RFC 3261 §7.3.1: a line starting with whitespace continues the previous
    header value; the fold is equivalent to one space."""
    if not fields:
        raise SipParseError("continuation line before any header")
    name, value = fields[-1]
    folded = line.strip(_LWS)
    if folded:
        fields[-1] = (name, f"{value} {folded}" if value else folded)


def _read_name(name: str, colon: str, line: str) -> tuple[str, str]:
    """(key, canonical name) of a header name not seen before; remembered
    (boundedly: hostile messages can invent names without end)."""
    stripped = name.rstrip(" \t")
    if not colon or not stripped or not _is_token(stripped):
        raise SipParseError(f"malformed header line: {line[:60]!r}")
    known = key_and_name(stripped)
    if len(_KNOWN_NAMES) < _MAX_KNOWN_NAMES:
        _KNOWN_NAMES[name] = known
    return known


def _is_token(text: str) -> bool:
    if text.isascii() and text.replace("-", "").isalnum():
        return True  # the common case, without a per-character loop
    return all(char in _TOKEN_CHARS for char in text)


def _body(fields: list[tuple[str, str]], keys: list[str], rest: bytes) -> bytes:
    """Take Content-Length out of `fields` and `keys` and cut the body with it."""
    if "content-length" not in keys:
        return rest
    length: int | None = None
    for index in range(len(keys) - 1, -1, -1):
        if keys[index] != "content-length":
            continue
        parsed = _content_length(fields[index][1])
        if length is not None and parsed != length:
            raise SipParseError("conflicting Content-Length headers")
        length = parsed
        del fields[index], keys[index]
    assert length is not None
    if length > len(rest):
        raise SipParseError(f"Content-Length {length} exceeds the {len(rest)} body bytes")
    return rest[:length]


def _content_length(value: str) -> int:
    value = value.strip(_LWS)
    if not is_ascii_digits(value) or len(value) > _MAX_CONTENT_LENGTH_DIGITS:
        raise SipParseError(f"bad Content-Length: {value[:20]!r}")
    return int(value)


def _request(start_line: str, headers: Headers, body: bytes) -> Request:
    parts = start_line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"bad request line: {start_line[:80]!r}")
    method, uri, version = parts
    _check_version(version)
    if not _is_token(method):
        raise SipParseError(f"bad method: {method[:20]!r}")
    if ":" not in uri:
        raise SipParseError(f"bad Request-URI: {uri[:80]!r}")
    return Request(method, uri, headers, body)


def _response(start_line: str, headers: Headers, body: bytes) -> Response:
    version, _, rest = start_line.partition(" ")
    _check_version(version)
    code, _, reason = rest.partition(" ")
    if len(code) != 3 or not is_ascii_digits(code) or not 100 <= int(code) <= 699:
        raise SipParseError(f"bad status line: {start_line[:80]!r}")
    return Response(int(code), reason, headers, body)


def _check_version(version: str) -> None:
    if version.upper() != "SIP/2.0":
        if version.upper().startswith("SIP/"):
            raise SipParseError(f"unsupported SIP version {version[:16]!r}", status_hint=505)
        raise SipParseError(f"bad SIP version {version[:16]!r}")


def _check_mandatory(message: Request | Response) -> None:
    headers = message.headers
    missing = headers.missing(_MANDATORY)
    if missing:
        raise SipParseError(f"missing mandatory header {missing!r}")
    repeated = headers.repeated(_SINGLETONS)
    if repeated:
        raise SipParseError(f"duplicate {repeated!r} header")
    if not split_list(headers.get("via") or ""):
        raise SipParseError("empty Via header")
    cseq = message.cseq  # parsed once, kept by the message
    if isinstance(message, Request) and cseq.method != message.method:
        raise SipParseError(f"CSeq method {cseq.method!r} differs from {message.method!r}")


class StreamFramer:
    """Cut a stream (TCP) into complete messages.

    Feed bytes with `receive_data`, then call `next_message` until it returns
    None. Keepalive CRLFs between messages (RFC 5626 §3.5.1) are skipped and
    counted in `keepalives`, so the driver can answer a double-CRLF ping.

    Raises (from next_message):
        SipParseError: a message without Content-Length; the stream cannot be
            resynchronised and should be closed after answering 400.
        MessageTooLarge: a head or body over `max_size`.
    """

    def __init__(self, *, max_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self._buffer = bytearray()
        self._max_size = max_size
        self._crlf_run = 0
        self.keepalives = 0

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the stream."""
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a message."""
        return len(self._buffer)

    def next_message(self) -> bytes | None:
        """Return the next complete message's bytes, or None if incomplete."""
        self._skip_keepalives()
        head_end = self._buffer.find(b"\r\n\r\n")
        if head_end < 0:
            if len(self._buffer) > self._max_size:
                raise MessageTooLarge("message head exceeds the size limit")
            return None
        length = _stream_content_length(bytes(self._buffer[:head_end]))
        total = head_end + 4 + length
        if total > self._max_size:
            raise MessageTooLarge(f"message of {total} bytes exceeds the size limit")
        if len(self._buffer) < total:
            return None
        frame = bytes(self._buffer[:total])
        del self._buffer[:total]
        self._crlf_run = 0
        return frame

    def _skip_keepalives(self) -> None:
        """Drop CRLFs between messages; every second one in a row is a ping,
        however the reads split them."""
        while self._buffer.startswith(b"\r\n"):
            del self._buffer[:2]
            self._crlf_run += 1
            if self._crlf_run == 2:
                self._crlf_run = 0
                self.keepalives += 1
        if self._buffer and not self._buffer.startswith(b"\r"):
            self._crlf_run = 0


def _stream_content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and header_key(name.strip().decode("latin-1")) == "content-length":
            return _content_length(value.decode("latin-1"))
    raise SipParseError("Content-Length is mandatory on stream transports")
