"""Messages sipguard writes from messages it received (RFC 3261 §8.2.6, §9.1, §17.1.1.3).

The builders, each the one place its message is made:

- `build_response`: a response to a request, echoing what §8.2.6.2 asks
  for; `make_response`, the one sipguard sends, stateless or through a
  transaction, stamped with the source the request really came from
  (received/rport, RFC 3261 §18.2.1, RFC 3581 §4);
- `cancel_for` and `ack_for_failure`: the two requests that belong to an
  INVITE's own client transaction, a CANCEL (§9.1) and the ACK of a non-2xx
  final response (§17.1.1.3), built alike by `_invite_transaction_request`;
- `end_to_end_headers`: the header fields a message carries over to the
  other leg;
- `outbound_uri`: the Request-URI of a call's outbound INVITE.

Requests within a dialog (BYE, re-INVITE, the ACK of a 2xx) are built by
the dialog's leg (`sipguard.dialog.Leg.build_request`), which owns the
dialog identifiers and the route set. Answers to bytes that did not parse
are in `sipguard.sip.salvage`.

Rule 1: a builder returns a new message and changes nothing it is given.
Rule 2: what a builder copies from a received message is copied as it was
written; what it adds comes from its arguments (never from a request's Via,
which names where the sender wants answers, not where it is).

Ring 1: pure; no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable

from sipguard.peer import Peer
from sipguard.sip.headers import key_and_name
from sipguard.sip.message import Headers, Request, Response
from sipguard.sip.serializer import REASON_PHRASES
from sipguard.sip.uri import SipUri, TelUri, format_params

__all__ = [
    "ack_for_failure",
    "build_response",
    "cancel_for",
    "end_to_end_headers",
    "make_response",
    "option_tags",
    "outbound_uri",
]

# RFC 3261 §8.2.6.2: the fields a response copies from its request (To too,
# with the tag added, see `_tagged`).
_ECHOED = frozenset({"via", "from", "call-id", "cseq"})
# Headers that belong to one hop or one dialog and are rebuilt per leg; every
# other header is end-to-end and copied across.
_PER_LEG = frozenset(
    {
        "via",
        "route",
        "record-route",
        "contact",
        "from",
        "to",
        "call-id",
        "cseq",
        "max-forwards",
        "content-length",
        "rseq",
        "rack",
        "proxy-require",
        "proxy-authorization",
        "authorization",
    }
)


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


def make_response(
    request: Request,
    peer: Peer,
    status: int,
    reason: str,
    *,
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    top_via_only: bool = False,
) -> Response:
    """A response to `request` from `peer`, with received/rport (RFC 3581 §4).

    Args:
        peer: where `request` came from; its host becomes `received` when
            the top Via names another, its port `rport` when the Via asks.
        to_tag, extra, body, top_via_only: as `build_response` takes them.
    """
    via = request.top_via
    return build_response(
        request,
        status,
        reason,
        to_tag=to_tag,
        extra=extra,
        body=body,
        received=peer.host if via.host != peer.host else None,
        rport=peer.port if via.has_param("rport") else None,
        top_via_only=top_via_only,
    )


def cancel_for(invite: Request) -> Request:
    """The CANCEL of `invite`, a request sipguard sent (RFC 3261 §9.1).

    "The Request-URI, Call-ID, To, the numeric part of CSeq, and From header
    fields in the CANCEL request MUST be identical to those in the request
    being cancelled, including tags", with a single Via, the request's top
    one, and the request's Route header fields.
    """
    return _invite_transaction_request("CANCEL", invite, to=invite.headers.get("to") or "")


def ack_for_failure(invite: Request, response: Response) -> Request:
    """The ACK of a non-2xx final `response` to `invite` (RFC 3261 §17.1.1.3).

    As a CANCEL is, but with the To of the response (which carries the
    answering side's tag): "the ACK MUST contain a single Via header field
    ... equal to the top Via header field of the original request".
    """
    return _invite_transaction_request("ACK", invite, to=response.headers.get("to") or "")


def _invite_transaction_request(method: str, invite: Request, *, to: str) -> Request:
    """A request of `invite`'s own client transaction (its branch, its CSeq
    number): the INVITE's Request-URI, top Via, Route, From and Call-ID, and
    `to` as To."""
    fields: list[tuple[str, str]] = [("Via", str(invite.top_via))]
    fields.extend(("Route", value) for value in invite.headers.get_all("route"))
    fields += [
        ("Max-Forwards", "70"),
        ("From", invite.headers.get("from") or ""),
        ("To", to),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.seq} {method}"),
    ]
    return Request(method, invite.uri, Headers(fields))


def end_to_end_headers(headers: Headers, strip: frozenset[str]) -> Iterable[tuple[str, str]]:
    """The headers a message carries to the other leg: all but the per-leg ones
    and `strip`, with 100rel taken out of Supported (it is not relayed)."""
    for name, value in headers.fields:
        key = name.lower()
        if key in _PER_LEG or key in strip:
            continue
        if key == "supported":
            value = ", ".join(v for v in option_tags(value) if v.lower() != "100rel")
            if not value:
                continue
        yield name, value


def option_tags(value: str) -> list[str]:
    """The option-tags of a Supported, Require or Unsupported value
    (RFC 3261 §20.37, §20.32, §20.40), as written, without empty items."""
    return [item.strip() for item in value.split(",") if item.strip()]


def outbound_uri(request: Request, route: Peer) -> str:
    """The B leg's Request-URI: the callee's user part at the route's address."""
    uri = request.request_uri
    if isinstance(uri, SipUri):
        user = uri.user
    elif isinstance(uri, TelUri):
        user = uri.number
    else:
        user = None
    transport = ";transport=tcp" if route.transport == "tcp" else ""
    host = f"[{route.host}]" if ":" in route.host else route.host
    user_part = f"{user}@" if user else ""
    return f"sip:{user_part}{host}:{route.port}{transport}"
