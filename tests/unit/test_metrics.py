"""Metrics without a server: what each call event counts, and a taken port."""

from __future__ import annotations

import dataclasses
import random
import socket

import pytest
from prometheus_client import generate_latest

from sipguard.b2bua import B2BUA, CoreConfig
from sipguard.dialog import IdFactory, LocalAddress
from sipguard.events import CallEnded, CallRefused, CallStarted, MessageRejected
from sipguard.gate import PolicyGate, build_policy
from sipguard.metrics import Metrics, StateReading
from sipguard.policy.verdict import RULE_DEFAULTS
from sipguard.ratetable import RateTable
from sipguard.rules.loader import parse_rules
from sipguard.rules.values import IDENTITY_RULES, INTERCEPTIONS, RULE_GROUPS
from tests.helpers import CALLER, STRANGER, invite

pytestmark = pytest.mark.unit


def metrics() -> Metrics:
    return Metrics(lambda: StateReading(live_calls={"t": 2}, gauges={"reloads_total": 3}))


def sample(m: Metrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def refused(rule: str, trunk: str | None = "t") -> CallRefused:
    return CallRefused(trunk, CALLER, "c", 403, rule, "Forbidden", 0.0)


def test_each_event_counts_where_a_regulator_looks() -> None:
    m = metrics()
    m.observe(CallStarted("t", CALLER, "a", "b", "+861", "+862", 0.0))
    m.observe(
        CallStarted(
            "t", CALLER, "a2", "b2", "+861", "+862", 0.0, monitor_rule="caller_not_allocated"
        )
    )
    for rule in ("caller_not_allocated", "caller_of_other_trunk", "home_cli_from_abroad"):
        m.observe(refused(rule))
    m.observe(refused("identity_mismatch"))
    m.observe(refused("unknown_source", trunk=None))
    m.observe(CallEnded("t", "a", "b", 200, "callee", True, 0.0, 5.0))
    m.observe(MessageRejected(STRANGER, 400, "bad"))
    assert sample(m, "sipguard_calls_checked_total", trunk="t") == 6, "strangers are not checked"
    assert sample(m, "sipguard_caller_auth_passed_total", trunk="t") == 1, "monitor is no pass"
    assert sample(m, "sipguard_passthrough_intercepted_total", trunk="t") == 2
    assert sample(m, "sipguard_forged_from_abroad_intercepted_total", trunk="t") == 1
    assert sample(m, "sipguard_modified_caller_id_intercepted_total", trunk="t") == 1
    assert (
        sample(m, "sipguard_decisions_total", trunk="-", verdict="reject", rule="unknown_source")
        == 1
    )
    assert sample(m, "sipguard_calls_ended_total", trunk="t", ended_by="callee") == 1
    assert sample(m, "sipguard_messages_rejected_total") == 1
    text = generate_latest(m.registry).decode()
    assert 'sipguard_live_calls{trunk="t"} 2.0' in text
    assert "sipguard_reloads_total 3.0" in text


def test_refusals_for_rate_time_or_callee_are_no_authentication_failures() -> None:
    """The pass rate counts identity rules only: a genuine caller ID refused for
    a rate, the time or its callee passed caller authentication."""
    m = metrics()
    rules = (
        "cps_limit",
        "concurrent_limit",
        "high_frequency_caller",
        "call_bombing",
        "one_ring",
        "ratetable_unavailable",
        "outside_calling_hours",
        "refused_callee",
    )
    for rule in rules:
        m.observe(refused(rule))
    m.observe(CallStarted("t", CALLER, "a", "b", "+861", "+862", 0.0, monitor_rule="one_ring"))
    assert sample(m, "sipguard_calls_checked_total", trunk="t") == len(rules) + 1
    assert sample(m, "sipguard_caller_auth_passed_total", trunk="t") == len(rules) + 1


def test_a_caller_id_that_failed_an_identity_rule_never_passes() -> None:
    """Monitored, passed over for an emergency call, or noted before a rate
    refusal: an identity rule fired, so the caller ID did not pass."""
    m = metrics()
    started = CallStarted("t", CALLER, "a", "b", "+861", "+862", 0.0)
    m.observe(dataclasses.replace(started, monitor_rule="display_name_spoof"))
    m.observe(dataclasses.replace(started, monitor_rule="caller_not_allocated", emergency=True))
    m.observe(dataclasses.replace(refused("cps_limit"), noted="caller_not_allocated"))
    m.observe(dataclasses.replace(refused("outside_calling_hours"), noted="identity_mismatch"))
    m.observe(refused("missing_caller_id"))
    m.observe(refused("do_not_originate"))
    assert sample(m, "sipguard_calls_checked_total", trunk="t") == 6
    assert sample(m, "sipguard_caller_auth_passed_total", trunk="t") == 0
    # a monitored rule fired, but the refusing rule decides the interception figures
    assert sample(m, "sipguard_passthrough_intercepted_total", trunk="t") == 0


def test_a_trunk_of_genuine_callers_passes_in_full_under_a_cps_limit() -> None:
    """Calls through the core and the real gate: a cps limit refuses most of a
    burst of genuine calls, and every one of them still passed authentication."""
    rules = parse_rules(
        """\
version: 1
numbering: {country_code: "86"}
trunks:
  - name: t
    sources: ["10.1.0.5:5071"]
    route: "udp:10.9.0.1:5080"
    ranges: ["+862131771200-+862131771299"]
    limits: {cps: 1, burst: 3}
""",
        path="t.yaml",
    )
    gate = PolicyGate(build_policy(rules), ratetable=RateTable(), wall_clock=lambda: 0.0)
    core = B2BUA(
        config=CoreConfig(local={"udp": LocalAddress("udp", "10.0.0.1", 5060)}),
        gate=gate,
        ids=IdFactory(random.Random(7).randbytes),
    )
    m = metrics()
    for index in range(10):
        data = invite(call_id=f"c{index}", branch=f"z9hG4bKc{index}").replace(
            b"+862131771234", f"+8621317712{index:02d}".encode()
        )
        core.receive_datagram(data, CALLER, now=0.0)
        while (event := core.next_event()) is not None:
            m.observe(event)
    assert sample(m, "sipguard_decisions_total", trunk="t", verdict="reject", rule="cps_limit") == 7
    assert sample(m, "sipguard_calls_checked_total", trunk="t") == 10
    assert sample(m, "sipguard_caller_auth_passed_total", trunk="t") == 10


def test_a_home_caller_id_anonymised_from_abroad_is_intercepted_not_passed() -> None:
    """home_cli: anonymize relays the call withheld: a forged caller ID from
    abroad was caught, through the core and the real gate."""
    rules = parse_rules(
        """\
version: 1
numbering: {country_code: "86"}
trunks:
  - name: intl
    kind: international
    sources: ["10.1.0.5:5071"]
    route: "udp:10.9.0.1:5080"
    ranges: ["*"]
    home_cli: anonymize
""",
        path="t.yaml",
    )
    core = B2BUA(
        config=CoreConfig(local={"udp": LocalAddress("udp", "10.0.0.1", 5060)}),
        gate=PolicyGate(build_policy(rules), wall_clock=lambda: 0.0),
        ids=IdFactory(random.Random(7).randbytes),
    )
    m = metrics()
    foreign = invite(call_id="c1", branch="z9hG4bKc1").replace(b"+862131771234", b"+4420794600")
    for data in (invite(), foreign):
        core.receive_datagram(data, CALLER, now=0.0)
    events = []
    while (event := core.next_event()) is not None:
        events.append(event)
        m.observe(event)
    assert [(e.caller, e.anonymized) for e in events if isinstance(e, CallStarted)] == [
        ("anonymous", True),
        ("+4420794600", False),
    ]
    assert sample(m, "sipguard_calls_checked_total", trunk="intl") == 2
    assert sample(m, "sipguard_forged_from_abroad_intercepted_total", trunk="intl") == 1
    assert sample(m, "sipguard_caller_auth_passed_total", trunk="intl") == 1


def test_the_rule_groups_cover_every_rule_and_only_the_rule_ids() -> None:
    assert set(RULE_GROUPS) == set(RULE_DEFAULTS)
    assert IDENTITY_RULES.isdisjoint(
        {"cps_limit", "refused_callee", "outside_calling_hours", "unknown_source"}
    )
    assert set(INTERCEPTIONS) <= IDENTITY_RULES
    assert set(INTERCEPTIONS.values()) == {
        "passthrough",
        "forged_from_abroad",
        "modified_caller_id",
    }


def test_a_strangers_invite_dropped_unanswered_counts_as_dropped() -> None:
    m = metrics()
    m.observe(refused("unknown_source", trunk=None))
    m.observe(CallRefused(None, STRANGER, "c2", None, "unknown_source", "", 0.0))
    labels = {"trunk": "-", "rule": "unknown_source"}
    assert sample(m, "sipguard_decisions_total", verdict="reject", **labels) == 1
    assert sample(m, "sipguard_decisions_total", verdict="drop", **labels) == 1
    assert sample(m, "sipguard_refused_total", trunk="-") == 2
    assert sample(m, "sipguard_calls_checked_total", trunk="-") == 0


def test_sipguards_own_503s_are_decisions_but_no_caller_id_was_checked() -> None:
    m = metrics()
    for rule in ("draining", "trunk_capacity"):
        m.observe(CallRefused("t", CALLER, "c", 503, rule, "Service Unavailable", 0.0))
    for rule in ("draining", "trunk_capacity"):
        assert sample(m, "sipguard_decisions_total", trunk="t", verdict="reject", rule=rule) == 1
    assert sample(m, "sipguard_refused_total", trunk="t") == 2
    assert sample(m, "sipguard_calls_checked_total", trunk="t") == 0
    assert sample(m, "sipguard_caller_auth_passed_total", trunk="t") == 0


def test_warn_levels_are_counted_per_trunk_and_rule() -> None:
    m = metrics()
    started = CallStarted("t", CALLER, "a", "b", "+861", "+862", 0.0)
    m.observe(dataclasses.replace(started, warnings=("high_frequency_caller", "call_bombing")))
    m.observe(dataclasses.replace(started, warnings=("call_bombing",)))
    m.observe(started)
    assert sample(m, "sipguard_rule_warnings_total", trunk="t", rule="call_bombing") == 2
    assert sample(m, "sipguard_rule_warnings_total", trunk="t", rule="high_frequency_caller") == 1
    assert sample(m, "sipguard_decisions_total", trunk="t", verdict="allow", rule="") == 3


def test_a_taken_port_is_reported_not_fatal() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert metrics().serve("127.0.0.1", port) is False


def test_the_dashboard_only_queries_metrics_sipguard_exports() -> None:
    """docs/grafana-dashboard.json stays in step with the metric names."""
    import json
    import re
    from pathlib import Path

    from sipguard.events import CallEnded as Ended

    root = Path(__file__).resolve().parents[2]
    dashboard = json.loads((root / "docs" / "grafana-dashboard.json").read_text("utf-8"))
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"sipguard_[a-z_]+", target["expr"])
    }
    m = Metrics(
        lambda: StateReading(
            live_calls={"t": 1},
            ratetable_keys={"callers": 1},
            gauges={
                name: 0.0
                for name in (
                    "last_reload_ok",
                    "audit_records_dropped",
                    "ratetable_backend_up",
                    "internal_errors",
                    "draining",
                )
            },
        )
    )
    m.observe(CallStarted("t", CALLER, "a", "b", "+861", "+862", 0.0, warnings=("one_ring",)))
    m.observe(refused("caller_not_allocated"))
    m.observe(refused("home_cli_from_abroad"))
    m.observe(refused("identity_mismatch"))
    m.observe(Ended("t", "a", "b", 200, "caller", True, 0.0, 1.0))
    m.decision_seconds.observe(1e-5)
    exported = set(re.findall(r"^(sipguard_[a-z_]+)", generate_latest(m.registry).decode(), re.M))
    assert queried and queried <= exported, queried - exported
