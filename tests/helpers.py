"""Test helpers: a scripted caller and callee wired to a B2BUA core.

`CorePair` holds a core with a fixed gate and lets a test play both far ends
by hand: send a request as the caller (A side) or the callee (B side), then
take what the core sent to each side, parsed. Time is scripted: tests pass
`now` explicitly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from sipguard.b2bua import B2BUA, CoreConfig
from sipguard.dialog import IdFactory, LocalAddress
from sipguard.events import Event
from sipguard.peer import Peer
from sipguard.policy.decision import Allow, Refuse, Relay
from sipguard.policy.engine import IdentityNumbers
from sipguard.sip.message import Request, Response
from sipguard.sip.parser import parse_message

CALLER = Peer("udp", "10.1.0.5", 5071)
CALLEE = Peer("udp", "10.9.0.1", 5080)
STRANGER = Peer("udp", "192.0.2.66", 5060)


class FixedGate:
    """Admit calls from CALLER (routing them to CALLEE), refuse the rest."""

    def __init__(self, caller: Peer = CALLER, callee: Peer = CALLEE) -> None:
        self.caller = caller
        self.callee = callee

    def decide(self, request: Request, peer: Peer, *, now: float) -> Allow | Refuse:
        if peer == self.caller:
            return Allow("test-trunk", self.callee)
        return Refuse(
            403,
            "Forbidden",
            "unknown_source",
            headers=(("Reason", 'SIP;cause=403;text="unknown_source"'),),
        )

    def is_known(self, peer: Peer) -> bool:
        return peer in (self.caller, self.callee)

    def trunk_of(self, peer: Peer) -> str | None:
        return "test-trunk" if peer == self.caller else None

    def is_emergency(self, request: Request) -> bool:
        return request.uri.startswith("sip:110@")

    def decide_in_dialog(
        self, trunk: str, initial: IdentityNumbers, current: IdentityNumbers
    ) -> Relay | Refuse:
        """identity_changed as the built-in policy has it: 403, enforced."""
        initial_from, initial_asserted = initial
        from_now, asserted_now = current
        known = set(initial_asserted) or {initial_from}
        if from_now == initial_from and all(number in known for number in asserted_now):
            return Relay()
        return Refuse(
            403,
            "Forbidden",
            "identity_changed",
            trunk=trunk,
            headers=(("Reason", 'SIP;cause=403;text="identity_changed"'),),
            warning="identity_changed",
            detail="caller identity changed within the dialog",
        )


def invite(
    *,
    call_id: str = "a-call-1",
    branch: str = "z9hG4bKa1",
    from_tag: str = "caller-tag",
    cseq: int = 1,
    caller: Peer = CALLER,
    body: bytes = b"v=0\r\no=- 1 1 IN IP4 10.1.0.5\r\n",
    extra: str = "",
) -> bytes:
    return (
        f"INVITE sip:13800138000@10.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {caller.host}:{caller.port};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:+862131771234@{caller.host}>;tag={from_tag}\r\n"
        f"To: <sip:13800138000@10.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} INVITE\r\n"
        f"Contact: <sip:caller@{caller.host}:{caller.port}>\r\n"
        f"{extra}"
        f"Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def response_to(
    request: Request,
    status: int,
    reason: str,
    *,
    to_tag: str | None = "callee-tag",
    contact: str | None = "<sip:callee@10.9.0.1:5080>",
    body: bytes = b"",
    record_route: tuple[str, ...] = (),
) -> bytes:
    """What a UA answers to `request` (echoing Via, From, To, Call-ID, CSeq),
    with `record_route` as the Record-Route values the proxies on its path added."""
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {via}" for via in request.headers.get_all("via")]
    lines += [f"Record-Route: {value}" for value in record_route]
    lines.append(f"From: {request.headers.get('from')}")
    to = request.headers.get("to") or ""
    if to_tag is not None and request.to.tag is None:
        to += f";tag={to_tag}"
    lines.append(f"To: {to}")
    lines.append(f"Call-ID: {request.call_id}")
    lines.append(f"CSeq: {request.headers.get('cseq')}")
    if contact is not None:
        lines.append(f"Contact: {contact}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def in_dialog(
    method: str,
    *,
    target: str,
    from_value: str,
    to_value: str,
    call_id: str,
    cseq: int,
    branch: str,
    sender: Peer,
    cseq_method: str | None = None,
    body: bytes = b"",
) -> bytes:
    return (
        f"{method} {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {sender.host}:{sender.port};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: {from_value}\r\n"
        f"To: {to_value}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


@dataclass
class CorePair:
    """A B2BUA core with a scripted caller (A) and callee (B)."""

    core: B2BUA = field(
        default_factory=lambda: B2BUA(
            config=CoreConfig(local={"udp": LocalAddress("udp", "10.0.0.1", 5060)}),
            gate=FixedGate(),
            ids=IdFactory(random.Random(7).randbytes),
        )
    )
    to_caller: list[Request | Response] = field(default_factory=list)
    to_callee: list[Request | Response] = field(default_factory=list)
    to_others: list[tuple[Peer, Request | Response]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def send(self, data: bytes, peer: Peer, *, now: float) -> None:
        self.core.receive_datagram(data, peer, now=now)
        self.collect()

    def tick(self, now: float) -> None:
        self.core.handle_timer(now=now)
        self.collect()

    def run_until(self, end: float) -> None:
        """Fire every timer up to `end`, in order."""
        while True:
            deadline = self.core.next_deadline()
            if deadline is None or deadline > end:
                return
            self.tick(deadline)

    def collect(self) -> None:
        for transmit in self.core.datagrams_to_send():
            message = parse_message(transmit.data)
            if transmit.peer == CALLER:
                self.to_caller.append(message)
            elif transmit.peer == CALLEE:
                self.to_callee.append(message)
            else:
                self.to_others.append((transmit.peer, message))
        event = self.core.next_event()
        while event is not None:
            self.events.append(event)
            event = self.core.next_event()

    def take_caller(self) -> list[Request | Response]:
        out, self.to_caller = self.to_caller, []
        return out

    def take_callee(self) -> list[Request | Response]:
        out, self.to_callee = self.to_callee, []
        return out


def policy_pair(rules_text: str) -> CorePair:
    """A CorePair whose core decides with the real gate over `rules_text`
    (the caller's trunk must claim CALLER, and route to CALLEE)."""
    from sipguard.gate import PolicyGate, build_policy
    from sipguard.rules.loader import parse_rules

    gate = PolicyGate(build_policy(parse_rules(rules_text, path="t.yaml")), wall_clock=lambda: 0.0)
    core = B2BUA(
        config=CoreConfig(local={"udp": LocalAddress("udp", "10.0.0.1", 5060)}),
        gate=gate,
        ids=IdFactory(random.Random(7).randbytes),
    )
    return CorePair(core=core)


def statuses(messages: list[Request | Response]) -> list[int | str]:
    return [m.status if isinstance(m, Response) else m.method for m in messages]
