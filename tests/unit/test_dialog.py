"""Identifiers: drawn from the injected byte source, in batches, never reused."""

from __future__ import annotations

import random
import re

import pytest

from sipguard.dialog import IdFactory

pytestmark = pytest.mark.unit


class CountingSource:
    """Deterministic bytes 0, 1, 2, ... (mod 256), and a count of draws."""

    def __init__(self) -> None:
        self.draws: list[int] = []
        self._next = 0

    def __call__(self, size: int) -> bytes:
        self.draws.append(size)
        start, self._next = self._next, self._next + size
        return bytes(index % 256 for index in range(start, start + size))


def test_identifiers_have_the_promised_shape() -> None:
    ids = IdFactory(CountingSource())
    assert re.fullmatch(r"[0-9a-f]{16}", ids.tag())
    assert re.fullmatch(r"z9hG4bK[0-9a-f]{16}", ids.branch())
    assert re.fullmatch(r"[0-9a-f]{32}", ids.call_id())


def test_identifiers_are_the_sources_bytes_in_order_without_reuse() -> None:
    source = CountingSource()
    ids = IdFactory(source, batch=20)
    assert ids.tag() == bytes(range(0, 8)).hex()
    assert ids.tag() == bytes(range(8, 16)).hex()
    # 4 bytes are left in the batch: too few for a Call-ID; they are dropped,
    # never used twice, and a new batch is drawn.
    assert ids.call_id() == bytes(range(20, 36)).hex()
    assert ids.branch() == "z9hG4bK" + bytes(range(40, 48)).hex()
    assert source.draws == [20, 20, 20]


def test_the_source_is_asked_once_per_batch() -> None:
    draws: list[int] = []
    generator = random.Random(3)

    def source(size: int) -> bytes:
        draws.append(size)
        return generator.randbytes(size)

    ids = IdFactory(source, batch=4096)
    tags = [ids.tag() for _ in range(512 * 3)]
    assert draws == [4096] * 3
    assert len(set(tags)) == len(tags)


def test_a_batch_too_small_for_a_call_id_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        IdFactory(CountingSource(), batch=15)


def test_a_source_that_returns_too_few_bytes_is_an_error() -> None:
    with pytest.raises(ValueError, match="too few"):
        IdFactory(lambda size: b"\x00" * 4, batch=16).call_id()
