"""What sipguard's answers tell a caller, through the core with the real gate.

Text taken from a request (a caller number whose `%0A` decodes to a line
break, a display name with quotes) goes back to the caller only escaped or
replaced, so every INVITE gets exactly one answer that sipguard's own parser
reads, and nothing is raised, whatever its identity headers hold.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import pytest

from sipguard.b2bua import B2BUA, CallRefused, CallStarted, CoreConfig, Event
from sipguard.dialog import IdFactory, LocalAddress
from sipguard.gate import PolicyGate, build_policy
from sipguard.peer import Peer
from sipguard.rules.loader import parse_rules
from sipguard.sip.message import Request, Response
from sipguard.sip.parser import parse_message
from sipguard.sip.uri import split_list

pytestmark = pytest.mark.unit

RULES = """\
version: 1
numbering: {country_code: "86"}
trunks:
  - name: sh
    sources: ["10.1.0.5"]
    route: "udp:10.9.0.1:5080"
    ranges: ["+862131771200-+862131771299"]
  - name: bj
    sources: ["10.2.0.5"]
    route: "udp:10.9.0.1:5080"
    ranges: ["+861058001000-+861058001999"]
"""

SH = Peer("udp", "10.1.0.5", 5060)
ROUTE = Peer("udp", "10.9.0.1", 5080)
GOOD_FROM = "<sip:+862131771234@10.1.0.5>;tag=a"
# A Warning value: code, warn-agent, quoted text (RFC 3261 §20.43).
WARNING = re.compile(r'399 (\S+) "((?:[^"\\]|\\.)*)"')


@dataclass
class Core:
    """A core whose gate runs `rules`; what it sent, raw, and what it told."""

    rules: str = RULES
    core: B2BUA = field(init=False)
    sent: list[tuple[Peer, bytes]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        policy = build_policy(parse_rules(self.rules, path="t.yaml"))
        self.core = B2BUA(
            config=CoreConfig(local={"udp": LocalAddress("udp", "10.0.0.1", 5060)}),
            gate=PolicyGate(policy, wall_clock=lambda: 0.0),
            ids=IdFactory(random.Random(3)),
        )

    def send(self, data: bytes, peer: Peer = SH, *, now: float = 0.0) -> list[bytes]:
        """Hand `data` to the core (it must not raise); what went back to `peer`."""
        self.core.receive_datagram(data, peer, now=now)
        answers = []
        for transmit in self.core.datagrams_to_send():
            self.sent.append((transmit.peer, transmit.data))
            if transmit.peer == peer:
                answers.append(transmit.data)
        while (event := self.core.next_event()) is not None:
            self.events.append(event)
        return answers


def invite(
    *,
    uri: str = "sip:13800138000@10.0.0.1",
    from_: str = GOOD_FROM,
    to: str = "<sip:13800138000@10.0.0.1>",
    extra: str = "",
    branch: str = "z9hG4bKatt",
) -> bytes:
    return (
        f"INVITE {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.1.0.5:5060;branch={branch}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: {from_}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: attack-1\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@10.1.0.5:5060>\r\n"
        f"{extra}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def clean_answer(data: bytes) -> Response:
    """`data` is one clean response: it parses, its head holds no NUL and no
    CR or LF but the line ends, and a Warning is one 399 value with printable text."""
    head = data.partition(b"\r\n\r\n")[0]
    assert b"\x00" not in head
    assert head.count(b"\r") == head.count(b"\n") == head.count(b"\r\n")
    message = parse_message(data)
    assert isinstance(message, Response)
    warnings = [v for value in message.headers.get_all("warning") for v in split_list(value)]
    assert len(warnings) <= 1, warnings
    for warning in warnings:
        match = WARNING.fullmatch(warning)
        assert match is not None, warning
        assert match.group(2).isprintable(), warning
    return message


# Payloads for a user part: percent-escapes of CR, LF, NUL, a header
# injection, a byte that is no UTF-8, a quote and a backslash; raw quote,
# backslash and non-ASCII characters.
USER_PAYLOADS = [
    "%0A",
    "%0D",
    "%00",
    "2131%0D%0AX-Injected:%201",
    "%0D%0A%0D%0Av=0",
    "%FF%FE",
    "%22%5C",
    '"',
    "\\",
    "中文",
    "%E2%80%A8",
]
# Payloads for a quoted display name (written between the quotes).
DISPLAY_PAYLOADS = ["%0A%0D%00", '\\"', "\\\\", '021 \\"3177\\" 1234', "中文", "\u2028", "\x85"]

ATTACKS: list[tuple[str, bytes]] = []
for _payload in USER_PAYLOADS:
    ATTACKS += [
        (f"from-user {_payload!r}", invite(from_=f"<sip:{_payload}@10.1.0.5>;tag=a")),
        (
            f"pai {_payload!r}",
            invite(extra=f"P-Asserted-Identity: <sip:{_payload}@10.1.0.5>\r\n"),
        ),
        (
            f"ppi {_payload!r}",
            invite(extra=f"P-Preferred-Identity: <sip:{_payload}@10.1.0.5>\r\n"),
        ),
        (
            f"rpid {_payload!r}",
            invite(extra=f"Remote-Party-ID: <sip:{_payload}@10.1.0.5>;party=calling\r\n"),
        ),
        (f"to {_payload!r}", invite(uri="sip:10.0.0.1", to=f"<sip:{_payload}@10.0.0.1>")),
        (f"request-uri {_payload!r}", invite(uri=f"sip:{_payload}@10.0.0.1")),
        (f"tel-from {_payload!r}", invite(from_=f"<tel:{_payload}>;tag=a")),
    ]
for _payload in DISPLAY_PAYLOADS:
    ATTACKS += [
        (
            f"from-display {_payload!r}",
            invite(from_=f'"{_payload}" <sip:+862131771234@10.1.0.5>;tag=a'),
        ),
        (
            f"pai-display {_payload!r}",
            invite(extra=f'P-Asserted-Identity: "{_payload}" <sip:%0A@10.1.0.5>\r\n'),
        ),
    ]


@pytest.mark.parametrize("data", [data for _, data in ATTACKS], ids=[name for name, _ in ATTACKS])
def test_text_from_the_request_never_breaks_the_answer(data: bytes) -> None:
    """Guards against a decoded CR, LF or NUL reaching a header: the serializer
    raised out of receive_datagram (no answer, an internal error per
    retransmission), or a raw NUL went into the 403."""
    core = Core()
    (answer,) = core.send(data)
    message = clean_answer(answer)
    assert message.status in (100, 403), message.status
    assert (core.send(data, now=0.5) or [answer])[0] == answer, "a retransmission: the same answer"
    decided = [e for e in core.events if isinstance(e, CallRefused | CallStarted)]
    assert len(decided) == 1, core.events
    for peer, sent in core.sent:
        if peer == ROUTE:
            relayed = parse_message(sent)
            assert isinstance(relayed, Request) and b"\x00" not in sent


def test_a_decoded_line_break_in_the_caller_number_is_refused_with_its_rule() -> None:
    core = Core()
    (answer,) = core.send(invite(from_="<sip:2131%0D%0AX-Injected:%201@10.1.0.5>;tag=a"))
    message = clean_answer(answer)
    assert message.status == 403
    assert message.headers.get("x-injected") is None
    assert message.headers.get("reason") == 'SIP;cause=403;text="invalid_caller_id"'
    (refused,) = [e for e in core.events if isinstance(e, CallRefused)]
    assert refused.rule == "invalid_caller_id"
