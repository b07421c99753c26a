"""Parser and serializer contracts under Hypothesis.

1. parse_message(to_bytes(m)) == m for generated requests and responses.
2. to_bytes(parse_message(x)) is a fixed point for valid wire bytes x, however
   they were spelled (compact names, odd case, folds, leading CRLFs, surplus).
3. For any bytes, parse_message returns a message or raises SipParseError;
   the lazy accessors of a parsed message raise nothing but SipParseError.
4. StreamFramer cuts any chunking of a stream into the same messages, and on
   arbitrary input raises nothing but SipParseError.
5. Any text, written by quoted_string into an answer's header, survives the
   wire and reads back as the same text with its unprintable characters
   replaced.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sipguard.errors import MessageTooLarge, SipParseError
from sipguard.sip.builders import build_response
from sipguard.sip.headers import COMPACT_FORMS
from sipguard.sip.message import Headers, Request, Response
from sipguard.sip.parser import StreamFramer, parse_message
from sipguard.sip.serializer import quoted_string, to_bytes
from sipguard.sip.uri import split_list

pytestmark = pytest.mark.property

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Generating whole messages costs more than fuzzing bytes.
GENERATED = settings(SETTINGS, max_examples=100)
MESSAGES = Path(__file__).resolve().parent.parent / "data" / "messages"

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "INFO", "PRACK", "UPDATE"]

tokens = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=12)
methods = st.one_of(st.sampled_from(METHODS), tokens)


@st.composite
def odd_case(draw: st.DrawFn, name: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(name), max_size=len(name)))
    return "".join(c.swapcase() if flip else c for c, flip in zip(name, flips, strict=True))


def spelled(*names: str) -> st.SearchStrategy[str]:
    """One of `names`, each in a random mix of upper and lower case."""
    return st.sampled_from(names).flatmap(odd_case)


# --- URIs -------------------------------------------------------------------------------------

labels = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
domains = st.lists(labels, min_size=1, max_size=3).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.sampled_from(["[2001:db8::1]", "[::1]", "[2001:db8:0:0:0:0:0:ff]", "[fe80::a:b]"])
hosts = st.one_of(domains, ipv4, ipv6)
ports = st.one_of(st.none(), st.integers(1, 65535))
users = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789+-._", min_size=1, max_size=14)
uri_params = st.lists(
    st.tuples(labels, st.one_of(st.none(), tokens)).map(
        lambda p: f";{p[0]}" if p[1] is None else f";{p[0]}={p[1]}"
    ),
    max_size=3,
).map("".join)


@st.composite
def sip_uris(draw: st.DrawFn) -> str:
    scheme = draw(spelled("sip", "sips"))
    user = draw(st.one_of(st.none(), users))
    port = draw(ports)
    host = draw(hosts) + ("" if port is None else f":{port}")
    userinfo = "" if user is None else f"{user}@"
    return f"{scheme}:{userinfo}{host}{draw(uri_params)}"


tel_uris = st.builds(
    lambda number, ctx: f"tel:{number}" + ("" if ctx is None else f";phone-context={ctx}"),
    st.from_regex(r"\+?[0-9][0-9-]{2,15}", fullmatch=True),
    st.one_of(st.none(), st.sampled_from(["+86-21", "example.cn", "+1"])),
)
other_uris = st.sampled_from(["urn:service:sos", "mailto:a@example.com", "im:bob@example.com"])
uris = st.one_of(sip_uris(), tel_uris, other_uris)


# --- header fields ----------------------------------------------------------------------------

# Characters of the value: letters, digits, punctuation and symbols from all of
# Unicode, with SP and HTAB inside. Values arrive trimmed, as the parser trims.
value_chars = st.characters(categories=["L", "N", "P", "S"]) | st.sampled_from([" ", "\t"])
values = (
    st.text(alphabet=value_chars, max_size=40)
    .map(lambda v: v.strip(" \t"))
    .filter(lambda v: v == v.strip())
)

# Header names other than the ones that carry framing or must be single
# (From, To, Call-ID, CSeq, Max-Forwards and Content-Type may not repeat;
# Via values are generated apart, since an empty top Via is invalid).
EXTRA_NAMES = [
    "Contact",
    "m",
    "Route",
    "Record-Route",
    "P-Asserted-Identity",
    "Privacy",
    "Allow",
    "Supported",
    "k",
    "Subject",
    "s",
    "e",
    "o",
    "u",
    "r",
    "b",
    "x",
    "y",
    "User-Agent",
    "Session-Expires",
]
extension_names = tokens.map(lambda t: "X-" + t)
extra_names = st.one_of(st.sampled_from(EXTRA_NAMES).flatmap(odd_case), extension_names)
extra_fields = st.lists(st.tuples(extra_names, values), max_size=8)


@st.composite
def mandatory_fields(draw: st.DrawFn, method: str) -> list[tuple[str, str]]:
    branch = "z9hG4bK" + draw(tokens)
    via = f"SIP/2.0/{draw(st.sampled_from(['UDP', 'TCP', 'TLS']))} {draw(hosts)};branch={branch}"
    tag = draw(tokens)
    display = draw(st.sampled_from(["", "Bob ", '"B, \\"b\\"" ']))
    return [
        (draw(spelled("Via", "v")), via),
        (draw(spelled("From", "f")), f"<{draw(uris)}>;tag={tag}"),
        (draw(spelled("To", "t")), f"{display}<{draw(uris)}>"),
        (draw(spelled("Call-ID", "i")), draw(tokens) + "@" + draw(hosts)),
        (draw(spelled("CSeq")), f"{draw(st.integers(0, 2**32 - 1))} {method}"),
    ]


@st.composite
def all_fields(draw: st.DrawFn, method: str) -> list[tuple[str, str]]:
    fields = draw(mandatory_fields(method)) + draw(extra_fields)
    return list(draw(st.permutations(fields)))


bodies = st.binary(max_size=200)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(methods)
    return Request(method, draw(uris), Headers(draw(all_fields(method))), draw(bodies))


reasons = st.text(
    alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="\r\n\x00"),
    max_size=30,
)


@st.composite
def responses(draw: st.DrawFn) -> Response:
    method = draw(methods)
    status = draw(st.integers(100, 699))
    return Response(status, draw(reasons), Headers(draw(all_fields(method))), draw(bodies))


messages = st.one_of(requests(), responses())


# --- 1. parse(to_bytes(m)) == m ---------------------------------------------------------------


@GENERATED
@given(messages)
def test_generated_messages_survive_the_wire(message: Request | Response) -> None:
    data = to_bytes(message)
    parsed = parse_message(data)
    assert parsed == message
    assert to_bytes(parsed) == data


@GENERATED
@given(requests())
def test_names_are_canonical_after_the_round_trip(message: Request) -> None:
    parsed = parse_message(to_bytes(message))
    for (name, _), (original, _) in zip(parsed.headers.fields, message.headers.fields, strict=True):
        assert name == Headers([(original, "")]).fields[0][0]
    assert parsed.cseq.method == message.method


# --- 2. to_bytes(parse(x)) is stable ----------------------------------------------------------


COMPACT_OF = {full: [letter] for letter, full in COMPACT_FORMS.items()}


@st.composite
def spelled_wire(draw: st.DrawFn) -> bytes:
    """Valid wire bytes written the untidy ways real equipment writes them."""
    message = draw(messages)
    if isinstance(message, Request):
        version = draw(spelled("SIP/2.0"))
        start = f"{message.method} {message.uri} {version}"
    else:
        start = f"SIP/2.0 {message.status} {message.reason}"
    lines = [start]
    for name, value in message.headers.fields:
        before = draw(st.sampled_from(["", " ", "\t", "  "]))
        after = draw(st.sampled_from(["", " ", "\t ", "   "]))
        spelling = draw(odd_case(draw(st.sampled_from([name, *COMPACT_OF.get(name, [])]))))
        first, *rest = _fold_points(draw, value)
        lines.append(f"{spelling}{before}:{after}{first}")
        lines.extend(draw(st.sampled_from([" ", "\t", "   "])) + part for part in rest)
    length = draw(st.sampled_from(["Content-Length", "content-length", "l", "L"]))
    lines.append(f"{length}: {len(message.body)}")
    leading = b"\r\n" * draw(st.integers(0, 1))
    surplus = draw(st.binary(max_size=20))
    head = "\r\n".join(lines).encode("utf-8")
    return leading + head + b"\r\n\r\n" + message.body + surplus


def _fold_points(draw: st.DrawFn, value: str) -> list[str]:
    """Split `value` at some of its single inner spaces, for header folding."""
    words = value.split(" ")
    if len(words) < 2 or any(not word.strip() for word in words):
        return [value]
    parts = [words[0]]
    for word in words[1:]:
        if draw(st.booleans()):
            parts.append(word)
        else:
            parts[-1] += " " + word
    return parts


@GENERATED
@given(spelled_wire())
def test_to_bytes_of_parse_is_a_fixed_point(data: bytes) -> None:
    once = to_bytes(parse_message(data))
    again = parse_message(once)
    assert to_bytes(again) == once
    assert again == parse_message(data)


@pytest.mark.parametrize("path", sorted(MESSAGES.glob("[!b]*.sip")), ids=lambda p: p.name)
def test_stored_messages_reach_a_fixed_point(path: Path) -> None:
    data = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    once = to_bytes(parse_message(data))
    assert to_bytes(parse_message(once)) == once


# --- 3. any bytes: a message or SipParseError -------------------------------------------------

SEED = (
    b"INVITE sip:+8613800138000@gw.example.com;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.20:5060;branch=z9hG4bK-1;rport, SIP/2.0/UDP [2001:db8::1]\r\n"
    b"Max-Forwards: 70\r\n"
    b'From: "A \\"B\\", C" <sip:+862131771200@carrier.example.net;user=phone>;tag=as6f\r\n'
    b"t: <tel:+86-21-3177-1200;phone-context=example.cn>\r\n"
    b"Call-ID: 3f1c6a2b@203.0.113.20\r\n"
    b"CSeq: 102 INVITE\r\n"
    b"Contact: <sip:a@203.0.113.20:5060>;expires=60, *\r\n"
    b"Record-Route: <sip:rr.example.com;lr>\r\n"
    b"Subject: folded\r\n value\r\n"
    b"Content-Length: 5\r\n"
    b"\r\n"
    b"v=0\r\n"
)
SEEDS = [SEED, SEED.replace(b"INVITE sip:+8613800138000@gw.example.com;user=phone", b"SIP/2.0 200")]
SEEDS += [
    path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    for path in sorted(MESSAGES.glob("*.sip"))
]

# Byte strings that mean something to a SIP parser, for insertions.
SNIPPETS = [
    b"\r\n",
    b"\r",
    b"\n",
    b"\r\n\r\n",
    b"\r\n ",
    b"\x00",
    b":",
    b",",
    b";",
    b'"',
    b"\\",
    b"<",
    b">",
    b"[",
    b"]",
    b" ",
    b"\t",
    b"@",
    b"=",
    b"\xff",
    b"\xc2\xb2",
    b"\xd9\xa1",
    b"9" * 11,
    b"-1",
    b"SIP/3.0",
    b"Via: \r\n",
    b"Content-Length: 99999\r\n",
    b"CSeq: 1 BYE\r\n",
]
insertions = st.one_of(st.sampled_from(SNIPPETS), st.binary(min_size=1, max_size=8))


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "replace"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(insertions)
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            data[at : at + draw(st.integers(1, 8))] = draw(insertions)
    return bytes(data)


def exercise(message: Request | Response) -> None:
    """Touch every lazy accessor; each may refuse only with SipParseError."""
    accessors = ["call_id", "cseq", "vias", "top_via", "from_", "to", "contacts", "record_routes"]
    if isinstance(message, Request):
        accessors += ["request_uri", "max_forwards"]
    for name in accessors:
        try:
            getattr(message, name)
        except SipParseError:
            pass
    for name, _ in message.headers.fields:
        message.headers.get_all(name)


def parse_or_refuse(data: bytes) -> Request | Response | None:
    try:
        message = parse_message(data)
    except SipParseError as error:
        assert 400 <= error.status_hint <= 599
        return None
    assert isinstance(message, Request | Response)
    return message


@SETTINGS
@given(st.binary(max_size=600))
@example(b"")
@example(b"\r\n\r\n")
@example(b"SIP/2.0 200 OK\r\n\r\n")
@example(b"INVITE sip:a@b SIP/2.0\r\n\r\n")
def test_any_bytes_give_a_message_or_a_parse_error(data: bytes) -> None:
    message = parse_or_refuse(data)
    if message is not None:
        exercise(message)


@SETTINGS
@given(mutated())
def test_mutated_messages_give_a_message_or_a_parse_error(data: bytes) -> None:
    message = parse_or_refuse(data)
    if message is not None:
        exercise(message)
        # Whatever parsed is valid input: writing it out reaches a fixed point.
        once = to_bytes(message)
        again = parse_or_refuse(once)
        assert again is not None
        assert to_bytes(again) == once


# --- 4. StreamFramer --------------------------------------------------------------------------


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    edges = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:], strict=False)]


@GENERATED
@given(st.data())
def test_framer_finds_the_same_messages_whatever_the_chunking(data: st.DataObject) -> None:
    frames = [to_bytes(m) for m in data.draw(st.lists(messages, min_size=1, max_size=4))]
    pings = [data.draw(st.booleans()) for _ in frames]
    stream = b"".join(
        (b"\r\n\r\n" if ping else b"") + frame for frame, ping in zip(frames, pings, strict=True)
    )
    framer = StreamFramer()
    got: list[bytes] = []
    for chunk in data.draw(chunked(stream)):
        framer.receive_data(chunk)
        while (frame := framer.next_message()) is not None:
            got.append(frame)
    assert got == frames
    assert framer.buffered == 0
    assert framer.keepalives == sum(pings)


@SETTINGS
@given(
    st.lists(
        st.one_of(st.binary(max_size=64), st.sampled_from(SEEDS), st.sampled_from(SNIPPETS)),
        max_size=10,
    ),
    st.integers(50, 4000),
)
def test_framer_on_arbitrary_chunks_frames_or_refuses(chunks: list[bytes], max_size: int) -> None:
    framer = StreamFramer(max_size=max_size)
    for chunk in chunks:
        framer.receive_data(chunk)
        try:
            while (frame := framer.next_message()) is not None:
                assert len(frame) <= max_size
                parse_or_refuse(frame)
        except (SipParseError, MessageTooLarge):
            return  # the stream is unusable from here; the driver closes it
    assert framer.buffered <= sum(len(chunk) for chunk in chunks)


# --- 5. free text in answers ------------------------------------------------------------------


def _unquoted(value: str) -> str:
    """The text of one quoted-string, its quoted-pairs resolved."""
    assert value[0] == value[-1] == '"', value
    chars, escaped = [], False
    for char in value[1:-1]:
        if escaped or char != "\\":
            assert escaped or char != '"', value
            chars.append(char)
            escaped = False
        else:
            escaped = True
    assert not escaped, value
    return "".join(chars)


@SETTINGS
@given(st.text(max_size=300))
@example("From '\r\n'")
@example('\x00"\\,\u2028\ud800')
def test_any_text_in_a_warning_survives_the_wire(text: str) -> None:
    request = parse_message(SEED)
    assert isinstance(request, Request)
    warning = f"399 10.0.0.1:5060 {quoted_string(text)}"
    response = build_response(request, 403, extra=[("Warning", warning)])
    parsed = parse_message(to_bytes(response))
    (value,) = split_list(parsed.headers.get("warning") or "")
    shown = _unquoted(value.split(" ", 2)[2])
    kept = text[:200]
    assert len(shown) == len(kept) and shown.isprintable()
    assert all(
        a == b or (b == "?" and not a.isprintable()) for a, b in zip(kept, shown, strict=True)
    )
