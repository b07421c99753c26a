"""RFC 3261 §17 transactions (with RFC 6026 Accepted) under scripted time.

Time is a float the test writes down; the outbox is a plain list. Every deadline
is asserted exactly: the timer values are binary fractions, so the sums are exact.
"""

from __future__ import annotations

import pytest

from sipguard.events import Transmit
from sipguard.peer import Peer
from sipguard.sip.builders import build_response
from sipguard.sip.message import Headers, Request, Response
from sipguard.sip.parser import parse_message
from sipguard.sip.serializer import to_bytes
from sipguard.transaction import (
    DEFAULT_RING_TIMEOUT,
    T1,
    T2,
    T4,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    TxState,
)

pytestmark = pytest.mark.unit

UDP = Peer("udp", "192.0.2.20", 5060)
TCP = Peer("tcp", "192.0.2.20", 5060)
KEY = ("z9hG4bK-tx-1", "INVITE")


def make_request(
    method: str = "INVITE",
    *,
    seq: int = 1,
    branch: str = "z9hG4bK-tx-1",
    extra: tuple[tuple[str, str], ...] = (),
    via: str | None = None,
) -> Request:
    fields = [
        ("Via", via or f"SIP/2.0/UDP 10.0.0.1:5060;branch={branch};rport"),
        ("Max-Forwards", "70"),
        ("From", '"Office" <sip:+862131771200@10.0.0.1;user=phone>;tag=sg-1'),
        ("To", "<sip:13800138000@10.9.0.1:5080>"),
        ("Call-ID", "call-tx-1@10.0.0.1"),
        ("CSeq", f"{seq} {method}"),
        *extra,
    ]
    if method == "INVITE":
        fields.append(("Contact", "<sip:sipguard@10.0.0.1:5060>"))
    return Request(method, "sip:13800138000@10.9.0.1:5080", Headers(fields), b"")


def reply(request: Request, status: int, *, tag: str | None = "callee-1") -> Response:
    return build_response(request, status, to_tag=tag)


def sent(outbox: list[Transmit]) -> list[bytes]:
    return [item.data for item in outbox]


def run_timers(tx: object, times: list[float], outbox: list[Transmit], data: bytes) -> None:
    """At each time: the deadline is exactly it, and firing sends `data` once."""
    for when in times:
        assert tx.deadline == when  # type: ignore[attr-defined]
        before = len(outbox)
        tx.handle_timer(now=when)  # type: ignore[attr-defined]
        assert sent(outbox)[before:] == [data], when


def test_rfc_timer_values() -> None:
    assert (T1, T2, T4) == (0.5, 4.0, 5.0)
    assert DEFAULT_RING_TIMEOUT == 180.0


# --- INVITE client (RFC 3261 §17.1.1, RFC 6026 §7.2) ------------------------------------------


def client_invite(
    peer: Peer = UDP, *, now: float = 0.0, request: Request | None = None, **kw: float
) -> tuple[ClientInviteTransaction, list[Transmit], Request]:
    outbox: list[Transmit] = []
    invite = request or make_request()
    tx = ClientInviteTransaction(invite, key=KEY, peer=peer, outbox=outbox, now=now, **kw)
    return tx, outbox, invite


def test_client_invite_sends_at_once_and_arms_timer_a() -> None:
    tx, outbox, invite = client_invite(now=10.0)
    assert outbox == [Transmit(UDP, to_bytes(invite))]
    assert tx.state is TxState.CALLING
    assert tx.deadline == 10.5
    assert not tx.timed_out and not tx.is_terminated


def test_client_invite_happy_path() -> None:
    tx, outbox, invite = client_invite()
    ringing = reply(invite, 180)
    assert tx.receive_response(ringing, now=0.25) is ringing
    assert tx.state is TxState.PROCEEDING
    assert tx.provisional_received
    assert tx.deadline == 0.25 + DEFAULT_RING_TIMEOUT
    ok = reply(invite, 200)
    assert tx.receive_response(ok, now=2.0) is ok
    assert tx.state is TxState.ACCEPTED
    assert tx.deadline == 2.0 + 32.0  # RFC 6026 Timer M = 64*T1
    tx.handle_timer(now=33.75)
    assert tx.state is TxState.ACCEPTED
    tx.handle_timer(now=34.0)
    assert tx.state is TxState.TERMINATED and tx.is_terminated
    assert not tx.timed_out
    assert tx.deadline is None
    assert sent(outbox) == [to_bytes(invite)]  # the 2xx ACK is the TU's, not ours


def test_client_invite_timer_a_doubles_until_timer_b() -> None:
    tx, outbox, invite = client_invite()
    data = to_bytes(invite)
    tx.handle_timer(now=0.25)  # early: nothing is due
    assert len(outbox) == 1 and tx.deadline == 0.5
    # RFC 3261 §17.1.1.2: A fires at T1, 2*T1, 4*T1... after the previous firing.
    run_timers(tx, [0.5, 1.5, 3.5, 7.5, 15.5, 31.5], outbox, data)
    assert tx.deadline == 32.0  # Timer B = 64*T1 comes before A's 63.5
    assert tx.state is TxState.CALLING and not tx.timed_out
    tx.handle_timer(now=32.0)
    assert tx.state is TxState.TERMINATED
    assert tx.timed_out
    assert tx.deadline is None
    assert len(outbox) == 7
    tx.handle_timer(now=63.5)
    assert len(outbox) == 7


def test_client_invite_provisional_stops_timer_a() -> None:
    tx, outbox, invite = client_invite()
    tx.receive_response(reply(invite, 100, tag=None), now=0.25)
    assert tx.state is TxState.PROCEEDING
    tx.handle_timer(now=0.5)
    tx.handle_timer(now=1.5)
    assert len(outbox) == 1
    assert tx.deadline == 0.25 + DEFAULT_RING_TIMEOUT


def test_client_invite_ring_timeout_after_a_provisional() -> None:
    tx, outbox, invite = client_invite(ring_timeout=60.0)
    tx.handle_timer(now=0.5)
    assert len(outbox) == 2
    tx.receive_response(reply(invite, 183), now=1.0)
    assert tx.deadline == 61.0
    # Timer B no longer applies once a provisional arrived (§17.1.1.2).
    tx.handle_timer(now=32.0)
    assert tx.state is TxState.PROCEEDING
    # Later provisionals do not extend the ring timeout.
    assert tx.receive_response(reply(invite, 180), now=40.0) is not None
    assert tx.deadline == 61.0
    tx.handle_timer(now=61.0)
    assert tx.state is TxState.TERMINATED
    assert tx.timed_out
    assert len(outbox) == 2


def test_client_invite_non_2xx_builds_and_sends_the_ack() -> None:
    route = ("Route", "<sip:edge1.example.com;lr>, <sip:edge2.example.com;lr>")
    tx, outbox, invite = client_invite(request=make_request(seq=7, extra=(route,)))
    tx.receive_response(reply(invite, 180), now=0.25)
    busy = reply(invite, 486)
    assert tx.receive_response(busy, now=2.0) is busy
    assert tx.state is TxState.COMPLETED
    assert len(outbox) == 2 and outbox[1].peer == UDP
    ack = parse_message(outbox[1].data)
    assert isinstance(ack, Request)
    # RFC 3261 §17.1.1.3.
    assert ack.method == "ACK"
    assert ack.uri == invite.uri
    assert ack.vias == (invite.top_via,)
    assert ack.top_via.branch == "z9hG4bK-tx-1"
    assert ack.headers.get("from") == invite.headers.get("from")
    assert ack.headers.get("to") == busy.headers.get("to")
    assert ack.to.tag == "callee-1"
    assert ack.call_id == invite.call_id
    assert (ack.cseq.seq, ack.cseq.method) == (7, "ACK")
    assert ack.headers.get_all("route") == [
        "<sip:edge1.example.com;lr>",
        "<sip:edge2.example.com;lr>",
    ]
    assert ack.max_forwards == 70
    assert ack.body == b""
    assert tx.deadline == 2.0 + 32.0  # Timer D


def test_client_invite_ack_carries_only_the_top_via() -> None:
    # RFC 3261 §17.1.1.3: "The ACK MUST contain a single Via header field, and
    # this MUST be equal to the top Via header field of the original request."
    via = "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-top, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK-2"
    tx, outbox, invite = client_invite(request=make_request(via=via))
    tx.receive_response(reply(invite, 603), now=1.0)
    ack = parse_message(outbox[-1].data)
    assert [v.branch for v in ack.vias] == ["z9hG4bK-top"]


def test_client_invite_retransmitted_final_gets_the_ack_again_not_the_tu() -> None:
    tx, outbox, invite = client_invite()
    busy = reply(invite, 486)
    tx.receive_response(busy, now=1.0)
    ack = outbox[1]
    assert tx.receive_response(busy, now=1.5) is None
    assert tx.receive_response(reply(invite, 486), now=3.0) is None
    assert outbox[2:] == [ack, ack]
    # Anything else in Completed is absorbed silently.
    assert tx.receive_response(reply(invite, 180), now=4.0) is None
    assert tx.receive_response(reply(invite, 200), now=4.0) is None
    assert len(outbox) == 4
    assert tx.state is TxState.COMPLETED


def test_client_invite_non_2xx_in_calling_stops_timer_a_and_lingers_timer_d() -> None:
    tx, outbox, invite = client_invite()
    tx.receive_response(reply(invite, 503), now=0.25)
    assert tx.deadline == 32.25
    tx.handle_timer(now=0.5)
    tx.handle_timer(now=1.5)
    assert len(outbox) == 2  # the INVITE and the ACK: no retransmission
    tx.handle_timer(now=32.25)
    assert tx.state is TxState.TERMINATED
    assert not tx.timed_out


def test_client_invite_2xx_straight_from_calling() -> None:
    tx, outbox, invite = client_invite()
    ok = reply(invite, 200)
    assert tx.receive_response(ok, now=0.25) is ok
    assert tx.state is TxState.ACCEPTED
    assert tx.deadline == 32.25
    tx.handle_timer(now=0.5)
    assert len(outbox) == 1


def test_client_invite_2xx_retransmissions_pass_through_in_accepted() -> None:
    tx, outbox, invite = client_invite()
    ok = reply(invite, 200)
    tx.receive_response(ok, now=1.0)
    assert tx.receive_response(ok, now=1.5) is ok
    forked = reply(invite, 200, tag="fork-2")
    assert tx.receive_response(forked, now=2.0) is forked  # RFC 6026 §8.4
    assert tx.receive_response(reply(invite, 180), now=2.0) is None
    assert tx.receive_response(reply(invite, 486), now=2.0) is None
    assert tx.state is TxState.ACCEPTED
    assert tx.deadline == 33.0  # retransmissions do not restart Timer M
    assert len(outbox) == 1


def test_client_invite_terminated_ignores_everything() -> None:
    tx, outbox, invite = client_invite()
    tx.handle_timer(now=0.5)
    tx.transport_failed()
    assert tx.state is TxState.TERMINATED and tx.timed_out
    assert tx.deadline is None
    for status in (100, 180, 200, 486):
        assert tx.receive_response(reply(invite, status), now=1.0) is None
    tx.handle_timer(now=100.0)
    assert len(outbox) == 2


def test_client_invite_over_tcp_never_retransmits() -> None:
    tx, outbox, invite = client_invite(TCP)
    assert outbox == [Transmit(TCP, to_bytes(invite))]
    assert tx.deadline == 32.0  # only Timer B
    tx.handle_timer(now=32.0)
    assert tx.state is TxState.TERMINATED and tx.timed_out
    assert len(outbox) == 1


def test_client_invite_over_tcp_timer_d_is_zero() -> None:
    tx, outbox, invite = client_invite(TCP)
    tx.receive_response(reply(invite, 404), now=3.0)
    assert len(outbox) == 2  # the ACK is still sent
    assert tx.deadline == 3.0
    tx.handle_timer(now=3.0)
    assert tx.state is TxState.TERMINATED and not tx.timed_out


def test_client_invite_over_tcp_2xx_still_waits_timer_m() -> None:
    tx, outbox, invite = client_invite(TCP)
    tx.receive_response(reply(invite, 200), now=3.0)
    assert tx.deadline == 35.0  # RFC 6026: Timer M is 64*T1 on every transport


def test_client_invite_late_wake_up_runs_timer_b_before_timer_a() -> None:
    # The driver may wake late (handle_timer(now=max(deadline, loop.time()))).
    # Timer B (due at 32) is earlier than Timer A (due at 63.5): the transaction
    # is over, and nothing more is sent.
    tx, outbox, _ = client_invite()
    for when in (0.5, 1.5, 3.5, 7.5, 15.5, 31.5):
        tx.handle_timer(now=when)
    assert len(outbox) == 7
    tx.handle_timer(now=70.0)
    assert tx.state is TxState.TERMINATED and tx.timed_out
    assert len(outbox) == 7


# --- non-INVITE client (RFC 3261 §17.1.2) -----------------------------------------------------


def client_bye(peer: Peer = UDP) -> tuple[ClientNonInviteTransaction, list[Transmit], Request]:
    outbox: list[Transmit] = []
    bye = make_request("BYE", seq=2, branch="z9hG4bK-bye")
    tx = ClientNonInviteTransaction(
        bye, key=("z9hG4bK-bye", "BYE"), peer=peer, outbox=outbox, now=0.0
    )
    return tx, outbox, bye


def test_client_non_invite_happy_path() -> None:
    tx, outbox, bye = client_bye()
    assert sent(outbox) == [to_bytes(bye)]
    assert tx.state is TxState.TRYING
    assert tx.deadline == 0.5
    ok = reply(bye, 200)
    assert tx.receive_response(ok, now=0.25) is ok
    assert tx.state is TxState.COMPLETED
    assert tx.deadline == 5.25  # Timer K = T4
    assert tx.receive_response(ok, now=1.0) is None  # absorbed
    tx.handle_timer(now=0.5)
    assert len(outbox) == 1
    tx.handle_timer(now=5.25)
    assert tx.state is TxState.TERMINATED and not tx.timed_out
    assert tx.deadline is None


def test_client_non_invite_timer_e_is_capped_at_t2_until_timer_f() -> None:
    tx, outbox, bye = client_bye()
    times = [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    run_timers(tx, times, outbox, to_bytes(bye))
    assert tx.deadline == 32.0  # Timer F = 64*T1
    tx.handle_timer(now=32.0)
    assert tx.state is TxState.TERMINATED
    assert tx.timed_out
    assert len(outbox) == 11


def test_client_non_invite_timer_e_runs_at_t2_after_a_provisional() -> None:
    tx, outbox, bye = client_bye()
    run_timers(tx, [0.5], outbox, to_bytes(bye))
    trying = reply(bye, 100, tag=None)
    assert tx.receive_response(trying, now=0.75) is trying
    assert tx.state is TxState.PROCEEDING
    run_timers(tx, [4.75, 8.75, 12.75, 16.75, 20.75, 24.75, 28.75], outbox, to_bytes(bye))
    assert tx.deadline == 32.0  # Timer F is not restarted by the provisional
    tx.handle_timer(now=32.0)
    assert tx.state is TxState.TERMINATED and tx.timed_out


def test_client_non_invite_final_after_provisional() -> None:
    tx, outbox, bye = client_bye()
    tx.receive_response(reply(bye, 100, tag=None), now=0.25)
    assert tx.receive_response(reply(bye, 180), now=0.5) is not None
    assert tx.state is TxState.PROCEEDING
    notfound = reply(bye, 481)
    assert tx.receive_response(notfound, now=1.0) is notfound
    assert tx.state is TxState.COMPLETED
    assert tx.deadline == 6.0
    tx.handle_timer(now=6.0)
    assert tx.state is TxState.TERMINATED and not tx.timed_out
    assert len(outbox) == 1


def test_client_non_invite_over_tcp() -> None:
    tx, outbox, bye = client_bye(TCP)
    assert tx.deadline == 32.0
    tx.receive_response(reply(bye, 100, tag=None), now=1.0)
    assert tx.deadline == 32.0
    tx.receive_response(reply(bye, 200), now=2.0)
    assert tx.deadline == 2.0  # Timer K is zero on reliable transports
    tx.handle_timer(now=2.0)
    assert tx.state is TxState.TERMINATED
    assert len(outbox) == 1


def test_client_non_invite_over_tcp_times_out_with_timer_f() -> None:
    tx, outbox, _ = client_bye(TCP)
    tx.handle_timer(now=31.75)
    assert tx.state is TxState.TRYING
    tx.handle_timer(now=32.0)
    assert tx.state is TxState.TERMINATED and tx.timed_out
    assert len(outbox) == 1


def test_client_non_invite_late_wake_up_runs_timer_f_first() -> None:
    tx, outbox, _ = client_bye()
    tx.handle_timer(now=40.0)  # E (0.5) and F (32) are both overdue; F is final
    assert tx.state is TxState.TERMINATED and tx.timed_out
    assert len(outbox) == 1


# --- INVITE server (RFC 3261 §17.2.1, RFC 6026 §7.1) ------------------------------------------


def server_invite(peer: Peer = UDP) -> tuple[ServerInviteTransaction, list[Transmit], Request]:
    outbox: list[Transmit] = []
    invite = make_request()
    return ServerInviteTransaction(invite, key=KEY, peer=peer, outbox=outbox), outbox, invite


def test_server_invite_starts_in_proceeding_without_timers() -> None:
    tx, outbox, _ = server_invite()
    assert tx.state is TxState.PROCEEDING
    assert tx.deadline is None
    tx.receive_retransmission()  # nothing to repeat yet
    assert outbox == []


def test_server_invite_retransmitted_invite_gets_the_last_provisional() -> None:
    tx, outbox, invite = server_invite()
    trying = to_bytes(reply(invite, 100, tag=None))
    ringing = to_bytes(reply(invite, 180))
    tx.send_response(reply(invite, 100, tag=None), now=0.0)
    tx.receive_retransmission()
    tx.send_response(reply(invite, 180), now=1.0)
    tx.receive_retransmission()
    tx.receive_retransmission()
    assert sent(outbox) == [trying, trying, ringing, ringing, ringing]
    assert all(item.peer == UDP for item in outbox)
    assert tx.state is TxState.PROCEEDING
    assert tx.deadline is None


def test_server_invite_non_2xx_timer_g_until_ack_then_timer_i() -> None:
    tx, outbox, invite = server_invite()
    busy = reply(invite, 486)
    data = to_bytes(busy)
    tx.send_response(busy, now=1.0)
    assert tx.state is TxState.COMPLETED
    assert tx.final_status == 486
    assert sent(outbox) == [data]
    # Timer G: T1, then doubling, capped at T2 (§17.2.1).
    run_timers(tx, [1.5, 2.5, 4.5, 8.5, 12.5], outbox, data)
    tx.receive_retransmission()
    assert sent(outbox)[-1] == data
    count = len(outbox)
    assert not tx.receive_ack(now=13.0)  # the transaction's own: not for the TU
    assert tx.state is TxState.CONFIRMED
    assert tx.deadline == 18.0  # Timer I = T4
    tx.receive_retransmission()  # absorbed in Confirmed
    assert not tx.receive_ack(now=14.0)  # ACK retransmission absorbed
    tx.handle_timer(now=16.5)
    assert len(outbox) == count
    assert tx.state is TxState.CONFIRMED
    tx.handle_timer(now=18.0)
    assert tx.state is TxState.TERMINATED
    assert not tx.timed_out
    assert tx.deadline is None


def test_server_invite_no_ack_timer_h() -> None:
    tx, outbox, invite = server_invite()
    busy = reply(invite, 603)
    data = to_bytes(busy)
    tx.send_response(busy, now=1.0)
    times = [1.5, 2.5, 4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5, 32.5]
    run_timers(tx, times, outbox, data)
    assert tx.deadline == 33.0  # Timer H = 64*T1
    tx.handle_timer(now=33.0)
    assert tx.state is TxState.TERMINATED
    assert tx.timed_out
    assert tx.deadline is None
    tx.receive_ack(now=34.0)
    tx.receive_retransmission()
    tx.handle_timer(now=36.5)
    assert len(outbox) == 11
    assert tx.state is TxState.TERMINATED


def test_server_invite_late_wake_up_runs_timer_h_first() -> None:
    tx, outbox, invite = server_invite()
    tx.send_response(reply(invite, 486), now=0.0)
    tx.handle_timer(now=40.0)  # G (0.5) and H (32) are both overdue; H is final
    assert tx.state is TxState.TERMINATED and tx.timed_out
    assert len(outbox) == 1


def test_server_invite_only_the_first_final_response_counts() -> None:
    tx, outbox, invite = server_invite()
    tx.send_response(reply(invite, 486), now=1.0)
    tx.send_response(reply(invite, 200), now=1.25)
    tx.send_response(reply(invite, 180), now=1.25)
    assert len(outbox) == 1
    assert tx.state is TxState.COMPLETED
    assert tx.final_status == 486


def test_server_invite_ack_before_a_final_response_is_ignored() -> None:
    tx, _, invite = server_invite()
    assert not tx.receive_ack(now=0.5)
    assert tx.state is TxState.PROCEEDING


def test_server_invite_ack_in_accepted_goes_to_the_tu() -> None:
    # RFC 6026 §7.1: an ACK matched in Accepted acknowledges the 2xx; it is
    # the dialog's business (the TU confirms), not the transaction's.
    tx, outbox, invite = server_invite()
    tx.send_response(reply(invite, 200), now=1.0)
    assert tx.receive_ack(now=1.5)
    assert tx.state is TxState.ACCEPTED and not tx.ack_received
    assert tx.deadline == 1.5  # the 2xx is still retransmitted until the TU confirms
    assert len(outbox) == 1


def test_server_invite_2xx_is_retransmitted_until_confirmed_then_timer_l() -> None:
    tx, outbox, invite = server_invite()
    tx.send_response(reply(invite, 180), now=0.5)
    ok = reply(invite, 200)
    data = to_bytes(ok)
    tx.send_response(ok, now=2.0)
    assert tx.state is TxState.ACCEPTED
    assert tx.final_status == 200
    assert sent(outbox)[-1] == data
    run_timers(tx, [2.5, 3.5, 5.5, 9.5, 13.5], outbox, data)
    tx.receive_retransmission()  # RFC 6026: absorbed in Accepted
    assert sent(outbox)[-1] == data and len(outbox) == 7
    tx.confirm_2xx()
    assert tx.ack_received
    assert tx.deadline == 34.0  # only Timer L = 64*T1 is left
    tx.handle_timer(now=17.5)
    assert len(outbox) == 7
    tx.handle_timer(now=34.0)
    assert tx.state is TxState.TERMINATED
    assert not tx.timed_out
    assert len(outbox) == 7


def test_server_invite_2xx_without_ack_times_out_at_timer_l() -> None:
    tx, outbox, invite = server_invite()
    ok = reply(invite, 200)
    data = to_bytes(ok)
    tx.send_response(ok, now=2.0)
    times = [2.5, 3.5, 5.5, 9.5, 13.5, 17.5, 21.5, 25.5, 29.5, 33.5]
    run_timers(tx, times, outbox, data)
    assert tx.deadline == 34.0
    tx.handle_timer(now=34.0)
    assert tx.state is TxState.TERMINATED
    assert tx.timed_out  # §13.3.1.4: the TU should now send BYE
    assert len(outbox) == 11


def test_server_invite_tu_2xx_retransmission_in_accepted_is_sent() -> None:
    tx, outbox, invite = server_invite()
    ok = reply(invite, 200)
    tx.send_response(ok, now=1.0)
    tx.send_response(ok, now=1.25)
    tx.send_response(reply(invite, 486), now=1.25)  # a late failure is dropped
    assert sent(outbox) == [to_bytes(ok), to_bytes(ok)]
    assert tx.state is TxState.ACCEPTED


def test_server_invite_over_tcp_non_2xx() -> None:
    tx, outbox, invite = server_invite(TCP)
    tx.send_response(reply(invite, 486), now=1.0)
    assert tx.deadline == 33.0  # no Timer G, Timer H still runs
    tx.handle_timer(now=1.5)
    assert len(outbox) == 1
    tx.receive_ack(now=2.0)
    assert tx.state is TxState.CONFIRMED
    assert tx.deadline == 2.0  # Timer I is zero on reliable transports
    tx.handle_timer(now=2.0)
    assert tx.state is TxState.TERMINATED and not tx.timed_out
    assert len(outbox) == 1


def test_server_invite_over_tcp_no_ack() -> None:
    tx, outbox, invite = server_invite(TCP)
    tx.send_response(reply(invite, 500), now=1.0)
    tx.handle_timer(now=33.0)
    assert tx.state is TxState.TERMINATED and tx.timed_out
    assert len(outbox) == 1


def test_server_invite_over_tcp_2xx() -> None:
    # RFC 3261 §13.3.1.4: the UAS core retransmits a 2xx until the ACK on
    # every transport, since a proxy on the way may use UDP.
    tx, outbox, invite = server_invite(TCP)
    tx.send_response(reply(invite, 200), now=1.0)
    assert tx.deadline == 1.5
    tx.handle_timer(now=1.5)
    assert len(outbox) == 2
    tx.handle_timer(now=33.0)
    assert tx.state is TxState.TERMINATED and tx.timed_out


def test_server_invite_transport_failure() -> None:
    tx, _, invite = server_invite()
    tx.send_response(reply(invite, 180), now=0.0)
    tx.transport_failed()
    assert tx.state is TxState.TERMINATED and tx.timed_out
    assert tx.deadline is None


# --- non-INVITE server (RFC 3261 §17.2.2) -----------------------------------------------------


def server_bye(peer: Peer = UDP) -> tuple[ServerNonInviteTransaction, list[Transmit], Request]:
    outbox: list[Transmit] = []
    bye = make_request("BYE", seq=2, branch="z9hG4bK-bye")
    key = ("z9hG4bK-bye", "BYE")
    return ServerNonInviteTransaction(bye, key=key, peer=peer, outbox=outbox), outbox, bye


def test_server_non_invite_happy_path() -> None:
    tx, outbox, bye = server_bye()
    assert tx.state is TxState.TRYING and tx.deadline is None
    tx.receive_retransmission()  # absorbed in Trying
    assert outbox == []
    ok = reply(bye, 200)
    tx.send_response(ok, now=1.0)
    assert tx.state is TxState.COMPLETED
    assert tx.deadline == 33.0  # Timer J = 64*T1
    tx.receive_retransmission()
    tx.receive_retransmission()
    assert sent(outbox) == [to_bytes(ok)] * 3
    tx.send_response(reply(bye, 500), now=2.0)  # a second final is dropped
    assert len(outbox) == 3
    tx.handle_timer(now=32.75)
    assert tx.state is TxState.COMPLETED
    tx.handle_timer(now=33.0)
    assert tx.state is TxState.TERMINATED and not tx.timed_out
    assert tx.deadline is None
    tx.receive_retransmission()
    assert len(outbox) == 3


def test_server_non_invite_provisional_then_final() -> None:
    tx, outbox, bye = server_bye()
    trying = reply(bye, 100, tag=None)
    tx.send_response(trying, now=0.0)
    assert tx.state is TxState.PROCEEDING and tx.deadline is None
    tx.receive_retransmission()
    assert sent(outbox) == [to_bytes(trying)] * 2
    tx.send_response(reply(bye, 180), now=0.25)
    assert tx.state is TxState.PROCEEDING
    tx.send_response(reply(bye, 481), now=0.5)
    assert tx.state is TxState.COMPLETED
    assert tx.deadline == 32.5
    assert len(outbox) == 4


def test_server_non_invite_over_tcp_timer_j_is_zero() -> None:
    tx, outbox, bye = server_bye(TCP)
    tx.send_response(reply(bye, 200), now=4.0)
    assert tx.deadline == 4.0
    tx.handle_timer(now=4.0)
    assert tx.state is TxState.TERMINATED
    assert len(outbox) == 1 and outbox[0].peer == TCP
