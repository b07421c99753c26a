"""The gate with the rate table: limits after the caller-ID rules pass."""

from __future__ import annotations

import pytest

from sipguard.gate import PolicyGate, build_policy
from sipguard.peer import Peer
from sipguard.policy.decision import Allow, Refuse
from sipguard.ratetable import RateTable
from sipguard.rules.loader import parse_rules
from sipguard.sip.message import Headers, Request

pytestmark = pytest.mark.unit

RULES = """\
version: 1
mode: {mode}
numbering: {{country_code: "86"}}
emergency_numbers: ["110"]
trunks:
  - name: a
    sources: ["10.1.0.5"]
    route: "udp:10.9.0.1:5080"
    ranges: ["+862131771200-+862131771299"]
    limits: {{cps: 2, burst: 2, concurrent: 10, per_callee: {{calls: 3, window: 1h, warn: 2}}}}
  - name: b
    sources: ["10.2.0.5"]
    route: "udp:10.9.0.1:5080"
    ranges: ["+861065550000-+861065559999"]
    limits: {{cps: 2, burst: 2}}
"""
A = Peer("udp", "10.1.0.5", 5060)
B = Peer("udp", "10.2.0.5", 5060)


def gate(mode: str = "enforce") -> PolicyGate:
    rules = parse_rules(RULES.format(mode=mode), path="t.yaml")
    return PolicyGate(build_policy(rules), ratetable=RateTable(), wall_clock=lambda: 0.0)


def invite(caller: str, callee: str = "13800138000") -> Request:
    fields = [
        ("Via", "SIP/2.0/UDP 10.1.0.5:5060;branch=z9hG4bK1"),
        ("From", f"<sip:{caller}@10.1.0.5>;tag=1"),
        ("To", f"<sip:{callee}@10.0.0.1>"),
        ("Call-ID", "c1"),
        ("CSeq", "1 INVITE"),
    ]
    return Request("INVITE", f"sip:{callee}@10.0.0.1", Headers(fields))


def test_cps_limit_answers_503_with_retry_after_and_spares_other_trunks() -> None:
    g = gate()
    first = g.decide(invite("+862131771201", "13800138001"), A, now=100.0)
    second = g.decide(invite("+862131771202", "13800138002"), A, now=100.0)
    assert isinstance(first, Allow) and first.rate_counted
    assert isinstance(second, Allow)
    third = g.decide(invite("+862131771203", "13800138003"), A, now=100.0)
    assert isinstance(third, Refuse)
    assert (third.status, third.rule) == (503, "cps_limit")
    headers = dict(third.headers)
    assert headers["Retry-After"] == "1"
    assert headers["Reason"] == 'SIP;cause=503;text="cps_limit"'
    other = g.decide(invite("+861065550001", "13800138004"), B, now=100.0)
    assert isinstance(other, Allow)  # trunk a's flood left b's budget alone


def test_emergency_calls_skip_the_rate_rules() -> None:
    g = gate()
    for _ in range(2):
        g.decide(invite("+862131771201", "13800138001"), A, now=100.0)
    emergency = g.decide(invite("+862131771201", "110"), A, now=100.0)
    assert isinstance(emergency, Allow) and not emergency.rate_counted


def test_call_bombing_warns_then_refuses() -> None:
    g = gate()
    answers = [
        g.decide(invite(f"+86213177120{n}", "13800138009"), A, now=100.0 + n) for n in range(4)
    ]
    assert all(isinstance(a, Allow) for a in answers[:3])
    assert answers[0].warnings == () and answers[2].warnings == ("call_bombing",)  # type: ignore[union-attr]
    assert isinstance(answers[3], Refuse) and answers[3].rule == "call_bombing"
    assert answers[3].status == 403


def test_monitor_mode_relays_rate_refusals_and_names_them() -> None:
    g = gate("monitor")
    for _ in range(2):
        g.decide(invite("+862131771201", "13800138001"), A, now=100.0)
    third = g.decide(invite("+862131771203", "13800138003"), A, now=100.0)
    assert isinstance(third, Allow) and third.note == "cps_limit" and not third.rate_counted


def test_a_rate_refusal_names_the_monitored_rule_the_caller_id_failed() -> None:
    rules = parse_rules(
        RULES.format(mode="enforce").replace(
            "version: 1\n", "version: 1\nmonitor_rules: [caller_not_allocated]\n"
        ),
        path="t.yaml",
    )
    g = PolicyGate(build_policy(rules), ratetable=RateTable(), wall_clock=lambda: 0.0)
    for _ in range(2):
        g.decide(invite("+862131771201", "13800138001"), A, now=100.0)
    forged = g.decide(invite("+862131779999", "13800138003"), A, now=100.0)
    genuine = g.decide(invite("+862131771203", "13800138003"), A, now=100.0)
    assert isinstance(forged, Refuse) and isinstance(genuine, Refuse)
    assert (forged.rule, forged.noted) == ("cps_limit", "caller_not_allocated")
    assert (genuine.rule, genuine.noted) == ("cps_limit", None)


def test_refused_caller_ids_consume_no_rate_budget() -> None:
    g = gate()
    for _ in range(5):
        spoofed = g.decide(invite("+862131779999", "13800138001"), A, now=100.0)
        assert isinstance(spoofed, Refuse) and spoofed.rule == "caller_not_allocated"
    assert isinstance(g.decide(invite("+862131771201", "13800138001"), A, now=100.0), Allow)


def test_a_trunk_without_limits_never_enters_the_rate_table() -> None:
    text = RULES.format(mode="enforce") + (
        "  - name: free\n"
        '    sources: ["10.3.0.5"]\n'
        '    route: "udp:10.9.0.1:5080"\n'
        '    ranges: ["*"]\n'
    )
    table = RateTable()
    g = PolicyGate(build_policy(parse_rules(text, path="t.yaml")), ratetable=table)
    decision = g.decide(invite("+862131771201"), Peer("udp", "10.3.0.5", 5060), now=1.0)
    assert isinstance(decision, Allow) and not decision.rate_counted
    assert table.stats.live_calls == 0
