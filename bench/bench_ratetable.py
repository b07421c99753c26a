"""Rate-table benchmark: ns per admit() and call_ended() with 1, 10k and 1M tracked callers.

Run: python bench/bench_ratetable.py [--quick]

For each size, pre-fills a table on one trunk with that many distinct
callers, each having called a distinct callee (so the caller and callee
dimensions each hold that many keys), under every limit at once: cps,
concurrent, per_caller, per_callee and one_ring with warn levels. Then times,
side by side in one table:

- admit() of a caller the table already tracks (in random order, so a large
  table is read all over, as live traffic would);
- call_ended() of an answered call;
- admit() of a caller it has never seen (a new key in the caller dimension;
  the full 1M table evicts its least recently used key for each);
- call_ended() of a one-ring call (unanswered, short ring: a key in the
  one-ring dimension);
- admit() refused by `cps_limit` (what a flooding trunk gets);
- sweep() per tracked key (one full pass that finds nothing to reclaim);
- one full pass of Python's cyclic garbage collector over the process;
- bytes per tracked key: tracemalloc over a fill of the caller dimension
  alone, divided by its keys (number string, key, counter and the
  dictionary's share).

Times include the Python loop that makes the calls (about 40 ns here).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sipguard.ratetable import (  # noqa: E402
    OneRingLimit,
    RateTable,
    TokenBucketLimit,
    TrunkLimits,
    WindowLimit,
)

TRUNK = "sh-callcenter"
# Every limit at once; high enough that the timed calls are allowed.
LIMITS = TrunkLimits(
    cps=TokenBucketLimit(rate=1e9, burst=10**9),
    concurrent=10**9,
    per_caller=WindowLimit(calls=10**9, window=1800.0, warn=10**8),
    per_callee=WindowLimit(calls=10**9, window=3600.0, warn=10**8),
    one_ring=OneRingLimit(max_ring=3.0, calls=10**9, window=3600.0, block_for=86400.0, warn=10**8),
)
# What the pre-fill needs: the two windows it fills, nothing else to update.
PREFILL = TrunkLimits(per_caller=LIMITS.per_caller, per_callee=LIMITS.per_callee)
FLOODED = TrunkLimits(cps=TokenBucketLimit(rate=1.0, burst=1), concurrent=10**9)
TIMED = 20_000
REPEAT = 5


def number(prefix: str, n: int) -> str:
    return f"+86{prefix}{n:09d}"


def ns_per_call(run: object, count: int, *, repeat: int = REPEAT) -> float:
    """Best of `repeat` runs of `run(round)`, in ns per call."""
    best = float("inf")
    for round_ in range(repeat):
        started = time.perf_counter()
        run(round_)  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return best / count * 1e9


def prefilled(size: int) -> RateTable:
    """A table tracking `size` callers and `size` callees."""
    callers = [number("13", n) for n in range(size)]
    callees = [number("21", n) for n in range(size)]
    table = RateTable()
    admit = table.admit
    gc.disable()  # setup only: the timed loops run with the collector on
    try:
        for n in range(size):
            admit(PREFILL, trunk=TRUNK, caller=callers[n], callee=callees[n], now=0.0)
    finally:
        gc.enable()
    return table


def bytes_per_key(size: int) -> float:
    """tracemalloc's count of the bytes `size` caller keys take, per key.

    The numbers are made inside the traced region, as the parser makes them
    for each call: the table keeps them, so they are part of a key's cost.
    """
    limits = TrunkLimits(per_caller=WindowLimit(calls=5, window=1800.0))
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        table = RateTable(max_keys=size)
        before = tracemalloc.get_traced_memory()[0]
        admit = table.admit
        for n in range(size):
            admit(limits, trunk=TRUNK, caller=number("13", n), callee=TRUNK, now=float(n))
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        gc.enable()
    assert table.stats.caller_windows == size
    return (after - before) / size


def measure(size: int) -> dict[str, float]:
    table = prefilled(size)
    rng = random.Random(size)
    known = [rng.randrange(size) for _ in range(TIMED)]
    known_callers = [number("13", n) for n in known]
    known_callees = [number("21", n) for n in known]
    fresh_callers = [[number("15", r * TIMED + n) for n in range(TIMED)] for r in range(REPEAT)]
    admit, ended = table.admit, table.call_ended
    clock = [1.0]

    def admit_known(_: int) -> None:
        now = clock[0] = clock[0] + 1.0
        for caller, callee in zip(known_callers, known_callees, strict=True):
            admit(LIMITS, trunk=TRUNK, caller=caller, callee=callee, now=now)

    def end_answered(_: int) -> None:
        now = clock[0]
        for caller in known_callers:
            ended(LIMITS, trunk=TRUNK, caller=caller, ringing_for=4.0, answered=True, now=now)

    def admit_new(round_: int) -> None:
        now = clock[0] = clock[0] + 1.0
        for caller, callee in zip(fresh_callers[round_], known_callees, strict=True):
            admit(LIMITS, trunk=TRUNK, caller=caller, callee=callee, now=now)

    def end_one_ring(round_: int) -> None:
        now = clock[0]
        for caller in fresh_callers[round_]:
            ended(LIMITS, trunk=TRUNK, caller=caller, ringing_for=1.0, answered=False, now=now)

    def admit_refused(_: int) -> None:
        now = clock[0]
        for caller, callee in zip(known_callers, known_callees, strict=True):
            admit(FLOODED, trunk="flooding-trunk", caller=caller, callee=callee, now=now)

    figures = {
        "admit known ns": ns_per_call(admit_known, TIMED),
        "call_ended ns": ns_per_call(end_answered, TIMED),
        "admit new ns": ns_per_call(admit_new, TIMED),
        "one-ring end ns": ns_per_call(end_one_ring, TIMED),
        "refused cps ns": ns_per_call(admit_refused, TIMED),
    }
    stats = table.stats
    keys = stats.caller_windows + stats.callee_windows + stats.one_ring_windows
    figures["sweep ns/key"] = ns_per_call(lambda _: table.sweep(now=clock[0]), keys, repeat=1)
    started = time.perf_counter()
    gc.collect()
    figures["gc pass ms"] = (time.perf_counter() - started) * 1e3
    figures["bytes/key"] = bytes_per_key(size) if size >= 10_000 else float("nan")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 and 10k only")
    args = parser.parse_args()
    sizes = [1, 10_000] if args.quick else [1, 10_000, 1_000_000]
    started = time.perf_counter()
    results = {size: measure(size) for size in sizes}
    columns = list(results[sizes[0]])
    print(f"{'callers':>10} " + " ".join(f"{column:>16}" for column in columns))
    for size, figures in results.items():
        cells = ("-" if figures[c] != figures[c] else f"{figures[c]:.0f}" for c in columns)
        print(f"{size:>10} " + " ".join(f"{cell:>16}" for cell in cells))
    print(f"\n{time.perf_counter() - started:.1f} s; Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
