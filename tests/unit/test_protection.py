"""Protection limits in the core: sizes, unknown sources, per-trunk caps.

Each limit of the rule file's `protection:` section that the sans-IO core
enforces, with its exact answer: 513 for a message over the size, 400 for
too many or too long header lines, 414 for a long Request-URI, one uniform
403 (or silence) for every request of an unknown source within a per-address
budget, and 503 once a trunk holds its most calls or transactions. The TCP
limits (connections per source, slow senders) are in
tests/integration/test_server_protection.py.
"""

from __future__ import annotations

import random

import pytest

from sipguard.answercache import AnswerCache
from sipguard.b2bua import B2BUA, CoreConfig
from sipguard.dialog import IdFactory, LocalAddress
from sipguard.events import CallEnded, CallRefused, CallStarted, MessageRejected
from sipguard.peer import Peer
from sipguard.policy.decision import Allow, Refuse
from sipguard.protection import Protection
from sipguard.sip.message import Request, Response
from sipguard.sip.parser import ParseLimits
from sipguard.sourcelimit import AnswerBudget
from tests.helpers import (
    CALLEE,
    CALLER,
    STRANGER,
    CorePair,
    FixedGate,
    in_dialog,
    invite,
    response_to,
    statuses,
)

pytestmark = pytest.mark.unit


def pair(**config: object) -> CorePair:
    core = B2BUA(
        config=CoreConfig(local={"udp": LocalAddress("udp", "10.0.0.1", 5060)}, **config),  # type: ignore[arg-type]
        gate=FixedGate(),
        ids=IdFactory(random.Random(7).randbytes),
    )
    return CorePair(core=core)


def only_response(messages: list[Request | Response]) -> Response:
    assert len(messages) == 1, messages
    response = messages[0]
    assert isinstance(response, Response)
    return response


# -- sizes -------------------------------------------------------------------------


def test_a_message_over_the_size_limit_is_answered_513() -> None:
    p = pair(max_message_size=2048)
    p.send(invite(body=b"v=0\r\n" + b"a=x\r\n" * 400), CALLER, now=0.0)
    assert only_response(p.take_caller()).status == 513
    assert p.take_callee() == [] and p.core.calls_active == 0


def test_too_many_header_lines_are_answered_400() -> None:
    p = pair(parse_limits=ParseLimits(max_header_lines=12))
    extra = "".join(f"X-Filler-{index}: {index}\r\n" for index in range(10))
    p.send(invite(extra=extra), CALLER, now=0.0)
    response = only_response(p.take_caller())
    assert response.status == 400 and "header lines" in response.reason
    p.send(invite(call_id="fits", extra="X-One: 1\r\n"), CALLER, now=1.0)
    assert statuses(p.take_caller()) == [100]


def test_a_too_long_header_line_is_answered_400() -> None:
    p = pair(parse_limits=ParseLimits(max_line_length=300))
    p.send(invite(extra=f"Subject: {'x' * 400}\r\n"), CALLER, now=0.0)
    response = only_response(p.take_caller())
    assert response.status == 400 and "300" in response.reason


@pytest.mark.parametrize("line_limit", [300, 8192])
def test_a_too_long_request_uri_is_answered_414(line_limit: int) -> None:
    p = pair(parse_limits=ParseLimits(max_uri_length=100, max_line_length=line_limit))
    data = invite().replace(b"sip:13800138000@10.0.0.1 ", f"sip:{'1' * 300}@10.0.0.1 ".encode())
    p.send(data, CALLER, now=0.0)
    assert only_response(p.take_caller()).status == 414
    assert p.take_callee() == []


# -- unknown sources ---------------------------------------------------------------


def stranger_requests() -> list[bytes]:
    """What a scanner sends: calls, probes, registrations, stray dialog requests."""
    sender = STRANGER
    common = {
        "target": "sip:100@10.0.0.1",
        "from_value": "<sip:scan@192.0.2.66>;tag=s1",
        "sender": sender,
    }
    return [
        invite(caller=sender, call_id="scan-invite"),
        in_dialog(
            "OPTIONS",
            to_value="<sip:100@10.0.0.1>",
            call_id="o",
            cseq=1,
            branch="z9hG4bKo",
            **common,
        ),  # type: ignore[arg-type]  # noqa: E501
        in_dialog(
            "REGISTER",
            to_value="<sip:100@10.0.0.1>",
            call_id="r",
            cseq=1,
            branch="z9hG4bKr",
            **common,
        ),  # type: ignore[arg-type]  # noqa: E501
        in_dialog(
            "BYE",
            to_value="<sip:100@10.0.0.1>;tag=x",
            call_id="b",
            cseq=2,
            branch="z9hG4bKb",
            **common,
        ),  # type: ignore[arg-type]  # noqa: E501
        in_dialog(
            "CANCEL",
            to_value="<sip:100@10.0.0.1>",
            call_id="c",
            cseq=1,
            branch="z9hG4bKc",
            **common,
        ),  # type: ignore[arg-type]  # noqa: E501
    ]


def test_every_request_of_an_unknown_source_gets_the_same_403() -> None:
    p = pair(unknown_source_rate=100.0)
    for index, data in enumerate(stranger_requests()):
        p.send(data, STRANGER, now=index * 0.1)
    answers = [message for peer, message in p.to_others if peer == STRANGER]
    assert len(answers) == 5
    seen = {
        (m.status, m.reason, m.headers.get("reason"), m.headers.get("warning"))
        for m in answers
        if isinstance(m, Response)
    }
    assert seen == {
        (
            403,
            "Forbidden",
            'SIP;cause=403;text="unknown_source"',
            '399 10.0.0.1:5060 "unknown_source"',
        )
    }, "the same answer for every request, naming the rule and not the software"
    assert p.take_callee() == [] and p.core.transaction_count == 0


def test_answers_to_one_unknown_address_are_budgeted() -> None:
    p = pair(unknown_source_rate=5.0)
    probe = stranger_requests()[1]
    for index in range(20):
        p.send(
            probe.replace(b"branch=z9hG4bKo", f"branch=z9hG4bK{index}".encode()),
            STRANGER,
            now=0.01 * index,
        )
    assert len(p.to_others) == 5, "a burst of 5, then silence"
    assert p.core.dropped_unknown == 15
    p.send(probe, STRANGER, now=1.0)
    assert len(p.to_others) == 6, "the budget refills at 5 a second"


def test_tcp_strangers_are_answered_without_a_budget() -> None:
    """A TCP source address is proven by the handshake: no reflection to fear."""
    p = pair(unknown_source_rate=1.0)
    stranger = Peer("tcp", STRANGER.host, STRANGER.port)
    probe = stranger_requests()[1].replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
    for index in range(10):
        p.send(probe.replace(b"z9hG4bKo", f"z9hG4bK{index}".encode()), stranger, now=0.0)
    assert len(p.to_others) == 10 and p.core.dropped_unknown == 0


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("max_forwards_0", (b"Max-Forwards: 70", b"Max-Forwards: 0")),
        ("require", (b"Max-Forwards: 70", b"Max-Forwards: 70\r\nRequire: x-scan")),
        ("bad_cseq", (b"CSeq: 1 INVITE", b"CSeq: abc INVITE")),
        ("long_uri", (b"INVITE sip:13800138000@", b"INVITE sip:" + b"1" * 2000 + b"@")),
        ("conflicting_length", (b"Content-Type:", b"Content-Length: 3\r\nContent-Type:")),
    ],
)
def test_a_crafted_request_from_a_stranger_gets_the_strangers_answer(
    name: str, change: tuple[bytes, bytes]
) -> None:
    """Odd headers or broken ones: still the uniform 403, within the budget, never more."""
    data = invite(caller=STRANGER, call_id=f"scan-{name}").replace(*change)
    p = pair(unknown_source_rate=2.0)
    sent: list[bytes] = []
    for index in range(5):
        p.core.receive_datagram(
            data.replace(b"z9hG4bKa1", f"z9hG4bK{index}".encode()), STRANGER, now=0.0
        )
        # Raw bytes: a 403 echoes the request's own (possibly broken) CSeq.
        sent += [t.data for t in p.core.datagrams_to_send() if t.peer == STRANGER]
    assert len(sent) == 2, "the budget holds for crafted requests too"
    for answer in sent:
        assert answer.startswith(b"SIP/2.0 403 Forbidden\r\n"), answer
        assert b'Reason: SIP;cause=403;text="unknown_source"' in answer
    dropping = pair(unknown_source_answer="drop")
    dropping.core.receive_datagram(data, STRANGER, now=0.0)
    assert dropping.core.datagrams_to_send() == [], "drop mode answers nothing, broken or not"
    assert p.core.calls_active == 0 and p.core.transaction_count == 0


def test_the_strangers_answer_can_be_configured_and_stays_uniform() -> None:
    """Top-level responses.unknown_source: one answer for everything strangers send."""
    p = pair(unknown_source_status=(404, "Not Found"), unknown_source_rate=100.0)
    for index, data in enumerate(stranger_requests()):
        p.send(data, STRANGER, now=index * 0.1)
    answers = {
        (m.status, m.reason, m.headers.get("reason"))
        for _, m in p.to_others
        if isinstance(m, Response)
    }
    assert answers == {(404, "Not Found", 'SIP;cause=404;text="unknown_source"')}
    refused = [e for e in p.events if isinstance(e, CallRefused)]
    assert [(e.status, e.rule) for e in refused] == [(404, "unknown_source")]


def test_drop_mode_answers_nothing() -> None:
    p = pair(unknown_source_answer="drop")
    for index, data in enumerate(stranger_requests()):
        p.send(data, STRANGER, now=index * 0.1)
    assert p.to_others == [] and p.take_callee() == []
    assert p.core.dropped_unknown == 5
    assert [e for e in p.events if not isinstance(e, MessageRejected)] != [], "still logged"


def test_a_strangers_invite_dropped_unanswered_is_decided_as_dropped() -> None:
    """Drop mode, or past the answer budget: the event says nothing was sent,
    and why; an INVITE that got the 403 says 403."""
    dropping = pair(unknown_source_answer="drop")
    dropping.send(invite(caller=STRANGER, call_id="d"), STRANGER, now=0.0)
    (dropped,) = [e for e in dropping.events if isinstance(e, CallRefused)]
    assert (dropped.status, dropped.rule, dropped.reason) == (None, "unknown_source", "")
    assert dropped.detail.endswith("dropped unanswered: unknown_source_answer: drop")

    budgeted = pair(unknown_source_rate=1.0)
    for index in range(3):
        data = invite(caller=STRANGER, call_id=f"b{index}", branch=f"z9hG4bKb{index}")
        budgeted.send(data, STRANGER, now=0.0)
    answered = [m for _, m in budgeted.to_others if isinstance(m, Response)]
    assert [m.status for m in answered] == [403]
    refused = [e for e in budgeted.events if isinstance(e, CallRefused)]
    assert [(e.call_id, e.status) for e in refused] == [("b0", 403), ("b1", None), ("b2", None)]
    assert "past the address's answer budget" in refused[1].detail


def test_answer_budget_forgets_the_oldest_address_past_its_bound() -> None:
    budget = AnswerBudget(rate=1.0, burst=1, max_sources=3)
    for index in range(10):
        assert budget.allow(f"192.0.2.{index}", now=0.0)
    assert len(budget) == 3
    assert not budget.allow("192.0.2.9", now=0.5) and budget.refused == 1
    assert budget.allow("192.0.2.9", now=1.0)


# -- per-trunk caps ----------------------------------------------------------------


def answer_call(p: CorePair, call_id: str, now: float) -> None:
    p.send(invite(call_id=call_id, branch=f"z9hG4bK{call_id}"), CALLER, now=now)
    sent = p.take_callee()
    assert statuses(sent) == ["INVITE"]
    request = sent[0]
    assert isinstance(request, Request)
    p.send(response_to(request, 200, "OK", to_tag=f"t-{call_id}"), CALLEE, now=now)


def test_a_trunk_holds_at_most_calls_per_trunk() -> None:
    p = pair(calls_per_trunk=2)
    answer_call(p, "one", 0.0)
    answer_call(p, "two", 0.0)
    p.take_caller()
    p.send(invite(call_id="three", branch="z9hG4bKthree"), CALLER, now=0.1)
    refused = only_response(p.take_caller())
    assert refused.status == 503 and refused.headers.get("retry-after") == "5"
    assert refused.headers.get("reason") == 'SIP;cause=503;text="trunk_capacity"'
    assert refused.headers.get("warning") == '399 10.0.0.1:5060 "trunk_capacity"'
    assert p.take_callee() == [] and p.core.calls_active == 2
    (decision,) = [e for e in p.events if isinstance(e, CallRefused)]
    assert (decision.trunk, decision.status, decision.rule, decision.call_id) == (
        "test-trunk",
        503,
        "trunk_capacity",
        "three",
    )
    assert decision.detail.endswith("trunk test-trunk holds calls_per_trunk 2")


def test_a_trunk_holds_at_most_transactions_per_trunk() -> None:
    p = pair(transactions_per_trunk=3)
    answer_call(p, "one", 0.0)  # its INVITE server transaction lingers (Timer L)
    ok = [m for m in p.take_caller() if isinstance(m, Response) and m.status == 200][0]
    to_value = ok.headers.get("to") or ""
    answers: list[Response] = []
    for index in range(4):
        p.send(
            in_dialog(
                "INFO",
                target="sip:b2bua@10.0.0.1",
                from_value="<sip:+862131771234@10.1.0.5>;tag=caller-tag",
                to_value=to_value,
                call_id="one",
                cseq=10 + index,
                branch=f"z9hG4bKinfo{index}",
                sender=CALLER,
            ),
            CALLER,
            now=0.5,
        )
        answers += [m for m in p.take_caller() if isinstance(m, Response)]
    assert [m.status for m in answers] == [503, 503], "1 INVITE + 2 INFOs fill 3; the rest wait"
    assert {m.headers.get("reason") for m in answers} == {'SIP;cause=503;text="trunk_capacity"'}
    # requests within a call are no decisions: no record per flooded request
    assert [e for e in p.events if isinstance(e, CallRefused)] == []
    assert len(p.take_callee()) == 2
    # Transactions end (Timer J, 32 s for UDP): the trunk has room again.
    p.run_until(100.0)
    assert p.core.transaction_count == 0


# -- no open relay ---------------------------------------------------------------


def test_route_headers_do_not_choose_the_next_hop() -> None:
    """A caller's Route set names a third party: the call still goes to its trunk's route."""
    p = pair()
    routed = "Route: <sip:198.51.100.7:5099;lr>\r\nRoute: <sip:evil.example.net;lr>\r\n"
    p.send(invite(extra=routed), CALLER, now=0.0)
    sent = p.take_callee()
    assert statuses(sent) == ["INVITE"], "forwarded to the trunk's route only"
    assert p.to_others == []
    outbound = sent[0]
    assert isinstance(outbound, Request)
    assert "evil" not in str(outbound.headers.get_all("route"))
    assert "198.51.100.7" not in str(outbound.headers.get_all("route"))


# -- draining (SIGTERM) ------------------------------------------------------------


def test_a_draining_core_refuses_new_calls_and_health_checks_with_503() -> None:
    p = pair()
    answer_call(p, "live", 0.0)
    p.take_caller()
    p.core.draining = True
    p.send(invite(call_id="new", branch="z9hG4bKnew"), CALLER, now=1.0)
    refused = only_response(p.take_caller())
    assert refused.status == 503 and refused.headers.get("retry-after") == "30"
    assert refused.headers.get("reason") == 'SIP;cause=503;text="draining"'
    assert refused.headers.get("warning") == '399 10.0.0.1:5060 "draining"'
    (decision,) = [e for e in p.events if isinstance(e, CallRefused)]
    assert (decision.trunk, decision.status, decision.rule, decision.call_id) == (
        "test-trunk",
        503,
        "draining",
        "new",
    )
    options = in_dialog(
        "OPTIONS",
        target="sip:sipguard@10.0.0.1",
        from_value="<sip:lb@10.1.0.5>;tag=lb",
        to_value="<sip:sipguard@10.0.0.1>",
        call_id="health",
        cseq=1,
        branch="z9hG4bKhealth",
        sender=CALLER,
    )
    p.send(options, CALLER, now=1.1)
    health = only_response(p.take_caller())
    assert health.status == 503 and health.headers.get("reason") == refused.headers.get("reason")
    assert p.core.calls_active == 1, "the live call goes on"
    # Strangers still get the stranger's answer, not a hint that we drain.
    p.send(invite(caller=STRANGER, call_id="s", branch="z9hG4bKs"), STRANGER, now=1.2)
    assert [m.status for _, m in p.to_others if isinstance(m, Response)] == [403]


def test_a_draining_core_still_takes_a_call_to_an_emergency_number() -> None:
    p = pair()
    p.core.draining = True
    to_110 = invite(call_id="sos", branch="z9hG4bKsos").replace(
        b"INVITE sip:13800138000@", b"INVITE sip:110@", 1
    )
    p.send(to_110, CALLER, now=1.0)
    assert [m.status for m in p.take_caller() if isinstance(m, Response)] == [100]
    (relayed,) = p.take_callee()
    assert isinstance(relayed, Request) and relayed.uri.startswith("sip:110@")
    started = [e for e in p.events if isinstance(e, CallStarted)]
    assert len(started) == 1
    # and an ordinary call still gets the drain's 503
    p.send(invite(call_id="new", branch="z9hG4bKnew"), CALLER, now=1.1)
    assert only_response(p.take_caller()).status == 503


def test_hang_up_all_ends_answered_and_ringing_calls() -> None:
    p = pair()
    answer_call(p, "up", 0.0)
    p.send(invite(call_id="ringing", branch="z9hG4bKringing"), CALLER, now=0.1)
    b_invite = p.take_callee()[0]
    assert isinstance(b_invite, Request)
    p.send(response_to(b_invite, 180, "Ringing", to_tag="t-ringing"), CALLEE, now=0.2)
    p.take_caller()
    assert p.core.hang_up_all(now=1.0) == 2
    p.collect()
    assert p.core.calls_active == 0
    to_caller = statuses(p.take_caller())
    to_callee = statuses(p.take_callee())
    assert sorted(map(str, to_caller)) == ["503", "BYE"]
    # The answered call was never ACKed by the caller: its 200 is ACKed
    # before the BYE (RFC 3261 §13.2.2.4); the ringing one is cancelled.
    assert sorted(map(str, to_callee)) == ["ACK", "BYE", "CANCEL"]
    ended = [e for e in p.events if isinstance(e, CallEnded)]
    assert [e.ended_by for e in ended] == ["shutdown", "shutdown"]


# -- retransmissions of stateless answers ---------------------------------------------


class RefuseAll(FixedGate):
    """A trunk source whose every call the policy refuses."""

    def decide(self, request: Request, peer: Peer, *, now: float) -> Allow | Refuse:
        return Refuse(403, "Forbidden", "caller_not_allocated", trunk="test-trunk")


def test_a_refused_invites_retransmissions_are_answered_by_lookup() -> None:
    core = B2BUA(
        config=CoreConfig(local={"udp": LocalAddress("udp", "10.0.0.1", 5060)}),
        gate=RefuseAll(),
        ids=IdFactory(random.Random(7).randbytes),
    )
    data = invite()
    answers = []
    for now in (0.0, 0.5, 1.5, 3.5):  # T1 doubling, as a UDP caller resends
        core.receive_datagram(data, CALLER, now=now)
        answers += [t.data for t in core.datagrams_to_send()]
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
    assert len(answers) == 4 and len(set(answers)) == 1, "the same bytes, To tag included"
    assert answers[0].startswith(b"SIP/2.0 403 Forbidden")
    assert [type(e).__name__ for e in events] == ["CallRefused"], "decided, logged once"
    assert core.transaction_count == 0
    core.receive_datagram(data, CALLER, now=40.0)  # past 64*T1: a new request
    assert len(core.datagrams_to_send()) == 1
    assert type(core.next_event()).__name__ == "CallRefused"


def test_the_ack_of_a_stateless_refusal_is_absorbed_without_a_parse() -> None:
    core = B2BUA(
        config=CoreConfig(local={"udp": LocalAddress("udp", "10.0.0.1", 5060)}),
        gate=RefuseAll(),
        ids=IdFactory(random.Random(7).randbytes),
    )
    core.receive_datagram(invite(branch="z9hG4bKrefused"), CALLER, now=0.0)
    core.datagrams_to_send()
    _ = core.next_event()
    # A CSeq the parser refuses: had the ACK been parsed, the core would
    # have logged a rejected message; found by its top Via, it is absorbed.
    ack = (
        b"ACK sip:13800138000@10.0.0.1 SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 10.1.0.5:5071;branch=z9hG4bKrefused;rport\r\n"
        b"CSeq: not-a-number\r\nContent-Length: 0\r\n\r\n"
    )
    core.receive_datagram(ack, CALLER, now=0.1)
    assert core.datagrams_to_send() == [] and core.next_event() is None
    other = ack.replace(b"z9hG4bKrefused", b"z9hG4bKother")
    core.receive_datagram(other, CALLER, now=0.2)
    rejected = core.next_event()
    assert isinstance(rejected, MessageRejected), "an unknown ACK is parsed as before"


def test_a_dropped_strangers_retransmissions_stay_unanswered_and_unlogged() -> None:
    p = pair(unknown_source_answer="drop")
    data = invite(caller=STRANGER, call_id="scan")
    for now in (0.0, 0.5, 1.5):
        p.send(data, STRANGER, now=now)
    assert p.to_others == []
    assert [(type(e).__name__, getattr(e, "status", 0)) for e in p.events] == [
        ("CallRefused", None)
    ], "one decision, as dropped"


def test_the_answer_cache_is_bounded_and_expires() -> None:
    cache = AnswerCache(ttl=32.0, max_entries=3)
    for index in range(5):
        cache.remember(("b", str(index)), b"403", now=float(index))
    assert len(cache) == 3 and cache.answer_for(("b", "0"), now=5.0) is None
    assert cache.answer_for(("b", "4"), now=5.0) == b"403"
    assert cache.answer_for(("b", "4"), now=36.0) is None, "expired after ttl"
    cache.remember(("b", "x"), b"", now=100.0)
    assert len(cache) == 1, "expired entries go as new ones come"
    assert cache.answer_for(("b", "x"), now=100.5) == b""


# -- the core's Protection, asked directly -------------------------------------------


def protection(*, unknown_source_answer: str = "reject") -> Protection:
    return Protection(
        calls_per_trunk=2,
        transactions_per_trunk=3,
        unknown_source_answer=unknown_source_answer,
        unknown_source_rate=1.0,
        unknown_source_status=(403, "Forbidden"),
        transports=frozenset({"udp", "tcp"}),
        warning=lambda transport, text: f'399 {transport}-agent "{text}"',
    )


def test_per_trunk_counts_name_the_ceiling_and_leave_no_trace_at_zero() -> None:
    guard = protection()
    guard.call_started("t")
    guard.call_started("t")
    assert guard.capacity_reached("t", calls=True) == "trunk t holds calls_per_trunk 2"
    assert guard.capacity_reached("t", calls=False) is None, "calls count for new calls only"
    guard.call_ended("t")
    guard.call_ended("t")
    assert guard.calls_by_trunk == {}
    for index in range(3):
        guard.transaction_added(("z9hG4bK", str(index)), "t")
    assert guard.capacity_reached("t", calls=False) == "trunk t holds transactions_per_trunk 3"
    guard.transaction_forgotten(("z9hG4bK", "0"))
    guard.transaction_forgotten(("z9hG4bK", "0"))  # once only
    guard.transaction_forgotten(("never", "added"))
    assert guard.capacity_reached("t", calls=False) is None
    guard.transaction_added(("z9hG4bK", "3"), "t")
    assert guard.capacity_reached("t", calls=False) is not None


def test_the_strangers_budget_holds_per_udp_address_and_counts_drops() -> None:
    guard = protection()
    udp, tcp = Peer("udp", "192.0.2.66", 5060), Peer("tcp", "192.0.2.66", 5060)
    assert guard.may_answer_stranger(udp, now=0.0)
    assert not guard.may_answer_stranger(udp, now=0.1)
    assert all(guard.may_answer_stranger(tcp, now=0.1) for _ in range(5))
    assert guard.may_answer_stranger(udp, now=1.0)
    assert guard.dropped_unknown == 1
    assert guard.why_unanswered == "past the address's answer budget (unknown_source_rate)"
    assert guard.stranger_status == (403, "Forbidden")
    assert guard.stranger_headers("tcp") == (
        ("Reason", 'SIP;cause=403;text="unknown_source"'),
        ("Warning", '399 tcp-agent "unknown_source"'),
    )


def test_drop_mode_answers_no_stranger_whatever_its_transport() -> None:
    guard = protection(unknown_source_answer="drop")
    assert not guard.may_answer_stranger(Peer("tcp", "192.0.2.66", 5060), now=0.0)
    assert guard.dropped_unknown == 1
    assert guard.why_unanswered == "unknown_source_answer: drop"


def test_stateless_answers_are_remembered_per_source() -> None:
    guard = protection()
    key = ("z9hG4bK1", "192.0.2.66:5060", "INVITE")
    guard.remember_stateless(STRANGER, key, b"SIP/2.0 403 Forbidden\r\n", now=0.0)
    assert guard.stateless_answer(STRANGER, key, now=1.0) == b"SIP/2.0 403 Forbidden\r\n"
    other = Peer("udp", STRANGER.host, STRANGER.port + 1)
    assert guard.stateless_answer(other, key, now=1.0) is None


@pytest.mark.parametrize("rate", [3.0, 7.0, 20.0])
def test_the_answer_budget_gives_its_whole_burst_at_any_clock_reading(rate: float) -> None:
    """The burst is exact whatever the clock says: sums of 1/rate on a clock
    of thousands of seconds round, and must not cost an answer."""
    burst = int(rate)
    for step in range(2000):
        now = 1000.0 + step * 0.0137
        budget = AnswerBudget(rate=rate, burst=burst)
        assert sum(budget.allow("192.0.2.1", now=now) for _ in range(burst + 5)) == burst, now
