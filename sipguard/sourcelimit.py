"""A per-address answer budget: how often sipguard answers one unknown source.

A request from an address of no trunk gets one uniform 403 (or nothing).
Without a budget, a forged source address would let anyone aim those 403s
at a third party: a reflection. `AnswerBudget` gives each address `rate`
answers a second, up to `burst` at once, and says no past it; the caller
then drops the request unanswered.

Each address is a virtual-scheduling token bucket (one float, as in
`sipguard.ratetable`); at most `max_sources` addresses are remembered, the
least recently seen forgotten first, so a flood of forged addresses costs
bounded memory (a forgotten address starts again with a full bucket, which
bounds what it can reflect by `burst` per eviction cycle).

Ring 1: pure; no I/O, no clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict

__all__ = ["AnswerBudget"]

_SLACK = 1e-6


class AnswerBudget:
    """Token buckets keyed by source address, bounded in number.

    Args:
        rate: answers a second per address.
        burst: answers an address may get at once.
        max_sources: addresses remembered at most.
    """

    def __init__(self, *, rate: float, burst: int, max_sources: int = 100_000) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate {rate!r} is not a positive number")
        if burst < 1 or max_sources < 1:
            raise ValueError("burst and max_sources must be at least 1")
        self._interval = 1.0 / rate
        # A microsecond of slack: `full_at` is a sum of intervals on a clock
        # of thousands of seconds, and the rounding of that sum must not
        # cost a source one answer of its burst.
        self._tolerance = (burst - 1) * self._interval + _SLACK
        self._max_sources = max_sources
        self._full_at: OrderedDict[str, float] = OrderedDict()
        self.refused = 0

    def __len__(self) -> int:
        return len(self._full_at)

    def allow(self, source: str, *, now: float) -> bool:
        """Take one answer from `source`'s budget; False (and counted) if it has none."""
        buckets = self._full_at
        full_at = buckets.get(source)
        if full_at is None or full_at < now:
            full_at = now
        elif full_at - now > self._tolerance:
            self.refused += 1
            return False
        buckets[source] = full_at + self._interval
        buckets.move_to_end(source)
        if len(buckets) > self._max_sources:
            buckets.popitem(last=False)
        return True
