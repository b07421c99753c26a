"""Messages sipguard writes from messages it received (RFC 3261 §8.2.6, §9.1, §17.1.1.3).

Four builders, each the one place its message is made:

- `make_response`: any response sipguard sends, stateless or through a
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
from sipguard.sip.message import Headers, Request, Response
from sipguard.sip.serializer import build_response
from sipguard.sip.uri import SipUri, TelUri

__all__ = [
    "ack_for_failure",
    "cancel_for",
    "end_to_end_headers",
    "make_response",
    "option_tags",
    "outbound_uri",
]

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
