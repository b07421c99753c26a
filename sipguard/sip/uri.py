"""URIs, name-addr values and Via values (RFC 3261 §19.1, §20.10, §20.42; RFC 3966).

Everything here is a pure function from text to a frozen value and back. Parsing
is tolerant where real equipment is sloppy (spaces around `;` and `=`), strict
where a mistake would change the meaning (unterminated quotes or `<`).

Invariant: `str(parse_x(text))` re-parses to an equal value.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from sipguard.errors import SipParseError

__all__ = [
    "AbsoluteUri",
    "NameAddr",
    "Params",
    "SipUri",
    "TelUri",
    "Uri",
    "Via",
    "format_params",
    "parse_name_addr",
    "parse_params",
    "parse_uri",
    "parse_via",
    "split_list",
]

Params = tuple[tuple[str, str | None], ...]
# The same From, To, Via and Contact values come back in every message of a
# call (requests, responses, retransmissions, ACK, BYE): their parsed values,
# immutable, are kept for this many distinct texts per kind, each text at most
# _MEMO_TEXT characters long (so a flood of long invented values costs at most
# a few MB).
_MEMO = 4096
_MEMO_TEXT = 256
_BAD_HOST_CHARS = frozenset(' \t<>"@')
# RFC 3261 §25.1 / RFC 3986: a URI holds no whitespace or control characters
# (they travel %-escaped). One that does could not be sent as a Request-URI.
_NOT_IN_URI = frozenset(chr(code) for code in range(0x21)) | {"\x7f"}


def parse_params(text: str) -> Params:
    """Parse `;a=1;b;c="x"` (leading `;` optional) into ordered (name, value) pairs.

    Names are lower-cased (RFC 3261 §19.1.4: parameter names compare
    case-insensitively); values keep their case and quotes.
    """
    if not text:
        return ()
    params: list[tuple[str, str | None]] = []
    for part in _split_outside_quotes(text, ";"):
        part = part.strip()
        if not part:
            continue
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not name:
            raise SipParseError(f"parameter without a name: {part!r}")
        params.append((name, value.strip() if eq else None))
    return tuple(params)


def format_params(params: Params) -> str:
    """Format parameters as `;a=1;b`."""
    return "".join(f";{name}" if value is None else f";{name}={value}" for name, value in params)


def _has_param(params: Params, name: str) -> bool:
    for key, _ in params:
        if key == name:
            return True
    return False


def _param(params: Params, name: str) -> str | None:
    for key, value in params:
        if key == name:
            return value
    return None


@dataclass(frozen=True, slots=True)
class SipUri:
    """A `sip:` or `sips:` URI: `sip:user:password@host:port;params?headers`."""

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    password: str | None = None
    params: Params = ()
    headers: str | None = None

    def param(self, name: str) -> str | None:
        """The value of URI parameter `name` (None when absent or valueless)."""
        return _param(self.params, name)

    def has_param(self, name: str) -> bool:
        """Whether URI parameter `name` is present, with or without a value."""
        return _has_param(self.params, name)

    @property
    def host_port(self) -> str:
        """`host` or `host:port` as written in a URI."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user
            if self.password is not None:
                userinfo += f":{self.password}"
            userinfo += "@"
        text = f"{self.scheme}:{userinfo}{self.host_port}{format_params(self.params)}"
        return text if self.headers is None else f"{text}?{self.headers}"


@dataclass(frozen=True, slots=True)
class TelUri:
    """A `tel:` URI (RFC 3966): the number as written, with its parameters."""

    number: str
    params: Params = ()

    def __str__(self) -> str:
        return f"tel:{self.number}{format_params(self.params)}"


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """Any other scheme (`urn:`, `http:`...), kept verbatim."""

    scheme: str
    rest: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | TelUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse a URI; raise SipParseError when it is not one."""
    if len(text) > _MEMO_TEXT:
        return _parse_uri(text)
    return _parse_uri_memo(text)


def _parse_uri(text: str) -> Uri:
    """`parse_uri` without the memo."""
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    if not colon or not scheme or not rest:
        raise SipParseError(f"not a URI: {text!r}")
    if not _NOT_IN_URI.isdisjoint(text):
        raise SipParseError(f"whitespace or control character in URI: {text[:80]!r}")
    scheme_lower = scheme.lower()
    if scheme_lower in ("sip", "sips"):
        return _parse_sip_uri(scheme_lower, rest)
    if scheme_lower == "tel":
        number, _, params = rest.partition(";")
        if not number:
            raise SipParseError(f"tel URI without a number: {text!r}")
        return TelUri(number, parse_params(params))
    if not scheme.isascii() or not scheme[0].isalpha():
        raise SipParseError(f"bad URI scheme: {text!r}")
    return AbsoluteUri(scheme_lower, rest)


def _parse_sip_uri(scheme: str, rest: str) -> SipUri:
    rest, question, headers = rest.partition("?")
    user = password = None
    userinfo, at, hostpart = rest.rpartition("@")
    if at:
        if not userinfo:
            raise SipParseError(f"empty user part in {scheme}:{rest}")
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
    hostport, _, params = hostpart.partition(";")
    host, port = _split_host_port(hostport)
    return SipUri(
        scheme=scheme,
        user=user,
        host=host,
        port=port,
        password=password,
        params=parse_params(params),
        headers=headers if question else None,
    )


def _split_host_port(hostport: str) -> tuple[str, int | None]:
    hostport = hostport.strip()
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise SipParseError(f"unterminated IPv6 reference: {hostport!r}")
        host, after = hostport[: end + 1], hostport[end + 1 :]
        port_text = after[1:] if after.startswith(":") else None
        if after and port_text is None:
            raise SipParseError(f"bad host:port: {hostport!r}")
    else:
        host, colon, port_text_raw = hostport.partition(":")
        port_text = port_text_raw if colon else None
    if not host or not _BAD_HOST_CHARS.isdisjoint(host):
        raise SipParseError(f"bad host: {hostport!r}")
    if port_text is None:
        return host, None
    if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5:
        raise SipParseError(f"bad port: {hostport!r}")
    if not 0 < int(port_text) < 65536:
        raise SipParseError(f"bad port: {hostport!r}")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact/Route/P-Asserted-Identity value (RFC 3261 §20.10).

    `display_name` is unquoted (None when absent); `params` are the header
    parameters after the URI, such as `tag`.
    """

    uri: Uri
    display_name: str | None = None
    params: Params = ()

    @property
    def tag(self) -> str | None:
        """The `tag` parameter (RFC 3261 §19.3), or None."""
        return _param(self.params, "tag")

    def param(self, name: str) -> str | None:
        """The value of header parameter `name`, or None."""
        return _param(self.params, name)

    def with_params(self, params: Params) -> NameAddr:
        """A copy with the header parameters replaced."""
        return NameAddr(self.uri, self.display_name, params)

    def __str__(self) -> str:
        display = "" if self.display_name is None else f"{_quote(self.display_name)} "
        return f"{display}<{self.uri}>{format_params(self.params)}"


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def parse_name_addr(text: str) -> NameAddr:
    """Parse `"Name" <uri>;params`, `Name <uri>;params` or `uri;params`."""
    if len(text) > _MEMO_TEXT:
        return _parse_name_addr(text)
    return _parse_name_addr_memo(text)


def _parse_name_addr(text: str) -> NameAddr:
    """`parse_name_addr` without the memo."""
    text = text.strip()
    if not text:
        raise SipParseError("empty name-addr")
    display: str | None = None
    if text.startswith('"'):
        display, text = _read_quoted(text)
        text = text.lstrip()
        if not text.startswith("<"):
            raise SipParseError("quoted display name not followed by <uri>")
    lt = text.find("<")
    if lt >= 0:
        if display is None:
            token_display = text[:lt].strip()
            display = token_display or None
        gt = text.find(">", lt)
        if gt < 0:
            raise SipParseError("unterminated <uri>")
        uri_text, params_text = text[lt + 1 : gt], text[gt + 1 :]
        if params_text.strip() and not params_text.lstrip().startswith(";"):
            raise SipParseError(f"junk after <uri>: {params_text!r}")
    else:
        # RFC 3261 §20.10: in addr-spec form, everything after the first `;`
        # is a header parameter, not a URI parameter.
        uri_text, _, params_text = text.partition(";")
    return NameAddr(parse_uri(uri_text), display, parse_params(params_text))


def _read_quoted(text: str) -> tuple[str, str]:
    """Split `"quoted \\"string\\"" rest` into the unescaped string and `rest`."""
    chars: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            chars.append(text[index + 1])
            index += 2
            continue
        if char == '"':
            return "".join(chars), text[index + 1 :]
        chars.append(char)
        index += 1
    raise SipParseError("unterminated quoted string")


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value: `SIP/2.0/UDP host:port;branch=...;rport` (RFC 3261 §20.42)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()

    @property
    def branch(self) -> str | None:
        """The branch parameter, or None."""
        return _param(self.params, "branch")

    def param(self, name: str) -> str | None:
        """The value of Via parameter `name`, or None."""
        return _param(self.params, name)

    def has_param(self, name: str) -> bool:
        """Whether Via parameter `name` is present (e.g. a valueless `rport`)."""
        return _has_param(self.params, name)

    @property
    def sent_by(self) -> str:
        """`host` or `host:port` as written."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{format_params(self.params)}"


def parse_via(text: str) -> Via:
    """Parse one Via value (not a comma-separated list).

    RFC 3261 §25.1: `SLASH = SWS "/" SWS`, so `SIP / 2.0 / UDP` is valid.
    """
    if len(text) > _MEMO_TEXT:
        return _parse_via(text)
    return _parse_via_memo(text)


def _parse_via(text: str) -> Via:
    """`parse_via` without the memo."""
    parts = text.strip(" \t").split("/", 2)
    if len(parts) != 3 or parts[0].strip(" \t").upper() != "SIP" or parts[1].strip(" \t") != "2.0":
        raise SipParseError(f"bad Via protocol: {text[:80]!r}")
    transport, _, rest = parts[2].lstrip(" \t").replace("\t", " ").partition(" ")
    transport = transport.upper()
    if not transport.isascii() or not transport.isalnum():
        raise SipParseError(f"bad Via transport: {text[:80]!r}")
    sent_by, _, params = rest.strip(" \t").partition(";")
    host, port = _split_host_port(sent_by)
    return Via(transport, host, port, parse_params(params))


def split_list(value: str) -> list[str]:
    """Split a list header value on commas outside quotes and `<...>`."""
    if "," not in value:
        return [value.strip()] if value.strip() else []
    items: list[str] = []
    depth_angle = 0
    in_quotes = False
    escaped = False
    start = 0
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif in_quotes:
            if char == "\\":
                escaped = True
            elif char == '"':
                in_quotes = False
        elif char == '"':
            in_quotes = True
        elif char == "<":
            depth_angle += 1
        elif char == ">":
            depth_angle = max(0, depth_angle - 1)
        elif char == "," and depth_angle == 0:
            items.append(value[start:index].strip())
            start = index + 1
    items.append(value[start:].strip())
    return [item for item in items if item]


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    if '"' not in text:
        return text.split(separator)
    parts: list[str] = []
    in_quotes = False
    escaped = False
    start = 0
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif in_quotes and char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == separator and not in_quotes:
            parts.append(text[start:index])
            start = index + 1
    if in_quotes:
        raise SipParseError(f"unterminated quoted parameter value: {text!r}")
    parts.append(text[start:])
    return parts


_parse_uri_memo = lru_cache(maxsize=_MEMO)(_parse_uri)


_parse_name_addr_memo = lru_cache(maxsize=_MEMO)(_parse_name_addr)


_parse_via_memo = lru_cache(maxsize=_MEMO)(_parse_via)
