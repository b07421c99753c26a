"""Prometheus metrics: verdicts per trunk and rule, live state, and regulator figures.

`Metrics` owns its own registry (nothing global), counts each call event the
driver hands it (`observe`), times decisions (`decision_seconds`), and
reads the live state (calls, rate-table keys, audit and Redis status,
reloads) only when Prometheus scrapes, through a collector: the call path
pays for a few counter increments, never for gauges it does not need.

Exposed (all prefixed `sipguard_`):

- `decisions_total{trunk,verdict,rule}`: every new-call decision;
  verdict `allow`, `reject`, `monitor`, or `drop` (an unknown source's
  INVITE dropped unanswered); rule empty when allowed.
- `rule_warnings_total{trunk,rule}`: calls relayed past a warn level of a
  rate rule (`warn:` in a trunk's limits), one per rule the call passed.
- `calls_ended_total{trunk,ended_by}`; `live_calls{trunk}`.
- `admitted_total{trunk}`, `refused_total{trunk}`: rate over time is cps
  admitted and refused (`rate(sipguard_admitted_total[1m])`).
- `decision_seconds`: histogram of the time to decide a new call.
- regulator figures per trunk (what counts where:
  docs/operations.md#the-regulator-figures):
  `calls_checked_total` (new calls of a trunk the policy decided),
  `caller_auth_passed_total` (of those, calls whose caller ID passed every
  identity rule, whatever a callee, time or rate rule then did; pass rate
  = passed / checked), and the interceptions by identity rule
  (`sipguard.rules.values.INTERCEPTIONS`): `passthrough_intercepted_total`,
  `forged_from_abroad_intercepted_total` (home caller IDs withheld by
  `home_cli: anonymize` too), `modified_caller_id_intercepted_total`.
- state at scrape time: `ratetable_keys{dimension}`, `ratetable_evictions`,
  `audit_records_written`, `audit_records_dropped`, `audit_write_errors`,
  `ratetable_backend_up`, `ratetable_backend_failures`, `reloads_total`,
  `last_reload_ok`, `rules_loaded_timestamp_seconds`, `messages_rejected_total`,
  `unknown_source_answers_dropped`.

Ring 3: a driver module (an HTTP server thread).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sipguard.events import (
    CallEnded,
    CallRefused,
    CallStarted,
    Event,
    InDialogMonitored,
    MessageRejected,
)
from sipguard.rules.values import IDENTITY_RULES, INTERCEPTIONS, RULE_GROUPS

__all__ = ["Metrics", "StateReading"]

log = logging.getLogger("sipguard")

# A refusal by one of these rules is a call the policy decided on a trunk:
# its caller ID was checked (every identity rule ran before them, or one of
# them refused it). `source` is not among them (no trunk), nor are the
# refusals of sipguard's own (draining, trunk_capacity: decided before any
# rule ran).
_CHECKED_KINDS = frozenset({"identity", "callee_and_time", "rate_table"})


@dataclass(slots=True)
class StateReading:
    """What the collector reports at scrape time; the server fills it in."""

    live_calls: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    ratetable_keys: dict[str, int] = field(default_factory=dict)


class _StateCollector(Collector):
    def __init__(self, read: Callable[[], StateReading]) -> None:
        self._read = read

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # read only at scrape time, never at registration

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self._read()
        live = GaugeMetricFamily(
            "sipguard_live_calls", "Calls up or ringing, per trunk", labels=["trunk"]
        )
        for trunk, count in sorted(state.live_calls.items()):
            live.add_metric([trunk], count)
        yield live
        keys = GaugeMetricFamily(
            "sipguard_ratetable_keys", "Keys in the rate table", labels=["dimension"]
        )
        for dimension, count in sorted(state.ratetable_keys.items()):
            keys.add_metric([dimension], count)
        yield keys
        for name, value in sorted(state.gauges.items()):
            yield GaugeMetricFamily(f"sipguard_{name}", name.replace("_", " "), value=value)


class Metrics:
    """Counters fed by call events, and a scrape-time view of the rest."""

    def __init__(self, read_state: Callable[[], StateReading]) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.decisions = Counter(
            "sipguard_decisions",
            "New-call decisions",
            ["trunk", "verdict", "rule"],
            registry=registry,
        )
        self.warnings = Counter(
            "sipguard_rule_warnings",
            "Calls relayed past a warn level, per rule",
            ["trunk", "rule"],
            registry=registry,
        )
        self.ended = Counter(
            "sipguard_calls_ended", "Calls ended", ["trunk", "ended_by"], registry=registry
        )
        self.admitted = Counter("sipguard_admitted", "Calls admitted", ["trunk"], registry=registry)
        self.refused = Counter("sipguard_refused", "Calls refused", ["trunk"], registry=registry)
        self.checked = Counter(
            "sipguard_calls_checked",
            "Calls whose caller ID was checked",
            ["trunk"],
            registry=registry,
        )
        self.passed = Counter(
            "sipguard_caller_auth_passed",
            "Calls whose caller ID passed authentication",
            ["trunk"],
            registry=registry,
        )
        # The interception figures, one counter each (INTERCEPTIONS names
        # which identity rule counts in which).
        self.intercepted = {
            figure: Counter(
                f"sipguard_{figure}_intercepted", help_text, ["trunk"], registry=registry
            )
            for figure, help_text in (
                ("passthrough", "Passed-through caller IDs intercepted"),
                ("forged_from_abroad", "Home-country caller IDs from abroad intercepted"),
                ("modified_caller_id", "Modified caller IDs intercepted"),
            )
        }
        self.rejected_messages = Counter(
            "sipguard_messages_rejected", "Messages answered with an error or dropped",
            registry=registry,
        )  # fmt: skip
        self.decision_seconds = Histogram(
            "sipguard_decision_seconds",
            "Time to decide a new call",
            buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 0.025),
            registry=registry,
        )
        registry.register(_StateCollector(read_state))
        self._server: object | None = None

    def serve(self, host: str, port: int) -> bool:
        """Serve /metrics on `host:port` in a thread; False (logged) if it cannot bind."""
        try:
            self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            log.error("metrics: cannot listen on %s:%d: %s; serving calls anyway", host, port, exc)
            return False
        return True

    def close(self) -> None:
        server = self._server
        if server is not None and hasattr(server, "shutdown"):
            server.shutdown()
            server.server_close()  # type: ignore[attr-defined]
        self._server = None

    def observe(self, event: Event) -> None:
        """Count one call event."""
        if isinstance(event, CallStarted):
            trunk = event.trunk
            verdict = "monitor" if event.monitor_rule else "allow"
            self.decisions.labels(trunk, verdict, event.monitor_rule or "").inc()
            self.admitted.labels(trunk).inc()
            for rule in event.warnings:
                self.warnings.labels(trunk, rule).inc()
            self.checked.labels(trunk).inc()
            if event.anonymized:
                # A home-country caller ID from abroad, withheld: intercepted.
                self.intercepted[INTERCEPTIONS["home_cli_from_abroad"]].labels(trunk).inc()
            elif event.monitor_rule not in IDENTITY_RULES:
                # No identity rule fired (a monitored one, or one passed over
                # for an emergency call, would mean its caller ID failed).
                self.passed.labels(trunk).inc()
        elif isinstance(event, CallRefused):
            trunk = event.trunk or "-"
            rule = event.rule
            verdict = "reject" if event.status is not None else "drop"  # dropped unanswered
            self.decisions.labels(trunk, verdict, rule).inc()
            figure = INTERCEPTIONS.get(rule)
            if rule == "identity_changed":  # mid-call: the call was checked and counted before
                self.intercepted[INTERCEPTIONS[rule]].labels(trunk).inc()
                return
            self.refused.labels(trunk).inc()
            group = RULE_GROUPS.get(rule)
            if event.trunk is None or group is None or group[0] not in _CHECKED_KINDS:
                return
            self.checked.labels(trunk).inc()
            if figure is not None:
                self.intercepted[figure].labels(trunk).inc()
            # Refused for its callee, the time or a rate: the caller ID
            # passed every identity rule, unless a monitored one fired first.
            if rule not in IDENTITY_RULES and event.noted not in IDENTITY_RULES:
                self.passed.labels(trunk).inc()
        elif isinstance(event, InDialogMonitored):
            self.decisions.labels(event.trunk, "monitor", event.rule).inc()
        elif isinstance(event, CallEnded):
            self.ended.labels(event.trunk, event.ended_by).inc()
        elif isinstance(event, MessageRejected):
            self.rejected_messages.inc()
