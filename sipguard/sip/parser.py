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
from sipguard.sip.headers import header_key
from sipguard.sip.message import Headers, Request, Response, is_ascii_digits, parse_cseq
from sipguard.sip.uri import split_list

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_PARSE_LIMITS",
    "ParseLimits",
    "StreamFramer",
    "parse_message",
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
    if "\x00" in head:
        raise SipParseError("NUL byte in the headers")
    lines = head.split("\r\n")
    _check_size(lines, limits)
    start_line = lines[0]
    if "\r" in start_line or "\n" in start_line:
        raise SipParseError("bare CR or LF in the start line")
    fields = _header_fields(lines[1:])
    body = _body(fields, data[head_end + 4 :])
    if start_line[:4].upper() == "SIP/":
        message: Request | Response = _response(start_line, fields, body)
    else:
        message = _request(start_line, fields, body)
        if len(message.uri) > limits.max_uri_length:
            raise SipParseError(
                f"Request-URI of {len(message.uri)} characters; at most {limits.max_uri_length}",
                status_hint=414,
            )
    _check_mandatory(message)
    return message


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


def _header_fields(lines: list[str]) -> list[tuple[str, str]]:
    fields: list[tuple[str, str]] = []
    for line in lines:
        if "\r" in line or "\n" in line:
            raise SipParseError("bare CR or LF inside a header line")
        if line[:1] in (" ", "\t"):
            # RFC 3261 §7.3.1: a line starting with whitespace continues the
            # previous header value; the fold is equivalent to one space.
            if not fields:
                raise SipParseError("continuation line before any header")
            name, value = fields[-1]
            folded = line.strip(_LWS)
            if folded:
                fields[-1] = (name, f"{value} {folded}" if value else folded)
            continue
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not name or not _is_token(name):
            raise SipParseError(f"malformed header line: {line[:60]!r}")
        fields.append((name, value.strip(_LWS)))
    return fields


def _is_token(text: str) -> bool:
    if text.isascii() and text.replace("-", "").isalnum():
        return True  # the common case, without a per-character loop
    return all(char in _TOKEN_CHARS for char in text)


def _body(fields: list[tuple[str, str]], rest: bytes) -> bytes:
    """Take Content-Length out of `fields` and cut the body with it."""
    length: int | None = None
    for index in range(len(fields) - 1, -1, -1):
        name, value = fields[index]
        if header_key(name) != "content-length":
            continue
        parsed = _content_length(value)
        if length is not None and parsed != length:
            raise SipParseError("conflicting Content-Length headers")
        length = parsed
        del fields[index]
    if length is None:
        return rest
    if length > len(rest):
        raise SipParseError(f"Content-Length {length} exceeds the {len(rest)} body bytes")
    return rest[:length]


def _content_length(value: str) -> int:
    value = value.strip(_LWS)
    if not is_ascii_digits(value) or len(value) > _MAX_CONTENT_LENGTH_DIGITS:
        raise SipParseError(f"bad Content-Length: {value[:20]!r}")
    return int(value)


def _request(start_line: str, fields: list[tuple[str, str]], body: bytes) -> Request:
    parts = start_line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError(f"bad request line: {start_line[:80]!r}")
    method, uri, version = parts
    _check_version(version)
    if not _is_token(method):
        raise SipParseError(f"bad method: {method[:20]!r}")
    if ":" not in uri:
        raise SipParseError(f"bad Request-URI: {uri[:80]!r}")
    return Request(method, uri, Headers(fields), body)


def _response(start_line: str, fields: list[tuple[str, str]], body: bytes) -> Response:
    version, _, rest = start_line.partition(" ")
    _check_version(version)
    code, _, reason = rest.partition(" ")
    if len(code) != 3 or not is_ascii_digits(code) or not 100 <= int(code) <= 699:
        raise SipParseError(f"bad status line: {start_line[:80]!r}")
    return Response(int(code), reason, Headers(fields), body)


def _check_version(version: str) -> None:
    if version.upper() != "SIP/2.0":
        if version.upper().startswith("SIP/"):
            raise SipParseError(f"unsupported SIP version {version[:16]!r}", status_hint=505)
        raise SipParseError(f"bad SIP version {version[:16]!r}")


def _check_mandatory(message: Request | Response) -> None:
    headers = message.headers
    for key in _MANDATORY:
        if key not in headers:
            raise SipParseError(f"missing mandatory header {key!r}")
    for key in _SINGLETONS:
        if headers.count(key) > 1:
            raise SipParseError(f"duplicate {key!r} header")
    if not split_list(headers.get("via") or ""):
        raise SipParseError("empty Via header")
    cseq = parse_cseq(headers.get("cseq") or "")
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
