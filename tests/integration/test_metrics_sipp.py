"""The Prometheus endpoint after real SIPp traffic: every counter agrees with the calls.

SIPp places 120 calls, 90 % genuine and 10 % forged (mixed_callers.csv),
through ``sipguard run`` with ``metrics:`` set; the test then scrapes
``/metrics`` over HTTP and checks the verdict counters per rule, the
regulator figures, the decision-latency histogram, the live state, and the
counters of the calls' ends.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sipguard.cli import main as sipguard_main
from tests.integration.sipp import (
    HOST,
    MIXED_CALLERS_CSV,
    SH_TRUNK,
    PolicyPath,
    free_ports,
)
from tests.integration.test_policy_sipp import SPOOF_RULES, outcomes, read_callers

pytestmark = [pytest.mark.integration, pytest.mark.sipp]

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5.0) as response:
        text = response.read().decode("utf-8")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_what_sipp_sent(
    start_policy_path: Callable[..., PolicyPath], capsys: pytest.CaptureFixture[str]
) -> None:
    calls = 120
    expected = outcomes(read_callers(MIXED_CALLERS_CSV), calls)
    (metrics_port,) = free_ports(1)
    path = start_policy_path(transport="udp", extra_rules=f'metrics: "{HOST}:{metrics_port}"\n')
    run = path.call("uac_policy.xml", calls=calls, rate=40, injection=MIXED_CALLERS_CSV)
    assert run.returncode == 0 and run.stats.failed_calls == 0, path.explain(run)

    deadline = time.monotonic() + 5.0
    samples = scrape(metrics_port)
    while value(samples, "sipguard_live_calls", trunk=SH_TRUNK) and time.monotonic() < deadline:
        time.sleep(0.2)
        samples = scrape(metrics_port)

    trunk = SH_TRUNK
    allowed = expected["allow"]
    assert value(samples, "sipguard_decisions_total", trunk=trunk, verdict="allow", rule="") == (
        allowed
    )
    for rule in SPOOF_RULES:
        got = value(samples, "sipguard_decisions_total", trunk=trunk, verdict="reject", rule=rule)
        assert got == expected[rule], (rule, got, expected)
    assert value(samples, "sipguard_calls_checked_total", trunk=trunk) == calls
    assert value(samples, "sipguard_caller_auth_passed_total", trunk=trunk) == allowed
    passthrough = expected["caller_not_allocated"] + expected["caller_of_other_trunk"]
    assert value(samples, "sipguard_passthrough_intercepted_total", trunk=trunk) == passthrough
    modified = expected["identity_mismatch"] + expected["display_name_spoof"]
    assert value(samples, "sipguard_modified_caller_id_intercepted_total", trunk=trunk) == modified
    assert value(samples, "sipguard_admitted_total", trunk=trunk) == allowed
    assert value(samples, "sipguard_refused_total", trunk=trunk) == calls - allowed
    assert value(samples, "sipguard_decision_seconds_count") == calls
    assert 0 < value(samples, "sipguard_decision_seconds_sum") < calls * 0.05
    ended = sum(v for (name, labels), v in samples.items() if name == "sipguard_calls_ended_total")
    assert ended == allowed
    assert value(samples, "sipguard_live_calls", trunk=trunk) == 0
    assert value(samples, "sipguard_reloads_total") == 0
    assert value(samples, "sipguard_last_reload_ok") == 1
    assert value(samples, "sipguard_internal_errors") == 0

    # The console view of the same run.
    url = f"http://{HOST}:{metrics_port}/metrics"
    assert sipguard_main(["top", "--url", url, "--once", "--interval", "0.2"]) == 0
    screen = capsys.readouterr().out
    row = next(line for line in screen.splitlines() if SH_TRUNK in line)
    assert f" {allowed} " in row and f" {calls - allowed} " in row, screen
    assert f"{allowed / calls:.1%}" in row, screen
    assert path.sipguard.stop() == 0, path.explain(run)
