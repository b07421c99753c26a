"""RangeIndex: ranges, prefixes, overlapping owners, merging and the overlap report."""

from __future__ import annotations

import re

import pytest

from sipguard.policy.ranges import MAX_OWNER, Overlap, RangeIndex

pytestmark = pytest.mark.unit

SHANGHAI = "+862131771200-+862131771299"


# --- ranges -------------------------------------------------------------------------------------


def test_range_covers_its_ends_and_between() -> None:
    index = RangeIndex([(SHANGHAI, 3)])
    assert index.owners("+862131771200") == (3,)
    assert index.owners("+862131771250") == (3,)
    assert index.owners("+862131771299") == (3,)
    assert index.owners("+862131771199") == ()
    assert index.owners("+862131771300") == ()


def test_range_covers_only_numbers_of_its_length() -> None:
    index = RangeIndex([(SHANGHAI, 0)])
    assert index.owners("+8621317712") == ()  # shorter, numerically below
    assert index.owners("+86213177125") == ()  # a prefix of numbers in the range
    assert index.owners("+8621317712500") == ()  # longer, starts like one
    assert index.owners("+862131771250") == (0,)


def test_ranges_of_different_lengths_never_match_each_other() -> None:
    index = RangeIndex([("+8621-+8629", 1), ("+862100-+862999", 2)])
    assert index.owners("+8625") == (1,)
    assert index.owners("+862500") == (2,)
    assert index.owners("+86250") == ()
    assert index.segment_count == 2
    assert index.overlaps() == []


def test_single_number_range() -> None:
    index = RangeIndex([("+862131771234-+862131771234", 7)])
    assert index.owners("+862131771234") == (7,)
    assert index.owners("+862131771233") == ()
    assert index.owners("+862131771235") == ()


def test_range_spanning_digit_boundaries() -> None:
    index = RangeIndex([("+441999-+442001", 0)])
    assert [index.owners(f"+44{n}") for n in (1998, 1999, 2000, 2001, 2002)] == [
        (),
        (0,),
        (0,),
        (0,),
        (),
    ]


def test_overlapping_ranges_of_different_owners_split_into_unions() -> None:
    index = RangeIndex([("+8610-+8650", 2), ("+8640-+8680", 1)])
    assert index.owners("+8610") == (2,)
    assert index.owners("+8639") == (2,)
    assert index.owners("+8640") == (1, 2)
    assert index.owners("+8650") == (1, 2)
    assert index.owners("+8651") == (1,)
    assert index.owners("+8680") == (1,)
    assert index.owners("+8681") == ()
    assert index.segment_count == 3


def test_nested_ranges() -> None:
    index = RangeIndex([("+8610-+8699", 0), ("+8620-+8629", 1), ("+8625-+8625", 2)])
    assert index.owners("+8619") == (0,)
    assert index.owners("+8620") == (0, 1)
    assert index.owners("+8625") == (0, 1, 2)
    assert index.owners("+8626") == (0, 1)
    assert index.owners("+8630") == (0,)
    assert index.segment_count == 5


def test_adjacent_ranges_of_one_owner_merge() -> None:
    index = RangeIndex(
        [
            ("+862131771200-+862131771299", 0),
            ("+862131771300-+862131771399", 0),
            ("+862131771400-+862131771400", 0),
        ]
    )
    assert index.segment_count == 1
    assert index.owners("+862131771299") == (0,)
    assert index.owners("+862131771300") == (0,)
    assert index.owners("+862131771400") == (0,)


def test_adjacent_ranges_of_different_owners_stay_apart() -> None:
    index = RangeIndex([("+8610-+8619", 0), ("+8620-+8629", 1)])
    assert index.segment_count == 2
    assert index.owners("+8619") == (0,)
    assert index.owners("+8620") == (1,)
    assert index.overlaps() == []


def test_ranges_with_a_gap_do_not_merge() -> None:
    index = RangeIndex([("+8610-+8619", 0), ("+8621-+8629", 0)])
    assert index.segment_count == 2
    assert index.owners("+8620") == ()


def test_overlapping_ranges_of_one_owner_merge() -> None:
    index = RangeIndex([("+8610-+8650", 0), ("+8640-+8680", 0), ("+8610-+8650", 0)])
    assert index.segment_count == 1
    assert index.owners("+8680") == (0,)
    assert index.overlaps() == []


def test_merge_across_a_split() -> None:
    # 10-19 {0}, 15-19 {0, 1}, 20-29 {0}: the {0} pieces around the shared part stay apart.
    index = RangeIndex([("+8610-+8629", 0), ("+8615-+8619", 1)])
    assert index.segment_count == 3
    assert index.owners("+8614") == (0,)
    assert index.owners("+8617") == (0, 1)
    assert index.owners("+8620") == (0,)


# --- prefixes -----------------------------------------------------------------------------------


def test_prefix_covers_every_longer_number_and_itself() -> None:
    index = RangeIndex([("+869521", 4)])
    assert index.owners("+869521") == (4,)
    assert index.owners("+8695210") == (4,)
    assert index.owners("+869521345678") == (4,)
    assert index.owners("+869521345678901") == (4,)
    assert index.owners("+86952") == ()
    assert index.owners("+869522345678") == ()


def test_nested_prefixes_collect_all_owners() -> None:
    index = RangeIndex([("+86", 0), ("+8695", 1), ("+869521", 2), ("+869521", 2)])
    assert index.owners("+8610") == (0,)
    assert index.owners("+869500") == (0, 1)
    assert index.owners("+86952112") == (0, 1, 2)
    assert index.owners("+44") == ()
    assert index.prefix_count == 3


def test_same_prefix_for_two_owners() -> None:
    index = RangeIndex([("+869521", 5), ("+869521", 1)])
    assert index.owners("+8695210000") == (1, 5)


def test_prefix_lengths_that_do_not_occur_are_not_probed() -> None:
    index = RangeIndex([("+8695", 0), ("+86952100", 1)])
    assert index.owners("+869521") == (0,)
    assert index.owners("+869521001") == (0, 1)


# --- ranges and prefixes together ---------------------------------------------------------------


def test_mixed_ranges_and_prefixes() -> None:
    index = RangeIndex(
        [
            (SHANGHAI, 0),
            ("+869521", 1),
            ("+8621317712", 2),
            ("+862131771300-+862131771399", 1),
        ]
    )
    assert index.owners("+862131771200") == (0, 2)
    assert index.owners("+862131771300") == (1,)
    assert index.owners("+8621317712000") == (2,)  # longer than the range: the prefix only
    assert index.owners("+869521000000") == (1,)
    assert index.owners("+862131771400") == ()


def test_range_and_prefix_of_one_owner_give_one_owner() -> None:
    index = RangeIndex([(SHANGHAI, 0), ("+8621317712", 0)])
    assert index.owners("+862131771234") == (0,)


def test_lookup_results_are_shared_tuples() -> None:
    index = RangeIndex([(SHANGHAI, 0), ("+869521", 0)])
    assert index.owners("+862131771200") is index.owners("+869521000000")


# --- numbers that are not E.164 -----------------------------------------------------------------


@pytest.mark.parametrize(
    "number",
    [
        "",
        "+",
        "862131771250",
        "+86213177125O",
        "+86 2131771250",
        "+8621_3177_1250",
        "+\u0668\u0666\u0662\u0661\u0663\u0661\u0667\u0667\u0661\u0662\u0665\u0660",
        "+8621317712501234",  # 16 digits
        "++862131771250",
    ],
)
def test_not_a_number_has_no_owners(number: str) -> None:
    index = RangeIndex([(SHANGHAI, 0), ("+86", 1)])
    assert index.owners(number) == ()


# --- building -----------------------------------------------------------------------------------


def test_star_is_refused() -> None:
    with pytest.raises(ValueError, match=r"allocation '\*'"):
        RangeIndex([("*", 0)])


@pytest.mark.parametrize(
    "allocation",
    [
        "862131771200",
        "+86213177120x",
        "+862131771299-+862131771200",
        "+86213177120-+862131771299",
        "+0862131771200",
        "+1234567890123456",
        "+86-+87-+88",
        "",
    ],
)
def test_bad_allocations_are_refused_by_name(allocation: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"allocation '{allocation}'")):
        RangeIndex([(SHANGHAI, 0), (allocation, 1)])


@pytest.mark.parametrize("owner", [-1, MAX_OWNER + 1])
def test_owner_out_of_range_is_refused(owner: int) -> None:
    with pytest.raises(ValueError, match="owner"):
        RangeIndex([(SHANGHAI, owner)])


def test_allocations_as_written_are_accepted() -> None:
    index = RangeIndex([(" +862131771200 - +862131771299 ", 0), (" +869521", 1)])
    assert index.owners("+862131771250") == (0,)
    assert index.owners("+8695211") == (1,)


def test_sizes_and_repr() -> None:
    allocations = [(SHANGHAI, 0), ("+862131771300-+862131771399", 0), ("+869521", 1)]
    index = RangeIndex(iter(allocations))
    assert len(index) == 3
    assert index.segment_count == 1
    assert index.prefix_count == 1
    assert repr(index) == "RangeIndex(allocations=3, segments=1, prefixes=1, owner_sets=2)"


def test_empty_index() -> None:
    index = RangeIndex([])
    assert len(index) == 0
    assert index.owners("+862131771200") == ()
    assert index.overlaps() == []


def test_large_owner_ids() -> None:
    index = RangeIndex([(SHANGHAI, MAX_OWNER), ("+86213177", 0)])
    assert index.owners("+862131771200") == (0, MAX_OWNER)


# --- overlaps -----------------------------------------------------------------------------------


def test_overlapping_ranges_are_reported() -> None:
    index = RangeIndex([("+8610-+8650", 2), ("+8660-+8670", 2), ("+8640-+8680", 1)])
    assert index.overlaps() == [
        Overlap(
            first="+8610-+8650",
            first_owner=2,
            first_index=0,
            second="+8640-+8680",
            second_owner=1,
            second_index=2,
        ),
        Overlap(
            first="+8660-+8670",
            first_owner=2,
            first_index=1,
            second="+8640-+8680",
            second_owner=1,
            second_index=2,
        ),
    ]


def test_touching_range_ends_overlap() -> None:
    index = RangeIndex([("+8610-+8640", 0), ("+8640-+8680", 1)])
    assert [(o.first, o.second) for o in index.overlaps()] == [("+8610-+8640", "+8640-+8680")]


def test_overlapping_prefixes_are_reported() -> None:
    index = RangeIndex([("+8695", 0), ("+869521", 1), ("+869522", 0), ("+8695", 2)])
    pairs = [(o.first_index, o.second_index) for o in index.overlaps()]
    assert pairs == [(0, 1), (0, 3), (1, 3), (2, 3)]


def test_prefix_and_range_overlap_when_the_range_has_numbers_with_the_prefix() -> None:
    index = RangeIndex(
        [
            (SHANGHAI, 0),
            ("+8621317712", 1),  # covers the whole range
            ("+86213177129", 2),  # covers part of it
            ("+862131771300", 3),  # the range's length, outside it
            ("+8621317714", 4),  # starts numbers of the range's length, none in it
            ("+8621317712991", 5),  # longer than the range's numbers
        ]
    )
    pairs = {(o.first_index, o.second_index) for o in index.overlaps()}
    assert pairs == {(0, 1), (0, 2), (1, 2), (1, 5), (2, 5)}


def test_same_owner_never_overlaps() -> None:
    index = RangeIndex([(SHANGHAI, 0), ("+8621317712", 0), (SHANGHAI, 0), ("+86", 0)])
    assert index.overlaps() == []


def test_same_allocation_for_two_owners_is_reported() -> None:
    index = RangeIndex([(SHANGHAI, 0), (SHANGHAI, 1)])
    (overlap,) = index.overlaps()
    assert (overlap.first, overlap.first_owner) == (SHANGHAI, 0)
    assert (overlap.second, overlap.second_owner) == (SHANGHAI, 1)


def test_overlap_keeps_the_text_as_written() -> None:
    written = " +862131771200 - +862131771299"
    index = RangeIndex([(written, 0), ("+8621", 1)])
    (overlap,) = index.overlaps()
    assert overlap.first == written


def test_overlap_is_frozen() -> None:
    overlap = Overlap(
        first="+86", first_owner=0, first_index=0, second="+8621", second_owner=1, second_index=1
    )
    with pytest.raises(AttributeError):
        overlap.first = "+44"  # type: ignore[misc]
