"""Hot-path micro-benchmarks (pyperf): parse, decide, rate check, answer, per call.

Run: python bench/bench_hotpath.py [--ranges N] [--callers N] [--select TEXT] [pyperf options]
     (e.g. `--fast` for a rough run, about two minutes on two cores;
     `-o hotpath.json` to keep the figures; `--rigorous` for tighter ones.
     `make bench-micro` runs it with BENCH_MICRO_ARGS.)

Every benchmark runs on realistic carrier messages: an INVITE from a
carrier SBC (1.3 KB: three Via lines, one of them stamped with
received/rport, Record-Route, From with a display name and tag, Contact with
parameters, P-Asserted-Identity in sip (user=phone) and tel form, Privacy,
Allow, Supported, Session-Expires, User-Agent, Max-Forwards, and an SDP
offer of 300 bytes), the caller's in-dialog ACK, and the callee's 200 OK
with its SDP answer.

Benchmarks (one pyperf benchmark each; times are per call):

1. parse: `parse_message` of the INVITE, of the ACK and of the 200 OK; and
   the INVITE again with every header the core reads on a new call parsed
   as well (the message parses most header values lazily, on first use).
2. decision, with `--ranges` allocated ranges of 100 numbers over 100 trunks
   (built the way bench/bench_policy.py builds them, here as mobile blocks
   +861[3-9]xxxxxxxxx; default 1,000,000):
   - `evaluate()` alone (the pure decision, from a ready `CallView`) for an
     allowed call and for a spoofed one (`caller_not_allocated`). Target:
     median <= 2 us at 1M ranges; the summary at the end says whether it
     holds.
   - `PolicyGate.decide()` for the same two calls, on a pre-parsed
     `Request`. Its lazily parsed headers (From, To, Request-URI) are cached
     after the first call, as they are in the core, which reads them before
     it asks the gate; P-Asserted-Identity is parsed on every call, as in
     the gate. No rate table: see 3.
3. rate check: `RateTable.admit()` on one trunk with cps, concurrent,
   per-caller and per-callee limits that never fire, callers and callees
   drawn round robin from `--callers` numbers (default 10,000), each caller
   calling every 10 s of table time (1,000 calls/s at 10k callers), with
   1,000 calls in progress. "rate admit" times admit() alone (the calls it
   admits are ended after the timed loop, untimed); "rate admit +
   call_ended" ends one call per admitted one, so the live count stays
   steady. The times include the loop's own cost (iterating, advancing
   the table's clock).
4. answers: the stateless 403 (`make_response` with the Reason header of
   the gate's refusal and the Warning the core signs with its address,
   received/rport and a To-tag, then `to_bytes`), as `B2BUA._reply` builds
   it; and the outbound INVITE of an allowed call, then `to_bytes`. The
   core's composition of the outbound INVITE (`B2BUA._start_call`) is
   private, so the benchmark rebuilds the same request from public parts
   (`IdFactory`, `LocalAddress`, `Leg`, `parse_name_addr`, and the
   builders the core uses: `end_to_end_headers`, `outbound_uri`). It
   leaves out the client transaction and dialog bookkeeping the core adds.
5. the reject path from bytes, without I/O: `parse_message` of a spoofed
   INVITE, `PolicyGate.decide`, the 403 of 4, to bytes. The core adds its
   transaction and answer-cache lookups, not timed here.

Set-up stays out of the timed loops. pyperf runs each benchmark in a series
of fresh worker processes, so the rule set is built once, by the main
process (7 to 12 s for 1M ranges on two slow cores), and handed to the
workers as a pickle in a private temporary directory removed at the end
(well under a second to load). A worker started without it builds the
rule set itself. `--select` (repeatable) keeps the benchmarks whose name contains
the text; `--ranges 10000` gives a quick run whose decision figures are not
the 1M ones.
"""

from __future__ import annotations

import argparse
import functools
import ipaddress
import itertools
import os
import pickle
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pyperf  # type: ignore[import-untyped]

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sipguard.dialog import IdFactory, Leg, LocalAddress  # noqa: E402
from sipguard.gate import PolicyGate, build_policy, call_view  # noqa: E402
from sipguard.peer import Peer  # noqa: E402
from sipguard.policy.compiled import CompiledTrunk, Policy  # noqa: E402
from sipguard.policy.decision import Allow, Refuse  # noqa: E402
from sipguard.policy.engine import CallView, evaluate  # noqa: E402
from sipguard.ratetable import (  # noqa: E402
    RateTable,
    TokenBucketLimit,
    TrunkLimits,
    WindowLimit,
)
from sipguard.rules.values import Endpoint, Numbering, RuleSet, SourceMatch, Trunk  # noqa: E402
from sipguard.sip.builders import end_to_end_headers, make_response, outbound_uri  # noqa: E402
from sipguard.sip.message import Request, Response  # noqa: E402
from sipguard.sip.parser import parse_message  # noqa: E402
from sipguard.sip.serializer import hostport, to_bytes, warning_value  # noqa: E402
from sipguard.sip.uri import parse_name_addr  # noqa: E402

DEFAULT_RANGES = 1_000_000
DEFAULT_CALLERS = 10_000
TARGET_EVALUATE_US = 2.0  # median of evaluate() alone at 1M ranges
TARGET_RANGES = 1_000_000

TRUNKS = 100
MAX_RANGES = 70_000_000  # 100-number blocks in +861[3-9]xxxxxxxxx
WALL_TIME = 1_749_549_600.0  # 2025-06-10 10:00 UTC; no rule here depends on it
# The carrier SBC of trunk 0, the address sipguard listens on, and where the
# trunks' allowed calls go.
CARRIER = Peer("udp", "198.51.100.1", 5060)
LOCAL = LocalAddress("udp", "192.0.2.10", 5060)
ROUTE = Endpoint(transport="udp", host="192.0.2.50", port=5080)
CALLEE_NATIONAL = "02161234567"  # a Shanghai number, in national form
SPOOFED = "+8612000004242"  # a mobile-like number no range holds


# --------------------------------------------------------------------------
# Messages.

SDP_OFFER = (
    b"v=0\r\n"
    b"o=CarrierSBC 1718035200 1718035201 IN IP4 198.51.100.1\r\n"
    b"s=SIP Call\r\n"
    b"c=IN IP4 198.51.100.20\r\n"
    b"t=0 0\r\n"
    b"m=audio 31874 RTP/AVP 8 0 18 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:18 G729/8000\r\n"
    b"a=fmtp:18 annexb=no\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

SDP_ANSWER = (
    b"v=0\r\n"
    b"o=callee 3950023401 3950023402 IN IP4 192.0.2.50\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.51\r\n"
    b"t=0 0\r\n"
    b"m=audio 40112 RTP/AVP 8 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

FROM_TAG = "as5f3a91c2"
CALL_ID = "3c26700f5a4e1b2d9c1e@172.16.20.5"


def message(head: Iterable[str], body: bytes = b"") -> bytes:
    lines = [*head, f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def carrier_invite(caller: str) -> bytes:
    """A carrier INVITE from `caller` (E.164): From in national form, PAI in both forms."""
    national = caller.removeprefix("+86")
    return message(
        [
            f"INVITE sip:{CALLEE_NATIONAL}@192.0.2.10:5060;user=phone SIP/2.0",
            "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-524287-1---7d3e9f1c2a4b6d8e;rport",
            "Via: SIP/2.0/UDP 172.16.20.5:5060;received=203.0.113.7;rport=5062"
            ";branch=z9hG4bK3f9a2c71e0",
            "Via: SIP/2.0/TCP core-01.carrier.example:5060;branch=z9hG4bKcore55a1.0",
            f"Record-Route: <sip:198.51.100.1:5060;lr;ftag={FROM_TAG}>",
            "Max-Forwards: 68",
            f'From: "Shanghai Office" <sip:{national}@carrier.example;user=phone>;tag={FROM_TAG}',
            f"To: <sip:{CALLEE_NATIONAL}@192.0.2.10;user=phone>",
            f"Call-ID: {CALL_ID}",
            "CSeq: 102 INVITE",
            f"Contact: <sip:{national}@198.51.100.1:5060;transport=udp>;expires=1800",
            f'P-Asserted-Identity: "Shanghai Office" <sip:{caller}@carrier.example;user=phone>',
            f"P-Asserted-Identity: <tel:{caller}>",
            "Privacy: none",
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK, REFER, NOTIFY",
            "Supported: timer, replaces, 100rel",
            "Session-Expires: 1800;refresher=uac",
            "User-Agent: CarrierSBC/5.2.1",
            "Content-Type: application/sdp",
        ],
        SDP_OFFER,
    )


def in_dialog_ack(caller: str) -> bytes:
    """The caller's ACK to sipguard's 200 OK (in-dialog, end to end)."""
    national = caller.removeprefix("+86")
    return message(
        [
            "ACK sip:sipguard@192.0.2.10:5060;transport=udp SIP/2.0",
            "Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f60718;rport",
            "Via: SIP/2.0/UDP 172.16.20.5:5060;received=203.0.113.7;rport=5062"
            ";branch=z9hG4bK3f9a2c71e1",
            "Max-Forwards: 68",
            f'From: "Shanghai Office" <sip:{national}@carrier.example;user=phone>;tag={FROM_TAG}',
            f"To: <sip:{CALLEE_NATIONAL}@192.0.2.10;user=phone>;tag=8a1f0c2d3e4b5a69",
            f"Call-ID: {CALL_ID}",
            "CSeq: 102 ACK",
        ]
    )


def callee_ok(caller: str) -> bytes:
    """The callee's 200 OK to sipguard's outbound INVITE, with its SDP answer."""
    return message(
        [
            "SIP/2.0 200 OK",
            "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK0f1e2d3c4b5a6978;rport=5060",
            "Record-Route: <sip:192.0.2.50:5080;lr>",
            f"From: <sip:{caller};verstat=TN-Validation-Passed@carrier.example;user=phone>"
            ";tag=5d6e7f8091a2b3c4",
            "To: <sip:02161234567@192.0.2.50:5080>;tag=callee-77c1e0",
            "Call-ID: 9b1f6e2d4c3a5b7e8d9c0a1b2c3d4e5f",
            "CSeq: 1 INVITE",
            "Contact: <sip:02161234567@192.0.2.50:5080;transport=udp>",
            "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO",
            "Supported: timer, replaces",
            "Require: timer",
            "Session-Expires: 1800;refresher=uac",
            "Server: CalleePBX/3.4",
            "Content-Type: application/sdp",
        ],
        SDP_ANSWER,
    )


def read_call_headers(request: Request) -> None:
    """Parse what the core and the gate read from a new INVITE."""
    _ = (
        request.vias,
        request.call_id,
        request.cseq,
        request.from_,
        request.to,
        request.contacts,
        request.record_routes,
        request.request_uri,
        request.max_forwards,
    )
    for value in request.headers.get_all("p-asserted-identity"):
        parse_name_addr(value)


# --------------------------------------------------------------------------
# What the core does with a decision (public parts only).


def outbound_invite(request: Request, allow: Allow, ids: IdFactory) -> bytes:
    """The B leg's INVITE of an allowed call, as bytes."""
    route = allow.route
    local_uri = request.from_ if allow.from_value is None else parse_name_addr(allow.from_value)
    leg = Leg(
        call_id=ids.call_id(),
        local_tag=ids.tag(),
        local_uri=local_uri,
        remote_uri=request.to,
        remote_tag=None,
        remote_target=outbound_uri(request, route),
        peer=route,
        local=LOCAL,
    )
    extra = list(end_to_end_headers(request.headers, allow.strip))
    extra.extend(allow.headers)
    invite = leg.build_request(
        "INVITE",
        cseq=leg.next_cseq(),
        branch=ids.branch(),
        max_forwards=(request.max_forwards or 70) - 1,
        extra=extra,
        body=request.body,
        with_contact=True,
    )
    return to_bytes(invite)


def refusal_bytes(request: Request, peer: Peer, refuse: Refuse, ids: IdFactory) -> bytes:
    """The stateless answer to a refused INVITE (received/rport, To-tag), as bytes."""
    to_tag = ids.tag() if request.to.tag is None else None
    extra = refuse.headers
    if refuse.warning is not None:  # as B2BUA._warning signs it
        extra += (("Warning", warning_value(hostport(LOCAL.host, LOCAL.port), refuse.warning)),)
    response = make_response(
        request, peer, refuse.status, refuse.reason, to_tag=to_tag, extra=extra
    )
    return to_bytes(response)


# --------------------------------------------------------------------------
# Fixtures: built on first use, once per worker process.


@dataclass(frozen=True)
class Config:
    ranges: int
    callers: int
    policy_file: str | None


def rule_set(ranges: int) -> tuple[RuleSet, str]:
    """`ranges` disjoint 100-number mobile blocks (+861[3-9]xxxxxxxxx) over
    TRUNKS trunks; returns an allocated number of trunk 0 as well."""
    rng = random.Random(ranges)
    per_trunk: list[list[str]] = [[] for _ in range(TRUNKS)]
    starts = rng.sample(range(30_000_000, 100_000_000), ranges)
    sample = ""
    for index, start in enumerate(starts):
        base = start * 100
        trunk = index % TRUNKS
        per_trunk[trunk].append(f"+861{base:010d}-+861{base + 99:010d}")
        if trunk == 0:
            sample = f"+861{base + 42:010d}"
    trunks = tuple(
        Trunk(
            name=f"carrier-{n}",
            sources=(
                SourceMatch(network=ipaddress.ip_network(f"198.51.100.{n + 1}/32"), port=5060),
            ),
            route=ROUTE,
            ranges=tuple(per_trunk[n]),
        )
        for n in range(TRUNKS)
    )
    return RuleSet(numbering=Numbering(country_code="86"), trunks=trunks), sample


def built_policy(ranges: int) -> tuple[Policy, str]:
    rules, caller = rule_set(ranges)
    return build_policy(rules), caller


def write_policy(ranges: int, path: Path) -> bool:
    """Build the policy once and pickle it for the workers; False if it cannot be."""
    started = time.perf_counter()
    try:
        data = pickle.dumps(built_policy(ranges), protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        print(f"policy not picklable ({exc}); each worker builds its own", file=sys.stderr)
        return False
    path.write_bytes(data)
    seconds = time.perf_counter() - started
    print(f"rule set of {ranges:,} ranges built and saved in {seconds:.1f} s", file=sys.stderr)
    return True


def load_policy(config: Config) -> tuple[Policy, str]:
    if config.policy_file is None:
        return built_policy(config.ranges)
    loaded = pickle.loads(Path(config.policy_file).read_bytes())
    policy, caller = loaded
    assert isinstance(policy, Policy) and isinstance(caller, str)
    return policy, caller


@dataclass(frozen=True)
class Decisions:
    policy: Policy
    trunk: CompiledTrunk
    gate: PolicyGate
    allowed_view: CallView
    spoofed_view: CallView
    allowed: Request  # pre-parsed, its lazy headers read once
    spoofed: Request
    allow: Allow
    refuse: Refuse
    spoofed_bytes: bytes


@functools.cache
def decisions(config: Config) -> Decisions:
    policy, caller = load_policy(config)
    trunk = policy.trunk_for(CARRIER.host, CARRIER.port)
    assert trunk is not None and trunk.name == "carrier-0"
    gate = PolicyGate(policy, wall_clock=lambda: WALL_TIME)
    allowed_bytes, spoofed_bytes = carrier_invite(caller), carrier_invite(SPOOFED)
    allowed, spoofed = parse_message(allowed_bytes), parse_message(spoofed_bytes)
    assert isinstance(allowed, Request) and isinstance(spoofed, Request)
    allowed_view, spoofed_view = call_view(allowed), call_view(spoofed)
    verdict = evaluate(policy, trunk, allowed_view, wall_time=WALL_TIME)
    assert verdict.allowed and verdict.rule is None, verdict
    verdict = evaluate(policy, trunk, spoofed_view, wall_time=WALL_TIME)
    assert verdict.rule == "caller_not_allocated", verdict
    allow = gate.decide(allowed, CARRIER, now=0.0)
    refuse = gate.decide(spoofed, CARRIER, now=0.0)
    assert isinstance(allow, Allow) and allow.caller == caller, allow
    assert isinstance(refuse, Refuse) and refuse.rule == "caller_not_allocated", refuse
    check_answers(allowed, spoofed, allow, refuse)
    return Decisions(
        policy,
        trunk,
        gate,
        allowed_view,
        spoofed_view,
        allowed,
        spoofed,
        allow,
        refuse,
        spoofed_bytes,
    )


def check_answers(allowed: Request, spoofed: Request, allow: Allow, refuse: Refuse) -> None:
    """The answers the benchmarks build are what the core would send."""
    ids = IdFactory(os.urandom)
    refusal = parse_message(refusal_bytes(spoofed, CARRIER, refuse, ids))
    assert isinstance(refusal, Response) and refusal.status == 403, refusal
    assert refusal.headers.get("reason") is not None
    assert refusal.headers.get("warning") == f'399 192.0.2.10:5060 "{refuse.rule}"'
    assert refusal.top_via.has_param("rport") and refusal.to.tag is not None
    invite = parse_message(outbound_invite(allowed, allow, ids))
    assert isinstance(invite, Request) and invite.method == "INVITE", invite
    assert invite.uri == "sip:02161234567@192.0.2.50:5080", invite.uri
    assert "verstat=TN-Validation-Passed" in (invite.headers.get("p-asserted-identity") or "")
    assert invite.headers.get("supported") == "timer, replaces"
    assert invite.body == SDP_OFFER


class Rates:
    """One trunk's rate table under steady traffic (see the module docstring)."""

    TRUNK = "carrier-0"
    IN_PROGRESS = 1_000
    CALL_EVERY = 10.0  # seconds of table time between two calls of one caller

    def __init__(self, callers: int) -> None:
        rate = callers / self.CALL_EVERY  # calls a second offered to the trunk
        self.step = 1.0 / rate
        self.limits = TrunkLimits(
            cps=TokenBucketLimit(rate=2 * rate, burst=max(1, int(rate // 5))),
            concurrent=1_000_000,  # checked on every call, far above the live calls
            per_caller=WindowLimit(calls=20, window=60.0, warn=10, block_for=300.0),
            per_callee=WindowLimit(calls=30, window=60.0, warn=15),
        )
        rng = random.Random(callers)
        numbers = [f"+861{n:010d}" for n in rng.sample(range(3_000_000_000, 10**10), callers)]
        callees = [f"+8621{n:08d}" for n in rng.sample(range(10**7, 10**8), callers)]
        rng.shuffle(callees)
        self.pairs = itertools.cycle(list(zip(numbers, callees, strict=True)))
        self.table = RateTable()
        self.now = 1_000.0
        self.admit(self.IN_PROGRESS, end=False, check=True)  # calls in progress
        self.admit(2 * callers, end=True, check=True)  # every caller's window filled

    def admit(self, calls: int, *, end: bool, check: bool) -> None:
        """Set-up traffic, checked: every call allowed, no warning."""
        limits, trunk, now = self.limits, self.TRUNK, self.now
        for caller, callee in itertools.islice(self.pairs, calls):
            now += self.step
            admission = self.table.admit(limits, trunk=trunk, caller=caller, callee=callee, now=now)
            assert not check or (admission.allowed and not admission.warnings), admission
            if end:
                self.end(caller, now)
        self.now = now

    def end(self, caller: str, now: float) -> None:
        self.table.call_ended(
            self.limits, trunk=self.TRUNK, caller=caller, ringing_for=4.0, answered=True, now=now
        )


@functools.cache
def rates(config: Config) -> Rates:
    return Rates(config.callers)


# --------------------------------------------------------------------------
# Timed functions: (loops, config) -> seconds for `loops` calls.


def time_parse(data: bytes, loops: int) -> float:
    parse = parse_message
    started = time.perf_counter()
    for _ in range(loops):
        parse(data)
    return time.perf_counter() - started


CARRIER_CALLER = "+8613812345678"
# parse_message, typed for messages known to be requests (no check in the loop).
parse_request = cast(Callable[[bytes], Request], parse_message)
INVITE = carrier_invite(CARRIER_CALLER)
ACK = in_dialog_ack(CARRIER_CALLER)
OK = callee_ok(CARRIER_CALLER)


def bench_parse_invite(loops: int, config: Config) -> float:
    return time_parse(INVITE, loops)


def bench_parse_invite_read(loops: int, config: Config) -> float:
    parse, read = parse_request, read_call_headers
    data = INVITE
    started = time.perf_counter()
    for _ in range(loops):
        read(parse(data))
    return time.perf_counter() - started


def bench_parse_ack(loops: int, config: Config) -> float:
    return time_parse(ACK, loops)


def bench_parse_ok(loops: int, config: Config) -> float:
    return time_parse(OK, loops)


def time_evaluate(loops: int, config: Config, *, spoofed: bool) -> float:
    fx = decisions(config)
    policy, trunk = fx.policy, fx.trunk
    view = fx.spoofed_view if spoofed else fx.allowed_view
    wall = WALL_TIME
    started = time.perf_counter()
    for _ in range(loops):
        evaluate(policy, trunk, view, wall_time=wall)
    return time.perf_counter() - started


def bench_evaluate_allowed(loops: int, config: Config) -> float:
    return time_evaluate(loops, config, spoofed=False)


def bench_evaluate_spoofed(loops: int, config: Config) -> float:
    return time_evaluate(loops, config, spoofed=True)


def time_decide(loops: int, config: Config, *, spoofed: bool) -> float:
    fx = decisions(config)
    decide = fx.gate.decide
    request = fx.spoofed if spoofed else fx.allowed
    peer = CARRIER
    started = time.perf_counter()
    for _ in range(loops):
        decide(request, peer, now=0.0)
    return time.perf_counter() - started


def bench_decide_allowed(loops: int, config: Config) -> float:
    return time_decide(loops, config, spoofed=False)


def bench_decide_spoofed(loops: int, config: Config) -> float:
    return time_decide(loops, config, spoofed=True)


def bench_rate_admit(loops: int, config: Config) -> float:
    fx = rates(config)
    admit, limits, trunk, step = fx.table.admit, fx.limits, fx.TRUNK, fx.step
    pairs = list(itertools.islice(fx.pairs, loops))
    now = fx.now
    started = time.perf_counter()
    for caller, callee in pairs:
        now += step
        admit(limits, trunk=trunk, caller=caller, callee=callee, now=now)
    elapsed = time.perf_counter() - started
    for caller, _ in pairs:  # untimed: back to the steady number of live calls
        fx.end(caller, now)
    fx.now = now
    return elapsed


def bench_rate_admit_end(loops: int, config: Config) -> float:
    fx = rates(config)
    table, limits, trunk, step = fx.table, fx.limits, fx.TRUNK, fx.step
    admit, call_ended = table.admit, table.call_ended
    pairs = list(itertools.islice(fx.pairs, loops))
    now = fx.now
    started = time.perf_counter()
    for caller, callee in pairs:
        now += step
        admit(limits, trunk=trunk, caller=caller, callee=callee, now=now)
        call_ended(limits, trunk=trunk, caller=caller, ringing_for=4.0, answered=True, now=now)
    elapsed = time.perf_counter() - started
    fx.now = now
    return elapsed


@functools.cache
def answer_ids() -> IdFactory:
    return IdFactory(os.urandom)


def bench_build_403(loops: int, config: Config) -> float:
    fx = decisions(config)
    request, refuse, ids, peer = fx.spoofed, fx.refuse, answer_ids(), CARRIER
    started = time.perf_counter()
    for _ in range(loops):
        refusal_bytes(request, peer, refuse, ids)
    return time.perf_counter() - started


def bench_build_invite(loops: int, config: Config) -> float:
    fx = decisions(config)
    request, allow, ids = fx.allowed, fx.allow, answer_ids()
    started = time.perf_counter()
    for _ in range(loops):
        outbound_invite(request, allow, ids)
    return time.perf_counter() - started


def bench_reject_path(loops: int, config: Config) -> float:
    fx = decisions(config)
    decide, data, ids, peer = fx.gate.decide, fx.spoofed_bytes, answer_ids(), CARRIER
    parse = parse_request
    started = time.perf_counter()
    for _ in range(loops):
        request = parse(data)
        decision = decide(request, peer, now=0.0)
        if isinstance(decision, Refuse):
            refusal_bytes(request, peer, decision, ids)
    return time.perf_counter() - started


# --------------------------------------------------------------------------
# The runner.


@dataclass(frozen=True)
class Benchmark:
    name: str
    func: Callable[[int, Config], float]
    needs_policy: bool = False
    target: bool = False  # evaluate() alone: the <= 2 us target


def short_count(count: int) -> str:
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if count >= size and count % size == 0:
            return f"{count // size}{suffix}"
    return f"{count:,}"


def benchmarks(config: Config) -> list[Benchmark]:
    ranges = f"{short_count(config.ranges)} ranges"
    callers = f"{short_count(config.callers)} callers"
    return [
        Benchmark(f"parse INVITE (carrier, {len(INVITE)} B)", bench_parse_invite),
        Benchmark("parse INVITE + read call headers (carrier)", bench_parse_invite_read),
        Benchmark(f"parse ACK (in-dialog, {len(ACK)} B)", bench_parse_ack),
        Benchmark(f"parse 200 OK (SDP answer, {len(OK)} B)", bench_parse_ok),
        Benchmark(f"evaluate allowed ({ranges})", bench_evaluate_allowed, True, True),
        Benchmark(f"evaluate caller_not_allocated ({ranges})", bench_evaluate_spoofed, True, True),
        Benchmark(f"decide allowed ({ranges})", bench_decide_allowed, True),
        Benchmark(f"decide caller_not_allocated ({ranges})", bench_decide_spoofed, True),
        Benchmark(f"rate admit ({callers})", bench_rate_admit),
        Benchmark(f"rate admit + call_ended ({callers})", bench_rate_admit_end),
        Benchmark("build 403 + to_bytes", bench_build_403, True),
        Benchmark("build outbound INVITE + to_bytes", bench_build_invite, True),
        Benchmark(f"reject path: parse + decide + 403 bytes ({ranges})", bench_reject_path, True),
    ]


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ranges",
        type=int,
        default=DEFAULT_RANGES,
        help=f"allocated ranges of the rule set (default {DEFAULT_RANGES:,})",
    )
    parser.add_argument(
        "--callers",
        type=int,
        default=DEFAULT_CALLERS,
        help=f"distinct callers of the rate benchmarks (default {DEFAULT_CALLERS:,})",
    )
    parser.add_argument(
        "--select",
        action="append",
        default=[],
        metavar="TEXT",
        help="run only the benchmarks whose name contains TEXT (repeatable)",
    )
    parser.add_argument("--policy-file", help=argparse.SUPPRESS)


def worker_options(cmd: list[str], args: argparse.Namespace) -> None:
    """Hand the options (and the pickled rule set) on to pyperf's workers."""
    cmd.extend(["--ranges", str(args.ranges), "--callers", str(args.callers)])
    for text in args.select:
        cmd.extend(["--select", text])
    if args.policy_file:
        cmd.extend(["--policy-file", args.policy_file])


def summary(results: list[tuple[Benchmark, float]], config: Config) -> None:
    print("\nMedians:")
    width = max(len(bench.name) for bench, _ in results)
    for bench, median in results:
        print(f"  {bench.name:<{width}}  {median * 1e6:8.3f} us")
    targets = [(bench, median) for bench, median in results if bench.target]
    if not targets:
        return
    print(f"\nevaluate() alone (the decision), target median <= {TARGET_EVALUATE_US:g} us:")
    for bench, median in targets:
        held = "met" if median * 1e6 <= TARGET_EVALUATE_US else "NOT met"
        print(f"  {bench.name}: {median * 1e6:.3f} us: {held}")
    if config.ranges != TARGET_RANGES:
        print(f"  (the target is for {TARGET_RANGES:,} ranges; this run used {config.ranges:,})")


def main() -> None:
    runner = pyperf.Runner(add_cmdline_args=worker_options)
    runner.metadata["description"] = "sipguard hot path, per call"
    add_options(runner.argparser)
    args = runner.parse_args()
    if not TRUNKS <= args.ranges <= MAX_RANGES or args.callers < 1:
        runner.argparser.error(f"--ranges must be {TRUNKS} to {MAX_RANGES:,}; --callers at least 1")
    selected = [
        bench
        for bench in benchmarks(Config(args.ranges, args.callers, None))
        if not args.select or any(text.lower() in bench.name.lower() for text in args.select)
    ]
    workdir: str | None = None
    if not args.worker and args.policy_file is None and any(b.needs_policy for b in selected):
        workdir = tempfile.mkdtemp(prefix="sipguard-bench-")
        path = Path(workdir) / f"policy-{args.ranges}.pickle"
        if write_policy(args.ranges, path):
            args.policy_file = str(path)
    config = Config(args.ranges, args.callers, args.policy_file)
    results: list[tuple[Benchmark, float]] = []
    try:
        for bench in selected:
            metadata: dict[str, int | str] = {}
            if bench.needs_policy:
                metadata["ranges"] = config.ranges
            if bench.target:
                metadata["target"] = (
                    f"median <= {TARGET_EVALUATE_US:g} us at {TARGET_RANGES:,} ranges"
                )
            result = runner.bench_time_func(bench.name, bench.func, config, metadata=metadata)
            if result is not None and not args.worker:
                results.append((bench, result.median()))
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    if results:
        summary(results, config)


if __name__ == "__main__":
    main()
