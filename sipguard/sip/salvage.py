"""Answers to bytes that did not parse (RFC 3261 §8.2, RFC 4475 §3.1.2).

A request that cannot be parsed still gets its answer (the status its
error names: 400, 414, 505, 513; or a stranger's uniform 403) when the
answer can find its way back: `error_response_for` copies, line by
line, the header fields a response must echo (Via, From, To, Call-ID,
CSeq) from whatever of them can be read, and writes the status line and
the fields it is given around them. Nothing else of the request is read,
so no malformed part of it can stop the answer or leak into it.

Rule 1: no Via line, no answer (there is no way back, RFC 3261 §18.2.1);
nor to a response or an ACK, which are never answered.
Rule 2: every copied line is printable: a control character in one goes
back %-escaped, so an answer never carries what a parser would refuse.

Ring 1: pure; no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable

from sipguard.sip.headers import header_key

__all__ = ["error_response_for"]

_ECHOED_ON_ERROR = frozenset({"via", "from", "to", "call-id", "cseq"})


def error_response_for(
    data: bytes,
    status: int,
    reason: str,
    extra: Iterable[tuple[str, str]] = (),
    *,
    first_via_only: bool = False,
) -> bytes | None:
    """Best-effort error response to bytes that did not parse (RFC 3261 §8.2).

    Answers requests that have a Via line to answer along; copies From, To,
    Call-ID and CSeq when present (RFC 4475 §3.1.2.18: a request missing
    one of them still gets its 400), and only the first Via line when
    `first_via_only` (an answer to a stranger). Responses, ACKs and anything
    without a Via are dropped: returns None.
    """
    head = data.split(b"\r\n\r\n", 1)[0]
    try:
        lines = head.decode("utf-8").split("\r\n")
    except UnicodeDecodeError:
        return None
    request_line = lines[0]
    if request_line[:4].upper() == "SIP/" or request_line.split(" ", 1)[0] in ("ACK", ""):
        return None
    copied: list[str] = []
    seen: set[str] = set()
    for line in lines[1:]:
        name, colon, _ = line.partition(":")
        if not colon or line[:1] in (" ", "\t"):
            continue  # not a header line of its own (no colon, or a fold)
        key = header_key(name.strip(" \t"))
        if key == "via" and first_via_only and "via" in seen:
            continue
        if key in _ECHOED_ON_ERROR:
            # A control character (a NUL, a C1 code) in a header the answer
            # must carry goes back %-escaped: the answer still has its From,
            # To, Call-ID and CSeq, and carries nothing unprintable.
            copied.append(line if line.replace("\t", " ").isprintable() else _escaped(line))
            seen.add(key)
    if "via" not in seen:
        return None
    added = [f"{name}: {value}" for name, value in extra]
    return "\r\n".join(
        [f"SIP/2.0 {status} {reason}", *copied, *added, "Content-Length: 0", "", ""]
    ).encode()


def _escaped(line: str) -> str:
    """`line` with every unprintable character (tab aside) as %XX of its UTF-8."""
    return "".join(
        char
        if char.isprintable() or char == "\t"
        else "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
        for char in line
    )
