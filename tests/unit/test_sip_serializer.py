"""to_bytes, and build_response of sip/builders.py (RFC 3261 §7, §8.2.6, §18.2.1; RFC 3581 §4)."""

from __future__ import annotations

import pytest

from sipguard.sip.builders import build_response
from sipguard.sip.message import Headers, Request, Response
from sipguard.sip.parser import parse_message
from sipguard.sip.serializer import REASON_PHRASES, quoted_string, to_bytes

pytestmark = pytest.mark.unit


def parse_request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


INVITE = (
    b"INVITE sip:+8613800138000@gw.example.com;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.20:5060;branch=z9hG4bK-top;rport\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-mid, SIP/2.0/TCP 198.51.100.9"
    b";branch=z9hG4bK-low\r\n"
    b"Record-Route: <sip:203.0.113.20;lr>\r\n"
    b"Max-Forwards: 69\r\n"
    b'From: "Shanghai Office" <sip:+862131771200@carrier.example.net;user=phone>;tag=as6f\r\n'
    b"To: <sip:+8613800138000@gw.example.com;user=phone>\r\n"
    b"Call-ID: 3f1c6a2b@203.0.113.20\r\n"
    b"CSeq: 102 INVITE\r\n"
    b"Contact: <sip:+862131771200@203.0.113.20:5060>\r\n"
    b"Subject: hello\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: 5\r\n"
    b"\r\n"
    b"v=0\r\n"
)


# --- to_bytes ---------------------------------------------------------------------------------


def test_request_bytes_are_exact() -> None:
    message = Request(
        "OPTIONS",
        "sip:gw.example.com",
        Headers(
            [
                ("v", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1"),
                ("f", "<sip:sipguard@10.0.0.1>;tag=x"),
                ("t", "<sip:gw.example.com>"),
                ("i", "opt-1"),
                ("cseq", "1 OPTIONS"),
            ]
        ),
    )
    assert to_bytes(message) == (
        b"OPTIONS sip:gw.example.com SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n"
        b"From: <sip:sipguard@10.0.0.1>;tag=x\r\n"
        b"To: <sip:gw.example.com>\r\n"
        b"Call-ID: opt-1\r\n"
        b"CSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n"
        b"\r\n"
    )


def test_response_bytes_are_exact_with_a_binary_body() -> None:
    body = b"\x00\xff\r\n\r\nbin"
    message = Response(486, "Busy Here", Headers([("Call-ID", "c"), ("X-Note", "caf\u00e9")]), body)
    assert to_bytes(message) == (
        b"SIP/2.0 486 Busy Here\r\n"
        b"Call-ID: c\r\n"
        b"X-Note: caf\xc3\xa9\r\n"
        b"Content-Length: 9\r\n"
        b"\r\n" + body
    )


def test_response_with_empty_reason() -> None:
    message = Response(199, "", Headers([("Call-ID", "c")]))
    assert to_bytes(message).startswith(b"SIP/2.0 199 \r\n")


def test_parsed_message_is_rewritten_with_canonical_names_and_one_content_length() -> None:
    compact = INVITE.replace(b"Via: ", b"v: ").replace(b"Content-Length: 5", b"l: 5")
    message = parse_message(compact)
    data = to_bytes(message)
    assert data.count(b"Content-Length: 5\r\n") == 1
    assert b"\r\nl:" not in data and b"\r\nv:" not in data
    assert data.count(b"\r\nVia: ") == 2
    assert parse_message(data) == message
    assert to_bytes(parse_message(data)) == data


def test_to_bytes_of_a_parsed_canonical_message_is_the_input() -> None:
    assert to_bytes(parse_message(INVITE)) == INVITE


def test_content_length_follows_the_body_not_the_input() -> None:
    truncated = INVITE.replace(b"Content-Length: 5", b"Content-Length: 2")
    data = to_bytes(parse_message(truncated + b"surplus"))
    assert data.endswith(b"Content-Length: 2\r\n\r\nv=")


# --- build_response ---------------------------------------------------------------------------


def test_response_echoes_via_from_to_call_id_cseq_only() -> None:
    request = parse_request(INVITE)
    reply = build_response(request, 180)
    assert reply.status == 180 and reply.reason == "Ringing"
    assert reply.headers.fields == (
        ("Via", "SIP/2.0/UDP 203.0.113.20:5060;branch=z9hG4bK-top;rport"),
        (
            "Via",
            "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-mid, SIP/2.0/TCP 198.51.100.9"
            ";branch=z9hG4bK-low",
        ),
        ("From", '"Shanghai Office" <sip:+862131771200@carrier.example.net;user=phone>;tag=as6f'),
        ("To", "<sip:+8613800138000@gw.example.com;user=phone>"),
        ("Call-ID", "3f1c6a2b@203.0.113.20"),
        ("CSeq", "102 INVITE"),
    )
    assert reply.body == b""
    assert [via.branch for via in reply.vias] == ["z9hG4bK-top", "z9hG4bK-mid", "z9hG4bK-low"]


def test_response_to_a_compact_request_echoes_everything() -> None:
    compact = (
        INVITE.replace(b"Via: ", b"v: ")
        .replace(b"From: ", b"f: ")
        .replace(b"To: ", b"t: ")
        .replace(b"Call-ID: ", b"i: ")
        .replace(b"CSeq: ", b"cseq: ")
    )
    request = parse_request(compact)
    reply = build_response(request, 100)
    assert [name for name, _ in reply.headers.fields] == [
        "Via",
        "Via",
        "From",
        "To",
        "Call-ID",
        "CSeq",
    ]
    assert reply.call_id == request.call_id and reply.cseq == request.cseq


def test_to_tag_is_added_when_absent() -> None:
    request = parse_request(INVITE)
    reply = build_response(request, 200, to_tag="sg-77")
    assert reply.to.tag == "sg-77"
    assert reply.headers.get("to") == "<sip:+8613800138000@gw.example.com;user=phone>;tag=sg-77"
    assert reply.from_ == request.from_


def test_to_tag_is_added_to_an_addr_spec_to() -> None:
    request = parse_request(
        INVITE.replace(
            b"To: <sip:+8613800138000@gw.example.com;user=phone>",
            b"To: sip:+8613800138000@gw.example.com",
        )
    )
    reply = build_response(request, 486, to_tag="t9")
    assert reply.to.tag == "t9"
    assert str(reply.to.uri) == "sip:+8613800138000@gw.example.com"


def test_existing_to_tag_is_kept() -> None:
    request = parse_request(
        INVITE.replace(b"user=phone>\r\nCall-ID", b"user=phone>;tag=callee-1\r\nCall-ID")
    )
    assert request.to.tag == "callee-1"
    reply = build_response(request, 200, to_tag="sg-77")
    assert reply.to.tag == "callee-1"
    assert reply.headers.get("to") == request.headers.get("to")


def test_no_to_tag_requested_leaves_to_alone() -> None:
    request = parse_request(INVITE)
    assert build_response(request, 100).headers.get("to") == request.headers.get("to")


def test_reason_defaults_and_overrides() -> None:
    request = parse_request(INVITE)
    assert build_response(request, 403).reason == "Forbidden"
    assert build_response(request, 403, "Caller ID Not Allowed").reason == "Caller ID Not Allowed"
    assert build_response(request, 499).reason == "Unknown"
    assert REASON_PHRASES[513] == "Message Too Large"


def test_extra_headers_and_body_come_after_the_echoed_ones() -> None:
    request = parse_request(INVITE)
    reply = build_response(
        request,
        200,
        to_tag="t",
        extra=[("Contact", "<sip:sipguard@10.0.0.1>"), ("Content-Type", "application/sdp")],
        body=b"v=0\r\n",
    )
    assert [name for name, _ in reply.headers.fields][-2:] == ["Contact", "Content-Type"]
    assert reply.body == b"v=0\r\n"
    assert parse_message(to_bytes(reply)) == reply


# --- free text in answers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("caller number is suspended", '"caller number is suspended"'),
        ('say "hi" \\o/', '"say \\"hi\\" \\\\o/"'),
        ("From '\n'", "\"From '?'\""),
        ("a\r\nX-Injected: 1", '"a??X-Injected: 1"'),
        ("nul\x00 del\x7f tab\t nel\x85 ls\u2028", '"nul? del? tab? nel? ls?"'),
        ("\ud800 lone surrogate", '"? lone surrogate"'),
        ("中文 ok", '"中文 ok"'),
        ("", '""'),
    ],
)
def test_quoted_string_escapes_quotes_and_replaces_what_no_header_may_carry(
    text: str, quoted: str
) -> None:
    assert quoted_string(text) == quoted


def test_quoted_string_keeps_at_most_its_limit() -> None:
    assert quoted_string("x" * 500) == '"' + "x" * 200 + '"'
    assert quoted_string("abcdef", limit=3) == '"abc"'


def test_an_answer_with_hostile_warning_text_survives_the_wire() -> None:
    request = parse_request(INVITE)
    text = "From '\r\n\x00\"\\'"
    response = build_response(request, 403, extra=[("Warning", f"399 h {quoted_string(text)}")])
    parsed = parse_message(to_bytes(response))
    assert parsed.headers.get("warning") == '399 h "From \'???\\"\\\\\'"'


# --- received / rport on the top Via ----------------------------------------------------------


def test_rport_and_received_stamp_only_the_top_via() -> None:
    request = parse_request(INVITE)
    reply = build_response(request, 100, received="192.0.2.200", rport=40123)
    fields = reply.headers.fields
    assert fields[0] == (
        "Via",
        "SIP/2.0/UDP 203.0.113.20:5060;branch=z9hG4bK-top;received=192.0.2.200;rport=40123",
    )
    assert fields[1] == request.headers.fields[1]
    assert reply.top_via.param("rport") == "40123"
    assert reply.top_via.param("received") == "192.0.2.200"
    assert reply.vias[1:] == request.vias[1:]
    assert all(via.param("received") is None for via in reply.vias[1:])


def test_rport_value_only_when_the_request_asked_for_it() -> None:
    # RFC 3581 §4: the server adds the port only to a Via that carries `rport`.
    request = parse_request(INVITE.replace(b"z9hG4bK-top;rport", b"z9hG4bK-top"))
    reply = build_response(request, 100, received="192.0.2.200", rport=40123)
    assert not reply.top_via.has_param("rport")
    assert reply.top_via.param("received") == "192.0.2.200"
    assert reply.top_via.branch == "z9hG4bK-top"


def test_rport_without_received() -> None:
    request = parse_request(INVITE)
    reply = build_response(request, 100, rport=5060)
    assert reply.top_via.param("rport") == "5060"
    assert not reply.top_via.has_param("received")


def test_existing_received_and_rport_are_replaced_not_repeated() -> None:
    request = parse_request(
        INVITE.replace(b"z9hG4bK-top;rport", b"z9hG4bK-top;rport=1;received=10.1.1.1")
    )
    reply = build_response(request, 100, received="192.0.2.200", rport=40123)
    names = [name for name, _ in reply.top_via.params]
    assert names.count("received") == 1 and names.count("rport") == 1
    assert reply.top_via.param("received") == "192.0.2.200"
    assert reply.top_via.param("rport") == "40123"


def test_stamping_a_comma_joined_top_via_line_keeps_the_rest_of_the_line() -> None:
    joined = INVITE.replace(b"z9hG4bK-top;rport\r\nVia: ", b"z9hG4bK-top;rport, ")
    request = parse_request(joined)
    assert request.headers.count("via") == 1
    reply = build_response(request, 100, received="192.0.2.200", rport=40123)
    assert reply.headers.fields[0] == (
        "Via",
        "SIP/2.0/UDP 203.0.113.20:5060;branch=z9hG4bK-top;received=192.0.2.200;rport=40123"
        ", SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-mid"
        ", SIP/2.0/TCP 198.51.100.9;branch=z9hG4bK-low",
    )
    assert [via.branch for via in reply.vias] == ["z9hG4bK-top", "z9hG4bK-mid", "z9hG4bK-low"]
    assert reply.vias[1:] == request.vias[1:]


def test_stamping_an_ipv6_top_via() -> None:
    request = parse_request(
        INVITE.replace(b"UDP 203.0.113.20:5060;branch", b"UDP [2001:db8::10]:5060;branch")
    )
    reply = build_response(request, 100, received="2001:db8::99", rport=5062)
    assert reply.top_via.host == "[2001:db8::10]" and reply.top_via.port == 5060
    assert reply.top_via.param("received") == "2001:db8::99"
    assert reply.top_via.param("rport") == "5062"


def test_no_stamping_leaves_the_via_lines_untouched() -> None:
    request = parse_request(INVITE)
    reply = build_response(request, 100)
    assert reply.headers.get_all("via") == request.headers.get_all("via")
    assert reply.headers.count("via") == request.headers.count("via")


def test_built_response_survives_the_wire() -> None:
    request = parse_request(INVITE)
    reply = build_response(request, 403, to_tag="x", received="192.0.2.1", rport=1)
    again = parse_message(to_bytes(reply))
    assert again == reply
    assert to_bytes(again) == to_bytes(reply)
