"""Allocations as intervals: overlap and cover, checked against brute force."""

from __future__ import annotations

import itertools
import random

import pytest

from sipguard.rules.allocations import (
    CoverIndex,
    Interval,
    covers,
    first_overlaps,
    interval_of,
    overlaps,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("allocation", "interval"),
    [
        ("+869521", (None, "869521", "869521")),
        ("+862131771200-+862131771299", (12, "862131771200", "862131771299")),
        ("+1-+1", (1, "1", "1")),
    ],
)
def test_interval_of(allocation: str, interval: Interval) -> None:
    assert interval_of(allocation) == interval


@pytest.mark.parametrize(
    "allocation", ["*", "869521", "+86-+8", "+87-+86", "+", "+86-86", "+8a", "+86-+8a"]
)
def test_interval_of_refuses_what_is_no_allocation(allocation: str) -> None:
    with pytest.raises(ValueError):
        interval_of(allocation)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        # prefix and prefix: one starts with the other
        ("+8695", "+869521", True),
        ("+869521", "+869521", True),
        ("+869521", "+869522", False),
        # prefix and range: some L-digit number with the prefix is in the range
        ("+8621", "+862131771200-+862131771299", True),
        ("+86213177129", "+862131771200-+862131771299", True),
        ("+86213177130", "+862131771200-+862131771299", False),
        ("+862131771199", "+862131771200-+862131771299", False),
        ("+8621317712999", "+862131771200-+862131771299", False),  # longer than the range's numbers
        ("+862131771299", "+862131771200-+862131771299", True),  # a prefix holds itself
        ("+8621317712", "+862131771190-+862131771200", True),  # meets at the range's end only
        # range and range: one length, intervals meet
        ("+862131771200-+862131771299", "+862131771299-+862131771300", True),
        ("+862131771200-+862131771299", "+862131771300-+862131771399", False),
        ("+86213177120-+86213177129", "+862131771200-+862131771299", False),  # other length
    ],
)
def test_overlaps(a: str, b: str, expected: bool) -> None:
    assert overlaps(interval_of(a), interval_of(b)) is expected
    assert overlaps(interval_of(b), interval_of(a)) is expected


@pytest.mark.parametrize(
    ("outer", "inner", "expected"),
    [
        ("+86400", "+864008100000-+864008109999", True),
        ("+86400", "+86400", True),
        ("+86400", "+864001", True),
        ("+86400", "+8640", False),
        ("+86400", "+863999999999-+864000000000", False),
        ("+869521000000-+869521009999", "+869521000100-+869521000199", True),
        ("+869521000000-+869521009999", "+869521000100-+869521010000", False),
        ("+869521000000-+869521009999", "+86952100000-+86952100999", False),  # other length
        # A range never covers a prefix: the prefix holds numbers of other lengths ...
        ("+869521000000-+869521009999", "+86952100001", False),
        # ... except a prefix of 15 digits, which is one number.
        ("+123456789012340-+123456789012349", "+123456789012345", True),
        ("+123456789012345", "+123456789012345-+123456789012345", True),
    ],
)
def test_covers(outer: str, inner: str, expected: bool) -> None:
    assert covers(interval_of(outer), interval_of(inner)) is expected


# -- brute force ----------------------------------------------------------------
#
# Allocations of at most 4 digits (prefixes of at most 3), compared as the sets
# of numbers of at most 4 digits they hold. For these, overlap and cover over
# that small space agree with overlap and cover over all E.164 numbers.

SMALL = [
    "".join(digits)
    for length in range(1, 5)
    for digits in itertools.product("0123456789", repeat=length)
]


def numbers_of(allocation: str) -> frozenset[str]:
    length, low, high = interval_of(allocation)
    if length is None:
        return frozenset(number for number in SMALL if number.startswith(low))
    return frozenset(number for number in SMALL if len(number) == length and low <= number <= high)


def random_allocation(rng: random.Random) -> str:
    alphabet = "01589"
    if rng.random() < 0.4:
        return "+" + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 3)))
    length = rng.randint(1, 4)
    ends = sorted("".join(rng.choice(alphabet) for _ in range(length)) for _ in range(2))
    return f"+{ends[0]}-+{ends[1]}"


def sample(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [random_allocation(rng) for _ in range(count)]


@pytest.mark.parametrize("seed", range(5))
def test_overlaps_and_covers_agree_with_brute_force(seed: int) -> None:
    allocations = sample(seed, 40)
    sets = {allocation: numbers_of(allocation) for allocation in allocations}
    for a, b in itertools.product(allocations, repeat=2):
        assert overlaps(interval_of(a), interval_of(b)) == bool(sets[a] & sets[b]), (a, b)
        assert covers(interval_of(a), interval_of(b)) == (sets[b] <= sets[a]), (a, b)


@pytest.mark.parametrize("seed", range(5))
def test_first_overlaps_agrees_with_pairwise(seed: int) -> None:
    rng = random.Random(seed)
    allocations = sample(seed, 60)
    items = [(interval_of(allocation), rng.randint(1, 4)) for allocation in allocations]
    expected = [
        next(
            (
                j
                for j in range(i)
                if items[j][1] != items[i][1] and overlaps(items[j][0], items[i][0])
            ),
            None,
        )
        for i in range(len(items))
    ]
    assert first_overlaps(items) == expected


def test_first_overlaps_ignores_one_owner_and_names_the_earliest() -> None:
    items = [
        (interval_of("+869521"), "sh"),
        (interval_of("+8695210000-+8695219999"), "sh"),
        (interval_of("+86952100"), "bj"),
        (interval_of("+8610"), "bj"),
    ]
    assert first_overlaps(items) == [None, None, 0, None]
    assert first_overlaps([]) == []


@pytest.mark.parametrize("seed", range(5))
def test_cover_index_agrees_with_pairwise(seed: int) -> None:
    outers = [interval_of(allocation) for allocation in sample(seed, 30)]
    index = CoverIndex(outers)
    for allocation in sample(seed + 100, 80):
        inner = interval_of(allocation)
        covering = [i for i, outer in enumerate(outers) if covers(outer, inner)]
        found = index.covering(inner)
        if not covering:
            assert found is None, allocation
        else:
            assert found in covering, allocation


def test_cover_index_prefers_the_first_prefix() -> None:
    index = CoverIndex([interval_of("+86400"), interval_of("+864"), interval_of("+8640081")])
    assert index.covering(interval_of("+864008100000-+864008109999")) == 0
    assert index.covering(interval_of("+8641")) == 1
    assert index.covering(interval_of("+86")) is None
    assert CoverIndex([]).covering(interval_of("+86")) is None
