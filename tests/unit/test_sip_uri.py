"""URIs, name-addr, Via values and list splitting (RFC 3261 §19.1, §20.10, §20.42; RFC 3966)."""

from __future__ import annotations

import pytest

from sipguard.errors import SipParseError
from sipguard.sip.uri import (
    AbsoluteUri,
    NameAddr,
    SipUri,
    TelUri,
    Via,
    format_params,
    parse_name_addr,
    parse_params,
    parse_uri,
    parse_via,
    split_list,
)

pytestmark = pytest.mark.unit


# --- sip: and sips: ---------------------------------------------------------------------------


def test_full_sip_uri() -> None:
    uri = parse_uri("sip:alice:secretword@atlanta.com:5061;transport=tcp;lr?subject=project%20x")
    assert uri == SipUri(
        scheme="sip",
        user="alice",
        host="atlanta.com",
        port=5061,
        password="secretword",
        params=(("transport", "tcp"), ("lr", None)),
        headers="subject=project%20x",
    )
    assert uri.param("transport") == "tcp"
    assert uri.param("lr") is None and uri.has_param("lr")
    assert not uri.has_param("maddr")
    assert uri.host_port == "atlanta.com:5061"


def test_phone_number_user_with_user_phone() -> None:
    uri = parse_uri("sip:+8613800138000@gw.example.com;user=phone")
    assert isinstance(uri, SipUri)
    assert (uri.user, uri.host, uri.port) == ("+8613800138000", "gw.example.com", None)
    assert uri.param("user") == "phone"
    assert uri.host_port == "gw.example.com"


def test_user_part_with_its_own_parameters_and_an_at_in_headers() -> None:
    uri = parse_uri("sip:+15551234567;npdi;rn=+15550000000@tn.example.com;user=phone?h=a@b")
    assert isinstance(uri, SipUri)
    assert uri.user == "+15551234567;npdi;rn=+15550000000"
    assert uri.host == "tn.example.com"
    assert uri.params == (("user", "phone"),)
    assert uri.headers == "h=a@b"


def test_sips_and_scheme_case() -> None:
    uri = parse_uri("SIPS:Bob@Biloxi.COM")
    assert isinstance(uri, SipUri)
    assert uri.scheme == "sips"
    assert uri.user == "Bob"  # the user part is case-sensitive (RFC 3261 §19.1.4)
    assert uri.host == "Biloxi.COM"
    assert str(uri) == "sips:Bob@Biloxi.COM"


def test_host_only_uri() -> None:
    uri = parse_uri("sip:192.0.2.4")
    assert uri == SipUri(scheme="sip", user=None, host="192.0.2.4")
    assert str(uri) == "sip:192.0.2.4"


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("sip:[2001:db8::1]:5060", "[2001:db8::1]", 5060),
        ("sip:alice@[2001:db8::1]", "[2001:db8::1]", None),
        ("sips:[::1]:5061;transport=tls", "[::1]", 5061),
        ("sip:bob@[2001:db8:0:0:0:0:0:ff]:65535", "[2001:db8:0:0:0:0:0:ff]", 65535),
    ],
)
def test_ipv6_references(text: str, host: str, port: int | None) -> None:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    assert (uri.host, uri.port) == (host, port)
    assert str(uri) == text


def test_ipv6_host_port() -> None:
    uri = parse_uri("sip:[2001:db8::1]:5060")
    assert isinstance(uri, SipUri)
    assert uri.host_port == "[2001:db8::1]:5060"


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice:secretword@atlanta.com:5061;transport=tcp;lr?subject=project",
        "sip:+8613800138000@gw.example.com;user=phone",
        "sips:bob@biloxi.com",
        "sip:192.0.2.4:5070",
        "sip:alice@[2001:db8::1]:5060;maddr=[2001:db8::2]",
        "sip:carol@chicago.com;security=on;method=REGISTER?to=alice%40atlanta.com",
    ],
)
def test_sip_uri_text_round_trips(text: str) -> None:
    assert str(parse_uri(text)) == text
    assert parse_uri(str(parse_uri(text))) == parse_uri(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "sip",
        "sip:",
        ":alice@example.com",
        "sip:@example.com",
        "sip:alice@",
        "sip:alice@example.com:",
        "sip:alice@example.com:0",
        "sip:alice@example.com:65536",
        "sip:alice@example.com:50x",
        "sip:alice@example.com:-5",
        "sip:[2001:db8::1",
        "sip:[2001:db8::1]5060",
        "sip:2001:db8::1",
        "sip:ali ce@exa mple.com",
        'sip:"alice"@exa"mple.com',
        "sip:<alice>",
        "sip:alice@example.com;=x",
        "tel:",
        "tel:;phone-context=+86",
        "1sip:alice@example.com",
        "\u00e9t\u00e9:x",
    ],
)
def test_bad_uris_are_refused(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


@pytest.mark.parametrize("port", ["\u00b2", "\u0665\u0660\u0666\u0660", "1" * 5000])
def test_non_ascii_or_absurd_ports_are_refused_as_parse_errors(port: str) -> None:
    # RFC 3261 §25.1: port = 1*DIGIT, DIGIT = %x30-39.
    with pytest.raises(SipParseError):
        parse_uri(f"sip:alice@example.com:{port}")


# --- tel: -------------------------------------------------------------------------------------


def test_global_tel_uri_with_visual_separators() -> None:
    uri = parse_uri("tel:+86-21-3177-1200;phone-context=example.cn")
    assert uri == TelUri("+86-21-3177-1200", (("phone-context", "example.cn"),))
    assert str(uri) == "tel:+86-21-3177-1200;phone-context=example.cn"


def test_local_tel_uri_with_phone_context() -> None:
    uri = parse_uri("TEL:3177-1200;Phone-Context=+86-21;ext=101")
    assert isinstance(uri, TelUri)
    assert uri.number == "3177-1200"
    assert uri.params == (("phone-context", "+86-21"), ("ext", "101"))
    assert str(uri) == "tel:3177-1200;phone-context=+86-21;ext=101"


def test_bare_tel_uri() -> None:
    assert parse_uri("tel:+862131771200") == TelUri("+862131771200")


# --- other schemes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "scheme", "rest"),
    [
        ("urn:service:sos", "urn", "service:sos"),
        ("http://www.example.com/alice/photo.jpg", "http", "//www.example.com/alice/photo.jpg"),
        ("mailto:alice@example.com?subject=hi", "mailto", "alice@example.com?subject=hi"),
        ("im:alice@example.com", "im", "alice@example.com"),
        ("x-carrier.v2+tag:abc;def=1", "x-carrier.v2+tag", "abc;def=1"),
    ],
)
def test_unknown_schemes_are_kept_verbatim(text: str, scheme: str, rest: str) -> None:
    uri = parse_uri(text)
    assert uri == AbsoluteUri(scheme, rest)
    assert str(uri) == text


# --- parameters -------------------------------------------------------------------------------


def test_parameters_keep_order_lower_case_names_and_value_case() -> None:
    params = parse_params(';Transport=TCP; LR ;maddr = 239.255.255.1;TTL=15;x="A;B"')
    assert params == (
        ("transport", "TCP"),
        ("lr", None),
        ("maddr", "239.255.255.1"),
        ("ttl", "15"),
        ("x", '"A;B"'),
    )
    assert format_params(params) == ';transport=TCP;lr;maddr=239.255.255.1;ttl=15;x="A;B"'


def test_parameters_without_leading_semicolon_and_empty_parts() -> None:
    assert parse_params("a=1;;b") == (("a", "1"), ("b", None))
    assert parse_params("") == ()
    assert parse_params("a=") == (("a", ""),)


def test_parameter_errors() -> None:
    with pytest.raises(SipParseError):
        parse_params(";=1")
    with pytest.raises(SipParseError):
        parse_params(';x="unterminated')


def test_quoted_parameter_value_may_contain_an_escaped_quote() -> None:
    # RFC 3261 §25.1: quoted-string = SWS DQUOTE *(qdtext / quoted-pair) DQUOTE,
    # quoted-pair = "\\" (...); the escaped quote does not end the string.
    assert parse_params(';reason="say \\";hi\\"";q=1') == (
        ("reason", '"say \\";hi\\""'),
        ("q", "1"),
    )


# --- name-addr --------------------------------------------------------------------------------


def test_quoted_display_name_with_escaped_quotes_and_backslash() -> None:
    value = parse_name_addr('"The \\"Boss\\" \\\\ Co" <sip:boss@example.com>;tag=a6c85cf')
    assert value.display_name == 'The "Boss" \\ Co'
    assert value.uri == SipUri(scheme="sip", user="boss", host="example.com")
    assert value.tag == "a6c85cf"


def test_quoted_display_name_may_hold_brackets_semicolons_and_commas() -> None:
    value = parse_name_addr('"<Not> a; uri, really" <sip:x@example.com>')
    assert value.display_name == "<Not> a; uri, really"
    assert str(value.uri) == "sip:x@example.com"
    assert value.params == ()


def test_quoted_display_name_without_space_before_bracket() -> None:
    value = parse_name_addr('"Alice"<sip:alice@atlanta.com>')
    assert value.display_name == "Alice"


def test_empty_quoted_display_name() -> None:
    value = parse_name_addr('"" <sip:anonymous@anonymous.invalid>')
    assert value.display_name == ""
    assert str(value) == '"" <sip:anonymous@anonymous.invalid>'


def test_token_display_name() -> None:
    value = parse_name_addr("Bob Smith <sip:bob@biloxi.com>;tag=456248")
    assert value.display_name == "Bob Smith"
    assert value.tag == "456248"


def test_uri_parameters_and_header_parameters_are_told_apart() -> None:
    value = parse_name_addr(
        "<sip:+862131771200@carrier.example.net;user=phone>;tag=as6f2a1b3c;X-Note=A"
    )
    assert value.display_name is None
    assert isinstance(value.uri, SipUri)
    assert value.uri.params == (("user", "phone"),)
    assert value.params == (("tag", "as6f2a1b3c"), ("x-note", "A"))
    assert value.param("x-note") == "A"
    assert value.tag == "as6f2a1b3c"


def test_addr_spec_parameters_are_header_parameters() -> None:
    # RFC 3261 §20.10: without <>, parameters after the URI belong to the header.
    value = parse_name_addr("sip:+862131771200@carrier.example.net;tag=88sja8x;user=phone")
    assert value.uri == SipUri(scheme="sip", user="+862131771200", host="carrier.example.net")
    assert value.params == (("tag", "88sja8x"), ("user", "phone"))
    assert value.tag == "88sja8x"


def test_route_with_lr() -> None:
    value = parse_name_addr("<sip:p1.example.com;lr>")
    assert isinstance(value.uri, SipUri)
    assert value.uri.has_param("lr")
    assert value.params == ()


def test_tel_name_addr() -> None:
    value = parse_name_addr("<tel:+86-21-3177-1200;phone-context=example.cn>;tag=t1")
    assert value.uri == TelUri("+86-21-3177-1200", (("phone-context", "example.cn"),))
    assert value.tag == "t1"


def test_unknown_scheme_in_name_addr() -> None:
    value = parse_name_addr("<urn:service:sos>")
    assert value.uri == AbsoluteUri("urn", "service:sos")


def test_name_addr_with_ipv6() -> None:
    value = parse_name_addr("<sip:bob@[2001:db8::10]:5060;transport=udp>;expires=60")
    assert isinstance(value.uri, SipUri)
    assert (value.uri.host, value.uri.port) == ("[2001:db8::10]", 5060)
    assert value.param("expires") == "60"


def test_with_params_replaces_header_parameters() -> None:
    value = parse_name_addr('"A" <sip:a@example.com>;tag=1')
    assert value.with_params((("tag", "2"),)) == NameAddr(value.uri, "A", (("tag", "2"),))


@pytest.mark.parametrize(
    "text",
    [
        '"Alice" <sip:alice@atlanta.com>;tag=1',
        '"The \\"Boss\\" \\\\ Co" <sip:boss@example.com>',
        "<sip:+862131771200@carrier.example.net;user=phone>;tag=as6f2a1b3c",
        "<tel:+862131771200>",
        '"" <sip:anonymous@anonymous.invalid>;tag=x',
    ],
)
def test_name_addr_text_round_trips(text: str) -> None:
    value = parse_name_addr(text)
    assert str(value) == text
    assert parse_name_addr(str(value)) == value


def test_token_display_name_is_quoted_when_written() -> None:
    value = parse_name_addr("Bob <sip:bob@biloxi.com>")
    assert str(value) == '"Bob" <sip:bob@biloxi.com>'
    assert parse_name_addr(str(value)) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        '"unterminated <sip:a@example.com>',
        '"Alice" sip:alice@example.com',
        "<sip:alice@example.com",
        "<sip:alice@example.com> trailing",
        "<>",
        "<not a uri>",
        "Alice",
        "<sip:alice@example.com>;=1",
    ],
)
def test_bad_name_addrs_are_refused(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(text)


# --- Via --------------------------------------------------------------------------------------


def test_via_with_branch_received_and_valueless_rport() -> None:
    via = parse_via(
        "SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;rport;received=1.2.3.4"
    )
    assert via == Via(
        "UDP",
        "pc33.atlanta.com",
        5066,
        (("branch", "z9hG4bK776asdhds"), ("rport", None), ("received", "1.2.3.4")),
    )
    assert via.branch == "z9hG4bK776asdhds"
    assert via.has_param("rport") and via.param("rport") is None
    assert via.sent_by == "pc33.atlanta.com:5066"
    assert (
        str(via)
        == "SIP/2.0/UDP pc33.atlanta.com:5066;branch=z9hG4bK776asdhds;rport;received=1.2.3.4"
    )


def test_via_transport_is_upper_cased_and_port_is_optional() -> None:
    via = parse_via("sip/2.0/tcp  client.biloxi.example.com ;branch=z9hG4bK74bf9")
    assert via.transport == "TCP"
    assert via.host == "client.biloxi.example.com"
    assert via.port is None
    assert via.sent_by == "client.biloxi.example.com"
    assert via.branch == "z9hG4bK74bf9"


def test_via_ipv6_sent_by() -> None:
    via = parse_via("SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKas3-111;rport=5070")
    assert (via.host, via.port) == ("[2001:db8::9:1]", 5070)
    assert via.param("rport") == "5070"
    assert via.sent_by == "[2001:db8::9:1]:5070"


def test_via_without_branch() -> None:
    assert parse_via("SIP/2.0/UDP 192.0.2.1").branch is None


def test_via_with_whitespace_around_slashes() -> None:
    # RFC 3261 §25.1: SLASH = SWS "/" SWS; RFC 4475 §3.1.1.1 ("wsinv") carries
    # exactly this Via in a valid message.
    via = parse_via("SIP / 2.0 / UDP 192.0.2.2;branch=390skdjuw")
    assert via.transport == "UDP"
    assert via.host == "192.0.2.2"
    assert via.branch == "390skdjuw"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SIP/2.0 host",
        "SIP/3.0/UDP host",
        "HTTP/2.0/UDP host",
        "SIP/2.0/U-DP host",
        "SIP/2.0/UDP",
        "SIP/2.0/UDP host:0",
        "SIP/2.0/UDP host:99999",
        "SIP/2.0/UDP [::1",
        "SIP/2.0/UDP host;=x",
    ],
)
def test_bad_vias_are_refused(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_via(text)


# --- split_list -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "items"),
    [
        ("a", ["a"]),
        ("", []),
        ("  ", []),
        ("a, b,c", ["a", "b", "c"]),
        ("a,,b, ", ["a", "b"]),
        (
            '"Doe, John" <sip:j@d.com>, <sip:x@y.com>',
            ['"Doe, John" <sip:j@d.com>', "<sip:x@y.com>"],
        ),
        ("<sip:a@b;x=1,2>, <sip:c@d>", ["<sip:a@b;x=1,2>", "<sip:c@d>"]),
        ('"a \\"b, c\\" d" <sip:x@y>, <sip:z@w>', ['"a \\"b, c\\" d" <sip:x@y>', "<sip:z@w>"]),
        ('"back\\\\", <sip:z@w>', ['"back\\\\"', "<sip:z@w>"]),
        (
            "SIP/2.0/UDP a;branch=z9hG4bK1 , SIP/2.0/UDP b;branch=z9hG4bK2",
            ["SIP/2.0/UDP a;branch=z9hG4bK1", "SIP/2.0/UDP b;branch=z9hG4bK2"],
        ),
    ],
)
def test_split_list(value: str, items: list[str]) -> None:
    assert split_list(value) == items


def test_memoised_parses_are_bounded_to_short_texts() -> None:
    from sipguard.sip import uri

    short = "<sip:+862131771234@10.1.0.5>;tag=memo-1"
    assert parse_name_addr(short) is parse_name_addr(short), "kept and shared"
    long = "<sip:+862131771234@10.1.0.5>;tag=" + "x" * uri._MEMO_TEXT
    assert parse_name_addr(long) == parse_name_addr(long)
    assert parse_name_addr(long) is not parse_name_addr(long), "long texts are not kept"
    with pytest.raises(SipParseError):
        parse_name_addr("<sip:unterminated")
    with pytest.raises(SipParseError):  # a failure is not remembered as a value
        parse_name_addr("<sip:unterminated")
