"""Messages to bytes, and responses built from requests (RFC 3261 §7, §8.2.6).

`to_bytes` writes the start line, the header fields in order, and a
Content-Length computed from the body; `build_response` copies the headers a
response must echo (§8.2.6.2: Via, From, To, Call-ID, CSeq) and adds the
To-tag when one is given.

Free text in an answer (the text of a Warning or a Reason) is written by
`quoted_string` only, whatever its origin: a rule file, or a number decoded
from a request's `%0A`. It cannot end a line, smuggle a NUL or close the
quotes early, so no input can make `to_bytes` refuse an answer.
`reason_value` and `warning_value` build the two headers that carry such
text.
"""

from __future__ import annotations

from collections.abc import Iterable

from sipguard.sip.headers import key_and_name
from sipguard.sip.message import Headers, Request, Response
from sipguard.sip.uri import format_params

__all__ = [
    "MAX_QUOTED_TEXT",
    "REASON_PHRASES",
    "WARN_MISCELLANEOUS",
    "build_response",
    "hostport",
    "quoted_string",
    "reason_value",
    "to_bytes",
    "warning_value",
]

# The standard reason phrase of each status (RFC 3261 §21, and the later RFCs
# named): what a response carries when no phrase was chosen for it. Every code
# a carrier may configure for a refusal has its phrase here, so a configured
# 404 goes out as `404 Not Found`.
REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    305: "Use Proxy",
    380: "Alternative Service",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    422: "Session Interval Too Small",  # RFC 4028
    423: "Interval Too Brief",
    428: "Use Identity Header",  # RFC 8224
    433: "Anonymity Disallowed",  # RFC 5079
    436: "Bad Identity Info",  # RFC 8224
    437: "Unsupported Credential",  # RFC 8224
    438: "Invalid Identity Header",  # RFC 8224
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    485: "Ambiguous",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    493: "Undecipherable",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
    607: "Unwanted",  # RFC 8197
    608: "Rejected",  # RFC 8688
}

_ECHOED = frozenset({"via", "from", "call-id", "cseq"})

# The most characters of free text one quoted-string of an answer carries:
# room for a rule's explanation and what made it fire, far from the line
# lengths peers accept.
MAX_QUOTED_TEXT = 200


def printable(text: str, *, limit: int = MAX_QUOTED_TEXT) -> str:
    """At most `limit` characters of `text`, each that has no place on one
    line of a header (or a log) replaced by `?`: controls (CR, LF and NUL
    among them), DEL, and anything else Python does not call printable."""
    clean = text[:limit]
    if clean.isprintable():
        return clean
    return "".join(char if char.isprintable() else "?" for char in clean)


def quoted_string(text: str, *, limit: int = MAX_QUOTED_TEXT) -> str:
    """`text` as an RFC 3261 §25.1 quoted-string that any parser reads back.

    `"` and `\\` become quoted-pairs; what has no place in a header value
    is replaced as `printable` does (a quoted-pair cannot carry CR, LF or NUL
    either). At most `limit` characters of `text` are kept. Never raises.
    """
    clean = printable(text, limit=limit)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


# RFC 3261 §20.43: 399 "Miscellaneous warning", the code for text a human reads.
WARN_MISCELLANEOUS = 399


def warning_value(agent: str, text: str) -> str:
    """A Warning value (RFC 3261 §20.43): `399 agent "text"`.

    `agent` is the warn-agent, a hostport or a pseudonym, chosen by the
    answering side (never taken from a request); `text` may be anything.
    """
    return f"{WARN_MISCELLANEOUS} {agent} {quoted_string(text)}"


def reason_value(status: int, text: str) -> str:
    """A Reason value naming why a request was refused (RFC 3326 §2):
    `SIP;cause=403;text="caller_not_allocated"`."""
    return f"SIP;cause={status};text={quoted_string(text)}"


def hostport(host: str, port: int | None) -> str:
    """RFC 3261 §25.1 hostport: an IPv6 address in brackets, then `:port` if any."""
    shown = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return shown if port is None else f"{shown}:{port}"


def to_bytes(message: Request | Response) -> bytes:
    """Serialise a message; Content-Length always matches the body."""
    if isinstance(message, Request):
        start = f"{message.method} {message.uri} SIP/2.0"
    else:
        start = f"SIP/2.0 {message.status} {message.reason}"
    lines = [start]
    lines.extend(f"{name}: {value}" for name, value in message.headers.fields)
    lines.append(f"Content-Length: {len(message.body)}\r\n\r\n")
    head = "\r\n".join(lines)
    # One CR and one LF per line, plus the blank line: anything more is a line
    # break smuggled inside a value (header injection).
    expected = len(lines) + 1
    if head.count("\n") != expected or head.count("\r") != expected:
        raise ValueError("CR or LF inside a start line or header value")
    return head.encode("utf-8") + message.body


def build_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    received: str | None = None,
    rport: int | None = None,
    top_via_only: bool = False,
) -> Response:
    """Build a response to `request`.

    Args:
        to_tag: added to To when the request's To has no tag (§8.2.6.2).
        extra: further header fields, appended after the echoed ones.
        received, rport: the real source of the request, written into the
            top Via as RFC 3261 §18.2.1 and RFC 3581 §4 require.
        top_via_only: echo the top Via value alone (an answer to a stranger:
            its size stays bounded whatever Via chain the request carried).
    """
    fields: list[tuple[str, str]] = []
    keys: list[str] = []
    stamp = received is not None or rport is not None or top_via_only
    vias = 0
    for key, name, value in request.headers.keyed():
        if key == "via":
            vias += 1
            if top_via_only and vias > 1:
                continue
            if stamp:
                value = _stamp_via(request, received, rport, alone=top_via_only)
                stamp = False
        elif key == "to":
            value = _tagged(request, value, to_tag)
        elif key not in _ECHOED:
            continue
        fields.append((name, value))
        keys.append(key)
    for name, value in extra:
        key, canonical = key_and_name(name)
        fields.append((canonical, value))
        keys.append(key)
    headers = Headers.from_keyed(fields, keys)
    return Response(status, reason or REASON_PHRASES.get(status, "Unknown"), headers, body)


def _tagged(request: Request, value: str, to_tag: str | None) -> str:
    if to_tag is None or request.to.tag is not None:
        return value
    return f"{value};tag={to_tag}"


def _stamp_via(
    request: Request, received: str | None, rport: int | None, *, alone: bool = False
) -> str:
    """Rewrite the first Via value with received/rport (the rest of a
    comma-joined Via line is kept as it was, unless `alone`)."""
    raw = request.headers.get("via") or ""
    top = request.top_via
    params = [(k, v) for k, v in top.params if k not in ("received", "rport")]
    if received is not None:
        params.append(("received", received))
    if rport is not None and top.has_param("rport"):
        params.append(("rport", str(rport)))
    stamped = f"SIP/2.0/{top.transport} {top.sent_by}{format_params(tuple(params))}"
    if alone:
        return stamped
    comma = _first_top_level_comma(raw)
    return stamped if comma < 0 else stamped + raw[comma:]


def _first_top_level_comma(value: str) -> int:
    if "," not in value:
        return -1
    in_quotes = False
    escaped = False
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif in_quotes and char == "\\":
            escaped = True
        elif char == '"':
            in_quotes = not in_quotes
        elif char == "," and not in_quotes:
            return index
    return -1
