"""The collector settings of the server process, and the periodic full collection."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from sipguard.heap import NEVER, YOUNG_THRESHOLD, CycleCollector, settle

pytestmark = pytest.mark.unit


class Node:
    """An object that can point at itself."""

    def __init__(self) -> None:
        self.other: Node | None = None


@pytest.fixture
def restored_collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_settle_freezes_start_up_and_leaves_only_the_young_generation_automatic(
    restored_collector: None,
) -> None:
    settle()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (YOUNG_THRESHOLD, NEVER, NEVER)


def test_a_full_collection_is_due_once_an_interval() -> None:
    collector = CycleCollector(now=100.0, interval=600.0)
    assert not collector.due(699.9)
    assert collector.due(700.0)
    collector.collect(now=700.0)
    assert not collector.due(1299.9) and collector.due(1300.0)


def test_only_the_periodic_full_collection_frees_a_cycle_in_the_old_generation(
    restored_collector: None,
) -> None:
    gc.set_threshold(YOUNG_THRESHOLD, NEVER, NEVER)
    node = Node()
    node.other = node
    gone = weakref.ref(node)
    gc.collect(1)  # now in the oldest generation, like a call's state
    del node
    kept: list[list[int]] = [
        [] for _ in range(3 * YOUNG_THRESHOLD)
    ]  # young collections run meanwhile
    assert gone() is not None and len(kept) == 3 * YOUNG_THRESHOLD
    done = CycleCollector(now=0.0, interval=1.0).collect(now=1.0)
    assert gone() is None
    assert done.freed >= 1 and done.seconds >= 0.0
