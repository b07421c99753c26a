"""RangeIndex agrees with brute force: owners() by scanning, overlaps() pair by pair."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipguard.policy.ranges import RangeIndex

pytestmark = pytest.mark.property

OWNERS = st.integers(0, 3)


def numbers(*, alphabet: str, min_size: int, max_size: int) -> st.SearchStrategy[str]:
    """Digit strings without a leading 0 (no country code starts with 0)."""
    return st.builds(
        lambda head, tail: head + tail,
        st.sampled_from([digit for digit in alphabet if digit != "0"]),
        st.text(alphabet=alphabet, min_size=min_size - 1, max_size=max_size - 1),
    )


@st.composite
def allocations(draw: st.DrawFn, *, alphabet: str, max_digits: int) -> tuple[str, int]:
    """A prefix or a range over a small alphabet, so that allocations meet often."""
    first = draw(numbers(alphabet=alphabet, min_size=1, max_size=max_digits))
    owner = draw(OWNERS)
    if draw(st.booleans()):
        return "+" + first, owner
    second = draw(numbers(alphabet=alphabet, min_size=len(first), max_size=len(first)))
    low, high = sorted((first, second), key=int)
    return f"+{low}-+{high}", owner


def covers(allocation: str, number: str) -> bool:
    """The definition, read directly off the text."""
    if "-" not in allocation:
        return number.startswith(allocation)
    low, high = allocation.split("-")
    return len(number) == len(low) and int(low[1:]) <= int(number[1:]) <= int(high[1:])


def brute_owners(allocations: list[tuple[str, int]], number: str) -> tuple[int, ...]:
    return tuple(sorted({owner for text, owner in allocations if covers(text, number)}))


@st.composite
def dense_ranges(draw: st.DrawFn) -> tuple[str, int]:
    """Short ranges packed into 100..150: they touch, nest and leave 1-number gaps."""
    start = draw(st.integers(100, 150))
    end = min(999, start + draw(st.integers(0, 8)))
    return f"+{start}-+{end}", draw(OWNERS)


# Small universe: allocations of up to 3 digits, so every number that two of
# them could share has at most 3 digits, and all of those can be listed.
SMALL = st.lists(
    st.one_of(allocations(alphabet="0123456789", max_digits=3), dense_ranges()), max_size=8
)
UNIVERSE = [f"+{n}" for n in range(1, 1000)]
# Every number of up to 4 digits, to also try numbers longer than any allocation.
LOOKUPS = [f"+{n}" for n in range(1, 10000)]


@settings(deadline=None, max_examples=60)
@given(SMALL)
def test_owners_agrees_with_brute_force_on_every_short_number(
    allocations: list[tuple[str, int]],
) -> None:
    index = RangeIndex(allocations)
    for number in LOOKUPS:
        assert index.owners(number) == brute_owners(allocations, number), number


@st.composite
def index_and_numbers(draw: st.DrawFn) -> tuple[list[tuple[str, int]], list[str]]:
    """Longer numbers over a 3-digit alphabet, and numbers near the allocations."""
    alphabet = "019"
    chosen = draw(st.lists(allocations(alphabet=alphabet, max_digits=8), max_size=20))
    near: list[str] = []
    for text, _ in chosen:
        for end in text.split("-"):
            value = int(end[1:])
            near += [f"+{value + delta}" for delta in (-1, 0, 1) if value + delta > 0]
            near.append(end + draw(st.text(alphabet=alphabet, max_size=3)))
    others = draw(st.lists(numbers(alphabet=alphabet, min_size=1, max_size=10), max_size=30))
    return chosen, near + ["+" + other for other in others]


@settings(deadline=None)
@given(index_and_numbers())
def test_owners_agrees_with_brute_force_near_the_allocations(
    case: tuple[list[tuple[str, int]], list[str]],
) -> None:
    allocations, lookups = case
    index = RangeIndex(allocations)
    for number in lookups:
        assert index.owners(number) == brute_owners(allocations, number), number


@settings(deadline=None)
@given(SMALL)
def test_overlaps_agrees_with_a_pairwise_check(allocations: list[tuple[str, int]]) -> None:
    covered = [{number for number in UNIVERSE if covers(text, number)} for text, _ in allocations]
    expected = [
        (first, second)
        for first, second in itertools.combinations(range(len(allocations)), 2)
        if allocations[first][1] != allocations[second][1] and covered[first] & covered[second]
    ]
    found = RangeIndex(allocations).overlaps()
    assert [(o.first_index, o.second_index) for o in found] == expected
    for overlap in found:
        assert (overlap.first, overlap.first_owner) == allocations[overlap.first_index]
        assert (overlap.second, overlap.second_owner) == allocations[overlap.second_index]


@settings(deadline=None)
@given(SMALL)
def test_segments_are_as_few_as_the_owner_sets_allow(allocations: list[tuple[str, int]]) -> None:
    # Count the maximal runs of consecutive numbers (of one length) that the
    # ranges give the same non-empty owner set: the fewest disjoint segments
    # possible. The index must store exactly that many (split and merged).
    ranges = [(text, owner) for text, owner in allocations if "-" in text]
    runs = 0
    for length in (1, 2, 3):
        previous: tuple[int, ...] = ()
        for value in range(10 ** (length - 1), 10**length):
            held = brute_owners(ranges, f"+{value}")
            if held and held != previous:
                runs += 1
            previous = held
    index = RangeIndex(allocations)
    assert index.segment_count == runs
    assert len(index) == len(allocations)


@st.composite
def many_ranges(draw: st.DrawFn) -> list[tuple[str, int]]:
    """Up to 300 ranges of 6-digit numbers around a few centres, spread thin or
    packed tight, so that the bucket directory has empty, single and crowded
    buckets."""
    centres = draw(st.lists(st.integers(100_000, 999_999), min_size=1, max_size=3))
    spread = draw(st.sampled_from([50, 5_000, 900_000]))
    chosen: list[tuple[str, int]] = []
    for _ in range(draw(st.integers(1, 300))):
        start = min(999_999, draw(st.sampled_from(centres)) + draw(st.integers(0, spread)))
        end = min(999_999, start + draw(st.integers(0, 40)))
        chosen.append((f"+{start}-+{end}", draw(OWNERS)))
    return chosen


@settings(deadline=None, max_examples=50)
@given(many_ranges(), st.lists(st.integers(100_000, 999_999), max_size=50))
def test_owners_agrees_with_brute_force_over_many_ranges(
    allocations: list[tuple[str, int]], others: list[int]
) -> None:
    index = RangeIndex(allocations)
    lookups = {"+100000", "+999999", *(f"+{value}" for value in others)}
    for text, _ in allocations:
        for end in text.split("-"):
            value = int(end[1:])
            lookups.update(f"+{value + delta}" for delta in (-1, 0, 1) if value + delta < 10**6)
    for number in sorted(lookups):
        expected = brute_owners(allocations, number)
        assert index.owners_e164(number) == expected, number
        assert index.owners(number) == expected, number
