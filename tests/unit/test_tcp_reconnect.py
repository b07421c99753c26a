"""Requests toward a TCP caller whose connection is gone (RFC 3261 §18.1.1).

The caller's connection comes from an ephemeral port where nothing listens.
While the connection is up, requests for the caller's leg go over it; once
it is gone, a new connection goes to the caller's own host at the port its
Contact (or first Route) names, never to another host.
"""

from __future__ import annotations

import random

import pytest

from sipguard.b2bua import B2BUA, CoreConfig
from sipguard.dialog import IdFactory, LocalAddress, reconnect_address
from sipguard.peer import Peer
from sipguard.sip.message import Request
from sipguard.sip.parser import parse_message
from tests.helpers import CALLEE, FixedGate, in_dialog, invite, response_to

pytestmark = pytest.mark.unit

TCP_CALLER = Peer("tcp", "10.1.0.5", 40123)  # the connection's ephemeral source port


def test_a_bye_toward_a_tcp_caller_knows_where_to_reconnect() -> None:
    core = B2BUA(
        config=CoreConfig(local={"udp": LocalAddress("udp", "10.0.0.1", 5060)}),
        gate=FixedGate(caller=TCP_CALLER),
        ids=IdFactory(random.Random(7).randbytes),
    )
    data = invite(caller=Peer("tcp", "10.1.0.5", 5071)).replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP")
    core.receive_datagram(data, TCP_CALLER, now=0.0)
    b_invite = next(parse_message(t.data) for t in core.datagrams_to_send() if t.peer == CALLEE)
    assert isinstance(b_invite, Request)
    core.receive_datagram(response_to(b_invite, 200, "OK"), CALLEE, now=0.1)
    core.datagrams_to_send()
    bye = in_dialog(
        "BYE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=(b_invite.headers.get("to") or "") + ";tag=callee-tag",
        to_value=b_invite.headers.get("from") or "",
        call_id=b_invite.call_id,
        cseq=1,
        branch="z9hG4bKcalleebye",
        sender=CALLEE,
    )

    core.receive_datagram(bye, CALLEE, now=1.0)

    (to_caller,) = [t for t in core.datagrams_to_send() if t.peer == TCP_CALLER]
    assert to_caller.data.startswith(b"BYE ")
    # the Contact says sip:caller@10.1.0.5:5071: the port that listens
    assert to_caller.reconnect == Peer("tcp", "10.1.0.5", 5071)


@pytest.mark.parametrize(
    ("route_set", "target", "expected"),
    [
        ((), "sip:caller@10.1.0.5:5071;transport=tcp", 5071),
        ((), "sip:caller@10.1.0.5;transport=tcp", 5060),
        (("<sip:10.1.0.5:5090;transport=tcp;lr>",), "sip:caller@192.0.2.1:5071", 5090),
        ((), "sip:caller@198.51.100.7:5071", 5071),  # another host named: the leg's own host
        ((), "sip:caller@10.1.0.5:40123", None),  # the connection's own port
        ((), "tel:+862131771234", 5060),
    ],
)
def test_the_reconnect_address_is_the_legs_host_at_the_addressed_port(
    route_set: tuple[str, ...], target: str, expected: int | None
) -> None:
    found = reconnect_address(TCP_CALLER, route_set, target)
    assert (None if found is None else found.port) == expected
    if found is not None:
        assert found.host == TCP_CALLER.host and found.transport == "tcp"


def test_udp_legs_never_reconnect() -> None:
    assert reconnect_address(Peer("udp", "10.1.0.5", 5071), (), "sip:c@10.1.0.5:5090") is None
