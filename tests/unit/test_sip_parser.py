"""parse_message and StreamFramer: RFC 3261 §7 and §25 message syntax, bytes in."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipguard.errors import MessageTooLarge, SipParseError, SipProtocolError
from sipguard.sip.message import Headers, Request, Response
from sipguard.sip.parser import (
    DEFAULT_MAX_MESSAGE_SIZE,
    StreamFramer,
    parse_message,
    peek_top_via,
)
from sipguard.sip.serializer import to_bytes

pytestmark = pytest.mark.unit

MESSAGES = Path(__file__).resolve().parent.parent / "data" / "messages"

REQUEST_LINE = "INVITE sip:+8613800138000@gw.example.com;user=phone SIP/2.0"
VIA = "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds"
FROM = 'From: "Alice" <sip:+862131771200@carrier.example.net;user=phone>;tag=1928301774'
TO = "To: <sip:+8613800138000@gw.example.com;user=phone>"
CALL_ID = "Call-ID: a84b4c76e66710@192.0.2.10"
CSEQ = "CSeq: 314159 INVITE"
MANDATORY = [VIA, FROM, TO, CALL_ID, CSEQ]

_AUTO = object()


def wire(*lines: str, body: bytes = b"", content_length: object = _AUTO) -> bytes:
    """Join `lines` with CRLF, add Content-Length (unless None) and the body."""
    all_lines = list(lines)
    if content_length is _AUTO:
        all_lines.append(f"Content-Length: {len(body)}")
    elif content_length is not None:
        all_lines.append(f"Content-Length: {content_length}")
    return ("\r\n".join(all_lines) + "\r\n\r\n").encode("utf-8") + body


def invite(*extra: str, body: bytes = b"", content_length: object = _AUTO) -> bytes:
    return wire(REQUEST_LINE, *MANDATORY, *extra, body=body, content_length=content_length)


def response(
    status_line: str = "SIP/2.0 200 OK",
    *extra: str,
    body: bytes = b"",
    content_length: object = _AUTO,
) -> bytes:
    to = TO + ";tag=8321234356"
    lines = [status_line, VIA, FROM, to, CALL_ID, CSEQ, *extra]
    return wire(*lines, body=body, content_length=content_length)


def load(name: str) -> bytes:
    """A stored message: files keep LF line ends, the wire wants CRLF."""
    return (MESSAGES / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def parse_request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def parse_response(data: bytes) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


def refused(data: bytes, *, status_hint: int = 400) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message(data)
    assert info.value.status_hint == status_hint
    return info.value


# --- the basic shape --------------------------------------------------------------------------


def test_minimal_invite() -> None:
    request = parse_request(invite("Max-Forwards: 70"))
    assert request.method == "INVITE"
    assert request.uri == "sip:+8613800138000@gw.example.com;user=phone"
    assert request.body == b""
    assert request.headers.fields == (
        ("Via", "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds"),
        ("From", '"Alice" <sip:+862131771200@carrier.example.net;user=phone>;tag=1928301774'),
        ("To", "<sip:+8613800138000@gw.example.com;user=phone>"),
        ("Call-ID", "a84b4c76e66710@192.0.2.10"),
        ("CSeq", "314159 INVITE"),
        ("Max-Forwards", "70"),
    )
    assert request.call_id == "a84b4c76e66710@192.0.2.10"
    assert (request.cseq.seq, request.cseq.method) == (314159, "INVITE")
    assert request.max_forwards == 70


def test_content_length_is_framing_not_a_stored_header() -> None:
    request = parse_request(invite(body=b"abc"))
    assert "content-length" not in request.headers
    assert request.headers.get("l") is None
    assert request.body == b"abc"


def test_value_whitespace_around_colon_is_dropped() -> None:
    request = parse_request(invite("Subject   :    lunch?   ", "X-Empty:"))
    assert request.headers.get("subject") == "lunch?"
    assert request.headers.get("x-empty") == ""


def test_only_sp_and_htab_are_trimmed_from_values() -> None:
    # RFC 3261 §25.1: LWS is SP / HTAB (and the CRLF of a fold). A value ending in
    # U+3000 IDEOGRAPHIC SPACE or U+00A0 NO-BREAK SPACE keeps it.
    request = parse_request(invite("Subject: \u4f1a\u8bae\u3000", "X-Note: caf\u00e9\u00a0"))
    assert request.headers.get("subject") == "\u4f1a\u8bae\u3000"
    assert request.headers.get("x-note") == "caf\u00e9\u00a0"


def test_header_order_and_repeats_are_kept() -> None:
    request = parse_request(invite("Supported: timer", "Allow: INVITE", "Supported: 100rel"))
    assert [name for name, _ in request.headers.fields][-3:] == ["Supported", "Allow", "Supported"]
    assert request.headers.get_all("supported") == ["timer", "100rel"]
    assert request.headers.count("supported") == 2


def test_errors_are_protocol_errors_with_a_400_hint() -> None:
    error = refused(b"garbage\r\n\r\n")
    assert isinstance(error, SipProtocolError)
    assert SipParseError.status_hint == 400


# --- header names -----------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["Via", "VIA", "via", "vIA"])
def test_header_names_are_case_insensitive(spelling: str) -> None:
    data = wire(REQUEST_LINE, VIA.replace("Via", spelling, 1), FROM, TO, CALL_ID, CSEQ)
    request = parse_request(data)
    assert request.headers.fields[0][0] == "Via"
    for lookup in ("Via", "VIA", "via", "v", "V"):
        assert request.headers.get(lookup) == "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds"


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("P-ASSERTED-IDENTITY", "P-Asserted-Identity"),
        ("record-route", "Record-Route"),
        ("www-authenticate", "WWW-Authenticate"),
        ("mime-version", "MIME-Version"),
    ],
)
def test_well_known_names_get_their_canonical_spelling(spelling: str, canonical: str) -> None:
    request = parse_request(invite(f"{spelling}: x"))
    assert request.headers.fields[-1] == (canonical, "x")


def test_unknown_header_keeps_its_spelling_but_is_found_in_any_case() -> None:
    request = parse_request(invite("X-Carrier-TRUNK: pstn-7"))
    assert request.headers.fields[-1] == ("X-Carrier-TRUNK", "pstn-7")
    assert request.headers.get("x-carrier-trunk") == "pstn-7"
    assert "X-CARRIER-trunk" in request.headers


# RFC 3261 §7.3.3 and the compact forms registered since.
COMPACT = {
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
MANDATORY_LINE = {"From": FROM, "To": TO, "Call-ID": CALL_ID, "Via": VIA}


@pytest.mark.parametrize("letter", [c for pair in COMPACT for c in (pair, pair.upper())])
def test_every_compact_form_maps_to_its_canonical_name(letter: str) -> None:
    canonical = COMPACT[letter.lower()]
    if canonical == "Content-Length":
        request = parse_request(invite(f"{letter}: 4", body=b"body", content_length=None))
        assert request.body == b"body"
        assert "content-length" not in request.headers
        return
    if canonical in MANDATORY_LINE:
        full = MANDATORY_LINE[canonical]
        lines = [line if line != full else letter + full[len(canonical) :] for line in MANDATORY]
        request = parse_request(wire(REQUEST_LINE, *lines))
        index = lines.index(letter + full[len(canonical) :])
        value = full[len(canonical) + 2 :]
    else:
        value = "sample value;p=1"
        request = parse_request(invite(f"{letter}: {value}"))
        index = len(request.headers) - 1
    assert request.headers.fields[index] == (canonical, value)
    assert request.headers.get(canonical) == value
    assert request.headers.get(canonical.upper()) == value
    assert request.headers.get(letter) == value


def test_compact_and_full_forms_are_the_same_header() -> None:
    request = parse_request(invite("k: timer", "Supported: 100rel", "K: path"))
    assert request.headers.get_all("k") == ["timer", "100rel", "path"]
    assert request.headers.count("Supported") == 3
    assert [name for name, _ in request.headers.fields][-3:] == ["Supported"] * 3


# --- folding ----------------------------------------------------------------------------------


def test_folded_header_value_is_joined_with_one_space() -> None:
    # RFC 3261 §7.3.1: the fold (CRLF plus whitespace) is equivalent to one SP.
    data = invite(
        "Subject: I know you're there,",
        "     pick up the phone",
        "\tand talk to me!",
    )
    request = parse_request(data)
    assert request.headers.get("subject") == (
        "I know you're there, pick up the phone and talk to me!"
    )


def test_folded_via_is_still_parseable() -> None:
    data = wire(
        REQUEST_LINE,
        "Via: SIP/2.0/UDP 192.0.2.10:5060",
        "  ;branch=z9hG4bKfold",
        FROM,
        TO,
        CALL_ID,
        CSEQ,
    )
    request = parse_request(data)
    assert request.top_via.host == "192.0.2.10"
    assert request.top_via.branch == "z9hG4bKfold"


def test_fold_after_an_empty_first_line_adds_no_leading_space() -> None:
    # RFC 3261 §7.3.1: leading whitespace of a value is not part of it; a value
    # that starts on the continuation line is the same value.
    request = parse_request(invite("Subject:", "  lunch at noon"))
    assert request.headers.get("subject") == "lunch at noon"


def test_whitespace_only_continuation_adds_no_trailing_space() -> None:
    request = parse_request(invite("Subject: lunch", " \t"))
    assert request.headers.get("subject") == "lunch"


def test_continuation_before_any_header_is_refused() -> None:
    refused(wire(REQUEST_LINE, " folded: nothing", *MANDATORY))


# --- list headers -----------------------------------------------------------------------------


def test_comma_separated_and_repeated_via_lines_keep_their_order() -> None:
    data = wire(
        REQUEST_LINE,
        "Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com:5070"
        ";branch=z9hG4bK2",
        "v: SIP/2.0/UDP [2001:db8::1]:5060;branch=z9hG4bK3",
        "Via: SIP/2.0/TLS c.example.com;branch=z9hG4bK4;received=192.0.2.9",
        FROM,
        TO,
        CALL_ID,
        CSEQ,
    )
    request = parse_request(data)
    assert request.headers.count("via") == 3
    assert [via.branch for via in request.vias] == [f"z9hG4bK{n}" for n in (1, 2, 3, 4)]
    assert [via.transport for via in request.vias] == ["UDP", "TCP", "UDP", "TLS"]
    assert [via.host for via in request.vias] == [
        "a.example.com",
        "b.example.com",
        "[2001:db8::1]",
        "c.example.com",
    ]
    assert request.vias[1].port == 5070
    assert request.vias[3].param("received") == "192.0.2.9"
    assert request.top_via == request.vias[0]


def test_route_and_record_route_split_on_commas_outside_brackets() -> None:
    data = invite(
        "Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr;x=a,b>",
        "Route: <sip:p3.example.com;lr>",
        'Record-Route: "Edge, Proxy" <sip:rr1.example.com;lr>,<sip:rr2.example.com;lr>',
        "Record-Route: <sip:rr3.example.com;lr>",
    )
    request = parse_request(data)
    assert request.headers.get_all("route") == [
        "<sip:p1.example.com;lr>",
        "<sip:p2.example.com;lr;x=a,b>",
        "<sip:p3.example.com;lr>",
    ]
    assert request.record_routes == (
        '"Edge, Proxy" <sip:rr1.example.com;lr>',
        "<sip:rr2.example.com;lr>",
        "<sip:rr3.example.com;lr>",
    )


def test_contact_list_with_commas_in_quoted_display_names() -> None:
    data = invite(
        'Contact: "Smith, John" <sip:john@192.0.2.4>;expires=60, '
        '"Say \\"hi, there\\"" <sip:hi@192.0.2.5;transport=tcp>',
        "m: <sip:third@192.0.2.6>;q=0.1",
    )
    contacts = parse_request(data).contacts
    assert [c.display_name for c in contacts] == ["Smith, John", 'Say "hi, there"', None]
    assert [str(c.uri) for c in contacts] == [
        "sip:john@192.0.2.4",
        "sip:hi@192.0.2.5;transport=tcp",
        "sip:third@192.0.2.6",
    ]
    assert contacts[0].param("expires") == "60"
    assert contacts[2].param("q") == "0.1"


def test_star_contact_yields_no_contacts() -> None:
    data = wire(
        "REGISTER sip:registrar.example.com SIP/2.0",
        VIA,
        FROM,
        TO,
        CALL_ID,
        "CSeq: 2 REGISTER",
        "Contact: *",
        "Expires: 0",
    )
    request = parse_request(data)
    assert request.contacts == ()
    assert request.headers.get("contact") == "*"


def test_non_list_header_is_not_split_on_commas() -> None:
    data = invite("Subject: one, two, three", 'From-Note: "a, b"')
    request = parse_request(data)
    assert request.headers.get_all("subject") == ["one, two, three"]
    assert request.headers.get_all("from-note") == ['"a, b"']


def test_name_addr_headers_are_parsed_lazily_with_their_parameters() -> None:
    data = wire(
        REQUEST_LINE,
        VIA,
        'From: "Alice \\"The Boss\\" Liddell" <sip:+862131771200@carrier.example.net'
        ";user=phone>;tag=1928301774",
        "To: Bob Smith <sip:bob@example.com>",
        CALL_ID,
        CSEQ,
        "Route: <sip:edge.example.com;lr>",
    )
    request = parse_request(data)
    assert request.from_.display_name == 'Alice "The Boss" Liddell'
    assert request.from_.tag == "1928301774"
    assert request.from_.uri.param("user") == "phone"  # type: ignore[union-attr]
    assert request.to.display_name == "Bob Smith"
    assert request.to.tag is None
    assert request.headers.get_all("route") == ["<sip:edge.example.com;lr>"]


# --- Content-Length on datagrams --------------------------------------------------------------


def test_body_is_cut_to_content_length_and_surplus_is_ignored() -> None:
    data = invite(body=b"v=0\r\n", content_length=3) + b"TRAILING GARBAGE"
    assert parse_request(data).body == b"v=0"


def test_surplus_after_an_exact_body_is_ignored() -> None:
    data = invite(body=b"hello") + b"\r\n\r\nINVITE sip:x SIP/2.0\r\n"
    assert parse_request(data).body == b"hello"


def test_content_length_zero_with_trailing_bytes_gives_empty_body() -> None:
    assert parse_request(invite(content_length=0) + b"junk").body == b""


def test_missing_content_length_on_a_datagram_takes_the_rest() -> None:
    assert parse_request(invite(body=b"rest\x00of\xffit", content_length=None)).body == (
        b"rest\x00of\xffit"
    )


def test_content_length_longer_than_the_datagram_is_refused() -> None:
    refused(invite(body=b"1234", content_length=5))


@pytest.mark.parametrize(
    "value",
    ["abc", "-1", "+4", "4.0", "0x10", "", "1 2", "99999999999", "9999999999", "1e3"],
)
def test_bad_content_length_is_refused(value: str) -> None:
    refused(invite(body=b"1234", content_length=value))


def test_huge_content_length_is_refused() -> None:
    refused(invite(body=b"x", content_length="9" * 5000))


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "\uff14"])
def test_non_ascii_digits_in_content_length_are_refused(value: str) -> None:
    # RFC 3261 §25.1: DIGIT is %x30-39. SUPERSCRIPT TWO, ARABIC-INDIC ONE and
    # FULLWIDTH FOUR are Unicode digits, not SIP ones.
    refused(invite(body=b"1234", content_length=value))


def test_content_length_with_surrounding_whitespace_is_accepted() -> None:
    assert parse_request(invite(body=b"12345", content_length="  5 ")).body == b"12345"


def test_equal_repeated_content_length_is_accepted_conflicting_is_refused() -> None:
    same = invite("l: 4", body=b"1234")
    assert parse_request(same).body == b"1234"
    refused(invite("Content-Length: 3", body=b"1234"))


# --- mandatory headers and their values -------------------------------------------------------


@pytest.mark.parametrize("missing", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_request_missing_a_mandatory_header_is_refused(missing: str) -> None:
    lines = [line for line in MANDATORY if not line.startswith(missing + ":")]
    assert len(lines) == 4
    refused(wire(REQUEST_LINE, *lines))


@pytest.mark.parametrize("missing", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_response_missing_a_mandatory_header_is_refused(missing: str) -> None:
    lines = [line for line in MANDATORY if not line.startswith(missing + ":")]
    refused(wire("SIP/2.0 180 Ringing", *lines))


@pytest.mark.parametrize(
    "duplicate",
    [
        "From: <sip:mallory@example.com>;tag=2",
        "f: <sip:mallory@example.com>;tag=2",
        "To: <sip:carol@example.com>",
        "T: <sip:carol@example.com>",
        "Call-ID: other@192.0.2.10",
        "i: other@192.0.2.10",
        "CSeq: 314160 INVITE",
        "cseq: 314159 INVITE",
    ],
)
def test_duplicate_singleton_header_is_refused(duplicate: str) -> None:
    refused(invite(duplicate))


def test_cseq_method_must_match_the_request_method() -> None:
    refused(wire(REQUEST_LINE, VIA, FROM, TO, CALL_ID, "CSeq: 314159 BYE"))
    # Methods are case-sensitive (RFC 3261 §7.1).
    refused(wire(REQUEST_LINE, VIA, FROM, TO, CALL_ID, "CSeq: 314159 invite"))


def test_response_cseq_method_is_not_compared_with_anything() -> None:
    data = wire("SIP/2.0 200 OK", VIA, FROM, TO, CALL_ID, "CSeq: 2 BYE")
    assert parse_response(data).cseq.method == "BYE"


@pytest.mark.parametrize(
    "value",
    [
        "INVITE",
        "one INVITE",
        "-1 INVITE",
        "1",
        "1 ",
        "",
        "1 INVITE extra",
        "4294967296 INVITE",
        "1.5 INVITE",
        "\u00b2 INVITE",
        "\u0661 INVITE",
        "1" * 5000 + " INVITE",
    ],
)
def test_bad_cseq_is_refused(value: str) -> None:
    lines = [line if line != CSEQ else f"CSeq: {value}" for line in MANDATORY]
    refused(wire(REQUEST_LINE, *lines))


def test_largest_cseq_is_accepted() -> None:
    lines = [line if line != CSEQ else "CSeq: 4294967295 INVITE" for line in MANDATORY]
    assert parse_request(wire(REQUEST_LINE, *lines)).cseq.seq == 2**32 - 1


# --- start lines ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "INVITE sip:bob@example.com",
        "INVITE sip:bob@example.com SIP/2.0 extra",
        "INVITE  sip:bob@example.com SIP/2.0",
        "INVITE sip:bob@example.com  SIP/2.0",
        " INVITE sip:bob@example.com SIP/2.0",
        "INVITE bob.example.com SIP/2.0",
        "INV(ITE sip:bob@example.com SIP/2.0",
        "INVITE sip:bob@example.com HTTP/1.1",
        "INVITE sip:bob@example.com SIP2.0",
        "sip:bob@example.com SIP/2.0",
        "",
    ],
)
def test_bad_request_line_is_refused(line: str) -> None:
    refused(wire(line, *MANDATORY))


@pytest.mark.parametrize("version", ["SIP/3.0", "SIP/2.1", "SIP/1.0"])
def test_other_sip_versions_hint_505(version: str) -> None:
    refused(wire(f"INVITE sip:bob@example.com {version}", *MANDATORY), status_hint=505)
    refused(response(f"{version} 200 OK"), status_hint=505)


def test_request_version_is_case_insensitive_on_input() -> None:
    # RFC 3261 §7.1: "The SIP-Version string is case-insensitive".
    assert parse_request(wire("INVITE sip:bob@example.com sip/2.0", *MANDATORY)).method == "INVITE"
    refused(wire("INVITE sip:bob@example.com sip/3.0", *MANDATORY), status_hint=505)


def test_response_version_is_case_insensitive_on_input() -> None:
    assert parse_response(response("sip/2.0 180 Ringing")).status == 180
    refused(response("sip/3.0 200 OK"), status_hint=505)


def test_extension_method_is_accepted() -> None:
    lines = [line if line != CSEQ else "CSeq: 5 X-PING.v2" for line in MANDATORY]
    assert parse_request(wire("X-PING.v2 sip:bob@example.com SIP/2.0", *lines)).method == (
        "X-PING.v2"
    )


@pytest.mark.parametrize(
    "line",
    [
        "SIP/2.0 20 OK",
        "SIP/2.0 2000 OK",
        "SIP/2.0 099 Too Low",
        "SIP/2.0 700 Too High",
        "SIP/2.0 abc OK",
        "SIP/2.0",
        "SIP/2.0 +20 OK",
        "SIP/2.0 \u00b200 OK",
        "SIP/2.0 \u0662\u0660\u0660 OK",
    ],
)
def test_bad_status_line_is_refused(line: str) -> None:
    refused(response(line))


def test_response_status_and_reason_with_spaces() -> None:
    parsed = parse_response(response("SIP/2.0 481 Call/Transaction Does Not Exist"))
    assert parsed.status == 481
    assert parsed.reason == "Call/Transaction Does Not Exist"
    assert parsed.to.tag == "8321234356"


@pytest.mark.parametrize(
    ("line", "status", "reason"),
    [
        ("SIP/2.0 100 Trying", 100, "Trying"),
        ("SIP/2.0 180 ", 180, ""),
        ("SIP/2.0 199", 199, ""),
        ("SIP/2.0 603 Decline  ", 603, "Decline  "),
        ("SIP/2.0 699 N\u00e3o dispon\u00edvel", 699, "N\u00e3o dispon\u00edvel"),
    ],
)
def test_status_lines(line: str, status: int, reason: str) -> None:
    parsed = parse_response(response(line))
    assert (parsed.status, parsed.reason) == (status, reason)


# --- forbidden bytes in the head --------------------------------------------------------------


def test_nul_in_a_header_is_refused() -> None:
    refused(invite("Subject: a\x00b"))


def test_nul_in_the_request_line_is_refused() -> None:
    refused(wire("INVITE sip:bob@exam\x00ple.com SIP/2.0", *MANDATORY))


@pytest.mark.parametrize("stray", ["\r", "\n"])
def test_bare_cr_or_lf_inside_a_header_line_is_refused(stray: str) -> None:
    refused(invite(f"Subject: one{stray}two"))
    refused(invite(f"Subject: one{stray}"))


@pytest.mark.parametrize("stray", ["\r", "\n"])
def test_bare_cr_or_lf_inside_the_request_line_is_refused(stray: str) -> None:
    # Rule 1 of the parser: bare CR or LF anywhere in the head is refused.
    refused(wire(f"INVITE sip:bob@exa{stray}mple.com SIP/2.0", *MANDATORY))


@pytest.mark.parametrize("stray", ["\r", "\n"])
def test_bare_cr_or_lf_inside_the_status_line_is_refused(stray: str) -> None:
    refused(response(f"SIP/2.0 200 O{stray}K"))


def test_bare_cr_at_the_end_of_the_request_line_is_a_400_not_a_505() -> None:
    refused(wire("INVITE sip:bob@example.com SIP/2.0\r", *MANDATORY), status_hint=400)


def test_lf_only_line_ends_are_refused() -> None:
    refused(invite().replace(b"\r\n", b"\n"))


def test_non_utf8_head_is_refused() -> None:
    refused(invite().replace(b"Alice", b"Al\xe9ce"))
    refused(invite().replace(b"INVITE sip", b"INV\xffITE sip", 1))


def test_non_utf8_body_is_fine() -> None:
    assert parse_request(invite(body=b"\xe9\xff\xfe")).body == b"\xe9\xff\xfe"


def test_utf8_display_name_is_accepted() -> None:
    data = invite().replace(b'"Alice"', '"\u4e0a\u6d77\u529e\u516c\u5ba4"'.encode())
    assert parse_request(data).from_.display_name == "\u4e0a\u6d77\u529e\u516c\u5ba4"


@pytest.mark.parametrize(
    "line",
    ["Subject lunch", "Sub ject: lunch", "Sub<ject>: lunch", ": lunch", "Subj\u00e9ct: x"],
)
def test_malformed_header_line_is_refused(line: str) -> None:
    refused(invite(line))


def test_whitespace_before_the_colon_is_tolerated() -> None:
    assert parse_request(invite("Subject \t: lunch")).headers.get("subject") == "lunch"


def test_message_without_blank_line_is_refused() -> None:
    refused(invite()[:-4])
    refused(b"")
    refused(b"\r\n\r\n")


# --- leading CRLFs ----------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 2, 3])
def test_leading_crlfs_are_ignored(count: int) -> None:
    # RFC 3261 §7.5: "implementations processing SIP messages over stream-oriented
    # transports MUST ignore any CRLF appearing before the start-line".
    plain = parse_message(invite(body=b"sdp"))
    assert parse_message(b"\r\n" * count + invite(body=b"sdp")) == plain


# --- bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n",
        bytes(range(256)),
        b"\r\n\r\n\r\n",
        b"\x00" * 10,
        b"SIP/2.0 200 OK\r\n\r\n",
    ],
)
def test_body_passes_through_byte_for_byte(body: bytes) -> None:
    assert parse_request(invite("Content-Type: application/octet-stream", body=body)).body == body
    assert parse_response(response("SIP/2.0 200 OK", body=body)).body == body


# --- realistic messages -----------------------------------------------------------------------


def test_carrier_invite_with_sdp_pai_privacy_and_record_route() -> None:
    request = parse_request(load("carrier_invite_sdp.sip"))
    assert request.method == "INVITE"
    assert request.request_uri.user == "+8613800138000"  # type: ignore[union-attr]
    assert request.request_uri.param("user") == "phone"  # type: ignore[union-attr]
    assert len(request.vias) == 2
    assert request.top_via.has_param("rport") and request.top_via.param("rport") is None
    assert request.vias[1].param("received") == "198.51.100.7"
    assert request.record_routes == (
        "<sip:203.0.113.20;lr;ftag=as6f2a1b3c>",
        "<sip:198.51.100.7;lr>",
        "<sip:198.51.100.8;transport=udp;lr>",
    )
    assert request.from_.display_name == "Shanghai Office"
    assert request.from_.uri.user == "+862131771200"  # type: ignore[union-attr]
    pai = request.headers.get_all("p-asserted-identity")
    assert pai == [
        '"Shanghai Office" <sip:+862131771200@carrier.example.net;user=phone>',
        "<tel:+862131771200>",
    ]
    assert request.headers.get("privacy") == "none"
    assert request.headers.get_all("allow")[:3] == ["INVITE", "ACK", "CANCEL"]
    assert request.headers.get("session-expires") == "1800;refresher=uac"
    assert request.headers.get("content-type") == "application/sdp"
    assert request.max_forwards == 68
    assert request.body.startswith(b"v=0\r\no=CarrierSBC 1385 1386 IN IP4 203.0.113.20\r\n")
    assert request.body.endswith(b"a=ptime:20\r\n")
    assert (request.cseq.seq, request.cseq.method) == (102, "INVITE")


def test_carrier_invite_in_compact_form() -> None:
    request = parse_request(load("carrier_invite_compact.sip"))
    names = [name for name, _ in request.headers.fields]
    assert names == [
        "Via",
        "Max-Forwards",
        "From",
        "To",
        "Call-ID",
        "CSeq",
        "Contact",
        "P-Asserted-Identity",
        "Privacy",
        "Supported",
        "Supported",
        "Subject",
        "Session-Expires",
        "Content-Type",
    ]
    assert [via.host for via in request.vias] == ["192.0.2.33", "192.0.2.34"]
    assert request.from_.uri.host == "anonymous.invalid"  # type: ignore[union-attr]
    assert request.from_.tag == "9fxced76sl"
    assert request.call_id == "8a2f9e00-4f3c-11ee-be56-0242ac120002"
    assert request.contacts[0].param("expires") == "300"
    assert request.headers.get_all("privacy") == ["id;header"]
    assert request.headers.get_all("supported") == ["100rel", "timer"]
    assert request.body.endswith(b"a=sendrecv\r\n")
    assert len(request.body) == 128


def test_carrier_invite_over_ipv6_with_tel_uris() -> None:
    request = parse_request(load("carrier_invite_ipv6_tel.sip"))
    assert request.uri == "tel:+862131771200;phone-context=+86"
    assert request.request_uri.number == "+862131771200"  # type: ignore[union-attr]
    assert request.top_via.host == "[2001:db8::10]" and request.top_via.port == 5060
    assert request.vias[1].transport == "TCP" and request.vias[1].port is None
    assert request.vias[1].param("received") == "2001:db8::21"
    assert request.from_.display_name == "Bob Smith"
    assert request.from_.uri.number == "3177-1200"  # type: ignore[union-attr]
    assert request.from_.uri.params == (("phone-context", "+86-21"),)  # type: ignore[union-attr]
    assert request.to.display_name == 'Shanghai "Main" Line'
    assert str(request.contacts[0].uri) == "sip:bob@[2001:db8::10]:5060"
    assert request.headers.get("subject") == "a folded subject line"
    assert request.body == b""


def test_carrier_183_with_sdp() -> None:
    parsed = parse_response(load("response_183_progress.sip"))
    assert (parsed.status, parsed.reason) == (183, "Session Progress")
    assert parsed.top_via.param("rport") == "5060"
    assert parsed.to.tag == "callee-77"
    assert parsed.headers.get("rseq") == "1"
    assert parsed.body.startswith(b"v=0\r\n") and len(parsed.body) == 98


def test_stored_message_without_call_id_is_refused() -> None:
    refused(load("bad_invite_missing_call_id.sip"))


@pytest.mark.parametrize("name", sorted(p.name for p in MESSAGES.glob("[!b]*.sip")))
def test_stored_messages_survive_a_round_trip(name: str) -> None:
    message = parse_message(load(name))
    assert parse_message(to_bytes(message)) == message


# --- StreamFramer -----------------------------------------------------------------------------


def frames(framer: StreamFramer) -> list[bytes]:
    out: list[bytes] = []
    while (frame := framer.next_message()) is not None:
        out.append(frame)
    return out


def test_framer_returns_a_whole_message_fed_at_once() -> None:
    data = invite(body=b"v=0\r\n")
    framer = StreamFramer()
    framer.receive_data(data)
    assert frames(framer) == [data]
    assert framer.buffered == 0
    assert framer.keepalives == 0


def test_framer_byte_by_byte() -> None:
    data = invite(body=b"v=0\r\n\r\nbody with a blank line\r\n")
    framer = StreamFramer()
    got: list[bytes] = []
    for index in range(len(data)):
        framer.receive_data(data[index : index + 1])
        got.extend(frames(framer))
        if index < len(data) - 1:
            assert got == []
    assert got == [data]
    assert parse_message(got[0]) == parse_message(data)


def test_framer_several_messages_in_one_feed_and_a_partial_one() -> None:
    first = invite(body=b"one")
    second = response("SIP/2.0 180 Ringing")
    third = invite(body=b"three!")
    framer = StreamFramer()
    framer.receive_data(first + second + third[:-2])
    assert frames(framer) == [first, second]
    assert framer.buffered == len(third) - 2
    framer.receive_data(third[-2:])
    assert frames(framer) == [third]
    assert framer.buffered == 0


def test_framer_compact_content_length() -> None:
    data = invite(body=b"hello", content_length=None).replace(b"\r\n\r\n", b"\r\nl: 5\r\n\r\n", 1)
    framer = StreamFramer()
    framer.receive_data(data + data)
    assert frames(framer) == [data, data]


def test_framer_counts_double_crlf_keepalives_between_messages() -> None:
    data = invite()
    framer = StreamFramer()
    framer.receive_data(b"\r\n\r\n" + data + b"\r\n\r\n" + data + b"\r\n\r\n")
    assert frames(framer) == [data, data]
    assert framer.keepalives == 3
    assert framer.buffered == 0


def test_framer_single_crlf_is_not_a_keepalive() -> None:
    # RFC 5626 §3.5.1: the ping is CRLF CRLF; a single CRLF is the pong.
    framer = StreamFramer()
    framer.receive_data(b"\r\n")
    assert frames(framer) == []
    assert framer.keepalives == 0


def test_framer_counts_a_keepalive_split_across_reads() -> None:
    framer = StreamFramer()
    for byte in b"\r\n\r\n":
        framer.receive_data(bytes([byte]))
        assert frames(framer) == []
    assert framer.keepalives == 1
    assert framer.buffered == 0


def test_framer_missing_content_length_is_a_parse_error() -> None:
    framer = StreamFramer()
    framer.receive_data(invite(body=b"abc", content_length=None))
    with pytest.raises(SipParseError):
        framer.next_message()


@pytest.mark.parametrize("value", ["abc", "-1", "\u00b2", "99999999999"])
def test_framer_bad_content_length_is_a_parse_error(value: str) -> None:
    framer = StreamFramer()
    framer.receive_data(invite(body=b"abc", content_length=value))
    with pytest.raises(SipParseError) as info:
        framer.next_message()
    assert not isinstance(info.value, MessageTooLarge)


def test_framer_latin1_superscript_digit_is_a_parse_error() -> None:
    framer = StreamFramer()
    data = invite(body=b"abc").replace(b"Content-Length: 3", b"Content-Length: \xb2")
    assert b"\xb2" in data
    framer.receive_data(data)
    with pytest.raises(SipParseError):
        framer.next_message()


def test_framer_head_over_max_size_is_too_large() -> None:
    framer = StreamFramer(max_size=100)
    framer.receive_data(b"INVITE sip:bob@example.com SIP/2.0\r\n" + b"X: " + b"y" * 100)
    with pytest.raises(MessageTooLarge) as info:
        framer.next_message()
    assert info.value.status_hint == 513


def test_framer_declared_body_over_max_size_is_too_large_before_it_arrives() -> None:
    data = invite(body=b"x" * 100)
    framer = StreamFramer(max_size=len(data) - 1)
    framer.receive_data(data[: len(data) - 100])
    with pytest.raises(MessageTooLarge):
        framer.next_message()


def test_framer_message_of_exactly_max_size_passes() -> None:
    data = invite(body=b"x" * 100)
    framer = StreamFramer(max_size=len(data))
    framer.receive_data(data)
    assert frames(framer) == [data]


def test_framer_default_limit() -> None:
    assert DEFAULT_MAX_MESSAGE_SIZE == 65_535
    framer = StreamFramer()
    framer.receive_data(invite(content_length=DEFAULT_MAX_MESSAGE_SIZE))
    with pytest.raises(MessageTooLarge):
        framer.next_message()


def test_framer_waits_for_the_body() -> None:
    data = invite(body=b"0123456789")
    framer = StreamFramer()
    framer.receive_data(data[:-1])
    assert framer.next_message() is None
    assert framer.buffered == len(data) - 1
    framer.receive_data(data[-1:])
    assert framer.next_message() == data


# -- peek_top_via: the top Via before (or without) the full parse ------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ("Via: SIP/2.0/UDP 10.1.0.5:5071;branch=z9hG4bKa1", ("z9hG4bKa1", "10.1.0.5:5071")),
        ("v: SIP/2.0/TCP h1;branch=z9hG4bKb, SIP/2.0/UDP h2;branch=z9hG4bKc", ("z9hG4bKb", "h1")),
        ("VIA : SIP / 2.0 / UDP h3:5060 ;branch=z9hG4bKd", ("z9hG4bKd", "h3:5060")),
    ],
)
def test_peek_top_via_reads_the_first_via_value(head: str, expected: tuple[str, str]) -> None:
    data = f"ACK sip:a@b SIP/2.0\r\nCSeq: 1 ACK\r\n{head}\r\nVia: SIP/2.0/UDP x\r\n\r\n"
    via = peek_top_via(data.encode())
    assert via is not None and (via.branch, via.sent_by) == expected


@pytest.mark.parametrize(
    "data",
    [
        b"ACK sip:a@b SIP/2.0\r\nCSeq: 1 ACK\r\n\r\n",  # no Via
        b"ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n",  # no blank line
        b"ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;\r\n branch=z9hG4bKx\r\n\r\n",  # folded
        b"ACK sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h\xc3\xa9;branch=z9hG4bKx\r\n\r\n",
        b"ACK sip:a@b SIP/2.0\r\nVia: garbage\r\n\r\n",
    ],
)
def test_peek_top_via_gives_up_on_anything_unusual(data: bytes) -> None:
    assert peek_top_via(data) is None


@given(st.binary(max_size=300))
def test_peek_top_via_never_raises(data: bytes) -> None:
    peek_top_via(b"ACK sip:a@b SIP/2.0\r\nVia: " + data + b"\r\n\r\n")


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Via", "v", "FROM", "f", "X-Custom", "Route", "call-id", "to"]),
            st.text(alphabet="abc;=<>:@ ", max_size=12),
        ),
        max_size=12,
    )
)
def test_headers_from_keyed_equal_headers_built_from_names(fields: list[tuple[str, str]]) -> None:
    by_name = Headers(fields)
    keyed = Headers.from_keyed(list(by_name.fields), [key for key, _, _ in by_name.keyed()])
    assert keyed == by_name and list(keyed.keyed()) == list(by_name.keyed())
    for name in ("via", "from", "x-custom", "route", "call-id", "to", "cseq"):
        assert (keyed.get(name), keyed.get_all(name), keyed.count(name)) == (
            by_name.get(name),
            by_name.get_all(name),
            by_name.count(name),
        )
