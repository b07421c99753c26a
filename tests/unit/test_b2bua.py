"""Call flows through the sans-IO B2BUA core, with scripted time."""

from __future__ import annotations

import pytest

from sipguard.events import CallEnded, CallRefused, CallStarted
from sipguard.sip.message import Request, Response
from tests.helpers import (
    CALLEE,
    CALLER,
    STRANGER,
    CorePair,
    in_dialog,
    invite,
    response_to,
    statuses,
)

pytestmark = pytest.mark.unit


def _only(messages: list[Request | Response]) -> Request | Response:
    assert len(messages) == 1, messages
    return messages[0]


def _answered_call(pair: CorePair) -> tuple[Request, Response]:
    """Set up a call up to the caller's 200 OK; return (B INVITE, A 200)."""
    pair.send(invite(), CALLER, now=0.0)
    assert statuses(pair.take_caller()) == [100]
    b_invite = _only(pair.take_callee())
    assert isinstance(b_invite, Request)
    pair.send(response_to(b_invite, 180, "Ringing"), CALLEE, now=0.1)
    pair.send(response_to(b_invite, 200, "OK", body=b"v=0\r\nanswer\r\n"), CALLEE, now=0.2)
    caller_got = pair.take_caller()
    assert statuses(caller_got) == [180, 200]
    ok = caller_got[1]
    assert isinstance(ok, Response)
    return b_invite, ok


def _ack_from_caller(ok: Response, *, cseq: int = 1, branch: str = "z9hG4bKack1") -> bytes:
    return in_dialog(
        "ACK",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=cseq,
        branch=branch,
        sender=CALLER,
    )


def test_basic_call_is_relayed_with_new_dialog_identifiers() -> None:
    pair = CorePair()
    b_invite, ok = _answered_call(pair)
    assert b_invite.call_id != "a-call-1"
    assert b_invite.from_.tag not in (None, "caller-tag")
    assert b_invite.uri == "sip:13800138000@10.9.0.1:5080"
    assert b_invite.max_forwards == 69
    assert b_invite.body == b"v=0\r\no=- 1 1 IN IP4 10.1.0.5\r\n"
    assert b_invite.top_via.host == "10.0.0.1"
    assert ok.call_id == "a-call-1"
    assert ok.to.tag is not None and ok.to.tag != "callee-tag"
    assert ok.body == b"v=0\r\nanswer\r\n"
    assert str(ok.contacts[0].uri) == "sip:sipguard@10.0.0.1:5060;transport=udp"
    assert ok.top_via.param("received") is None and ok.top_via.param("rport") == "5071"

    pair.send(_ack_from_caller(ok), CALLER, now=0.3)
    ack = _only(pair.take_callee())
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert ack.uri == "sip:callee@10.9.0.1:5080"
    assert ack.call_id == b_invite.call_id and ack.cseq.seq == b_invite.cseq.seq
    assert ack.to.tag == "callee-tag"

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
    pair.send(bye, CALLER, now=5.0)
    b_bye = _only(pair.take_callee())
    assert isinstance(b_bye, Request) and b_bye.method == "BYE"
    assert b_bye.cseq.seq == 2 and b_bye.call_id == b_invite.call_id
    pair.send(response_to(b_bye, 200, "OK", to_tag=None, contact=None), CALLEE, now=5.1)
    assert statuses(pair.take_caller()) == [200]

    started = [e for e in pair.events if isinstance(e, CallStarted)]
    ended = [e for e in pair.events if isinstance(e, CallEnded)]
    assert len(started) == 1 and started[0].trunk == "test-trunk"
    assert len(ended) == 1 and ended[0].ended_by == "caller" and ended[0].status == 200
    pair.run_until(100.0)
    assert (pair.core.transaction_count, pair.core.dialog_count, pair.core.calls_active) == (
        0,
        0,
        0,
    )
    assert pair.core.next_deadline() is None


def test_retransmitted_invite_is_absorbed() -> None:
    pair = CorePair()
    pair.send(invite(), CALLER, now=0.0)
    b_invite = _only(pair.take_callee())
    assert isinstance(b_invite, Request)
    pair.send(response_to(b_invite, 180, "Ringing"), CALLEE, now=0.1)
    pair.take_caller()
    pair.send(invite(), CALLER, now=0.5)
    assert statuses(pair.take_caller()) == [180]
    assert pair.take_callee() == []
    assert len([e for e in pair.events if isinstance(e, CallStarted)]) == 1


def test_outbound_invite_is_retransmitted_on_timer_a_and_times_out_with_408() -> None:
    pair = CorePair()
    pair.send(invite(), CALLER, now=0.0)
    pair.take_caller()
    pair.take_callee()
    assert pair.core.next_deadline() == 0.5
    pair.tick(0.5)
    assert statuses(pair.take_callee()) == ["INVITE"]
    pair.run_until(40.0)
    caller_got = pair.take_caller()
    assert statuses(caller_got)[-1] == 408
    ended = [e for e in pair.events if isinstance(e, CallEnded)]
    assert len(ended) == 1 and ended[0].ended_by == "timeout" and ended[0].status == 408
    pair.run_until(200.0)
    assert (pair.core.transaction_count, pair.core.calls_active) == (0, 0)


def test_cancel_after_ringing_cancels_the_outbound_leg() -> None:
    pair = CorePair()
    pair.send(invite(), CALLER, now=0.0)
    pair.take_caller()
    b_invite = _only(pair.take_callee())
    assert isinstance(b_invite, Request)
    pair.send(response_to(b_invite, 180, "Ringing"), CALLEE, now=0.1)
    pair.take_caller()
    cancel = in_dialog(
        "CANCEL",
        target="sip:13800138000@10.0.0.1",
        from_value="<sip:+862131771234@10.1.0.5>;tag=caller-tag",
        to_value="<sip:13800138000@10.0.0.1>",
        call_id="a-call-1",
        cseq=1,
        branch="z9hG4bKa1",
        sender=CALLER,
    )
    pair.send(cancel, CALLER, now=1.0)
    caller_got = pair.take_caller()
    assert sorted(statuses(caller_got)) == [200, 487]  # type: ignore[type-var]
    b_cancel = _only(pair.take_callee())
    assert isinstance(b_cancel, Request) and b_cancel.method == "CANCEL"
    assert b_cancel.top_via.branch == b_invite.top_via.branch
    pair.send(response_to(b_cancel, 200, "OK"), CALLEE, now=1.1)
    pair.send(response_to(b_invite, 487, "Request Terminated"), CALLEE, now=1.2)
    ack = _only(pair.take_callee())
    assert (
        isinstance(ack, Request)
        and ack.method == "ACK"
        and ack.top_via.branch == b_invite.top_via.branch
    )
    assert pair.take_caller() == []
    ended = [e for e in pair.events if isinstance(e, CallEnded)]
    assert len(ended) == 1 and ended[0].status == 487 and ended[0].ended_by == "caller"
    pair.run_until(100.0)
    assert (pair.core.transaction_count, pair.core.dialog_count, pair.core.calls_active) == (
        0,
        0,
        0,
    )


def test_cancel_before_any_provisional_waits_for_one() -> None:
    pair = CorePair()
    pair.send(invite(), CALLER, now=0.0)
    b_invite = _only(pair.take_callee())
    assert isinstance(b_invite, Request)
    cancel = in_dialog(
        "CANCEL",
        target="sip:13800138000@10.0.0.1",
        from_value="<sip:+862131771234@10.1.0.5>;tag=caller-tag",
        to_value="<sip:13800138000@10.0.0.1>",
        call_id="a-call-1",
        cseq=1,
        branch="z9hG4bKa1",
        sender=CALLER,
    )
    pair.send(cancel, CALLER, now=0.1)
    assert pair.take_callee() == []  # RFC 3261 §9.1: no CANCEL before a provisional
    pair.send(response_to(b_invite, 100, "Trying", to_tag=None), CALLEE, now=0.2)
    assert statuses(pair.take_callee()) == ["CANCEL"]


def test_answer_crossing_cancel_is_acked_and_hung_up() -> None:
    pair = CorePair()
    pair.send(invite(), CALLER, now=0.0)
    b_invite = _only(pair.take_callee())
    assert isinstance(b_invite, Request)
    pair.send(response_to(b_invite, 180, "Ringing"), CALLEE, now=0.1)
    cancel = in_dialog(
        "CANCEL",
        target="sip:13800138000@10.0.0.1",
        from_value="<sip:+862131771234@10.1.0.5>;tag=caller-tag",
        to_value="<sip:13800138000@10.0.0.1>",
        call_id="a-call-1",
        cseq=1,
        branch="z9hG4bKa1",
        sender=CALLER,
    )
    pair.send(cancel, CALLER, now=0.2)
    pair.take_callee()
    pair.send(response_to(b_invite, 200, "OK"), CALLEE, now=0.3)
    assert statuses(pair.take_callee()) == ["ACK", "BYE"]


def test_callee_hangup_is_relayed_to_the_caller() -> None:
    pair = CorePair()
    b_invite, ok = _answered_call(pair)
    pair.send(_ack_from_caller(ok), CALLER, now=0.3)
    pair.take_callee()
    bye = in_dialog(
        "BYE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=f"{b_invite.headers.get('to')};tag=callee-tag",
        to_value=b_invite.headers.get("from") or "",
        call_id=b_invite.call_id,
        cseq=1,
        branch="z9hG4bKcalleebye",
        sender=CALLEE,
    )
    pair.send(bye, CALLEE, now=3.0)
    # The hang-up is answered at once, whatever the other side will say.
    assert statuses(pair.take_callee()) == [200]
    a_bye = _only(pair.take_caller())
    assert isinstance(a_bye, Request) and a_bye.method == "BYE"
    assert a_bye.uri == "sip:caller@10.1.0.5:5071"
    assert (
        a_bye.call_id == "a-call-1"
        and a_bye.to.tag == "caller-tag"
        and a_bye.from_.tag == ok.to.tag
    )
    pair.send(response_to(a_bye, 200, "OK", to_tag=None, contact=None), CALLER, now=3.1)
    assert pair.take_callee() == [], "the caller's 200 is not answered twice"
    ended = [e for e in pair.events if isinstance(e, CallEnded)]
    assert len(ended) == 1 and ended[0].ended_by == "callee"
    pair.run_until(100.0)
    assert (pair.core.transaction_count, pair.core.dialog_count) == (0, 0)


def test_reinvite_from_caller_is_relayed_and_acked() -> None:
    pair = CorePair()
    b_invite, ok = _answered_call(pair)
    pair.send(_ack_from_caller(ok), CALLER, now=0.3)
    pair.take_callee()
    reinvite = in_dialog(
        "INVITE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=2,
        branch="z9hG4bKre1",
        sender=CALLER,
        body=b"v=0\r\nhold\r\n",
    )
    pair.send(reinvite, CALLER, now=2.0)
    assert statuses(pair.take_caller()) == [100]
    b_re = _only(pair.take_callee())
    assert isinstance(b_re, Request) and b_re.method == "INVITE" and b_re.cseq.seq == 2
    assert b_re.body == b"v=0\r\nhold\r\n" and b_re.to.tag == "callee-tag"
    pair.send(response_to(b_re, 200, "OK", body=b"v=0\r\nheld\r\n"), CALLEE, now=2.1)
    a_ok = _only(pair.take_caller())
    assert isinstance(a_ok, Response) and a_ok.status == 200 and a_ok.cseq.seq == 2
    pair.send(_ack_from_caller(ok, cseq=2, branch="z9hG4bKack2"), CALLER, now=2.2)
    b_ack = _only(pair.take_callee())
    assert isinstance(b_ack, Request) and b_ack.method == "ACK" and b_ack.cseq.seq == 2


def test_unknown_source_gets_403_and_nothing_is_forwarded() -> None:
    pair = CorePair()
    pair.send(invite(caller=STRANGER), STRANGER, now=0.0)
    assert pair.take_callee() == []
    peer, response = pair.to_others[0]
    assert peer == STRANGER and isinstance(response, Response) and response.status == 403
    assert response.headers.get("reason") == 'SIP;cause=403;text="unknown_source"'
    assert response.to.tag is not None
    refused = [e for e in pair.events if isinstance(e, CallRefused)]
    assert len(refused) == 1 and refused[0].rule == "unknown_source"
    assert pair.core.transaction_count == 0


def test_max_forwards_zero_gets_483() -> None:
    pair = CorePair()
    pair.send(invite().replace(b"Max-Forwards: 70", b"Max-Forwards: 0"), CALLER, now=0.0)
    assert statuses(pair.take_caller()) == [483]
    assert pair.take_callee() == []


def test_unsupported_require_gets_420() -> None:
    pair = CorePair()
    pair.send(invite(extra="Require: 100rel\r\n"), CALLER, now=0.0)
    got = _only(pair.take_caller())
    assert isinstance(got, Response) and got.status == 420
    assert got.headers.get("unsupported") == "100rel"


def test_missing_ack_for_2xx_tears_down_both_legs() -> None:
    pair = CorePair()
    _answered_call(pair)
    pair.run_until(40.0)
    assert "BYE" in statuses(pair.take_caller())
    callee_got = statuses(pair.take_callee())
    assert callee_got[:2] == ["ACK", "BYE"]  # B's 2xx is ACKed before the BYE
    ended = [e for e in pair.events if isinstance(e, CallEnded)]
    assert len(ended) == 1 and ended[0].ended_by == "timeout"


def test_in_dialog_request_from_a_foreign_host_is_refused() -> None:
    pair = CorePair()
    _, ok = _answered_call(pair)
    bye = in_dialog(
        "BYE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=2,
        branch="z9hG4bKevil",
        sender=STRANGER,
    )
    pair.send(bye, STRANGER, now=1.0)
    assert pair.take_callee() == []
    assert pair.to_others[-1][1].status == 403  # type: ignore[union-attr]
    assert pair.core.calls_active == 1


def test_options_answered_locally_for_known_peers_only() -> None:
    pair = CorePair()
    options = in_dialog(
        "OPTIONS",
        target="sip:10.0.0.1",
        from_value="<sip:ping@10.9.0.1>;tag=p1",
        to_value="<sip:10.0.0.1>",
        call_id="ping-1",
        cseq=1,
        branch="z9hG4bKping",
        sender=CALLEE,
    )
    pair.send(options, CALLEE, now=0.0)
    got = _only(pair.take_callee())
    assert (
        isinstance(got, Response)
        and got.status == 200
        and "INVITE" in (got.headers.get("allow") or "")
    )
    assert got.headers.get("server") is None, "an answer does not name the software"
    pair.send(options.replace(b"10.9.0.1:5080", b"192.0.2.66:5060"), STRANGER, now=0.0)
    assert pair.to_others[-1][1].status == 403  # type: ignore[union-attr]


def test_unparseable_request_gets_400_and_garbage_is_dropped() -> None:
    pair = CorePair()
    bad = invite().replace(b"CSeq: 1 INVITE", b"CSeq: one INVITE")
    pair.core.receive_datagram(bad, CALLER, now=0.0)
    sent = pair.core.datagrams_to_send()
    assert len(sent) == 1 and sent[0].peer == CALLER
    assert sent[0].data.startswith(b"SIP/2.0 400 bad CSeq")
    assert b"\r\nCall-ID: a-call-1\r\n" in sent[0].data and b"branch=z9hG4bKa1" in sent[0].data
    pair.core.receive_datagram(b"\x00\xff garbage", CALLER, now=0.0)
    assert pair.core.datagrams_to_send() == []
    assert pair.core.transaction_count == 0


def test_next_hop_unreachable_gets_503_and_frees_the_call() -> None:
    pair = CorePair()
    pair.send(invite(), CALLER, now=0.0)
    pair.take_caller()
    pair.take_callee()
    pair.core.transport_failed(CALLEE, now=0.1)
    pair.collect()
    assert statuses(pair.take_caller()) == [503]
    ended = [e for e in pair.events if isinstance(e, CallEnded)]
    assert len(ended) == 1 and ended[0].ended_by == "error" and ended[0].status == 503
    pair.run_until(100.0)
    assert (pair.core.transaction_count, pair.core.calls_active) == (0, 0)


def test_early_bye_from_the_caller_cancels_the_call() -> None:
    pair = CorePair()
    pair.send(invite(), CALLER, now=0.0)
    b_invite = _only(pair.take_callee())
    assert isinstance(b_invite, Request)
    pair.send(response_to(b_invite, 180, "Ringing"), CALLEE, now=0.1)
    ringing = [m for m in pair.take_caller() if isinstance(m, Response) and m.status == 180][0]
    bye = in_dialog(
        "BYE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ringing.headers.get("from") or "",
        to_value=ringing.headers.get("to") or "",
        call_id="a-call-1",
        cseq=2,
        branch="z9hG4bKeb",
        sender=CALLER,
    )
    pair.send(bye, CALLER, now=0.5)
    assert sorted(statuses(pair.take_caller())) == [200, 487]  # type: ignore[type-var]
    assert statuses(pair.take_callee()) == ["CANCEL"]


def test_reinvite_glare_gets_491() -> None:
    pair = CorePair()
    b_invite, ok = _answered_call(pair)
    pair.send(_ack_from_caller(ok), CALLER, now=0.3)
    pair.take_callee()
    reinvite = in_dialog(
        "INVITE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=2,
        branch="z9hG4bKre1",
        sender=CALLER,
    )
    pair.send(reinvite, CALLER, now=1.0)
    pair.take_caller()
    pair.take_callee()
    callee_reinvite = in_dialog(
        "INVITE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=f"{b_invite.headers.get('to')};tag=callee-tag",
        to_value=b_invite.headers.get("from") or "",
        call_id=b_invite.call_id,
        cseq=1,
        branch="z9hG4bKcre",
        sender=CALLEE,
    )
    pair.send(callee_reinvite, CALLEE, now=1.1)
    assert statuses(pair.take_callee()) == [100, 491]


def test_out_of_order_cseq_gets_500() -> None:
    pair = CorePair()
    _, ok = _answered_call(pair)
    pair.send(_ack_from_caller(ok), CALLER, now=0.3)
    info = in_dialog(
        "INFO",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=1,
        branch="z9hG4bKinfo",
        sender=CALLER,
    )
    pair.send(info, CALLER, now=1.0)
    got = _only(pair.take_caller())
    assert isinstance(got, Response) and got.status == 500


def test_info_is_relayed_and_answered_back() -> None:
    pair = CorePair()
    _, ok = _answered_call(pair)
    pair.send(_ack_from_caller(ok), CALLER, now=0.3)
    pair.take_callee()
    info = in_dialog(
        "INFO",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=5,
        branch="z9hG4bKinfo",
        sender=CALLER,
        body=b"Signal=1\r\n",
    )
    pair.send(info, CALLER, now=1.0)
    b_info = _only(pair.take_callee())
    assert (
        isinstance(b_info, Request) and b_info.method == "INFO" and b_info.body == b"Signal=1\r\n"
    )
    pair.send(response_to(b_info, 200, "OK", to_tag=None, contact=None), CALLEE, now=1.1)
    got = _only(pair.take_caller())
    assert isinstance(got, Response) and got.status == 200 and got.cseq.seq == 5


def test_unknown_dialog_gets_481_and_stray_ack_is_dropped() -> None:
    pair = CorePair()
    bye = in_dialog(
        "BYE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value="<sip:a@10.1.0.5>;tag=x",
        to_value="<sip:b@10.0.0.1>;tag=nosuch",
        call_id="nope",
        cseq=2,
        branch="z9hG4bKn",
        sender=CALLER,
    )
    pair.send(bye, CALLER, now=0.0)
    assert statuses(pair.take_caller()) == [481]
    pair.send(bye.replace(b"BYE", b"ACK"), CALLER, now=0.0)
    assert pair.take_caller() == []


def test_identity_change_mid_dialog_is_refused_and_the_call_goes_on() -> None:
    pair = CorePair()
    b_invite, ok = _answered_call(pair)
    pair.send(_ack_from_caller(ok), CALLER, now=0.3)
    pair.take_callee()
    reinvite = in_dialog(
        "INVITE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=2,
        branch="z9hG4bKidc",
        sender=CALLER,
    ).replace(
        b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nP-Asserted-Identity: <sip:+8695555@x>\r\n"
    )
    pair.send(reinvite, CALLER, now=1.0)
    refused = [m for m in pair.take_caller() if isinstance(m, Response) and m.status >= 200]
    assert len(refused) == 1 and refused[0].status == 403
    assert refused[0].headers.get("reason") == 'SIP;cause=403;text="identity_changed"'
    assert refused[0].headers.get("warning") == '399 10.0.0.1:5060 "identity_changed"'
    assert pair.take_callee() == []  # not relayed
    assert pair.core.calls_active == 1
    # A decision for the trail and the metrics: a modified caller ID intercepted.
    changed = [e for e in pair.events if isinstance(e, CallRefused)]
    assert [(e.rule, e.status, e.trunk, e.detail) for e in changed] == [
        ("identity_changed", 403, "test-trunk", "caller identity changed within the dialog")
    ]
    same = in_dialog(
        "INVITE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=3,
        branch="z9hG4bKsame",
        sender=CALLER,
    )
    pair.send(same, CALLER, now=2.0)
    assert statuses(pair.take_callee()) == ["INVITE"]  # an unchanged identity is relayed


def test_call_ended_reports_ringing_time_of_unanswered_calls() -> None:
    pair = CorePair()
    pair.send(invite(), CALLER, now=10.0)
    b_invite = _only(pair.take_callee())
    assert isinstance(b_invite, Request)
    pair.send(response_to(b_invite, 180, "Ringing"), CALLEE, now=10.5)
    cancel = in_dialog(
        "CANCEL",
        target="sip:13800138000@10.0.0.1",
        from_value="<sip:+862131771234@10.1.0.5>;tag=caller-tag",
        to_value="<sip:13800138000@10.0.0.1>",
        call_id="a-call-1",
        cseq=1,
        branch="z9hG4bKa1",
        sender=CALLER,
    )
    pair.send(cancel, CALLER, now=11.5)
    ended = [e for e in pair.events if isinstance(e, CallEnded)]
    assert len(ended) == 1 and ended[0].ringing_for == pytest.approx(1.0)
    assert not ended[0].answered and ended[0].caller == "sip:+862131771234@10.1.0.5"


def test_answered_calls_report_no_ringing_time() -> None:
    pair = CorePair()
    _, ok = _answered_call(pair)
    bye = in_dialog(
        "BYE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=2,
        branch="z9hG4bKb",
        sender=CALLER,
    )
    pair.send(_ack_from_caller(ok), CALLER, now=0.3)
    pair.send(bye, CALLER, now=0.4)
    ended = [e for e in pair.events if isinstance(e, CallEnded)]
    assert len(ended) == 1 and ended[0].answered and ended[0].ringing_for is None


def test_call_ended_says_when_the_answer_was_relayed_for_talk_time() -> None:
    """The 2xx reached the caller at 0.2 (INVITE at 0.0), the BYE at 30.2:
    answered after 0.2 s, 30 s of talk; a call never answered has no answer time."""
    pair = CorePair()
    _, ok = _answered_call(pair)
    pair.send(_ack_from_caller(ok), CALLER, now=0.3)
    bye = in_dialog(
        "BYE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=2,
        branch="z9hG4bKb",
        sender=CALLER,
    )
    pair.send(bye, CALLER, now=30.2)
    (ended,) = [e for e in pair.events if isinstance(e, CallEnded)]
    assert (ended.start, ended.answered_at, ended.time) == (0.0, 0.2, 30.2)

    unanswered = CorePair()
    unanswered.send(invite(), CALLER, now=0.0)
    b_invite = _only(unanswered.take_callee())
    assert isinstance(b_invite, Request)
    unanswered.send(response_to(b_invite, 486, "Busy Here"), CALLEE, now=1.0)
    (busy,) = [e for e in unanswered.events if isinstance(e, CallEnded)]
    assert not busy.answered and busy.answered_at is None


def test_caller_hangup_toward_a_dead_callee_is_answered_at_once() -> None:
    """The callee never answers the relayed BYE: the caller is not kept waiting 32 s."""
    pair = CorePair()
    _, ok = _answered_call(pair)
    pair.send(_ack_from_caller(ok), CALLER, now=0.3)
    pair.take_callee()
    bye = in_dialog(
        "BYE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=2,
        branch="z9hG4bKcallerbye",
        sender=CALLER,
    )
    pair.send(bye, CALLER, now=5.0)
    assert statuses(pair.take_caller()) == [200]
    assert statuses(pair.take_callee()) == ["BYE"]
    assert pair.core.calls_active == 0
    pair.run_until(100.0)  # the BYE toward the callee retransmits, then times out
    assert pair.take_caller() == [], "no second answer when the relayed BYE times out"
    assert set(statuses(pair.take_callee())) == {"BYE"}
    assert pair.core.transaction_count == 0 and pair.core.dialog_count == 0
