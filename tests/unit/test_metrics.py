"""Metrics without a server: what each call event counts, and a taken port."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import generate_latest

from sipguard.b2bua import CallEnded, CallRefused, CallStarted, MessageRejected
from sipguard.metrics import Metrics, StateReading
from tests.helpers import CALLER, STRANGER

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
    m.observe(CallStarted("t", CALLER, "a2", "b2", "+861", "+862", 0.0, monitor_rule="one_ring"))
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

    from sipguard.b2bua import CallEnded as Ended

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
    m.observe(CallStarted("t", CALLER, "a", "b", "+861", "+862", 0.0))
    m.observe(refused("caller_not_allocated"))
    m.observe(refused("home_cli_from_abroad"))
    m.observe(refused("identity_mismatch"))
    m.observe(Ended("t", "a", "b", 200, "caller", True, 0.0, 1.0))
    m.decision_seconds.observe(1e-5)
    exported = set(re.findall(r"^(sipguard_[a-z_]+)", generate_latest(m.registry).decode(), re.M))
    assert queried and queried <= exported, queried - exported
