"""Only the peer may speak for a leg: forged answers, stolen transactions,
reflection, poisoned answers, unusable Contacts and loops, in the core.

Each test plays the attacker by hand against a scripted call (tests/helpers.py)
and checks what reaches the caller and the callee. The same attacks on real
sockets are in tests/integration/test_forgery_wire.py.
"""

from __future__ import annotations

import random

import pytest

from sipguard.b2bua import B2BUA, CoreConfig
from sipguard.dialog import IdFactory, LocalAddress
from sipguard.events import CallEnded, CallStarted, MessageRejected
from sipguard.peer import Peer, speaks_for
from sipguard.policy.decision import Allow, Refuse
from sipguard.sip.message import Request, Response
from sipguard.sip.serializer import to_bytes
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

SIPGUARD = LocalAddress("udp", "10.0.0.1", 5060)
CALLER_OTHER_PORT = Peer("udp", CALLER.host, 5099)
CALLEE_OTHER_PORT = Peer("udp", CALLEE.host, 5999)


def _pair(gate: object | None = None, **config: object) -> CorePair:
    core = B2BUA(
        config=CoreConfig(local={"udp": SIPGUARD}, **config),  # type: ignore[arg-type]
        gate=gate or FixedGate(),  # type: ignore[arg-type]
        ids=IdFactory(random.Random(7).randbytes),
    )
    return CorePair(core=core)


def _ringing(pair: CorePair) -> Request:
    """A call from CALLER, ringing at CALLEE; returns the outbound INVITE."""
    pair.send(invite(), CALLER, now=0.0)
    assert statuses(pair.take_caller()) == [100]
    b_invite = pair.take_callee()[0]
    assert isinstance(b_invite, Request)
    pair.send(response_to(b_invite, 180, "Ringing"), CALLEE, now=0.1)
    assert statuses(pair.take_caller()) == [180]
    return b_invite


def _answered(pair: CorePair) -> tuple[Request, Response]:
    b_invite = _ringing(pair)
    pair.send(response_to(b_invite, 200, "OK", body=b"v=0\r\nreal\r\n"), CALLEE, now=0.2)
    ok = pair.take_caller()[0]
    assert isinstance(ok, Response) and ok.status == 200
    ack = in_dialog(
        "ACK",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=1,
        branch="z9hG4bKack1",
        sender=CALLER,
    )
    pair.send(ack, CALLER, now=0.3)
    assert statuses(pair.take_callee()) == ["ACK"]
    return b_invite, ok


def _bye_from_caller(ok: Response, sender: Peer, *, branch: str = "z9hG4bKbye1") -> bytes:
    return in_dialog(
        "BYE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=2,
        branch=branch,
        sender=sender,
    )


def _ended(pair: CorePair) -> list[CallEnded]:
    return [event for event in pair.events if isinstance(event, CallEnded)]


# -- responses only from the leg's peer ------------------------------------------------


def test_a_forged_200_from_another_port_is_not_relayed_and_the_real_one_is() -> None:
    pair = _pair()
    b_invite = _ringing(pair)

    forged = response_to(b_invite, 200, "OK", to_tag="forged-tag", body=b"v=0\r\nevil\r\n")
    pair.send(forged, CALLEE_OTHER_PORT, now=0.15)
    pair.send(forged, STRANGER, now=0.15)

    assert pair.take_caller() == []
    assert pair.core.foreign_responses == 2
    pair.send(response_to(b_invite, 200, "OK", body=b"v=0\r\nreal\r\n"), CALLEE, now=0.2)
    ok = pair.take_caller()
    assert statuses(ok) == [200]
    assert ok[0].body == b"v=0\r\nreal\r\n"


def test_a_forged_failure_does_not_end_the_call_set_up() -> None:
    pair = _pair()
    b_invite = _ringing(pair)

    pair.send(response_to(b_invite, 486, "Busy Here"), STRANGER, now=0.15)

    assert pair.take_caller() == []
    assert _ended(pair) == []
    assert pair.core.calls_active == 1


def test_a_forged_answer_to_a_bye_does_not_end_its_transaction() -> None:
    pair = _pair()
    _, ok = _answered(pair)
    pair.send(_bye_from_caller(ok, CALLER), CALLER, now=1.0)
    b_bye = pair.take_callee()[0]
    assert isinstance(b_bye, Request)
    before = pair.core.transaction_count

    pair.send(response_to(b_bye, 200, "OK", to_tag=None), STRANGER, now=1.1)

    assert pair.core.transaction_count == before
    assert pair.core.foreign_responses == 1


# -- in-dialog requests from the leg's peer only ------------------------------------


def test_a_bye_from_another_port_of_the_callers_host_does_not_end_the_call() -> None:
    pair = _pair()
    _, ok = _answered(pair)

    pair.send(_bye_from_caller(ok, CALLER_OTHER_PORT), CALLER_OTHER_PORT, now=1.0)

    assert pair.take_callee() == []  # not relayed
    assert pair.take_caller() == []  # nothing goes to the real caller either
    assert [
        (peer, message.status)
        for peer, message in pair.to_others
        if isinstance(message, Response) and message.cseq.method == "BYE"
    ] == [(CALLER_OTHER_PORT, 403)]  # a stranger's uniform answer
    assert _ended(pair) == [] and pair.core.calls_active == 1
    rejected = [e for e in pair.events if isinstance(e, MessageRejected)]
    assert rejected[-1].reason == "in-dialog request from another peer"

    pair.send(_bye_from_caller(ok, CALLER, branch="z9hG4bKbye2"), CALLER, now=1.1)
    assert statuses(pair.take_callee()) == ["BYE"]
    assert [e.ended_by for e in _ended(pair)] == ["caller"]


class _TwoTrunkGate(FixedGate):
    """CALLER's trunk, and another trunk on another port of the same host."""

    def decide(self, request: Request, peer: Peer, *, now: float) -> Allow | Refuse:
        if peer == CALLER_OTHER_PORT:
            return Allow("other-trunk", self.callee)
        return super().decide(request, peer, now=now)

    def is_known(self, peer: Peer) -> bool:
        return peer == CALLER_OTHER_PORT or super().is_known(peer)

    def trunk_of(self, peer: Peer) -> str | None:
        return "other-trunk" if peer == CALLER_OTHER_PORT else super().trunk_of(peer)


def test_another_trunks_source_on_the_same_host_gets_481_and_the_call_stays() -> None:
    pair = _pair(_TwoTrunkGate())
    _, ok = _answered(pair)

    pair.send(_bye_from_caller(ok, CALLER_OTHER_PORT), CALLER_OTHER_PORT, now=1.0)

    answers = [m for peer, m in pair.to_others if peer == CALLER_OTHER_PORT]
    assert statuses(answers) == [481]
    assert pair.take_callee() == [] and _ended(pair) == []


class _HostTrunkGate(FixedGate):
    """A trunk defined by its address alone: every port of CALLER's host."""

    def is_known(self, peer: Peer) -> bool:
        return peer.host == CALLER.host or super().is_known(peer)

    def trunk_of(self, peer: Peer) -> str | None:
        return "test-trunk" if peer.host == CALLER.host else None


def test_a_trunk_defined_by_its_address_may_hang_up_from_another_port() -> None:
    pair = _pair(_HostTrunkGate())
    _, ok = _answered(pair)

    pair.send(_bye_from_caller(ok, CALLER_OTHER_PORT), CALLER_OTHER_PORT, now=1.0)

    assert statuses(pair.take_callee()) == ["BYE"]
    assert [e.ended_by for e in _ended(pair)] == ["caller"]


def test_a_bye_from_another_port_of_the_callees_host_does_not_end_the_call() -> None:
    pair = _pair()
    b_invite, _ = _answered(pair)
    bye = in_dialog(
        "BYE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=(b_invite.headers.get("to") or "") + ";tag=callee-tag",
        to_value=b_invite.headers.get("from") or "",
        call_id=b_invite.call_id,
        cseq=1,
        branch="z9hG4bKcalleebye",
        sender=CALLEE_OTHER_PORT,
    )

    pair.send(bye, CALLEE_OTHER_PORT, now=1.0)

    assert pair.take_caller() == []
    assert _ended(pair) == []
    pair.send(bye, CALLEE, now=1.1)
    assert statuses(pair.take_caller()) == ["BYE"]
    assert [e.ended_by for e in _ended(pair)] == ["callee"]


def test_a_cancel_from_another_port_does_not_cancel_the_call() -> None:
    pair = _pair()
    _ringing(pair)
    cancel = invite().replace(b"INVITE sip:", b"CANCEL sip:", 1).replace(b"1 INVITE", b"1 CANCEL")

    pair.send(cancel, CALLER_OTHER_PORT, now=0.2)

    assert pair.take_caller() == [] and pair.take_callee() == []
    assert _ended(pair) == []


def test_tcp_peers_speak_for_their_host_and_udp_peers_for_their_port() -> None:
    tcp = Peer("tcp", "10.1.0.5", 40001)
    assert speaks_for(tcp, Peer("tcp", "10.1.0.5", 40002))
    assert not speaks_for(tcp, Peer("tcp", "10.1.0.6", 40001))
    assert not speaks_for(CALLER, CALLER_OTHER_PORT)
    assert not speaks_for(Peer("udp", "10.1.0.5", 40001), Peer("tcp", "10.1.0.5", 40001))


# -- another sender's copy of a transaction ----------------------------------------------


def test_another_senders_copy_of_a_live_invite_gets_nothing_of_the_call() -> None:
    pair = _pair(unknown_source_rate=1.0)
    _ringing(pair)

    for _ in range(5):
        pair.send(invite(), STRANGER, now=0.2)

    assert pair.take_caller() == []  # no 180/100 resent toward the trunk
    answers = [m for peer, m in pair.to_others if peer == STRANGER]
    assert statuses(answers) == [403]  # the uniform answer, once: the budget
    assert pair.core.calls_active == 1


# -- the stateless answer cache -----------------------------------------------------------


def test_a_strangers_primed_answer_is_not_replayed_past_the_budget_or_its_size() -> None:
    pair = _pair(unknown_source_rate=2.0)
    # 160 Vias on 4 lines (within the header-line limits), after the top one.
    vias = "".join(
        "Via: "
        + ", ".join(
            f"SIP/2.0/UDP 198.51.100.{n}:5060;branch=z9hG4bKpad{line}x{n}" for n in range(40)
        )
        + "\r\n"
        for line in range(4)
    )
    primer = invite(caller=STRANGER, branch="z9hG4bKprime", extra=vias)
    trigger = invite(caller=STRANGER, branch="z9hG4bKprime")

    pair.send(primer, STRANGER, now=0.0)
    for _ in range(50):
        pair.send(trigger, STRANGER, now=0.1)

    answers = [m for peer, m in pair.to_others if peer == STRANGER]
    assert len(answers) == 2  # the burst of the budget, not one per trigger
    for answer in answers:
        assert isinstance(answer, Response) and answer.status == 403
        assert len(answer.headers.get_all("via")) == 1
    assert len(to_bytes(answers[0])) < len(trigger) + 300


def test_a_poisoned_via_does_not_change_the_trunks_answer() -> None:
    pair = _pair()
    # The stranger sends the trunk's next INVITE first (same Via, branch and all).
    pair.send(invite(), STRANGER, now=0.0)
    assert statuses([m for _, m in pair.to_others]) == [403]

    pair.send(invite(), CALLER, now=0.5)

    assert statuses(pair.take_caller()) == [100]
    assert statuses(pair.take_callee()) == ["INVITE"]
    assert len([e for e in pair.events if isinstance(e, CallStarted)]) == 1


def test_the_answer_cache_holds_a_bounded_number_of_bytes() -> None:
    from sipguard.answercache import AnswerCache

    cache = AnswerCache(max_bytes=1000)
    for n in range(20):
        cache.remember(("key", n), b"x" * 300, now=0.0)
    assert cache.size <= 1000
    assert len(cache) == 3
    assert cache.answer_for(("key", 19), now=1.0) == b"x" * 300
    assert cache.answer_for(("key", 0), now=1.0) is None


# -- Contacts that are not URIs ----------------------------------------------------------


def test_an_invite_whose_contact_is_not_a_uri_is_refused_400() -> None:
    pair = _pair()
    bad = invite().replace(b"Contact: <sip:caller@", b"Contact: <sip:call er@")

    pair.send(bad, CALLER, now=0.0)

    assert statuses(pair.take_caller()) == [400]
    assert pair.take_callee() == []
    assert pair.core.calls_active == 0 and pair.core.transaction_count == 0


def test_a_callees_200_with_an_unusable_contact_ends_the_call_cleanly() -> None:
    pair = _pair()
    b_invite = _ringing(pair)

    pair.send(
        response_to(b_invite, 200, "OK", contact="<sip:call ee@10.9.0.1:5080>"), CALLEE, now=0.2
    )

    assert statuses(pair.take_caller()) == [502]
    assert statuses(pair.take_callee()) == ["ACK", "BYE"]
    ended = _ended(pair)
    assert [(e.ended_by, e.status) for e in ended] == [("error", 502)]
    pair.run_until(100.0)
    assert (pair.core.transaction_count, pair.core.dialog_count, pair.core.calls_active) == (
        0,
        0,
        0,
    )


# -- loops ---------------------------------------------------------------------------------


class _LoopGate(FixedGate):
    """A trunk for the whole host 10.0.0.1 (sipguard's own) whose route is sipguard."""

    def __init__(self) -> None:
        super().__init__(callee=Peer("udp", SIPGUARD.host, SIPGUARD.port))

    def decide(self, request: Request, peer: Peer, *, now: float) -> Allow | Refuse:
        if peer.host in (CALLER.host, SIPGUARD.host):
            return Allow("test-trunk", self.callee)
        return super().decide(request, peer, now=now)

    def is_known(self, peer: Peer) -> bool:
        return peer.host in (CALLER.host, SIPGUARD.host)

    def trunk_of(self, peer: Peer) -> str | None:
        return "test-trunk" if peer.host in (CALLER.host, SIPGUARD.host) else None


def test_a_route_back_to_sipguard_ends_at_one_hop_with_482() -> None:
    core = B2BUA(
        config=CoreConfig(local={"udp": SIPGUARD}),
        gate=_LoopGate(),
        ids=IdFactory(random.Random(7).randbytes),
    )
    core.receive_datagram(invite(), CALLER, now=0.0)
    to_caller: list[int] = []
    hops = 0
    # Deliver everything sipguard sends to itself back to itself, as the network would.
    for _ in range(200):
        out = core.datagrams_to_send()
        if not out:
            break
        for transmit in out:
            if transmit.peer == CALLER:
                to_caller.append(int(transmit.data.split(b" ", 2)[1]))
            else:
                hops += transmit.data.startswith(b"INVITE ")
                core.receive_datagram(
                    transmit.data, Peer("udp", SIPGUARD.host, SIPGUARD.port), now=0.1
                )
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)

    assert hops == 1
    assert len([e for e in events if isinstance(e, CallStarted)]) == 1
    assert 482 in to_caller
    assert [e.status for e in events if isinstance(e, MessageRejected)] == [482]
