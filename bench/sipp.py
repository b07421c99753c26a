"""Reading what SIPp writes: its statistics file and its response-time trace.

Pure functions over file contents, so they can be tested without SIPp.

- `-trace_stat -stf FILE`: one `;`-separated header line, then one line per
  report period; the last line holds the cumulative counters (the `(C)`
  columns) of the whole run.
- `-trace_rtt`: `<scenario>_<pid>_rtt.csv` in SIPp's working directory,
  `Date_ms;response_time_ms;rtd_no`: the time of the response in ms since
  SIPp started (a 4 ms clock here) and the response time in whole ms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SippCounts:
    """Cumulative counters of one SIPp run."""

    created: int
    successful: int
    failed: int
    retransmissions: int

    @property
    def unfinished(self) -> int:
        """Calls neither successful nor failed when SIPp stopped (its -timeout)."""
        return max(0, self.created - self.successful - self.failed)


@dataclass(frozen=True)
class RttSample:
    at_ms: float
    rtt_ms: float
    rtd: int


def parse_stat_csv(text: str) -> SippCounts:
    """The cumulative counters from the last line of a `-trace_stat` file."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        raise ValueError("SIPp statistics file has no data line")
    header = lines[0].split(";")
    row = dict(zip(header, lines[-1].split(";"), strict=False))

    def counter(name: str) -> int:
        return int(row.get(name, "0") or 0)

    return SippCounts(
        created=counter("TotalCallCreated"),
        successful=counter("SuccessfulCall(C)"),
        failed=counter("FailedCall(C)"),
        retransmissions=counter("Retransmissions(C)"),
    )


def parse_rtt_csv(text: str) -> list[RttSample]:
    """Every sample of a `-trace_rtt` file; the header and broken lines are skipped."""
    samples: list[RttSample] = []
    for line in text.splitlines():
        fields = line.strip().split(";")
        if len(fields) < 3:
            continue
        try:
            samples.append(RttSample(float(fields[0]), float(fields[1]), int(fields[2])))
        except ValueError:
            continue
    return samples


def percentile(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank q-th percentile (0 < q <= 100); None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def throughput(times_ms: Sequence[float]) -> float:
    """Events per second between the first and the last of `times_ms`."""
    if len(times_ms) < 2:
        return 0.0
    span = max(times_ms) - min(times_ms)
    if span <= 0:
        return 0.0
    return (len(times_ms) - 1) / span * 1000


def response_times(samples: Sequence[RttSample], rtd: int = 1) -> list[float]:
    return [s.rtt_ms for s in samples if s.rtd == rtd]


def response_moments(samples: Sequence[RttSample], rtd: int = 1) -> list[float]:
    return [s.at_ms for s in samples if s.rtd == rtd]
