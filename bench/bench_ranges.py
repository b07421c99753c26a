"""RangeIndex at rule-set sizes from a handful to a million allocations.

Run: python bench/bench_ranges.py [--sizes 10,10000,1000000] [--seed 1]

For each size it builds an index of random, non-overlapping allocations
(70 % ranges of 100 to 1000 numbers, 30 % prefixes of two lengths, owned by
up to 1000 trunks) and prints, side by side:

- build: seconds to build the index (best of a few builds for small sizes);
- memory: bytes the built index holds, measured with tracemalloc (the
  allocation strings belong to the caller and are not counted), in total and
  per allocation, and the peak while building;
- hit / miss: nanoseconds per `owners()` call for numbers inside an
  allocation and numbers in none, best of several timeit repeats over 1000
  distinct numbers (a miss tries every prefix length and one bisection).
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import timeit
import tracemalloc
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sipguard.policy.ranges import RangeIndex  # noqa: E402

DEFAULT_SIZES = (10, 10_000, 1_000_000)
LOOKUPS = 1000  # distinct numbers per timing loop
BLOCKS = 10**7  # 7-digit block ids: room for a million disjoint allocations
RANGE_SHARE = 0.7


def allocations(count: int, rng: random.Random) -> list[tuple[str, int]]:
    """`count` allocations that never overlap: each one owns a distinct block.

    Ranges are `+862<block><3 digits>` (13 digits); prefixes are `+863<block>`
    (10 digits) or `+8640<block>` (11 digits).
    """
    trunks = max(1, min(1000, count // 10))
    result = []
    for block in rng.sample(range(BLOCKS), count):
        owner = rng.randrange(trunks)
        if rng.random() < RANGE_SHARE:
            last = rng.choice((99, 199, 499, 999))
            result.append((f"+862{block:07d}000-+862{block:07d}{last:03d}", owner))
        elif rng.random() < 0.5:
            result.append((f"+863{block:07d}", owner))
        else:
            result.append((f"+8640{block:07d}", owner))
    return result


def hits(chosen: list[tuple[str, int]], rng: random.Random) -> list[str]:
    """One 13-digit number inside each of `chosen`."""
    numbers = []
    for text, _ in chosen:
        if "-" in text:
            low, high = (int(end[1:]) for end in text.split("-"))
            numbers.append(f"+{rng.randint(low, high)}")
        else:
            numbers.append(text + "".join(rng.choices("0123456789", k=14 - len(text))))
    return numbers


def misses(index: RangeIndex, rng: random.Random) -> list[str]:
    """13-digit numbers in no allocation, half of them between allocated ranges."""
    numbers: list[str] = []
    while len(numbers) < LOOKUPS:
        family = rng.choice(("862", "863", "8640"))
        number = f"+{family}{rng.randrange(BLOCKS):07d}".ljust(14, "5")
        if not index.owners(number):
            numbers.append(number)
    return numbers


def build_seconds(entries: list[tuple[str, int]]) -> float:
    rounds = 5 if len(entries) < 100_000 else 1
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        RangeIndex(entries)
        best = min(best, time.perf_counter() - started)
    return best


def memory(entries: list[tuple[str, int]]) -> tuple[RangeIndex, int, int]:
    """The index, and the bytes it holds and peaked at while building."""
    gc.collect()
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    index = RangeIndex(entries)
    gc.collect()
    after, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return index, after - before, peak - before


def lookup_ns(index: RangeIndex, numbers: list[str]) -> float:
    owners = index.owners
    runs = 50
    seconds = min(
        timeit.repeat(lambda: deque(map(owners, numbers), maxlen=0), number=runs, repeat=5)
    )
    return seconds / (runs * len(numbers)) * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default=",".join(str(size) for size in DEFAULT_SIZES),
        help="comma-separated allocation counts (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=1)
    arguments = parser.parse_args()
    sizes = [int(size) for size in arguments.sizes.split(",")]

    header = (
        f"{'allocations':>11} {'segments':>9} {'prefixes':>9} {'build s':>8} "
        f"{'MiB':>7} {'B/alloc':>7} {'peak MiB':>8} {'hit ns':>7} {'miss ns':>7}"
    )
    print(f"Python {sys.version.split()[0]}, RangeIndex.owners() over {LOOKUPS} numbers")
    print(header)
    print("-" * len(header))
    for size in sizes:
        rng = random.Random(arguments.seed)
        entries = allocations(size, rng)
        seconds = build_seconds(entries)
        index, held, peak = memory(entries)
        chosen = [entries[rng.randrange(size)] for _ in range(LOOKUPS)]
        hit_ns = lookup_ns(index, hits(chosen, rng))
        miss_ns = lookup_ns(index, misses(index, rng))
        print(
            f"{size:>11,} {index.segment_count:>9,} {index.prefix_count:>9,} {seconds:>8.3f} "
            f"{held / 2**20:>7.2f} {held / size:>7.1f} {peak / 2**20:>8.2f} "
            f"{hit_ns:>7.0f} {miss_ns:>7.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
