"""The core's transaction table: keys, maps, one timer heap, timeouts reported once."""

from __future__ import annotations

import pytest

from sipguard.events import Transmit
from sipguard.peer import Peer
from sipguard.sip.builders import build_response
from sipguard.sip.message import Headers, Request
from sipguard.sip.parser import parse_message
from sipguard.transaction import (
    T1,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerNonInviteTransaction,
    TxState,
)
from sipguard.txtable import TxTable, client_key, response_key, server_key

pytestmark = pytest.mark.unit

UDP = Peer("udp", "192.0.2.20", 5060)
TCP = Peer("tcp", "192.0.2.20", 5060)


def request(method: str = "INVITE", *, branch: str = "z9hG4bK-t1", via: str = "") -> Request:
    fields = [
        ("Via", via or f"SIP/2.0/UDP 10.0.0.1:5060;branch={branch};rport"),
        ("Max-Forwards", "70"),
        ("From", "<sip:+862131771200@10.0.0.1>;tag=f1"),
        ("To", "<sip:13800138000@10.9.0.1:5080>"),
        ("Call-ID", "call-1@10.0.0.1"),
        ("CSeq", f"7 {method}"),
    ]
    return Request(method, "sip:13800138000@10.9.0.1:5080", Headers(fields), b"")


def test_keys_follow_rfc_3261_17() -> None:
    invite = request()
    assert server_key(invite) == ("z9hG4bK-t1", "10.0.0.1:5060", "INVITE")
    assert server_key(request("ACK")) == server_key(invite), "an ACK matches its INVITE"
    cancel = request("CANCEL")
    assert server_key(cancel, method="INVITE") == server_key(invite)
    old = request(via="SIP/2.0/UDP 10.0.0.1:5060;branch=1234")  # RFC 2543: no magic cookie
    assert server_key(old) == ("call-1@10.0.0.1", "f1", "7", "10.0.0.1:5060", "INVITE")
    assert client_key(invite) == ("z9hG4bK-t1", "INVITE")
    answer = parse_message(
        b"SIP/2.0 180 Ringing\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-t1\r\n"
        b"From: <sip:a@h>;tag=1\r\nTo: <sip:b@h>\r\nCall-ID: c\r\nCSeq: 7 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert response_key(answer) == client_key(invite)  # type: ignore[arg-type]


def test_the_table_wakes_at_the_earliest_deadline_and_reports_a_timeout_once() -> None:
    outbox: list[Transmit] = []
    table = TxTable()
    invite = ClientInviteTransaction(
        request(), key=("z9hG4bK-t1", "INVITE"), peer=UDP, outbox=outbox, now=0.0
    )
    bye = ClientNonInviteTransaction(
        request("BYE", branch="z9hG4bK-t2"),
        key=("z9hG4bK-t2", "BYE"),
        peer=TCP,
        outbox=outbox,
        now=1.0,
    )
    for tx in (invite, bye):
        table.add_client(tx)
        table.schedule(tx)
    assert len(table) == 2 and table.client[("z9hG4bK-t2", "BYE")] is bye
    assert table.next_deadline() == T1  # Timer A of the INVITE
    ran = [(tx, timed_out) for tx, timed_out in table.run_timers(now=T1)]
    assert ran == [(invite, False)]
    table.schedule(invite)
    assert table.next_deadline() == 1.5  # Timer A again, at 2*T1
    timed_out = []
    now = 1.5
    while (deadline := table.next_deadline()) is not None and deadline <= 64 * T1 + 1.0:
        now = deadline
        for tx, expired in table.run_timers(now=now):
            if expired:
                timed_out.append((tx, now))
            table.schedule(tx)
    # Timer B (64*T1) for the INVITE, Timer F for the BYE from 1.0; each told once.
    assert timed_out == [(invite, 64 * T1), (bye, 1.0 + 64 * T1)]
    assert invite.state is TxState.TERMINATED and bye.state is TxState.TERMINATED
    assert table.next_deadline() is None and len(table) == 2, "forgetting is the caller's"
    assert table.forget(invite) and table.forget(bye) and len(table) == 0


def test_a_newer_transaction_under_a_key_survives_forgetting_the_older() -> None:
    table = TxTable()
    first = ServerNonInviteTransaction(request("OPTIONS"), key=("k",), peer=UDP, outbox=[])
    second = ServerNonInviteTransaction(request("OPTIONS"), key=("k",), peer=UDP, outbox=[])
    table.add_server(first)
    table.add_server(second)
    assert not table.forget(first)
    assert table.server[("k",)] is second and len(table) == 1


def test_a_timer_due_at_once_that_the_caller_schedules_runs_in_the_same_pass() -> None:
    outbox: list[Transmit] = []
    table = TxTable()
    options = request("OPTIONS")
    first = ServerNonInviteTransaction(options, key=("a",), peer=TCP, outbox=outbox)
    second = ServerNonInviteTransaction(options, key=("b",), peer=TCP, outbox=outbox)
    first.send_response(build_response(options, 200), now=0.0)  # Timer J: 0 s over TCP
    table.add_server(first)
    table.add_server(second)
    table.schedule(first)
    ran = []
    for tx, _ in table.run_timers(now=0.0):
        ran.append(tx)
        if tx is first:  # the reaction answers the second, also lingering 0 s
            second.send_response(build_response(options, 200), now=0.0)
            table.schedule(second)
    assert ran == [first, second]
    assert first.is_terminated and second.is_terminated
