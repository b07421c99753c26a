"""`sipguard top`: live per-trunk counters in the terminal, from the metrics endpoint.

It reads what Prometheus would (`/metrics` of a running sipguard), so it
works against any instance the engineer can reach and adds nothing to the
call path. Rates (calls a second admitted and refused) come from the
difference between two scrapes. Rendering uses rich.
"""

from __future__ import annotations

import sys
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

__all__ = ["Snapshot", "TrunkRow", "render", "rows_of", "run_top", "scrape"]


@dataclass(slots=True)
class Snapshot:
    """One scrape: per-trunk counters and the process-wide gauges."""

    at: float
    admitted: dict[str, float] = field(default_factory=dict)
    refused: dict[str, float] = field(default_factory=dict)
    live: dict[str, float] = field(default_factory=dict)
    checked: dict[str, float] = field(default_factory=dict)
    passed: dict[str, float] = field(default_factory=dict)
    rules: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    gauges: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TrunkRow:
    trunk: str
    live: int
    admitted_cps: float
    refused_cps: float
    admitted: int
    refused: int
    pass_rate: float | None
    top_rule: str


_PER_TRUNK = {
    "sipguard_admitted_total": "admitted",
    "sipguard_refused_total": "refused",
    "sipguard_live_calls": "live",
    "sipguard_calls_checked_total": "checked",
    "sipguard_caller_auth_passed_total": "passed",
}


def parse(text: str, *, at: float) -> Snapshot:
    """A snapshot from the text of /metrics."""
    snapshot = Snapshot(at=at)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name in _PER_TRUNK:
                getattr(snapshot, _PER_TRUNK[name])[labels.get("trunk", "-")] = value
            elif name == "sipguard_decisions_total" and labels.get("verdict") == "reject":
                snapshot.rules[labels.get("trunk", "-")][labels.get("rule", "?")] = value
            elif not labels and name.startswith("sipguard_"):
                snapshot.gauges[name.removeprefix("sipguard_")] = value
    return snapshot


def scrape(url: str) -> Snapshot:
    with urllib.request.urlopen(url, timeout=3.0) as response:
        return parse(response.read().decode("utf-8"), at=time.monotonic())


def rows_of(previous: Snapshot | None, current: Snapshot) -> list[TrunkRow]:
    """Per-trunk rows; rates over the time between the two snapshots."""
    trunks = sorted(set(current.admitted) | set(current.refused) | set(current.live))
    elapsed = current.at - previous.at if previous is not None else 0.0
    rows = []
    for trunk in trunks:
        admitted = current.admitted.get(trunk, 0.0)
        refused = current.refused.get(trunk, 0.0)
        checked = current.checked.get(trunk, 0.0)
        rules = current.rules.get(trunk, {})
        top = max(rules.items(), key=lambda item: item[1], default=("", 0.0))
        rows.append(
            TrunkRow(
                trunk=trunk,
                live=int(current.live.get(trunk, 0.0)),
                admitted_cps=_rate(_before(previous, "admitted", trunk), admitted, elapsed),
                refused_cps=_rate(_before(previous, "refused", trunk), refused, elapsed),
                admitted=int(admitted),
                refused=int(refused),
                pass_rate=current.passed.get(trunk, 0.0) / checked if checked else None,
                top_rule=f"{top[0]} ({int(top[1])})" if top[1] else "",
            )
        )
    return rows


def _before(previous: Snapshot | None, counter: str, trunk: str) -> float | None:
    if previous is None:
        return None
    values: dict[str, float] = getattr(previous, counter)
    return values.get(trunk, 0.0)


def _rate(before: float | None, after: float, elapsed: float) -> float:
    if before is None or elapsed <= 0:
        return 0.0
    return max(0.0, after - before) / elapsed


def render(rows: list[TrunkRow], current: Snapshot, source: str) -> Group:
    table = Table(title=f"sipguard {source}", title_justify="left", expand=False)
    table.add_column("trunk", no_wrap=True)
    for name in ("live", "cps ok", "cps ref", "allowed", "refused", "pass"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("top refusal", overflow="fold")
    for row in rows:
        rate = "-" if row.pass_rate is None else f"{row.pass_rate:.1%}"
        table.add_row(
            row.trunk,
            str(row.live),
            f"{row.admitted_cps:.1f}",
            Text(f"{row.refused_cps:.1f}", style="red" if row.refused_cps else ""),
            str(row.admitted),
            str(row.refused),
            rate,
            row.top_rule,
        )
    gauges = current.gauges
    health = Text(
        f"reloads {int(gauges.get('reloads_total', 0))}"
        f" (last {'ok' if gauges.get('last_reload_ok', 1) else 'REFUSED'})"
        f"  audit dropped {int(gauges.get('audit_records_dropped', 0))}"
        f"  internal errors {int(gauges.get('internal_errors', 0))}"
        + ("  DRAINING" if gauges.get("draining") else "")
        + (
            f"  redis {'up' if gauges['ratetable_backend_up'] else 'DOWN'}"
            if "ratetable_backend_up" in gauges
            else ""
        )
    )
    return Group(table, health)


def run_top(url: str, *, interval: float, once: bool, console: Console | None = None) -> None:
    """Refresh every `interval` seconds until interrupted; `once`: print one table."""
    if console is None:
        # Piped (a log, a test): wide enough that rows never fold.
        console = Console() if sys.stdout.isatty() else Console(width=132)
    previous = scrape(url)
    if once:
        time.sleep(interval)
        current = scrape(url)
        console.print(render(rows_of(previous, current), current, url))
        return
    with Live(console=console, auto_refresh=False) as live:
        while True:
            time.sleep(interval)
            current = scrape(url)
            live.update(render(rows_of(previous, current), current, url), refresh=True)
            previous = current
