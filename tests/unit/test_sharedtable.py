"""The shared rate table without a store: journal, cut, apply, failure modes.

The store's side (the Lua script against a real redis-server) is tested in
tests/integration/test_ratetable_redis.py; here replies are written by hand
to pin down what `apply` does with them.
"""

from __future__ import annotations

import pytest

from sipguard.ratesync import decode_reply, encode_batch
from sipguard.ratetable import OneRingLimit, TokenBucketLimit, TrunkLimits, WindowLimit
from sipguard.sharedtable import (
    BACKEND_UNAVAILABLE,
    BlockEntry,
    BucketEntry,
    LiveEntry,
    SharedRateTable,
    SyncReply,
    WindowEntry,
    WindowState,
)

pytestmark = pytest.mark.unit

LIMITS = TrunkLimits(
    cps=TokenBucketLimit(rate=10.0, burst=2),
    concurrent=5,
    per_caller=WindowLimit(calls=3, window=60.0, block_for=600.0),
    per_callee=WindowLimit(calls=4, window=60.0),
    one_ring=OneRingLimit(max_ring=3.0, calls=1, window=300.0, block_for=900.0),
)


def table(policy: str = "open") -> SharedRateTable:
    return SharedRateTable(max_keys=100, on_backend_failure=policy)  # type: ignore[arg-type]


def admit(t: SharedRateTable, caller: str = "+861", callee: str = "+862", now: float = 0.0) -> str:
    admission = t.admit(LIMITS, trunk="a", caller=caller, callee=callee, now=now)
    return "ok" if admission.allowed else str(admission.rule)


def test_cut_carries_what_was_admitted_since_the_last_cut() -> None:
    t = table()
    assert admit(t, "+861", "+862") == "ok"
    assert admit(t, "+861", "+863", now=0.1) == "ok"
    batch = t.cut(now=0.2)
    assert batch.buckets == (BucketEntry("a", 2, 0.1),)
    assert batch.live == (LiveEntry("a", 2),)
    assert sorted(batch.windows, key=lambda w: (w.dimension, w.number)) == [
        WindowEntry("callee", "a", "+862", 1, 60.0),
        WindowEntry("callee", "a", "+863", 1, 60.0),
        WindowEntry("caller", "a", "+861", 2, 60.0),
    ]
    # The caller's cool-downs are read back (per_caller has block_for, one_ring
    # is on); the callee's limit has no block_for, so nothing to read for it.
    assert {(b.rule, b.number, b.ttl) for b in batch.blocks} == {
        ("high_frequency_caller", "+861", 0.0),
        ("one_ring", "+861", 0.0),
    }
    empty = t.cut(now=0.3)
    assert empty.windows == () and empty.blocks == ()
    assert empty.buckets == (BucketEntry("a", 0, 0.1),), "trunks are synced every round"


def test_refused_calls_are_not_journaled() -> None:
    t = table()
    for _ in range(2):
        assert admit(t) == "ok"
    assert admit(t) == "cps_limit"
    assert t.cut(now=0.0).buckets == (BucketEntry("a", 2, 0.1),)


def test_apply_takes_the_shared_state_plus_what_came_after_the_cut() -> None:
    t = table()
    assert admit(t, "+861", "+862") == "ok"
    batch = t.cut(now=1.0)
    assert admit(t, "+861", "+869", now=1.01) == "ok"  # during the round trip
    windows = tuple(
        WindowState(current=2, previous=0, age=5.0)
        if w.dimension == "caller"
        else WindowState(current=1, previous=0, age=0.0)
        for w in batch.windows
    )
    reply = SyncReply(
        buckets=(0.3,),  # the other instances took tokens too
        live=(2,),  # they hold two live calls
        windows=windows,
        blocks=tuple(0.0 for _ in batch.blocks),
    )
    t.apply(batch, reply, now=1.02)
    # Caller: 2 shared + 1 admitted after the cut = 3, the block level.
    assert admit(t, "+861", "+870", now=1.5) == "high_frequency_caller"
    # Live: 2 here + 2 elsewhere; one more fills the limit of 5.
    assert admit(t, "+864", "+871", now=2.0) == "ok"
    assert admit(t, "+868", "+872", now=3.0) == "concurrent_limit"
    assert t.backend.syncs == 1 and t.backend.up


def test_apply_takes_a_block_started_elsewhere() -> None:
    t = table()
    assert admit(t, "+865") == "ok"
    batch = t.cut(now=0.0)
    blocks = tuple(900.0 if b.rule == "one_ring" else 0.0 for b in batch.blocks)
    reply = SyncReply(
        buckets=(0.0,),
        live=(0,),
        windows=tuple(WindowState(1, 0, 0.0) for _ in batch.windows),
        blocks=blocks,
    )
    t.apply(batch, reply, now=0.0)
    admission = t.admit(LIMITS, trunk="a", caller="+865", callee="+899", now=10.0)
    assert admission.rule == "one_ring" and admission.retry_after == pytest.approx(890.0)


def test_blocks_started_here_are_shared_with_their_remaining_time() -> None:
    t = table()
    for now in (0.0, 1.0, 2.0):
        assert admit(t, "+866", f"+87{now:.0f}", now=now) == "ok"
    assert admit(t, "+866", "+879", now=3.0) == "high_frequency_caller"
    batch = t.cut(now=13.0)
    started = [b for b in batch.blocks if b.ttl > 0]
    assert started == [BlockEntry("high_frequency_caller", "a", "+866", 590.0)]


def test_one_ring_calls_are_journaled() -> None:
    t = table()
    assert admit(t, "+867") == "ok"
    t.cut(now=0.0)
    counted = t.call_ended(
        LIMITS, trunk="a", caller="+867", ringing_for=1.0, answered=False, now=1.0
    )
    assert counted
    batch = t.cut(now=1.0)
    assert WindowEntry("one_ring", "a", "+867", 1, 300.0) in batch.windows
    assert batch.live == (LiveEntry("a", 0),)


def test_open_failure_forgets_remote_live_calls_and_keeps_deciding() -> None:
    t = table("open")
    assert admit(t) == "ok"
    batch = t.cut(now=0.0)
    t.apply(batch, _neutral(batch, live=4), now=0.0)
    assert admit(t, "+8610", "+8620", now=1.0) == "concurrent_limit"
    assert t.backend_failed() is True
    assert t.backend_failed() is False, "only the first failure is news"
    assert admit(t, "+8611", "+8621", now=2.0) == "ok"
    assert t.backend.failures == 2 and not t.backend.up


def test_closed_failure_refuses_until_a_sync_succeeds() -> None:
    t = table("closed")
    t.backend_failed()
    assert t.admit(LIMITS, trunk="a", caller="+1", callee="+2", now=0.0) is BACKEND_UNAVAILABLE
    assert t.backend.refused == 1
    batch = t.cut(now=0.0)
    t.apply(batch, _neutral(batch), now=0.0)
    assert admit(t, now=1.0) == "ok"


def test_encode_and_decode_follow_the_batch_order() -> None:
    t = table()
    assert admit(t, callee="+86 2\n1") == "ok"
    batch = t.cut(now=0.0)
    keys, args = encode_batch(batch, instance="i1", lease=3.0)
    assert keys == ["sipguard:instances"]
    assert args[:2] == ["i1", "3000"] and args[3] == "sipguard:"
    lines = args[2].split("\n")
    assert len(lines) == len(batch)
    assert lines[0] == "b a 1 100.0" and lines[1] == "l a 1"
    assert "w callee:a:+86_2_1 1 60000" in lines, "whitespace never splits an entry"
    words = ["12.500", "2"] + ["1 0 250"] * len(batch.windows) + ["-2"] * len(batch.blocks)
    reply = decode_reply(batch, " ".join(words).encode())
    assert reply.buckets == (0.0125,) and reply.live == (2,)
    assert reply.windows[0] == WindowState(1, 0, 0.25)
    assert set(reply.blocks) == {0.0}
    with pytest.raises(ValueError):
        decode_reply(batch, " ".join(words[:-1]))


def _neutral(batch: object, *, live: int = 0) -> SyncReply:
    from sipguard.sharedtable import SyncBatch

    assert isinstance(batch, SyncBatch)
    return SyncReply(
        buckets=tuple(0.0 for _ in batch.buckets),
        live=tuple(live for _ in batch.live),
        windows=tuple(WindowState(w.hits, 0, 0.0) for w in batch.windows),
        blocks=tuple(0.0 for _ in batch.blocks),
    )
