"""Decision benchmark: ns per caller-ID decision with 10, 10k and 1M allocated ranges.

Run: python bench/bench_policy.py [--quick]

For each size, builds a rule set whose trunks hold that many non-overlapping
ranges, compiles it, and times (side by side, one run):
- evaluate() alone for an allowed call and for a spoofed one
  (caller_not_allocated) and a pass-through one (caller_of_other_trunk);
- the gate's whole decision from a parsed INVITE (header reading, number
  normalisation, evaluate, building the outbound identity or the refusal);
- parse + decide from the raw datagram bytes.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sipguard.gate import PolicyGate, build_policy  # noqa: E402
from sipguard.peer import Peer  # noqa: E402
from sipguard.policy.engine import CallView, evaluate  # noqa: E402
from sipguard.rules.values import Endpoint, Numbering, RuleSet, SourceMatch, Trunk  # noqa: E402
from sipguard.sip.message import Request  # noqa: E402
from sipguard.sip.parser import parse_message  # noqa: E402

TRUNKS = 100


def rule_set(ranges: int, rng: random.Random) -> tuple[RuleSet, list[str]]:
    """`ranges` disjoint 100-number ranges over TRUNKS trunks; returns one
    allocated number per trunk as well."""
    per_trunk: list[list[str]] = [[] for _ in range(TRUNKS)]
    starts = rng.sample(range(10_000_000, 99_999_999), ranges)
    samples: list[str] = [""] * TRUNKS
    for index, start in enumerate(starts):
        base = start * 100
        trunk = index % TRUNKS
        per_trunk[trunk].append(f"+8621{base:010d}-+8621{base + 99:010d}")
        samples[trunk] = f"+8621{base + 42:010d}"
    trunks = tuple(
        Trunk(
            name=f"trunk-{n}",
            sources=(SourceMatch(network=ipaddress.ip_network(f"10.1.{n}.1/32"), port=5060),),
            route=Endpoint(transport="udp", host="10.9.0.1", port=5080),
            ranges=tuple(per_trunk[n]),
        )
        for n in range(TRUNKS)
    )
    return RuleSet(numbering=Numbering(country_code="86"), trunks=trunks), samples


def invite(caller: str) -> bytes:
    body = (
        b"v=0\r\no=- 1 1 IN IP4 10.1.0.1\r\ns=-\r\nc=IN IP4 10.1.0.1\r\n"
        b"t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    )
    return (
        "INVITE sip:13800138000@10.0.0.1:5060 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.1.0.1:5060;branch=z9hG4bK776asdhds;rport\r\n"
        "Max-Forwards: 70\r\n"
        f'From: "Sales" <sip:{caller}@10.1.0.1;user=phone>;tag=1928301774\r\n'
        "To: <sip:13800138000@10.0.0.1>\r\n"
        "Call-ID: a84b4c76e66710@10.1.0.1\r\n"
        "CSeq: 314159 INVITE\r\n"
        "Contact: <sip:caller@10.1.0.1:5060>\r\n"
        f"P-Asserted-Identity: <sip:{caller}@10.1.0.1;user=phone>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def parse_invite(raw: bytes) -> Request:
    message = parse_message(raw)
    assert isinstance(message, Request)
    return message


def per_call_ns(statement: object, number: int) -> float:
    timer = timeit.Timer(statement)  # type: ignore[arg-type]
    best = min(timer.repeat(repeat=5, number=number))
    return best / number * 1e9


def measure(size: int, number: int) -> dict[str, float]:
    rng = random.Random(size)
    built = time.perf_counter()
    rules, samples = rule_set(size, rng)
    policy = build_policy(rules)
    build_s = time.perf_counter() - built
    trunk = policy.trunks[0]
    own, other = samples[0], samples[1]
    valid = CallView(from_number=own, asserted=(own,), callee="13800138000")
    spoofed = CallView(from_number="+862100000001", callee="13800138000")
    passed_through = CallView(from_number=other, asserted=(other,), callee="13800138000")
    assert evaluate(policy, trunk, valid, wall_time=0).allowed
    assert evaluate(policy, trunk, spoofed, wall_time=0).rule == "caller_not_allocated"
    assert evaluate(policy, trunk, passed_through, wall_time=0).rule == "caller_of_other_trunk"
    gate = PolicyGate(policy, wall_clock=lambda: 0.0)
    peer = Peer("udp", "10.1.0.1", 5060)
    raw_valid, raw_spoofed = invite(own), invite("+862100000001")
    parsed = parse_message(raw_valid)
    return {
        "build s": build_s,
        "allow ns": per_call_ns(lambda: evaluate(policy, trunk, valid, wall_time=0), number),
        "not-allocated ns": per_call_ns(
            lambda: evaluate(policy, trunk, spoofed, wall_time=0), number
        ),
        "other-trunk ns": per_call_ns(
            lambda: evaluate(policy, trunk, passed_through, wall_time=0), number
        ),
        "gate decide ns": per_call_ns(
            lambda: gate.decide(parse_invite(raw_valid), peer, now=0.0), number // 4
        )
        - per_call_ns(lambda: parse_invite(raw_valid), number // 4),
        "parse+decide allow ns": per_call_ns(
            lambda: gate.decide(parse_invite(raw_valid), peer, now=0.0), number // 4
        ),
        "parse+decide 403 ns": per_call_ns(
            lambda: gate.decide(parse_invite(raw_spoofed), peer, now=0.0), number // 4
        ),
        "_parsed": float(parsed is not None),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 and 10k only")
    args = parser.parse_args()
    sizes = [10, 10_000] if args.quick else [10, 10_000, 1_000_000]
    results = {size: measure(size, 20_000) for size in sizes}
    columns = [key for key in results[sizes[0]] if not key.startswith("_")]
    print(f"{'ranges':>10} " + " ".join(f"{c:>22}" for c in columns))
    for size, figures in results.items():
        print(f"{size:>10} " + " ".join(f"{figures[c]:>22.2f}" for c in columns))
    base = results[sizes[0]]["allow ns"]
    print(
        "\nratio of evaluate() allow, largest / smallest rule set: "
        f"{results[sizes[-1]]['allow ns'] / base:.2f}"
    )


if __name__ == "__main__":
    main()
