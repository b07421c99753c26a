"""How the server process uses CPython's cyclic garbage collector.

Call state is freed by reference counting: under SIPp load every automatic
collection of the older generations found nothing to free, yet each walked
every live call, transaction and rate-table key. At 250 relayed calls/s
(about 115,000 tracked objects, mostly messages kept for retransmissions)
a full pass held the event loop for 105 to 350 ms and a middle-generation
pass for 66 ms: those stalls were the relayed calls' p99 response time.

So after start-up:

- the rules and the range index are frozen out of the collector's sight
  (`gc.freeze()`): they live until a reload;
- only the young generation is collected automatically, every
  `YOUNG_THRESHOLD` net allocations (a few ms at most): it catches the
  short-lived cycles, such as an exception and its traceback;
- the older generations are collected once every `FULL_COLLECTION_INTERVAL`
  seconds by the server's housekeeping (`CycleCollector`), one predictable
  stall instead of several a minute, so that a cycle that outlives the young
  generation is still freed: memory stays bounded.

Ring 3: a driver module (the process's collector and clock); the server
logs what a full collection found.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

__all__ = [
    "FULL_COLLECTION_INTERVAL",
    "NEVER",
    "YOUNG_THRESHOLD",
    "Collection",
    "CycleCollector",
    "settle",
]

# Net allocations of tracked objects between young-generation passes
# (CPython's default is 700; a pass walks at most this many objects).
YOUNG_THRESHOLD = 2_000
# A multiplier no count reaches: the older generations are collected only
# by CycleCollector.
NEVER = 1_000_000_000
# Seconds between two full collections.
FULL_COLLECTION_INTERVAL = 600.0


def settle() -> None:
    """Freeze what start-up built and leave the old generations to CycleCollector.

    Call once, after start-up: frozen objects are never collected, so live
    calls must not be frozen.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, NEVER, NEVER)


@dataclass(frozen=True, slots=True)
class Collection:
    """What one full collection did."""

    freed: int  # objects found unreachable (in cycles) and freed
    seconds: float  # how long it held the process


class CycleCollector:
    """Runs a full collection when one is due, on the caller's clock."""

    def __init__(self, *, now: float, interval: float = FULL_COLLECTION_INTERVAL) -> None:
        self.interval = interval
        self.next_due = now + interval

    def due(self, now: float) -> bool:
        """Whether a full collection is due at `now`."""
        return now >= self.next_due

    def collect(self, now: float) -> Collection:
        """Collect every generation now; the next one is due an interval later."""
        self.next_due = now + self.interval
        started = time.perf_counter()
        freed = gc.collect()
        return Collection(freed, time.perf_counter() - started)
