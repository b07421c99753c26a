"""What sipguard's answers tell a caller, through the core with the real gate.

1. Text taken from a request (a caller number whose `%0A` decodes to a line
   break, a display name with quotes) goes back to the caller only escaped
   or replaced, so every INVITE gets exactly one answer that sipguard's own
   parser reads, and nothing is raised, whatever its identity headers hold.
2. The caller is told little (DESIGN "Answers that tell the caller little"):
   by default a refusal's Warning is the rule id, from sipguard's address,
   and no answer names the software, another customer's trunk or a
   suspension's reason; a trunk with `answers: {detail: full}` is told why.
   The operator's events always carry the full explanation.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

import pytest

from sipguard.b2bua import B2BUA, CoreConfig
from sipguard.dialog import IdFactory, LocalAddress
from sipguard.events import CallRefused, CallStarted, Event
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


LOCAL = {"udp": LocalAddress("udp", "10.0.0.1", 5060)}


@dataclass
class Core:
    """A core whose gate runs `rules`; what it sent, raw, and what it told."""

    rules: str = RULES
    config: CoreConfig = field(default_factory=lambda: CoreConfig(local=LOCAL))
    core: B2BUA = field(init=False)
    sent: list[tuple[Peer, bytes]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        policy = build_policy(parse_rules(self.rules, path="t.yaml"))
        self.core = B2BUA(
            config=self.config,
            gate=PolicyGate(policy, wall_clock=lambda: 0.0),
            ids=IdFactory(random.Random(3).randbytes),
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


# Full answers: what made a rule fire (the request's own text) goes back.
FULL = "answers: {detail: full}\n" + RULES


@pytest.mark.parametrize("rules", [FULL, RULES], ids=["full", "rule"])
@pytest.mark.parametrize("data", [data for _, data in ATTACKS], ids=[name for name, _ in ATTACKS])
def test_text_from_the_request_never_breaks_the_answer(rules: str, data: bytes) -> None:
    """Guards against a decoded CR, LF or NUL reaching a header: the serializer
    raised out of receive_datagram (no answer, an internal error per
    retransmission), or a raw NUL went into the 403."""
    core = Core(rules)
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
    core = Core(FULL)
    (answer,) = core.send(invite(from_="<sip:2131%0D%0AX-Injected:%201@10.1.0.5>;tag=a"))
    message = clean_answer(answer)
    assert message.status == 403
    assert message.headers.get("x-injected") is None
    assert message.headers.get("reason") == 'SIP;cause=403;text="invalid_caller_id"'
    assert message.headers.get("warning") == (
        "399 10.0.0.1:5060 \"caller ID is not a dialable number: From '2131??X-Injected'\""
    )
    (refused,) = [e for e in core.events if isinstance(e, CallRefused)]
    assert refused.rule == "invalid_caller_id"
    assert refused.detail == "caller ID is not a dialable number: From '2131\r\nX-Injected'"


# --- what the caller is told ----------------------------------------------------------------

SUSPENDED = """\
suspended:
  - {number: "+862131771250", until: "2099-01-01", reason: "regulator order 17"}
"""
STRANGER = Peer("udp", "192.0.2.66", 5060)
PASS_THROUGH = invite(from_="<sip:+861058001234@10.1.0.5>;tag=a")  # a number of trunk bj


def refusal(core: Core, data: bytes, peer: Peer = SH) -> tuple[bytes, Response, CallRefused]:
    """The one answer to `data` (a refusal), parsed, and the event the operator gets."""
    (answer,) = core.send(data, peer)
    message = clean_answer(answer)
    assert message.status >= 400
    refused = [e for e in core.events if isinstance(e, CallRefused)]
    return answer, message, refused[-1]


def test_a_pass_through_is_told_the_rule_id_only() -> None:
    """Guards against a refusal naming another customer's trunk, or naming
    the software in the warn-agent (`Warning: 399 sipguard ...`)."""
    answer, message, refused = refusal(Core(), PASS_THROUGH)
    assert message.headers.get("reason") == 'SIP;cause=403;text="caller_of_other_trunk"'
    assert message.headers.get("warning") == '399 10.0.0.1:5060 "caller_of_other_trunk"'
    assert b"bj" not in answer and b"sipguard" not in answer.lower()
    assert b"belongs" not in answer and b"allocated" not in answer
    assert refused.detail == (
        "caller number is allocated to another trunk: +861058001234 belongs to trunk 'bj'"
    ), "the operator is told everything"


def test_a_suspended_number_is_not_told_the_suspensions_reason() -> None:
    core = Core(RULES.replace("trunks:", SUSPENDED + "trunks:"))
    answer, message, refused = refusal(core, invite(from_="<sip:+862131771250@10.1.0.5>;tag=a"))
    assert message.headers.get("warning") == '399 10.0.0.1:5060 "suspended_number"'
    assert b"regulator" not in answer and b"sipguard" not in answer.lower()
    assert "regulator order 17" in refused.detail


def test_a_trunk_with_full_answers_is_told_why() -> None:
    core = Core(
        RULES.replace("trunks:", SUSPENDED + "trunks:").replace(
            '    ranges: ["+862131771200-+862131771299"]\n',
            '    ranges: ["+862131771200-+862131771299"]\n    answers: {detail: full}\n',
        )
    )
    _, message, refused = refusal(core, PASS_THROUGH)
    assert message.headers.get("warning") == (
        '399 10.0.0.1:5060 "caller number is allocated to another trunk: '
        "+861058001234 belongs to trunk 'bj'\""
    )
    assert message.headers.get("reason") == 'SIP;cause=403;text="caller_of_other_trunk"'
    assert refused.detail in (message.headers.get("warning") or "")
    _, message, _ = refusal(
        core, invite(from_="<sip:+862131771250@10.1.0.5>;tag=a", branch="z9hG4bKs")
    )
    assert "regulator order 17" in (message.headers.get("warning") or "")


def test_a_trunk_keeps_its_answers_short_when_the_rule_set_tells_all() -> None:
    rules = "answers: {detail: full}\n" + RULES.replace(
        '    ranges: ["+862131771200-+862131771299"]\n',
        '    ranges: ["+862131771200-+862131771299"]\n    answers: {detail: rule}\n',
    )
    _, message, _ = refusal(Core(rules), PASS_THROUGH)
    assert message.headers.get("warning") == '399 10.0.0.1:5060 "caller_of_other_trunk"'
    bj = invite(from_="<sip:+862131771234@10.2.0.5>;tag=b").replace(
        b"10.1.0.5:5060", b"10.2.0.5:5060"
    )
    _, message, _ = refusal(Core(rules), bj, Peer("udp", "10.2.0.5", 5060))
    assert "belongs to trunk 'sh'" in (message.headers.get("warning") or ""), "bj follows the top"


def test_a_stranger_is_told_the_rule_id_whatever_the_trunks_are_told() -> None:
    core = Core("answers: {detail: full}\n" + RULES)
    stranger = invite().replace(b"10.1.0.5:5060", b"192.0.2.66:5060")
    answer, message, refused = refusal(core, stranger, STRANGER)
    assert message.headers.get("warning") == '399 10.0.0.1:5060 "unknown_source"'
    assert b"sipguard" not in answer.lower()
    assert refused.detail == "source address matches no trunk"


def test_the_warn_agent_is_the_address_the_request_came_in_on() -> None:
    local = {
        "udp": LocalAddress("udp", "2001:db8::5", 5060),
        "tcp": LocalAddress("tcp", "192.0.2.5", 5070),
    }
    core = Core(config=CoreConfig(local=local))
    _, message, _ = refusal(core, PASS_THROUGH)
    assert message.headers.get("warning") == '399 [2001:db8::5]:5060 "caller_of_other_trunk"'
    over_tcp = PASS_THROUGH.replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP").replace(b"Katt", b"Ktcp")
    _, message, _ = refusal(core, over_tcp, Peer("tcp", "10.1.0.5", 40000))
    assert message.headers.get("warning") == '399 192.0.2.5:5070 "caller_of_other_trunk"'
    stranger = over_tcp.replace(b"10.1.0.5:5060", b"192.0.2.66:5060")
    _, message, _ = refusal(core, stranger, Peer("tcp", "192.0.2.66", 40001))
    assert message.headers.get("warning") == '399 192.0.2.5:5070 "unknown_source"'


def test_a_configured_warn_agent_signs_every_warning() -> None:
    core = Core(config=CoreConfig(local=LOCAL, warn_agent="edge1"))
    _, message, _ = refusal(core, PASS_THROUGH)
    assert message.headers.get("warning") == '399 edge1 "caller_of_other_trunk"'
    stranger = invite().replace(b"10.1.0.5:5060", b"192.0.2.66:5060")
    _, message, _ = refusal(core, stranger, STRANGER)
    assert message.headers.get("warning") == '399 edge1 "unknown_source"'


def test_options_answers_carry_a_server_header_only_when_configured() -> None:
    options = invite().replace(b"INVITE", b"OPTIONS")
    (answer,) = Core().send(options)
    assert clean_answer(answer).headers.get("server") is None
    assert b"sipguard" not in answer.lower()
    configured = Core(config=CoreConfig(local=LOCAL, server_header="edge/2.1"))
    (answer,) = configured.send(options)
    assert clean_answer(answer).headers.get("server") == "edge/2.1"
