"""Showing and keeping the results: the live table, latest.json, latest.png."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from bench.steps import Step

if TYPE_CHECKING:
    from bench.runner import Options

REFERENCE = "kamailio"


def fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


STEP_COLUMNS = (
    ("system", "left"),
    ("scenario", "left"),
    ("offered/s", "right"),
    ("achieved/s", "right"),
    ("fail %", "right"),
    ("retr %", "right"),
    ("p50 ms", "right"),
    ("p99 ms", "right"),
    ("µs/call", "right"),
    ("srv CPU%", "right"),
    ("SIPp CPU%", "right"),
    ("PSS MiB", "right"),
    ("UDP drops", "right"),
    ("verdict", "left"),
)


def steps_table(steps: Sequence[Step], title: str = "steps") -> Table:
    table = Table(title=title, title_justify="left")
    for name, justify in STEP_COLUMNS:
        table.add_column(name, justify="left" if justify == "left" else "right")
    for s in steps:
        table.add_row(
            s.system, s.scenario, fmt(s.offered_cps), fmt(s.achieved_cps),
            fmt(s.failed_pct, 2), fmt(s.retrans_pct, 2), fmt(s.p50_ms), fmt(s.p99_ms),
            fmt(s.cpu_us_per_call), fmt(s.server_cpu_pct), fmt(s.loadgen_cpu_pct),
            fmt(s.peak_pss_mib, 1), fmt(s.udp_drops),
            Text("pass", "green") if s.passed else Text(f"FAIL: {s.why}", "red"),
        )  # fmt: skip
    return table


class Display:
    """A live table of finished steps, with the step running now below it."""

    def __init__(self, opts: Options, buffers: str) -> None:
        # a pipe or a log file gets a wide table rather than 80 columns
        self.console = Console() if sys.stdout.isatty() else Console(width=200)
        self.steps: list[Step] = []
        self.now = ""
        self.live = Live(self.render(), console=self.console, refresh_per_second=4)
        self.console.print(
            f"[bold]sipguard bench[/]: systems {', '.join(opts.systems)}; scenarios "
            f"{', '.join(opts.scenarios)}; rates {opts.rates} calls/s; {opts.seconds:g} s a step"
        )
        self.console.print(f"socket buffers: {buffers}")

    def render(self) -> Group:
        return Group(steps_table(self.steps), Text(self.now, style="cyan"))

    def status(self, text: str) -> None:
        self.now = f"running: {text}"
        self.live.update(self.render())

    def add(self, step: Step) -> None:
        self.steps.append(step)
        self.live.update(self.render())
        if not self.console.is_terminal:  # a log gets a line per step as it ends
            verdict = "pass" if step.passed else f"FAIL: {step.why}"
            self.console.print(
                f"{step.system} {step.scenario} {step.offered_cps}/s: achieved "
                f"{step.achieved_cps:.0f}/s, p99 {fmt(step.p99_ms)} ms, "
                f"{fmt(step.cpu_us_per_call)} µs/call: {verdict}"
            )

    def note(self, text: str) -> None:
        self.console.print(text)

    def __enter__(self) -> Display:
        self.live.__enter__()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.now = ""
        self.live.update(self.render())
        self.live.__exit__(kind, error, tb)


def best(steps: Sequence[Step], system: str, scenario: str) -> Step | None:
    """The passing step with the highest offered rate of one ramp."""
    passed = [s for s in steps if s.system == system and s.scenario == scenario and s.passed]
    return max(passed, key=lambda s: s.offered_cps, default=None)


def at_rate(steps: Sequence[Step], system: str, scenario: str, rate: int) -> Step | None:
    for s in steps:
        if (s.system, s.scenario, s.rate) == (system, scenario, rate) and s.passed:
            return s
    return None


def ratio(mine: float | None, theirs: float | None) -> float | None:
    if mine is None or not theirs:
        return None
    return round(mine / theirs, 2)


def summary(steps: Sequence[Step]) -> list[dict[str, Any]]:
    """Per ramp: the best passing step, and ratios to Kamailio's figures.

    `rate_vs_kamailio`: highest passing rate over Kamailio's. `cpu_vs_kamailio`:
    CPU µs per call over Kamailio's, at the highest rate both passed.
    """
    rows: list[dict[str, Any]] = []
    ramps = list(dict.fromkeys((s.system, s.scenario) for s in steps))
    for system, scenario in ramps:
        top = best(steps, system, scenario)
        ref = best(steps, REFERENCE, scenario)
        common = min(top.rate, ref.rate) if top and ref else None
        mine = at_rate(steps, system, scenario, common) if common else None
        theirs = at_rate(steps, REFERENCE, scenario, common) if common else None
        rows.append(
            {
                "system": system,
                "scenario": scenario,
                "max_passing_cps": top.offered_cps if top else 0,
                "first_cps": min(s.offered_cps for s in steps if s.system == system),
                "cpu_us_per_call": top.cpu_us_per_call if top else None,
                "p99_ms": top.p99_ms if top else None,
                "peak_pss_mib": top.peak_pss_mib if top else None,
                "rate_vs_kamailio": ratio(
                    top.offered_cps if top else 0, ref.offered_cps if ref else None
                ),
                "cpu_vs_kamailio": ratio(
                    mine.cpu_us_per_call if mine else None,
                    theirs.cpu_us_per_call if theirs else None,
                ),
                "cpu_compared_at_cps": mine.offered_cps if mine else None,
            }
        )
    return rows


def latency_vs_direct(steps: Sequence[Step], system: str = "sipguard") -> dict[str, Any] | None:
    """The latency target: `system`'s full-call p99 at half its highest
    passing rate (or the nearest lower step), against a SIPp-to-SIPp call's
    p99 at the same rate."""
    top = best(steps, system, "call")
    if top is None:
        return None
    # Half the best rate, or the nearest ramp step below it that both passed.
    both = {s.rate for s in steps if s.scenario == "call" and s.passed and s.system == system}
    both &= {s.rate for s in steps if s.scenario == "call" and s.passed and s.system == "direct"}
    half = max((rate for rate in both if rate <= top.rate // 2), default=None)
    if half is None:
        return None
    mine = at_rate(steps, system, "call", half)
    direct = at_rate(steps, "direct", "call", half)
    if mine is None or direct is None or mine.p99_ms is None or direct.p99_ms is None:
        return None
    return {
        "rate": half,
        "p99_ms": mine.p99_ms,
        "direct_p99_ms": direct.p99_ms,
        "difference_ms": round(mine.p99_ms - direct.p99_ms, 1),
    }


def summary_table(rows: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="best passing step per ramp", title_justify="left")
    columns = ("system", "scenario", "max cps", "CPU µs/call", "p99 ms", "PSS MiB")
    for name in columns + ("cps vs Kamailio", "CPU/call vs Kamailio (at cps)"):
        table.add_column(name, justify="left" if name in ("system", "scenario") else "right")
    for r in rows:
        at = f" ({r['cpu_compared_at_cps']})" if r["cpu_vs_kamailio"] is not None else ""
        top = fmt(r["max_passing_cps"]) if r["max_passing_cps"] else f"< {r['first_cps']:,}"
        table.add_row(
            r["system"], r["scenario"], top, fmt(r["cpu_us_per_call"]),
            fmt(r["p99_ms"]), fmt(r["peak_pss_mib"], 1), fmt(r["rate_vs_kamailio"], 2),
            fmt(r["cpu_vs_kamailio"], 2) + at,
        )  # fmt: skip
    return table


def first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


def package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model(cpuinfo: str) -> str:
    match = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    return match.group(1).strip() if match else "unknown"


def revision() -> str:
    """The commit measured, and whether sipguard/ differed from it."""
    head = first_line(["git", "-C", str(Path(__file__).parents[1]), "rev-parse", "--short", "HEAD"])
    status = ["git", "-C", str(Path(__file__).parents[1]), "status", "--porcelain", "sipguard"]
    dirty = first_line(status) not in ("", "unknown")
    return f"{head} (sipguard/ modified in the working tree)" if dirty else head


def machine(buffers: str) -> dict[str, Any]:
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu_model(Path("/proc/cpuinfo").read_text()),
        "kernel": platform.release(),
        "loadavg_at_end": os.getloadavg(),
        "socket_buffers": buffers,
        "versions": {
            "sipguard": f"{package('sipguard')} at {revision()}",
            "python": platform.python_version(),
            "uvloop": package("uvloop"),
            "sipp": first_line(["sipp", "-v"]),
            "kamailio": first_line(["kamailio", "-v"]),
            "sippy": package("sippy"),
        },
    }


def plot(path: Path, steps: Sequence[Step]) -> str:
    """Achieved rate and p99 against offered rate: a row per scenario, a line per system.

    Failing steps are drawn as crosses; the dotted line is achieved = offered.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter, ScalarFormatter
    except ImportError:
        return "no plot: matplotlib is not installed (pip install matplotlib)"
    scenarios = list(dict.fromkeys(s.scenario for s in steps))
    if not scenarios:
        return "no plot: no steps"
    fig, axes = plt.subplots(len(scenarios), 2, figsize=(11, 3.6 * len(scenarios)), squeeze=False)
    for row, scenario in zip(axes, scenarios, strict=True):
        mine = [s for s in steps if s.scenario == scenario]
        for system in dict.fromkeys(s.system for s in mine):
            line = [s for s in mine if s.system == system]
            xs = [s.offered_cps for s in line]
            for ax, ys in (
                (row[0], [s.achieved_cps for s in line]),
                (row[1], [s.p99_ms or 0 for s in line]),
            ):
                drawn = ax.plot(xs, ys, marker="o", label=system)[0]
                bad = [(x, y) for x, y, s in zip(xs, ys, line, strict=True) if not s.passed]
                if bad:
                    ax.scatter(*zip(*bad, strict=True), marker="x", s=90, color=drawn.get_color())
        rates = sorted({s.offered_cps for s in mine})
        row[0].plot(rates, rates, color="grey", linestyle=":", linewidth=1)
        row[0].set_yscale("log")
        row[1].set_yscale("symlog", linthresh=10)
        for ax, what in zip(row, ("achieved calls/s", "p99 INVITE response, ms"), strict=True):
            ax.set_xscale("log")
            ax.set_xticks(rates)
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(axis="x", labelrotation=45)  # close steps (750, 1,000) would overlap
            ax.set_xlabel("offered calls/s")
            ax.set_ylabel(what)
            ax.set_title(f"{scenario}: {what}")
            ax.grid(True, which="major", alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot: {path}"


def write_outputs(
    out: Path,
    steps: Sequence[Step],
    skipped: Sequence[dict[str, str]],
    buffers: str,
    opts: Options,
    display: Display,
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rows = summary(steps)
    latency = latency_vs_direct(steps)
    document = {
        "machine": machine(buffers),
        "options": {
            "systems": opts.systems,
            "scenarios": opts.scenarios,
            "rates": opts.rates,
            "seconds_per_step": opts.seconds,
        },
        "summary": rows,
        "latency_vs_direct": latency,
        "skipped": list(skipped),
        "steps": [asdict(s) for s in steps],
    }
    path = out / "latest.json"
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    display.console.print(summary_table(rows))
    if latency is not None:
        mine, direct, extra = (latency[k] for k in ("p99_ms", "direct_p99_ms", "difference_ms"))
        display.note(
            f"latency: sipguard p99 {mine} ms at {latency['rate']:,} calls/s (half its best),"
            f" SIPp to SIPp {direct} ms: +{extra} ms"
        )
    display.note(f"results: {path}")
    if opts.plot:
        display.note(plot(out / "latest.png", steps))
