"""Headers, the header-name registry and the lazy accessors of Request/Response."""

from __future__ import annotations

import dataclasses

import pytest

from sipguard.errors import SipParseError
from sipguard.sip.headers import COMPACT_FORMS, LIST_HEADERS, canonical_name, header_key
from sipguard.sip.message import CSeq, Headers, Request, Response, parse_cseq
from sipguard.sip.uri import SipUri

pytestmark = pytest.mark.unit

BASE = [
    ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1"),
    ("From", "<sip:alice@example.com>;tag=1"),
    ("To", "<sip:bob@example.com>"),
    ("Call-ID", "call-1"),
    ("CSeq", "1 INVITE"),
]


def request(*extra: tuple[str, str], base: list[tuple[str, str]] | None = None) -> Request:
    fields = BASE if base is None else base
    return Request("INVITE", "sip:bob@example.com", Headers([*fields, *extra]))


# --- registry ---------------------------------------------------------------------------------


def test_every_compact_form_expands() -> None:
    expected = {
        "f": "From",
        "t": "To",
        "i": "Call-ID",
        "v": "Via",
        "m": "Contact",
        "l": "Content-Length",
        "c": "Content-Type",
        "k": "Supported",
        "s": "Subject",
        "e": "Content-Encoding",
        "o": "Event",
        "u": "Allow-Events",
        "r": "Refer-To",
        "b": "Referred-By",
        "x": "Session-Expires",
        "y": "Identity",
    }
    for letter, full in expected.items():
        assert COMPACT_FORMS[letter] == full
        assert canonical_name(letter) == full
        assert canonical_name(letter.upper()) == full
        assert header_key(letter) == full.lower()
        assert header_key(letter.upper()) == full.lower()
        assert header_key(full.upper()) == full.lower()


def test_canonical_names() -> None:
    assert canonical_name("call-id") == "Call-ID"
    assert canonical_name("CSEQ") == "CSeq"
    assert canonical_name("www-authenticate") == "WWW-Authenticate"
    assert canonical_name("p-asserted-identity") == "P-Asserted-Identity"
    assert canonical_name("X-Odd-CASE") == "X-Odd-CASE"
    assert header_key("X-Odd-CASE") == "x-odd-case"


def test_list_headers_include_the_routing_set() -> None:
    assert {"via", "route", "record-route", "contact", "p-asserted-identity"} <= LIST_HEADERS
    assert not {"from", "to", "call-id", "cseq", "subject"} & LIST_HEADERS


# --- Headers ----------------------------------------------------------------------------------


def test_headers_canonicalise_names_and_look_up_in_any_spelling() -> None:
    headers = Headers(
        [("v", "SIP/2.0/UDP a"), ("VIA", "SIP/2.0/UDP b, SIP/2.0/UDP c"), ("x-A", "1")]
    )
    assert headers.fields == (
        ("Via", "SIP/2.0/UDP a"),
        ("Via", "SIP/2.0/UDP b, SIP/2.0/UDP c"),
        ("x-A", "1"),
    )
    assert headers.get("via") == headers.get("V") == "SIP/2.0/UDP a"
    assert headers.get_all("Via") == ["SIP/2.0/UDP a", "SIP/2.0/UDP b", "SIP/2.0/UDP c"]
    assert headers.count("v") == 2
    assert headers.get("X-a") == "1"
    assert headers.get("missing") is None
    assert headers.get_all("missing") == []
    assert headers.count("missing") == 0
    assert "VIA" in headers and "x-a" in headers and "missing" not in headers
    assert 42 not in headers
    assert len(headers) == 3
    assert list(headers) == list(headers.fields)


def test_headers_equality_and_hash_follow_the_canonical_fields() -> None:
    one = Headers([("f", "a"), ("t", "b")])
    two = Headers([("FROM", "a"), ("to", "b")])
    assert one == two and hash(one) == hash(two)
    assert one != Headers([("To", "b"), ("From", "a")])
    assert one != [("From", "a"), ("To", "b")]
    assert "From" in repr(one)


def test_non_list_header_values_are_not_split() -> None:
    headers = Headers([("Subject", "a, b"), ("Subject", "c")])
    assert headers.get_all("subject") == ["a, b", "c"]


# --- CSeq -------------------------------------------------------------------------------------


def test_parse_cseq() -> None:
    assert parse_cseq("314159 INVITE") == CSeq(314159, "INVITE")
    assert parse_cseq("  0   BYE ") == CSeq(0, "BYE")
    assert str(CSeq(7, "ACK")) == "7 ACK"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "INVITE",
        "1",
        "x INVITE",
        "1 IN VITE",
        "4294967296 INVITE",
        "\u00b2 INVITE",
        "\u0661 INVITE",
        "9" * 5000 + " INVITE",
    ],
)
def test_parse_cseq_refuses(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_cseq(value)


# --- accessors --------------------------------------------------------------------------------


def test_accessors_parse_lazily_and_cache() -> None:
    message = request(
        ("Contact", '"A, B" <sip:a@192.0.2.1>, <sip:b@192.0.2.2>'),
        ("Record-Route", "<sip:rr1;lr>, <sip:rr2;lr>"),
        ("Record-Route", "<sip:rr3;lr>"),
        ("Max-Forwards", " 70 "),
    )
    assert message.call_id == "call-1"
    assert message.cseq == CSeq(1, "INVITE")
    assert message.from_.tag == "1"
    assert message.to.tag is None
    assert [c.display_name for c in message.contacts] == ["A, B", None]
    assert message.record_routes == ("<sip:rr1;lr>", "<sip:rr2;lr>", "<sip:rr3;lr>")
    assert message.max_forwards == 70
    assert message.request_uri == SipUri(scheme="sip", user="bob", host="example.com")
    assert message.top_via is message.top_via
    assert message.from_ is message.from_


def test_an_accessor_computes_once_and_keeps_its_value_on_the_message() -> None:
    message = request()
    assert "cseq" not in vars(message)
    first = message.cseq
    assert vars(message)["cseq"] is first is message.cseq
    assert Request.cseq.__doc__ == "The parsed CSeq header."


def test_accessors_do_not_change_equality() -> None:
    one, two = request(), request()
    assert one.from_.tag == "1"
    assert one == two and hash(one) == hash(two)


def test_messages_are_frozen() -> None:
    message = request()
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.method = "BYE"  # type: ignore[misc]
    reply = Response(200, "OK", message.headers)
    with pytest.raises(dataclasses.FrozenInstanceError):
        reply.status = 404  # type: ignore[misc]


def test_absent_max_forwards_is_none() -> None:
    assert request().max_forwards is None


@pytest.mark.parametrize("value", ["0", "70", "255", "007", "0068"])
def test_good_max_forwards(value: str) -> None:
    assert request(("Max-Forwards", value)).max_forwards == int(value)


@pytest.mark.parametrize(
    "value", ["256", "0256", "00000000070", "-1", "abc", "", "7 0", "\u00b2", "\u0667\u0660"]
)
def test_bad_max_forwards_is_a_parse_error(value: str) -> None:
    with pytest.raises(SipParseError):
        _ = request(("Max-Forwards", value)).max_forwards


def test_top_via_is_the_first_value_of_the_first_via_line() -> None:
    message = request(
        base=[("Via", "SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2"), *BASE[1:]]
    )
    assert message.top_via.host == "a"
    assert [via.host for via in message.vias] == ["a", "b"]


@pytest.mark.parametrize("value", ["", " ", ",", " , "])
def test_empty_via_is_a_parse_error_not_a_crash(value: str) -> None:
    message = request(base=[("Via", value), *BASE[1:]])
    with pytest.raises(SipParseError):
        _ = message.top_via


def test_missing_via_is_a_parse_error() -> None:
    message = request(base=BASE[1:])
    with pytest.raises(SipParseError):
        _ = message.top_via
    assert message.vias == ()


def test_star_contact_is_skipped() -> None:
    assert request(("Contact", "*")).contacts == ()
