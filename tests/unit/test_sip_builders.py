"""The requests of an INVITE's own client transaction: CANCEL (RFC 3261 §9.1)
and the ACK of a non-2xx final response (§17.1.1.3), from one builder."""

from __future__ import annotations

import pytest

from sipguard.sip.builders import ack_for_failure, cancel_for
from sipguard.sip.message import Request, Response
from sipguard.sip.parser import parse_message
from sipguard.sip.serializer import to_bytes

pytestmark = pytest.mark.unit

INVITE = (
    b"INVITE sip:02161234567@192.0.2.50:5080 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-b1;rport\r\n"
    b"Route: <sip:192.0.2.40;lr>, <sip:192.0.2.41;lr>\r\n"
    b"Max-Forwards: 69\r\n"
    b"From: <sip:+862131771234@192.0.2.10>;tag=sg-from\r\n"
    b"To: <sip:02161234567@192.0.2.50:5080>\r\n"
    b"Call-ID: b-leg-1@192.0.2.10\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:sipguard@192.0.2.10:5060;transport=udp>\r\n"
    b"Content-Length: 0\r\n\r\n"
)
BUSY = (
    b"SIP/2.0 486 Busy Here\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-b1;rport=5060\r\n"
    b"From: <sip:+862131771234@192.0.2.10>;tag=sg-from\r\n"
    b"To: <sip:02161234567@192.0.2.50:5080>;tag=callee-9\r\n"
    b"Call-ID: b-leg-1@192.0.2.10\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def parsed_invite() -> Request:
    message = parse_message(INVITE)
    assert isinstance(message, Request)
    return message


def test_cancel_copies_what_identifies_the_invite() -> None:
    cancel = cancel_for(parsed_invite())
    assert to_bytes(cancel) == (
        b"CANCEL sip:02161234567@192.0.2.50:5080 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-b1;rport\r\n"
        b"Route: <sip:192.0.2.40;lr>\r\n"
        b"Route: <sip:192.0.2.41;lr>\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:+862131771234@192.0.2.10>;tag=sg-from\r\n"
        b"To: <sip:02161234567@192.0.2.50:5080>\r\n"
        b"Call-ID: b-leg-1@192.0.2.10\r\n"
        b"CSeq: 7 CANCEL\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def test_ack_of_a_failure_takes_the_to_of_the_response() -> None:
    response = parse_message(BUSY)
    assert isinstance(response, Response)
    ack = ack_for_failure(parsed_invite(), response)
    cancel = cancel_for(parsed_invite())
    assert ack.method == "ACK" and ack.uri == cancel.uri
    assert ack.headers.get("to") == "<sip:02161234567@192.0.2.50:5080>;tag=callee-9"
    assert ack.headers.get("cseq") == "7 ACK"
    # Everything else is the CANCEL's: one Via (the INVITE's top one), its routes.
    same = [(n, v) for n, v in ack.headers.fields if n not in ("To", "CSeq")]
    assert same == [(n, v) for n, v in cancel.headers.fields if n not in ("To", "CSeq")]
    assert ack.body == b""
