"""Number allocations: which owners (trunks) hold an E.164 number.

This module owns `RangeIndex`, built once per rule set from allocations
written as in a rule file, each with its owner (an int, such as a trunk's
index):

- an inclusive range `+862131771200-+862131771299`: its ends have the same
  number of digits, and it covers the numbers of exactly that many digits
  that lie numerically between them;
- a prefix `+869521`: it covers every number that starts with it, whatever
  its length, the prefix itself included.

`*` (any number) is not an allocation the index can hold; the caller handles
it before building the index.

Invariants:

- Rule 1: `owners(number)` is the sorted tuple of the distinct owners of every
  allocation that covers `number`, and `()` when none does, or when `number`
  is not `+` and 1 to 15 ASCII digits. The index is immutable once built.
- Rule 2: per number length, the ranges are stored as disjoint segments,
  sorted by start. Where allocations overlap, the sweep at build time splits
  them into segments whose owner set is the union of theirs; neighbouring
  segments with the same owner set are merged. So one bisection finds the
  only segment that can hold a number.
- Rule 3: each prefix maps to the owners of itself and of every shorter
  prefix of it in the index, so the longest prefix that matches answers for
  all prefixes.

Layout and cost (for rule sets of a million allocations):

- ranges: per number length, three arrays (`array('Q')` starts and ends,
  `array('I')` owner-set ids): 20 bytes per segment; and a bucket directory
  over the starts (`array('I')`, at most one bucket per segment: up to 4
  bytes per segment). Lookup: one `int()`, a shift to find the bucket, and a
  `bisect` over that bucket's starts only (a few, when the starts spread
  evenly; O(log n) at worst).
- prefixes: one dict from prefix text (the caller's own string object when
  it is written in canonical form) to an owner-set tuple shared by every
  prefix with the same owners. Lookup: one slice and one dict probe per
  distinct prefix length, longest first, stopping at the first hit; only
  lengths that occur in the index are tried.
- owner sets: one tuple per distinct set.
- for `overlaps()`: a reference to each allocation text and its owner
  (12 bytes per allocation).

Measured with tracemalloc at a million allocations (`python
bench/bench_ranges.py`; the allocation strings belong to the caller and are
not counted): 36 bytes per range allocation, 43 bytes per prefix allocation,
37 bytes per allocation for a mix of 70 % ranges and 30 % prefixes. Building
needs 150 to 180 bytes per allocation of temporary memory at its peak.

Contract with callers: `owners()` expects normalised numbers (see
`sipguard.policy.numbers`); `owners_e164()`, the per-call path's lookup, is
the same without checking that a number has that form. They allocate only
the number's integer value and the prefix slices they probe (`owners()` the
digits as well). `overlaps()` is for the rule-file linter; it costs O(n log n) plus
the pairs of overlapping allocations it meets.

Ring 1: pure; no I/O, no clock.
"""

from __future__ import annotations

import heapq
from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, TypeAlias

from sipguard.rules.values import E164_MAX_DIGITS, parse_allocation

if TYPE_CHECKING:
    # One number length's segments: their starts, ends and owner-set ids, and
    # the bucket directory over the starts (base, shift, bounds; see _directory).
    _Segments: TypeAlias = tuple[array[int], array[int], array[int], int, int, array[int]]

__all__ = ["MAX_OWNER", "Overlap", "RangeIndex"]

# Owners are stored in array('I'): 32-bit unsigned ints.
MAX_OWNER = 2**32 - 1

_Range: TypeAlias = tuple[int, int, int]  # (start, end, owner or owner-set id)


@dataclass(frozen=True, slots=True, kw_only=True)
class Overlap:
    """Two allocations of different owners that share at least one number.

    Attributes:
        first: the allocation text as the index was given it.
        first_owner: its owner.
        first_index: its position in the allocations the index was built from.
        second: the other allocation's text; it comes later in that order
            (`second_index > first_index`).
        second_owner: its owner, never equal to `first_owner`.
        second_index: its position.
    """

    first: str
    first_owner: int
    first_index: int
    second: str
    second_owner: int
    second_index: int


class RangeIndex:
    """Maps an E.164 number to the owners of the allocations that cover it."""

    __slots__ = (
        "_texts",
        "_owner_of",
        "_sets",
        "_ranges",
        "_prefixes",
        "_probes",
        "_segment_count",
    )

    def __init__(self, allocations: Iterable[tuple[str, int]]) -> None:
        """Index `allocations`, pairs of (allocation text, owner).

        Raises:
            ValueError: an allocation is `*` or not a valid range or prefix
                (the message names it), or an owner is not in 0..MAX_OWNER.
        """
        texts: list[str] = []
        owner_of = array("I")
        by_length: dict[int, list[_Range]] = {}
        prefix_owners: dict[str, int | set[int]] = {}
        for text, owner in allocations:
            if not 0 <= owner <= MAX_OWNER:
                raise ValueError(f"allocation '{text}': owner {owner} is not in 0..{MAX_OWNER}")
            parsed = _parse(text)
            texts.append(text)
            owner_of.append(owner)
            if isinstance(parsed, str):
                held = prefix_owners.setdefault(parsed, owner)
                if held != owner:
                    if isinstance(held, int):
                        prefix_owners[parsed] = {held, owner}
                    else:
                        held.add(owner)
            else:
                start, end, length = parsed
                by_length.setdefault(length, []).append((start, end, owner))
        self._texts = tuple(texts)
        self._owner_of = owner_of
        interner = _OwnerSets()
        self._ranges: dict[int, _Segments] = {}
        for length, ranges in sorted(by_length.items()):
            starts, ends, set_ids = _segments(ranges, interner)
            self._ranges[length] = (starts, ends, set_ids, *_directory(starts))
        self._segment_count = sum(len(segments[0]) for segments in self._ranges.values())
        self._prefixes = _prefix_closure(prefix_owners, interner)
        self._sets = interner.sets()
        lengths = sorted({len(prefix) for prefix in self._prefixes}, reverse=True)
        # _probes[n]: the prefix lengths (with the '+') worth trying on a number
        # of n characters, longest first.
        self._probes = tuple(
            tuple(length for length in lengths if length <= size)
            for size in range(E164_MAX_DIGITS + 2)
        )

    def owners(self, number: str) -> tuple[int, ...]:
        """The sorted, distinct owners of the allocations covering `number`.

        Args:
            number: an E.164 number, `+` and 1 to 15 digits.

        Returns:
            The owners, `()` when no allocation covers `number` or when it is
            not `+` and 1 to 15 ASCII digits.
        """
        digits = number[1:]
        if (
            number[:1] != "+"
            or not digits.isascii()
            or not digits.isdigit()
            or len(digits) > E164_MAX_DIGITS
        ):
            return ()
        return self.owners_e164(number)

    def owners_e164(self, number: str) -> tuple[int, ...]:
        """`owners(number)` for a number known to be `+` and 1 to 15 ASCII digits.

        The per-call path's lookup: numbers from `NumberPlan.normalise` have
        that form, so it skips checking it. Other text gives a wrong answer
        or raises ValueError.
        """
        found: tuple[int, ...] = ()
        size = len(number)
        segments = self._ranges.get(size - 1)
        if segments is not None:
            starts, ends, set_ids, base, shift, bounds = segments
            value = int(number)  # int() reads the "+" as the sign
            bucket = (value - base) >> shift
            if bucket < 0:
                at = -1  # below the first segment
            elif bucket < len(bounds) - 1:
                at = bisect_right(starts, value, bounds[bucket], bounds[bucket + 1]) - 1
            else:
                at = len(starts) - 1  # beyond the last bucket
            if at >= 0 and value <= ends[at]:
                found = self._sets[set_ids[at]]
        prefixes = self._prefixes
        for length in self._probes[size]:
            held = prefixes.get(number[:length])
            if held is not None:
                if not found or found is held:
                    return held
                return tuple(sorted({*found, *held}))
        return found

    def overlaps(self) -> list[Overlap]:
        """Every pair of allocations of different owners that share a number.

        A range overlaps a range of the same length when their intervals
        meet; a prefix overlaps a prefix that starts with it (or equals it),
        and a range whose numbers of its length start with it. Allocations of
        the same owner never count. Pairs come in the order of their
        positions (`first_index`, then `second_index`).
        """
        owner_of = self._owner_of
        pairs: set[tuple[int, int]] = set()
        by_length: dict[int, list[tuple[int, int, int, bool]]] = {}
        by_prefix: dict[str, list[int]] = {}
        for index, text in enumerate(self._texts):
            parsed = _parse(text)
            if isinstance(parsed, str):
                by_prefix.setdefault(parsed, []).append(index)
            else:
                start, end, length = parsed
                by_length.setdefault(length, []).append((start, end, index, False))
        prefix_lengths = sorted({len(prefix) for prefix in by_prefix})
        for prefix, indexes in by_prefix.items():
            # Prefix against prefix: look up each shorter prefix, and itself.
            for length in prefix_lengths:
                if length > len(prefix):
                    break
                for other in by_prefix.get(prefix[:length], ()):
                    for index in indexes:
                        if owner_of[index] != owner_of[other]:
                            pairs.add((min(index, other), max(index, other)))
            # Prefix against range: the prefix's numbers of each range length.
            value, size = int(prefix[1:]), len(prefix) - 1
            for length, items in by_length.items():
                if length >= size:
                    scale = 10 ** (length - size)
                    low, high = value * scale, (value + 1) * scale - 1
                    items.extend((low, high, index, True) for index in indexes)
        for items in by_length.values():
            _overlapping_pairs(items, owner_of, pairs)
        texts = self._texts
        return [
            Overlap(
                first=texts[first],
                first_owner=owner_of[first],
                first_index=first,
                second=texts[second],
                second_owner=owner_of[second],
                second_index=second,
            )
            for first, second in sorted(pairs)
        ]

    def __len__(self) -> int:
        """The number of allocations the index was built from."""
        return len(self._texts)

    @property
    def segment_count(self) -> int:
        """The number of range segments stored, after splitting and merging."""
        return self._segment_count

    @property
    def prefix_count(self) -> int:
        """The number of distinct prefixes stored."""
        return len(self._prefixes)

    def __repr__(self) -> str:
        return (
            f"RangeIndex(allocations={len(self)}, segments={self._segment_count}, "
            f"prefixes={len(self._prefixes)}, owner_sets={len(self._sets)})"
        )


def _parse(text: str) -> str | tuple[int, int, int]:
    """A prefix as its canonical text, or a range as (start, end, digit count).

    Raises:
        ValueError: `*`, or not a valid prefix or range; the message names `text`.
    """
    # Fast path for the canonical form (what a validated rule set holds): it
    # accepts only text that parse_allocation() returns unchanged.
    start, dash, end = text.partition("-")
    if not dash:
        if _is_canonical_number(text):
            return text
    elif (
        len(start) == len(end)
        and start <= end
        and _is_canonical_number(start)
        and _is_canonical_number(end)
    ):
        return int(start), int(end), len(start) - 1
    try:
        canonical = parse_allocation(text, allow_any=False)
    except ValueError as exc:
        raise ValueError(f"allocation '{text}': {exc}") from None
    start, dash, end = canonical.partition("-")
    if not dash:
        return canonical
    return int(start), int(end), len(start) - 1


def _is_canonical_number(text: str) -> bool:
    """`+` and 1 to 15 ASCII digits, the first not 0 (as `parse_number` checks)."""
    return (
        2 <= len(text) <= E164_MAX_DIGITS + 1
        and text[0] == "+"
        and text[1] != "0"
        and text.isascii()
        and text[1:].isdigit()
    )


class _OwnerSets:
    """Build-time interning of owner sets: one tuple and one id per distinct set."""

    __slots__ = ("_ids", "_sets", "_single")

    def __init__(self) -> None:
        self._ids: dict[tuple[int, ...], int] = {}
        self._sets: list[tuple[int, ...]] = []
        self._single: dict[int, int] = {}

    def id_of(self, owners: tuple[int, ...]) -> int:
        """The id of a sorted tuple of distinct owners."""
        set_id = self._ids.get(owners)
        if set_id is None:
            set_id = self._ids[owners] = len(self._sets)
            self._sets.append(owners)
        return set_id

    def id_of_owner(self, owner: int) -> int:
        """The id of the set of one owner (the common case, cached)."""
        set_id = self._single.get(owner)
        if set_id is None:
            set_id = self._single[owner] = self.id_of((owner,))
        return set_id

    def owners_of(self, set_id: int) -> tuple[int, ...]:
        return self._sets[set_id]

    def sets(self) -> tuple[tuple[int, ...], ...]:
        return tuple(self._sets)


def _segments(
    ranges: list[_Range], interner: _OwnerSets
) -> tuple[array[int], array[int], array[int]]:
    """Disjoint, merged segments of one number length's ranges (Rule 2).

    Ranges that overlap nothing (the common case) pass straight through; each
    cluster of overlapping ranges is swept separately.
    """
    ranges.sort()
    starts, ends, set_ids = array("Q"), array("Q"), array("I")
    last_end, last_id = -2, -1
    count = len(ranges)
    at = 0
    while at < count:
        start, reach, owner = ranges[at]
        following = at + 1
        while following < count and ranges[following][0] <= reach:
            reach = max(reach, ranges[following][1])
            following += 1
        if following == at + 1:
            pieces: Iterable[_Range] = ((start, reach, interner.id_of_owner(owner)),)
        else:
            pieces = _sweep(ranges[at:following], interner)
        at = following
        for start, end, set_id in pieces:
            if set_id == last_id and start == last_end + 1:
                ends[-1] = last_end = end
                continue
            starts.append(start)
            ends.append(end)
            set_ids.append(set_id)
            last_end, last_id = end, set_id
    return starts, ends, set_ids


def _directory(starts: array[int]) -> tuple[int, int, array[int]]:
    """A bucket directory over `starts` (sorted, not empty): (base, shift, bounds).

    Bucket k holds the starts s with `(s - base) >> shift == k`, at indexes
    bounds[k] to bounds[k + 1] - 1, so a lookup bisects only the few starts of
    its number's bucket (the segment that holds a number starts in its bucket,
    or is the last one before it). The shift makes the buckets at most as
    many as the segments: at most 4 bytes per segment.
    """
    base = starts[0]
    shift = ((starts[-1] - base) // len(starts)).bit_length()
    sizes = [0] * (((starts[-1] - base) >> shift) + 2)
    for start in starts:
        sizes[((start - base) >> shift) + 1] += 1
    return base, shift, array("I", accumulate(sizes))


def _sweep(cluster: list[_Range], interner: _OwnerSets) -> Iterator[_Range]:
    """Split overlapping ranges into pieces whose owner set is constant."""
    events: list[tuple[int, int, int]] = []  # (position, +1 opens / -1 closes, owner)
    for start, end, owner in cluster:
        events.append((start, 1, owner))
        events.append((end + 1, -1, owner))
    events.sort()
    open_count: dict[int, int] = {}
    at, count = 0, len(events)
    while at < count:
        position = events[at][0]
        while at < count and events[at][0] == position:
            _, change, owner = events[at]
            remaining = open_count.get(owner, 0) + change
            if remaining:
                open_count[owner] = remaining
            else:
                del open_count[owner]
            at += 1
        # An open range always closes later, so events[at] exists here.
        if open_count:
            owners = tuple(sorted(open_count))
            yield position, events[at][0] - 1, interner.id_of(owners)


def _prefix_closure(
    prefix_owners: dict[str, int | set[int]], interner: _OwnerSets
) -> dict[str, tuple[int, ...]]:
    """Each prefix with the owners of itself and its shorter prefixes (Rule 3)."""
    lengths = sorted({len(prefix) for prefix in prefix_owners})
    closure: dict[str, tuple[int, ...]] = {}
    for prefix, held in prefix_owners.items():
        owners = {held} if isinstance(held, int) else set(held)
        for length in lengths:
            if length >= len(prefix):
                break
            shorter = prefix_owners.get(prefix[:length])
            if shorter is not None:
                owners.update((shorter,) if isinstance(shorter, int) else shorter)
        if len(owners) == 1:
            set_id = interner.id_of_owner(next(iter(owners)))
        else:
            set_id = interner.id_of(tuple(sorted(owners)))
        closure[prefix] = interner.owners_of(set_id)
    return closure


def _overlapping_pairs(
    items: list[tuple[int, int, int, bool]], owner_of: array[int], pairs: set[tuple[int, int]]
) -> None:
    """Add to `pairs` every two intersecting intervals of different owners.

    Items are (start, end, allocation index, from a prefix). Two prefix items
    are skipped: prefix pairs are found by text. A sweep by start keeps the
    intervals still open; each new interval meets exactly those.
    """
    items.sort()
    open_items: list[tuple[int, int, bool]] = []  # heap of (end, index, from a prefix)
    for start, end, index, from_prefix in items:
        while open_items and open_items[0][0] < start:
            heapq.heappop(open_items)
        owner = owner_of[index]
        for _, other, other_from_prefix in open_items:
            if owner_of[other] != owner and not (from_prefix and other_from_prefix):
                pairs.add((min(index, other), max(index, other)))
        heapq.heappush(open_items, (end, index, from_prefix))
