"""The shared rate table against a real redis-server: two instances, one limit.

Two `SharedRateTable`s stand for two sipguard processes; each has its own
`RedisSync` to one redis-server on 127.0.0.1 (tests/integration/redis_server.py).
Rounds are run by hand (`sync_once`) where the order matters, and by the
background task where the rate over time matters. The end-to-end proof with
two real sipguard processes and SIPp is tests/integration/test_shared_limits_sipp.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from sipguard.ratesync import RedisSync, SyncSettings
from sipguard.ratetable import (
    OneRingLimit,
    RateTable,
    TokenBucketLimit,
    TrunkLimits,
    WindowLimit,
)
from sipguard.sharedtable import SharedRateTable
from tests.integration.redis_server import RedisServer

pytestmark = [pytest.mark.integration]

TRUNK = "trunk-a"


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


# A round trip to redis-server on loopback takes well under a millisecond;
# a round may take this long before it counts as failed, so that a round on
# a busy machine is never taken for a store gone away (the hung-store test
# waits this long once).
SYNC_TIMEOUT = 2.0


class Instance:
    """One would-be sipguard process: a shared table and its sync."""

    def __init__(self, url: str, name: str, *, policy: str = "open", lease: float = 3.0) -> None:
        loop = asyncio.get_running_loop()
        self.clock = loop.time
        self.table = SharedRateTable(max_keys=10_000, on_backend_failure=policy)  # type: ignore[arg-type]
        self.sync = RedisSync(
            self.table,
            SyncSettings(url=url, interval=0.05, timeout=SYNC_TIMEOUT, retry=0.2, lease=lease),
            clock=loop.time,
            instance=name,
        )

    def admit(
        self,
        limits: TrunkLimits,
        caller: str = "+8613800000001",
        callee: str = "",
        *,
        now: float | None = None,
    ) -> str:
        admission = self.table.admit(
            limits,
            trunk=TRUNK,
            caller=caller,
            callee=callee or "+8613900000001",
            now=self.clock() if now is None else now,
        )
        return "ok" if admission.allowed else str(admission.rule)


@pytest.fixture
async def pair(redis_server: RedisServer) -> AsyncIterator[tuple[Instance, Instance]]:
    a, b = Instance(redis_server.url, "a"), Instance(redis_server.url, "b")
    yield a, b
    for instance in (a, b):
        await instance.sync.close()


async def test_two_instances_share_one_call_rate(pair: tuple[Instance, Instance]) -> None:
    """Each instance offered 4x the shared rate admits about half of it: one bucket.

    What one bucket would admit is not assumed from the nominal pace of the
    offers (a busy machine runs the loop late, and a pause longer than the
    burst takes to refill wastes tokens): one local rate table is given the
    very same offers, at the very same moments, and its count is the
    reference.
    """
    a, b = pair
    limits = TrunkLimits(cps=TokenBucketLimit(rate=20.0, burst=5))
    one_bucket = RateTable()
    a.sync.start()
    b.sync.start()
    admitted = {"a": 0, "b": 0}
    allowed = 0
    duration, step = 4.0, 1 / 80  # each offers 80 calls/s
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    while (now := loop.time()) < end:
        for name, instance in (("a", a), ("b", b)):
            admitted[name] += instance.admit(limits, now=now) == "ok"
            allowed += one_bucket.admit(
                limits, trunk=TRUNK, caller="+8613800000001", callee="+8613900000001", now=now
            ).allowed
        await asyncio.sleep(step)
    total = admitted["a"] + admitted["b"]
    # Excess bound: the other instance's admissions within one sync interval,
    # a few calls a round; 15 % covers it and a busy machine's jitter. The
    # shared view never exceeds the shared truth, so the shortfall is jitter.
    assert allowed * 0.85 <= total <= allowed * 1.15, (admitted, allowed)
    assert min(admitted.values()) >= 0.25 * allowed, f"both instances admit: {admitted}"
    assert a.table.backend.failures == 0 and b.table.backend.failures == 0


async def test_live_calls_add_up_across_instances(pair: tuple[Instance, Instance]) -> None:
    a, b = pair
    limits = TrunkLimits(concurrent=4)
    b.table.configure({TRUNK: limits})  # as the server does with the rule file's trunks
    for index in range(3):
        assert a.admit(limits, caller=f"+86138000000{index:02d}") == "ok"
    assert await a.sync.sync_once() and await b.sync.sync_once()
    assert b.admit(limits) == "ok"
    assert b.admit(limits) == "concurrent_limit", "3 live on a + 1 on b = 4"
    # a's calls end: b learns it at its next round.
    for _ in range(3):
        a.table.call_ended(
            limits, trunk=TRUNK, caller="x", ringing_for=None, answered=True, now=a.clock()
        )
    assert await a.sync.sync_once() and await b.sync.sync_once()
    assert b.admit(limits) == "ok"


async def test_a_crashed_instance_releases_its_live_calls(redis_server: RedisServer) -> None:
    a = Instance(redis_server.url, "a", lease=0.3)
    b = Instance(redis_server.url, "b", lease=0.3)
    limits = TrunkLimits(concurrent=2)
    b.table.configure({TRUNK: limits})
    try:
        assert a.admit(limits) == "ok" and a.admit(limits, caller="+8613800000002") == "ok"
        assert await a.sync.sync_once() and await b.sync.sync_once()
        assert b.admit(limits) == "concurrent_limit"
        # a stops syncing (it crashed): after its lease its calls no longer count.
        await asyncio.sleep(0.5)
        assert await b.sync.sync_once()
        assert b.admit(limits) == "ok"
    finally:
        await b.sync.close()
        await a.sync._client.aclose()  # a "crashed": no last round


async def test_a_caller_spread_over_instances_meets_one_window(
    pair: tuple[Instance, Instance],
) -> None:
    """Round robin over N instances: at most N - 1 calls past the limit (docs/ratetable.md).

    Each instance's view of the caller is the shared window as of its own
    last call, so it misses the calls the others took since: here one.
    """
    a, b = pair
    limits = TrunkLimits(per_caller=WindowLimit(calls=5, window=60.0))
    outcomes = []
    for index in range(10):
        instance = (a, b)[index % 2]
        outcomes.append(instance.admit(limits, callee=f"+86139000000{index:02d}"))
        await instance.sync.sync_once()  # the next round, as every 50 ms
    assert outcomes == ["ok"] * 6 + ["high_frequency_caller"] * 4, "5 + (2 - 1)"


async def test_the_first_call_at_an_instance_is_decided_locally(
    pair: tuple[Instance, Instance],
) -> None:
    """The documented bound: a number new to an instance gets one call through."""
    a, b = pair
    limits = TrunkLimits(per_caller=WindowLimit(calls=2, window=60.0))
    assert [a.admit(limits) for _ in range(3)] == ["ok", "ok", "high_frequency_caller"]
    assert await a.sync.sync_once()
    assert b.admit(limits) == "ok", "b has not counted this caller yet"
    assert await b.sync.sync_once()
    assert b.admit(limits) == "high_frequency_caller", "now b has the shared window"


async def test_a_one_ring_block_reaches_the_other_instance(
    pair: tuple[Instance, Instance],
) -> None:
    a, b = pair
    limits = TrunkLimits(
        one_ring=OneRingLimit(max_ring=3.0, calls=1, window=300.0, block_for=900.0)
    )
    caller = "+8613800000077"
    for _ in range(2):
        assert a.admit(limits, caller=caller) == "ok"
        a.table.call_ended(
            limits, trunk=TRUNK, caller=caller, ringing_for=0.5, answered=False, now=a.clock()
        )
    assert a.admit(limits, caller=caller) == "one_ring"
    assert await a.sync.sync_once()
    assert b.admit(limits, caller=caller) == "ok"  # new to b: the one-call bound
    assert await b.sync.sync_once()
    assert b.admit(limits, caller=caller) == "one_ring"


async def test_redis_gone_open_keeps_deciding_and_says_so(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    a = Instance(redis_server.url, "a", policy="open")
    limits = TrunkLimits(concurrent=2)
    try:
        assert await a.sync.sync_once()
        redis_server.stop()
        with caplog.at_level(logging.INFO, logger="sipguard"):
            assert not await a.sync.sync_once()
            assert not await a.sync.sync_once()
        assert not a.table.backend.up and a.table.backend.failures == 2
        unreachable = [r for r in caplog.records if "backend unreachable" in r.getMessage()]
        assert len(unreachable) == 1, "logged once, when it goes away"
        assert "open" in unreachable[0].getMessage()
        assert a.admit(limits) == "ok" and a.admit(limits, caller="+8613800000002") == "ok"
        assert a.admit(limits, caller="+8613800000003") == "concurrent_limit", "local counters"
        redis_server.start()
        with caplog.at_level(logging.INFO, logger="sipguard"):
            assert await a.sync.sync_once()
        assert a.table.backend.up
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    finally:
        await a.sync.close()


async def test_redis_gone_closed_refuses_new_calls(redis_server: RedisServer) -> None:
    a = Instance(redis_server.url, "a", policy="closed")
    limits = TrunkLimits(concurrent=10)
    try:
        redis_server.stop()
        assert not await a.sync.sync_once()
        assert a.admit(limits) == "ratetable_unavailable"
        assert a.table.backend.refused == 1
        redis_server.start()
        assert await a.sync.sync_once()
        assert a.admit(limits) == "ok"
    finally:
        await a.sync.close()


async def test_a_hung_redis_never_holds_up_the_loop(redis_server: RedisServer) -> None:
    """A server that accepts but never answers: the round times out, the loop runs on."""
    a = Instance(redis_server.url, "a")
    limits = TrunkLimits(concurrent=10)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    try:
        assert await a.sync.sync_once()
        redis_server.pause()
        task = asyncio.get_running_loop().create_task(ticker())
        ok = await a.sync.sync_once()
        task.cancel()
        assert not ok and "Timeout" in a.sync.last_error
        # 5 ticks take 50 ms of a 2 s budget: a loop held up for the whole
        # round would show none, a busy machine still shows them all.
        assert ticks >= 5, f"the loop kept running during the {SYNC_TIMEOUT:.0f} s budget"
        assert a.admit(limits) == "ok"
    finally:
        redis_server.resume()
        await a.sync.close()


async def test_the_store_keeps_bounded_keys(
    pair: tuple[Instance, Instance], redis_server: RedisServer
) -> None:
    """Windows expire on the server two windows after their last hit."""
    a, _ = pair
    window = 0.2
    limits = TrunkLimits(per_caller=WindowLimit(calls=5, window=window))
    for index in range(50):
        assert a.admit(limits, caller=f"+86138{index:08d}") == "ok"
    assert await a.sync.sync_once()
    client = aioredis.from_url(redis_server.url)
    try:
        windows = [key async for key in client.scan_iter(match="sipguard:w:*")]
        assert len(windows) == 50
        # Each carries its expiry: two windows (PEXPIRE takes whole ms).
        ttls = [await client.pttl(key) for key in windows]
        assert all(0 < ttl <= math.ceil(2 * window * 1000) for ttl in ttls), ttls
        # And redis-server removes them in its own time (its expiry cycle
        # runs ten times a second): only the instance registry (and trunk
        # keys) remain.
        deadline = time.monotonic() + 10.0
        while (keys := await client.dbsize()) > 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert keys <= 3
    finally:
        await client.aclose()


async def test_close_never_hangs_even_when_it_lands_as_a_round_completes(
    redis_server: RedisServer,
) -> None:
    """Shutdown must not wait on the sync task forever.

    On Python 3.11 a cancel that arrives in the very step a Redis reply
    completes can be swallowed, and a task that only waits to be cancelled
    then runs on for ever. Here close() is started exactly then.
    """
    loop = asyncio.get_running_loop()
    a = Instance(redis_server.url, "a")
    script = a.sync._script
    closer: list[asyncio.Task[None]] = []

    async def script_then_close(*args: object, **kwargs: object) -> object:
        try:
            return await script(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            if not closer:
                closer.append(loop.create_task(a.sync.close()))

    a.sync._script = script_then_close  # type: ignore[assignment]
    a.sync.start()
    task = a.sync._task
    assert task is not None
    while not closer:
        await asyncio.sleep(0.01)
    # close() waits at most a round's budget and a retry for the task.
    budget = SYNC_TIMEOUT + a.sync.settings.retry
    done, _ = await asyncio.wait(closer, timeout=budget + 10.0)
    assert done, f"close() still waiting after {budget + 10.0:.0f} s"
    # No round runs after close(): the task that runs them has ended (a task
    # swallowing its cancel would run on for ever). It ends within close()
    # but for a round that outlasted close()'s wait, which may finish.
    await asyncio.wait({task}, timeout=SYNC_TIMEOUT + 10.0)
    assert task.done(), "the sync task runs on after close()"
