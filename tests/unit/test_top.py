"""`sipguard top`: rows from two scrapes, and what the terminal shows."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from rich.console import Console

from sipguard.events import CallRefused, CallStarted
from sipguard.metrics import Metrics, StateReading
from sipguard.top import parse, render, rows_of
from tests.helpers import CALLER

pytestmark = pytest.mark.unit


def test_rows_give_rates_between_scrapes_and_the_top_refusal() -> None:
    metrics = Metrics(lambda: StateReading(live_calls={"sh": 3}, gauges={"reloads_total": 1}))
    for index in range(4):
        metrics.observe(CallStarted("sh", CALLER, f"a{index}", "b", "+861", "+862", 0.0))
    before = parse(generate_latest(metrics.registry).decode(), at=10.0)
    for index in range(10):
        metrics.observe(CallStarted("sh", CALLER, f"c{index}", "b", "+861", "+862", 0.0))
    for rule in ("caller_not_allocated",) * 3 + ("cps_limit",) * 5:
        metrics.observe(CallRefused("sh", CALLER, "x", 403, rule, "Forbidden", 0.0))
    after = parse(generate_latest(metrics.registry).decode(), at=12.0)
    (row,) = rows_of(before, after)
    assert (row.trunk, row.live, row.admitted, row.refused) == ("sh", 3, 14, 8)
    assert row.admitted_cps == pytest.approx(5.0) and row.refused_cps == pytest.approx(4.0)
    # the calls cps_limit refused passed caller authentication
    assert row.pass_rate == pytest.approx((14 + 5) / 22)
    assert row.top_rule == "cps_limit (5)"

    console = Console(record=True, width=140, color_system=None)
    console.print(render([row], after, "http://127.0.0.1:9060/metrics"))
    text = console.export_text()
    assert "sh" in text and "cps_limit (5)" in text and "86.4%" in text
    assert "reloads 1 (last ok)" in text


def test_the_first_scrape_has_no_rates_yet() -> None:
    metrics = Metrics(lambda: StateReading())
    metrics.observe(CallStarted("sh", CALLER, "a", "b", "+861", "+862", 0.0))
    (row,) = rows_of(None, parse(generate_latest(metrics.registry).decode(), at=1.0))
    assert row.admitted_cps == 0.0 and row.admitted == 1 and row.top_rule == ""
