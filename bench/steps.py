"""One step of a ramp: what its UACs and the server measured, and its verdict.

Pure functions: `combine` turns the per-UAC figures and the server's CPU and
memory into a `Step`; `verdict` applies the pass criteria.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.catalog import MAX_FAILED_PCT, MAX_RETRANS_PCT, MIN_ACHIEVED_SHARE
from bench.sipp import (
    RttSample,
    SippCounts,
    percentile,
    response_moments,
    response_times,
    throughput,
)


@dataclass(frozen=True)
class UacRun:
    """What one SIPp UAC did in a step."""

    role: str
    port: int
    offered_cps: int
    calls: int  # -m
    counts: SippCounts
    samples: Sequence[RttSample]
    timed: bool

    @property
    def achieved_cps(self) -> float:
        # answered calls per second, between the first and the last answer
        return throughput(response_moments(self.samples))

    def summary(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "port": self.port,
            "offered_cps": self.offered_cps,
            "achieved_cps": round(self.achieved_cps, 1),
            "calls": self.calls,
            **asdict(self.counts),
        }


@dataclass(frozen=True)
class ServerUse:
    cpu_seconds: float
    wall_seconds: float
    peak_pss_kib: int
    peak_rss_kib: int
    loadgen_cpu_seconds: float  # the SIPp processes (UAS and UACs) over the step
    host_busy_pct: float  # all CPUs of the machine
    udp_drops: int  # datagrams dropped on a full receive buffer, host-wide


@dataclass
class Step:
    system: str
    scenario: str
    rate: int
    offered_cps: int
    achieved_cps: float
    calls: int
    successful: int
    failed: int
    failed_pct: float
    retransmissions: int
    retrans_pct: float
    p50_ms: float | None
    p99_ms: float | None
    cpu_us_per_call: float | None
    server_cpu_pct: float
    loadgen_cpu_pct: float
    host_busy_pct: float
    peak_pss_mib: float
    peak_rss_mib: float
    udp_drops: int
    wall_s: float
    passed: bool = False
    why: str = ""
    uacs: list[dict[str, Any]] = field(default_factory=list)


def pct(part: float, whole: float) -> float:
    return 100 * part / whole if whole else 0.0


def combine(system: str, scenario: str, rate: int, runs: Sequence[UacRun], use: ServerUse) -> Step:
    calls = sum(r.calls for r in runs)
    successful = sum(r.counts.successful for r in runs)
    failed = calls - successful  # failed, unfinished at SIPp's timeout, or never sent
    retrans = sum(r.counts.retransmissions for r in runs)
    timed = [t for r in runs if r.timed for t in response_times(r.samples)]
    handled = sum(r.counts.created for r in runs)
    wall = use.wall_seconds or 1.0
    step = Step(
        system=system,
        scenario=scenario,
        rate=rate,
        offered_cps=sum(r.offered_cps for r in runs),
        achieved_cps=round(sum(r.achieved_cps for r in runs), 1),
        calls=calls,
        successful=successful,
        failed=failed,
        failed_pct=round(pct(failed, calls), 3),
        retransmissions=retrans,
        retrans_pct=round(pct(retrans, calls), 3),
        p50_ms=percentile(timed, 50),
        p99_ms=percentile(timed, 99),
        cpu_us_per_call=round(use.cpu_seconds / handled * 1e6, 1) if handled else None,
        server_cpu_pct=round(pct(use.cpu_seconds, wall), 1),
        loadgen_cpu_pct=round(pct(use.loadgen_cpu_seconds, wall), 1),
        host_busy_pct=round(use.host_busy_pct, 1),
        peak_pss_mib=round(use.peak_pss_kib / 1024, 1),
        peak_rss_mib=round(use.peak_rss_kib / 1024, 1),
        udp_drops=use.udp_drops,
        wall_s=round(wall, 1),
        uacs=[r.summary() for r in runs],
    )
    step.passed, step.why = verdict(step)
    return step


def verdict(step: Step) -> tuple[bool, str]:
    """Pass: < 0.1 % failed, < 0.1 % retransmissions, >= 95 % of the offered rate."""
    problems = []
    if step.failed_pct >= MAX_FAILED_PCT:
        problems.append(f"{step.failed_pct:.2f} % failed")
    if step.retrans_pct >= MAX_RETRANS_PCT:
        problems.append(f"{step.retrans_pct:.2f} % retransmissions")
    if step.achieved_cps < MIN_ACHIEVED_SHARE * step.offered_cps:
        problems.append(f"achieved {step.achieved_cps:.0f} of {step.offered_cps} calls/s")
    return (not problems, "; ".join(problems))
