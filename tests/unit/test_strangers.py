"""The summary of unknown sources' INVITEs: one line per interval, bounded."""

from __future__ import annotations

import pytest

from sipguard.strangers import StrangerTally

pytestmark = pytest.mark.unit


def test_the_summary_counts_refused_and_dropped_invites_per_address() -> None:
    tally = StrangerTally()
    for _ in range(5):
        tally.count("192.0.2.66", answered=True)
    for _ in range(3):
        tally.count("192.0.2.67", answered=False)
    tally.count("198.51.100.4", answered=True)
    tally.count("203.0.113.9", answered=False)
    assert tally.summary() == (
        "unknown sources: 6 INVITEs refused, 4 dropped, from 4 addresses; "
        "top: 192.0.2.66 (5), 192.0.2.67 (3), 198.51.100.4 (1)"
    )
    assert tally.summary() is None, "each summary starts the count over"
    tally.count("192.0.2.66", answered=False)
    assert tally.summary() == (
        "unknown sources: 0 INVITEs refused, 1 dropped, from 1 address; top: 192.0.2.66 (1)"
    )


def test_a_flood_of_forged_addresses_costs_bounded_memory_and_is_still_counted() -> None:
    tally = StrangerTally(max_addresses=3)
    for index in range(10):
        tally.count(f"192.0.2.{index}", answered=True)
    tally.count("192.0.2.0", answered=True)
    assert tally.summary() == (
        "unknown sources: 11 INVITEs refused, 0 dropped, from more than 3 addresses; "
        "top: 192.0.2.0 (2), 192.0.2.1 (1), 192.0.2.2 (1)"
    )
    with pytest.raises(ValueError):
        StrangerTally(max_addresses=0)
