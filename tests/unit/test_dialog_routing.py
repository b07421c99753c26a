"""Calls through record-routing proxies: route sets on both legs (RFC 3261 §12).

The caller's side here is an edge proxy (Kamailio, OpenSIPS, an SBC) that
record-routes: sipguard, the UAS of the inbound leg, must copy its
Record-Route into the responses that create the dialog and send its own
requests toward the caller through that route set; on the outbound leg it
is the UAC and uses the callee's Record-Route reversed. Requests still go to
each leg's peer (the proxy): the route set shapes Request-URI and Route only.
"""

from __future__ import annotations

import pytest

from sipguard.dialog import request_target
from sipguard.events import CallEnded
from sipguard.sip.message import Request, Response
from tests.helpers import CALLEE, CALLER, CorePair, in_dialog, invite, response_to, statuses

pytestmark = pytest.mark.unit

# What two proxies on the caller's path wrote into the INVITE, top first:
# one comma-joined line and one line of its own, with URI and header
# parameters that must come back exactly as written.
CALLER_RECORD_ROUTE = (
    "Record-Route: <sip:edge2.example.net;lr;ftag=caller-tag>, <sip:10.1.0.5:5071;lr>\r\n"
    "Record-Route: <sip:edge0.example.net;transport=tcp;lr>;did=7f\r\n"
)
CALLER_ROUTE_SET = (
    "<sip:edge2.example.net;lr;ftag=caller-tag>",
    "<sip:10.1.0.5:5071;lr>",
    "<sip:edge0.example.net;transport=tcp;lr>;did=7f",
)
CALLER_CONTACT = "sip:caller@10.1.0.5:5071"


def _only(messages: list[Request | Response]) -> Request | Response:
    assert len(messages) == 1, messages
    return messages[0]


def _call_through(
    pair: CorePair,
    *,
    record_route: str = CALLER_RECORD_ROUTE,
    callee_record_route: tuple[str, ...] = (),
    branch: str = "z9hG4bKa1",
) -> tuple[Request, Response, Response]:
    """A call up to the caller's 200; returns (B INVITE, A 180, A 200)."""
    pair.send(invite(extra=record_route, branch=branch), CALLER, now=0.0)
    assert statuses(pair.take_caller()) == [100]
    b_invite = _only(pair.take_callee())
    assert isinstance(b_invite, Request)
    assert "record-route" not in b_invite.headers  # the caller's path is not the callee's
    ringing = response_to(b_invite, 180, "Ringing", record_route=callee_record_route)
    pair.send(ringing, CALLEE, now=0.1)
    ok = response_to(b_invite, 200, "OK", record_route=callee_record_route)
    pair.send(ok, CALLEE, now=0.2)
    a_180, a_200 = pair.take_caller()
    assert isinstance(a_180, Response) and isinstance(a_200, Response)
    return b_invite, a_180, a_200


def _ack_from_caller(ok: Response, *, branch: str = "z9hG4bKack1") -> bytes:
    return in_dialog(
        "ACK",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=1,
        branch=branch,
        sender=CALLER,
    )


def _bye_from_callee(b_invite: Request, *, cseq: int = 1) -> bytes:
    return in_dialog(
        "BYE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=f"{b_invite.headers.get('to')};tag=callee-tag",
        to_value=b_invite.headers.get("from") or "",
        call_id=b_invite.call_id,
        cseq=cseq,
        branch=f"z9hG4bKcalleebye{cseq}",
        sender=CALLEE,
    )


def test_responses_that_create_the_dialog_copy_the_record_route() -> None:
    pair = CorePair()
    _, ringing, ok = _call_through(pair)

    # §12.1.1: every value, in order, parameters and all; the 18x carries
    # sipguard's To-tag, so it creates the early dialog and needs them too.
    for response in (ringing, ok):
        assert tuple(response.headers.get_all("record-route")) == CALLER_ROUTE_SET
        assert response.to.tag is not None
        assert str(response.contacts[0].uri) == "sip:sipguard@10.0.0.1:5060;transport=udp"


def test_requests_toward_the_caller_go_through_its_route_set() -> None:
    pair = CorePair()
    b_invite, _, ok = _call_through(pair)
    pair.send(_ack_from_caller(ok), CALLER, now=0.3)
    assert statuses(pair.take_callee()) == ["ACK"]

    # A re-INVITE from the callee, then its BYE: both reach the caller
    # through the proxies that record-routed (loose routing, §12.2.1.1).
    reinvite = in_dialog(
        "INVITE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=f"{b_invite.headers.get('to')};tag=callee-tag",
        to_value=b_invite.headers.get("from") or "",
        call_id=b_invite.call_id,
        cseq=1,
        branch="z9hG4bKcalleere1",
        sender=CALLEE,
        body=b"v=0\r\nhold\r\n",
    )
    pair.send(reinvite, CALLEE, now=1.0)
    a_reinvite = _only(pair.take_caller())
    assert isinstance(a_reinvite, Request) and a_reinvite.method == "INVITE"
    assert a_reinvite.uri == CALLER_CONTACT
    assert tuple(a_reinvite.headers.get_all("route")) == CALLER_ROUTE_SET
    pair.send(response_to(a_reinvite, 200, "OK", to_tag=None), CALLER, now=1.1)
    callee_ok = [m for m in pair.take_callee() if isinstance(m, Response) and m.status == 200]
    assert callee_ok, "the caller's 200 reaches the callee"
    ack = in_dialog(
        "ACK",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=f"{b_invite.headers.get('to')};tag=callee-tag",
        to_value=b_invite.headers.get("from") or "",
        call_id=b_invite.call_id,
        cseq=1,
        branch="z9hG4bKcalleeack1",
        sender=CALLEE,
    )
    pair.send(ack, CALLEE, now=1.2)
    a_ack = _only(pair.take_caller())
    assert isinstance(a_ack, Request) and a_ack.method == "ACK"
    assert a_ack.uri == CALLER_CONTACT
    assert tuple(a_ack.headers.get_all("route")) == CALLER_ROUTE_SET

    pair.send(_bye_from_callee(b_invite, cseq=2), CALLEE, now=2.0)
    a_bye = _only(pair.take_caller())
    assert isinstance(a_bye, Request) and a_bye.method == "BYE"
    assert a_bye.uri == CALLER_CONTACT
    assert tuple(a_bye.headers.get_all("route")) == CALLER_ROUTE_SET


def test_a_strict_router_first_on_the_route_gets_the_request_uri() -> None:
    # An RFC 2543 proxy (no `lr`) routes on the Request-URI: it gets its own
    # URI there, less what a Request-URI may not carry, and the remote target
    # goes last into Route (§12.2.1.1).
    pair = CorePair()
    strict = (
        "Record-Route: <sip:10.1.0.5:5071;transport=udp;method=INVITE?X-Y=1>\r\n"
        "Record-Route: <sip:edge0.example.net;lr>\r\n"
    )
    b_invite, _, ok = _call_through(pair, record_route=strict)
    pair.send(_ack_from_caller(ok), CALLER, now=0.3)
    pair.take_callee()

    pair.send(_bye_from_callee(b_invite), CALLEE, now=2.0)
    a_bye = _only(pair.take_caller())
    assert isinstance(a_bye, Request) and a_bye.method == "BYE"
    assert a_bye.uri == "sip:10.1.0.5:5071;transport=udp"
    assert a_bye.headers.get_all("route") == ["<sip:edge0.example.net;lr>", f"<{CALLER_CONTACT}>"]


def test_request_target_follows_the_first_route() -> None:
    target = "sip:bob@192.0.2.9:5060"
    assert request_target((), target) == (target, ())
    loose = ("<sip:p1.example;lr>", "<sip:p2.example>")
    assert request_target(loose, target) == (target, loose)
    # Written without angle brackets, `;lr` lands among the header
    # parameters; the router is still a loose one.
    assert request_target(("sip:p1.example;lr",), target) == (target, ("sip:p1.example;lr",))
    strict = ("<sip:p1.example;maddr=10.0.0.9>", "<sip:p2.example;lr>")
    assert request_target(strict, target) == (
        "sip:p1.example;maddr=10.0.0.9",
        ("<sip:p2.example;lr>", f"<{target}>"),
    )


def test_the_callee_record_route_is_used_reversed_on_the_outbound_leg() -> None:
    # Two proxies toward the callee: p1 next to sipguard, p2 next to the
    # callee, so the callee's answer lists p2 first (§12.1.2: reverse it).
    pair = CorePair()
    callee_rr = ("<sip:p2.example.org;lr>", "<sip:p1.example.org;lr;ftag=x>")
    b_invite, _, ok = _call_through(pair, callee_record_route=callee_rr)
    # the callee's path stays on the callee's leg
    assert tuple(ok.headers.get_all("record-route")) == CALLER_ROUTE_SET

    pair.send(_ack_from_caller(ok), CALLER, now=0.3)
    b_ack = _only(pair.take_callee())
    assert isinstance(b_ack, Request) and b_ack.method == "ACK"
    assert b_ack.uri == "sip:callee@10.9.0.1:5080"
    assert b_ack.headers.get_all("route") == list(reversed(callee_rr))

    bye = in_dialog(
        "BYE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=2,
        branch="z9hG4bKbye1",
        sender=CALLER,
    )
    pair.send(bye, CALLER, now=1.0)
    b_bye = _only(pair.take_callee())
    assert isinstance(b_bye, Request) and b_bye.method == "BYE"
    assert b_bye.call_id == b_invite.call_id
    assert b_bye.headers.get_all("route") == list(reversed(callee_rr))


def test_a_bye_before_the_ack_acks_the_callee_first() -> None:
    # The caller's ACK was lost (or went around a proxy); its BYE comes
    # first. The callee's 2xx is ACKed before the BYE reaches it.
    pair = CorePair()
    b_invite, _, ok = _call_through(pair)
    bye = in_dialog(
        "BYE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=2,
        branch="z9hG4bKbye1",
        sender=CALLER,
    )
    pair.send(bye, CALLER, now=1.0)
    to_callee = pair.take_callee()
    assert statuses(to_callee) == ["ACK", "BYE"]
    ack = to_callee[0]
    assert isinstance(ack, Request)
    assert ack.call_id == b_invite.call_id and ack.cseq.seq == b_invite.cseq.seq
    assert statuses(pair.take_caller()) == [200]


@pytest.mark.parametrize(
    ("invite_branch", "ack_branch"),
    [
        # a UA that reuses the INVITE's branch for the ACK of its 2xx
        ("z9hG4bKa1", "z9hG4bKa1"),
        # an RFC 2543 UA: matched by Call-ID, From-tag, CSeq and sent-by
        ("rfc2543-invite", "rfc2543-ack"),
    ],
)
def test_an_ack_that_matches_the_accepted_invite_reaches_the_call(
    invite_branch: str, ack_branch: str
) -> None:
    pair = CorePair()
    b_invite, _, ok = _call_through(pair, branch=invite_branch)
    pair.send(_ack_from_caller(ok, branch=ack_branch), CALLER, now=0.3)

    b_ack = _only(pair.take_callee())
    assert isinstance(b_ack, Request) and b_ack.method == "ACK"
    assert b_ack.call_id == b_invite.call_id
    # Confirmed: the 2xx is no longer retransmitted, and Timer L passes
    # without hanging up (§13.3.1.4 applies only when no ACK came).
    pair.run_until(40.0)
    assert pair.take_caller() == [] and pair.take_callee() == []
    assert not [e for e in pair.events if isinstance(e, CallEnded)]
    assert pair.core.calls_active == 1


def test_a_broken_record_route_is_refused_before_any_state() -> None:
    pair = CorePair()
    pair.send(invite(extra="Record-Route: <sip:edge.example.net;lr\r\n"), CALLER, now=0.0)
    assert statuses(pair.take_caller()) == [400]
    assert pair.take_callee() == []
    assert (pair.core.calls_active, pair.core.transaction_count) == (0, 0)


def test_a_callees_200_with_a_broken_record_route_ends_the_call_cleanly() -> None:
    # No route set could reach the callee's dialog later: it is ACKed and
    # BYEd at once, and the caller gets a clean failure.
    pair = CorePair()
    pair.send(invite(), CALLER, now=0.0)
    b_invite = _only(pair.take_callee())
    assert isinstance(b_invite, Request)
    broken = response_to(b_invite, 200, "OK", record_route=("<sip:p1.example.org;lr",))
    pair.send(broken, CALLEE, now=0.2)
    assert statuses(pair.take_caller()) == [100, 502]
    assert statuses(pair.take_callee()) == ["ACK", "BYE"]
    assert [(e.ended_by, e.status) for e in pair.events if isinstance(e, CallEnded)] == [
        ("error", 502)
    ]
