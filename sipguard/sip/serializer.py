"""Messages to bytes, and the free text they carry (RFC 3261 §7, §25.1).

`to_bytes` writes the start line, the header fields in order, and a
Content-Length computed from the body. Responses are built from requests
in `sipguard.sip.builders`.

Free text in an answer (the text of a Warning or a Reason) is written by
`quoted_string` only, whatever its origin: a rule file, or a number decoded
from a request's `%0A`. It cannot end a line, smuggle a NUL or close the
quotes early, so no input can make `to_bytes` refuse an answer.
`reason_value` and `warning_value` build the two headers that carry such
text.
"""

from __future__ import annotations

from sipguard.sip.message import Request, Response

__all__ = [
    "MAX_QUOTED_TEXT",
    "REASON_PHRASES",
    "WARN_MISCELLANEOUS",
    "hostport",
    "printable",
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
