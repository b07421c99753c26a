"""Number allocations as intervals over digit strings: overlap and cover tests.

An allocation of a rule file (`sipguard.rules.values.parse_allocation`) is a
prefix (`+869521`: every number starting with those digits, of any length up
to 15 digits) or an inclusive range of numbers of one length
(`+862131771200-+862131771299`). This module turns each into an `Interval`
`(length, low, high)` over the digits after `+`:

- a range is `(L, start, end)`: the L-digit numbers from start to end;
- a prefix P is `(None, P, P)`: every number of `len(P)` to 15 digits that
  starts with P.

Invariants:

- Rule 1: digit strings of equal length compare as strings exactly as they
  compare as numbers, so no digit string is ever converted to an integer.
- Rule 2: a prefix P meets the L-digit numbers `P0...0` to `P9...9` (for
  `len(P) <= L`), and nothing else of that length.

The rule-file checker uses this to lint allocations: the same block claimed by
two trunks, or a trunk's block that lies wholly inside `do_not_originate`.

Ring 1: pure; no I/O.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Hashable, Sequence
from typing import TypeAlias

from sipguard.rules.values import E164_MAX_DIGITS

__all__ = [
    "CoverIndex",
    "Interval",
    "covers",
    "first_overlaps",
    "interval_of",
    "overlaps",
]

Interval: TypeAlias = tuple[int | None, str, str]


def interval_of(allocation: str) -> Interval:
    """The interval of a canonical prefix (`+869521`) or range (`+8621-+8622`).

    Raises:
        ValueError: `*` (any number), which is no allocation, or a text that
            is not a canonical prefix or range.
    """
    start, sep, end = allocation.partition("-")
    low = start.removeprefix("+")
    high = end.removeprefix("+") if sep else low
    if not (start.startswith("+") and low.isdigit() and low.isascii()):
        raise ValueError(f"not a prefix or range: {allocation!r}")
    if not sep:
        return (None, low, low)
    if not (end.startswith("+") and high.isdigit() and high.isascii()):
        raise ValueError(f"not a prefix or range: {allocation!r}")
    if len(low) != len(high) or low > high:
        raise ValueError(f"not a prefix or range: {allocation!r}")
    return (len(low), low, high)


def _span(prefix: str, length: int) -> tuple[str, str]:
    """The `length`-digit numbers that start with `prefix` (Rule 2)."""
    fill = length - len(prefix)
    return prefix + "0" * fill, prefix + "9" * fill


def _as_range(interval: Interval) -> Interval:
    """A prefix of the longest length is one number: write it as a range."""
    length, low, high = interval
    if length is None and len(low) == E164_MAX_DIGITS:
        return (E164_MAX_DIGITS, low, high)
    return interval


def overlaps(a: Interval, b: Interval) -> bool:
    """True when some number lies in both `a` and `b`."""
    a_length, a_low, a_high = a
    b_length, b_low, b_high = b
    if a_length is None and b_length is None:
        return a_low.startswith(b_low) or b_low.startswith(a_low)
    if a_length is None or b_length is None:
        prefix, (length, low, high) = (a_low, b) if a_length is None else (b_low, a)
        assert length is not None
        if len(prefix) > length:
            return False
        first, last = _span(prefix, length)
        return first <= high and low <= last
    return a_length == b_length and a_low <= b_high and b_low <= a_high


def covers(outer: Interval, inner: Interval) -> bool:
    """True when every number of `inner` lies in `outer`.

    A range never covers a prefix shorter than 15 digits: the prefix also
    holds numbers of other lengths.
    """
    outer_length, outer_low, outer_high = _as_range(outer)
    inner_length, inner_low, inner_high = _as_range(inner)
    if inner_length is None:
        return outer_length is None and inner_low.startswith(outer_low)
    if outer_length is None:
        return inner_low.startswith(outer_low) and inner_high.startswith(outer_low)
    return outer_length == inner_length and outer_low <= inner_low and inner_high <= outer_high


def first_overlaps(items: Sequence[tuple[Interval, Hashable]]) -> list[int | None]:
    """For each item, the first earlier item of another owner that it overlaps.

    Args:
        items: (interval, owner) pairs in file order; items of one owner may
            overlap each other freely.

    Returns:
        One entry per item: the smallest index `j < i` whose owner differs
        from item i's and whose interval overlaps it, or None.

    The work is a sweep over each number length, so it grows with the number
    of items and of overlapping pairs, not with their square.
    """
    by_length: dict[int, list[tuple[str, str, int]]] = {}
    for index, (interval, _) in enumerate(items):
        length, low, high = interval
        if length is not None:
            by_length.setdefault(length, []).append((low, high, index))
            continue
        for size in range(len(low), E164_MAX_DIGITS + 1):
            first, last = _span(low, size)
            by_length.setdefault(size, []).append((first, last, index))
    found: list[int | None] = [None] * len(items)
    for spans in by_length.values():
        spans.sort()
        active: list[tuple[str, int]] = []
        for low, high, index in spans:
            while active and active[0][0] < low:
                heapq.heappop(active)
            for _, other in active:
                if items[other][1] == items[index][1]:
                    continue
                earlier, later = min(index, other), max(index, other)
                current = found[later]
                if current is None or earlier < current:
                    found[later] = earlier
            heapq.heappush(active, (high, index))
    return found


class CoverIndex:
    """Which of many intervals covers a given one, in logarithmic time.

    Built once from the `do_not_originate` entries, asked once per trunk
    allocation.
    """

    __slots__ = ("_prefixes", "_ranges")

    def __init__(self, intervals: Sequence[Interval]) -> None:
        self._prefixes: dict[str, int] = {}
        grouped: dict[int, list[tuple[str, str, int]]] = {}
        for index, interval in enumerate(intervals):
            length, low, high = _as_range(interval)
            if length is None:
                self._prefixes.setdefault(low, index)
            else:
                grouped.setdefault(length, []).append((low, high, index))
        # Per length: starts in order, and the widest reach among each start
        # and those before it, with the entry that reaches that far.
        self._ranges: dict[int, tuple[list[str], list[tuple[str, int]]]] = {}
        for length, spans in grouped.items():
            spans.sort(key=lambda span: (span[0], span[2]))
            starts: list[str] = []
            reach: list[tuple[str, int]] = []
            for low, high, index in spans:
                starts.append(low)
                if not reach or high > reach[-1][0]:
                    reach.append((high, index))
                else:
                    reach.append(reach[-1])
            self._ranges[length] = (starts, reach)

    def covering(self, inner: Interval) -> int | None:
        """The index of an interval that covers `inner`, or None.

        Among the covering prefixes and the widest covering range of the same
        length, the one listed first.
        """
        length, low, high = _as_range(inner)
        common = low if length is None else _common_prefix(low, high)
        found = [
            index
            for size in range(1, len(common) + 1)
            if (index := self._prefixes.get(common[:size])) is not None
        ]
        if length is not None and length in self._ranges:
            starts, reach = self._ranges[length]
            position = bisect.bisect_right(starts, low)
            if position:
                widest, index = reach[position - 1]
                if high <= widest:
                    found.append(index)
        return min(found, default=None)


def _common_prefix(low: str, high: str) -> str:
    size = 0
    while size < len(low) and low[size] == high[size]:
        size += 1
    return low[:size]
