"""The Redis side of the shared rate table: one Lua call per sync round.

`RedisSync` runs beside the server as one asyncio task. Every
`interval` it cuts the `SharedRateTable`'s journal, sends the batch to Redis
(or Valkey, or any server that runs Lua scripts) in one `EVALSHA` with a
strict `timeout`, and applies the reply. The call path never waits for it:
calls are decided on the local table between rounds.

The script (`SYNC_SCRIPT`) adds the batch to the shared counters atomically
(a Lua script runs alone on the server) with the server's clock, so the
instances' clocks do not need to agree:

- bucket `sipguard:b:<trunk>`: the time, in ms, at which the trunk's shared
  token bucket is full again (the generic cell rate algorithm, as in
  `sipguard.ratetable`); each admitted call moves it one interval on.
- live `sipguard:l:<trunk>`: a hash of each instance's live calls; an
  instance whose lease (in `sipguard:instances`) ran out no longer counts,
  so a crashed instance's calls are released after `lease`.
- window `sipguard:w:<dimension>:<trunk>:<number>`: a sliding-window counter
  (start, current, previous) moved on exactly as `SlidingWindow`, expiring
  two windows after its last hit.
- block `sipguard:k:<rule>:<trunk>:<number>`: a cool-down as a key with a TTL.

Failures (connection refused, timeout, an error reply) are reported to the
table (`backend_failed`), logged once when the store goes away and once when
it is back, and retried every `retry` seconds meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from sipguard.sharedtable import SharedRateTable, SyncBatch, SyncReply, WindowState

__all__ = ["SYNC_SCRIPT", "RedisSync", "SyncSettings", "encode_batch", "decode_reply"]

log = logging.getLogger("sipguard")

KEY_PREFIX = "sipguard:"

SYNC_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local instances = KEYS[1]
local instance = ARGV[1]
local lease = tonumber(ARGV[2])
local prefix = ARGV[4]
redis.call('ZADD', instances, now + lease, instance)
redis.call('ZREMRANGEBYSCORE', instances, '-inf', now)
local out = {}
for kind, name, x, y in string.gmatch(ARGV[3], '(%a) (%S+) (%S+) ?(%S*)') do
  local key = prefix .. kind .. ':' .. name
  if kind == 'b' then
    local calls, interval = tonumber(x), tonumber(y)
    local full = tonumber(redis.call('GET', key) or '0')
    if full < now then full = now end
    full = full + calls * interval
    redis.call('SET', key, string.format('%.3f', full), 'PX', math.ceil(full - now) + lease)
    out[#out + 1] = string.format('%.3f', full - now)
  elseif kind == 'l' then
    redis.call('HSET', key, instance, x)
    redis.call('PEXPIRE', key, lease * 4)
    local fields = redis.call('HGETALL', key)
    local others = 0
    for j = 1, #fields, 2 do
      if fields[j] ~= instance then
        if redis.call('ZSCORE', instances, fields[j]) then
          others = others + tonumber(fields[j + 1])
        else
          redis.call('HDEL', key, fields[j])
        end
      end
    end
    out[#out + 1] = tostring(others)
  elseif kind == 'w' then
    local hits, window = tonumber(x), tonumber(y)
    local state = redis.call('HMGET', key, 's', 'c', 'p')
    local start = tonumber(state[1]) or now
    local current = tonumber(state[2]) or 0
    local previous = tonumber(state[3]) or 0
    local elapsed = now - start
    if elapsed >= window then
      if elapsed >= window + window or current == 0 then
        previous = 0
        current = 0
      else
        previous = current
        current = 0
        start = start + window
      end
    end
    if current == 0 and previous == 0 then start = now end
    current = current + hits
    redis.call('HSET', key, 's', string.format('%d', start), 'c', current, 'p', previous)
    redis.call('PEXPIRE', key, math.ceil(window + window))
    out[#out + 1] = string.format('%d %d %d', current, previous, now - start)
  else
    local ttl = tonumber(x)
    if ttl > 0 and redis.call('PTTL', key) < ttl then
      redis.call('SET', key, '1', 'PX', ttl)
    end
    out[#out + 1] = tostring(redis.call('PTTL', key))
  end
end
return table.concat(out, ' ')
"""


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """How the driver talks to the store.

    Attributes:
        url: the Redis URL.
        interval: seconds between sync rounds.
        timeout: seconds one round trip may take before it counts as failed.
        retry: seconds between attempts while the store is down.
        lease: seconds an instance's live calls count without a sync from
            it (a crashed instance's calls are released after this).
    """

    url: str
    interval: float = 0.05
    timeout: float = 0.1
    retry: float = 1.0
    lease: float = 3.0


def instance_name() -> str:
    """A name for this process among the instances: host, pid and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def encode_batch(batch: SyncBatch, *, instance: str, lease: float) -> tuple[list[str], list[str]]:
    """The KEYS and ARGV of one `SYNC_SCRIPT` call for `batch`.

    The entries travel as one text argument, a line each (`<kind> <name>
    <value> [<value>]`), and come back as one text of numbers: a few hundred
    entries cost two strings to pack and one split to read, not a RESP array
    each. Key names are made by the script from the prefix, so the store
    must be one server (standalone or Sentinel), not a Cluster.
    """
    lines = [f"b {b.trunk} {b.calls} {b.interval * 1000.0!r}" for b in batch.buckets]
    lines += [f"l {live.trunk} {live.live}" for live in batch.live]
    lines += [
        f"w {w.dimension}:{w.trunk}:{_safe(w.number)} {w.hits} {_ms(w.window)}"
        for w in batch.windows
    ]
    lines += [f"k {b.rule}:{b.trunk}:{_safe(b.number)} {_ms(b.ttl)}" for b in batch.blocks]
    return [KEY_PREFIX + "instances"], [instance, str(_ms(lease)), "\n".join(lines), KEY_PREFIX]


def decode_reply(batch: SyncBatch, reply: object) -> SyncReply:
    """`SYNC_SCRIPT`'s answer as a `SyncReply`, seconds throughout.

    Raises:
        ValueError: the reply does not have the batch's shape.
    """
    if isinstance(reply, bytes):
        reply = reply.decode("ascii")
    if not isinstance(reply, str):
        raise ValueError(f"a sync reply must be text, got {type(reply).__name__}")
    words = reply.split()
    expected = len(batch) + 2 * len(batch.windows)
    if len(words) != expected:
        raise ValueError(f"sync reply of {len(words)} numbers for {expected} expected")
    values = iter(words)
    buckets = tuple(float(next(values)) / 1000.0 for _ in batch.buckets)
    live = tuple(int(next(values)) for _ in batch.live)
    windows = tuple(
        WindowState(
            current=int(next(values)), previous=int(next(values)), age=int(next(values)) / 1000.0
        )
        for _ in batch.windows
    )
    blocks = tuple(max(0.0, int(next(values)) / 1000.0) for _ in batch.blocks)
    return SyncReply(buckets=buckets, live=live, windows=windows, blocks=blocks)


# Whitespace would split an entry; a number never has any, a raw callee might.
_UNSAFE = {code: "_" for code in range(33)} | {127: "_"}


def _safe(number: str) -> str:
    return number.translate(_UNSAFE)


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000.0))


class RedisSync:
    """The sync task of one process's `SharedRateTable`.

    Args:
        table: the shared table to keep in line.
        settings: the store and the timing.
        clock: the loop's clock (seconds), the same the table is given.
    """

    def __init__(
        self,
        table: SharedRateTable,
        settings: SyncSettings,
        *,
        clock: Callable[[], float],
        instance: str | None = None,
    ) -> None:
        self.table = table
        self.settings = settings
        self.instance = instance or instance_name()
        self._clock = clock
        self._client = aioredis.Redis.from_url(
            settings.url,
            socket_timeout=settings.timeout,
            socket_connect_timeout=settings.timeout,
            retry_on_timeout=False,
        )
        self._script = self._client.register_script(SYNC_SCRIPT)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._down_since: float | None = None
        self.last_error = ""

    def start(self) -> None:
        """Begin syncing in the background."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ratesync")

    async def close(self) -> None:
        """Stop syncing (after one last round, when the store is up) and disconnect.

        Never waits longer than a few round-trip budgets, whatever the store
        does: shutdown must not hang on Redis.
        """
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Not `await task`: on Python 3.11 a cancel that lands as the
            # Redis reply arrives can be swallowed (wait_for), and the task
            # then runs one more round; `_closing` ends its loop after it.
            await asyncio.wait({task}, timeout=self.settings.timeout + self.settings.retry)
        if self.table.backend.up:
            await self.sync_once()  # hand the last counts over, within the timeout
        try:
            async with asyncio.timeout(self.settings.timeout):
                await self._client.aclose()
        except (RedisError, OSError, TimeoutError):
            pass

    async def sync_once(self) -> bool:
        """One round: cut, send, apply. False (and the table told) on failure."""
        batch = self.table.cut(now=self._clock())
        keys, args = encode_batch(batch, instance=self.instance, lease=self.settings.lease)
        try:
            async with asyncio.timeout(self.settings.timeout):
                reply = await self._script(keys=keys, args=args)
            decoded = decode_reply(batch, reply)
        except (RedisError, OSError, TimeoutError, ValueError) as exc:
            self._failed(exc)
            return False
        self.table.apply(batch, decoded, now=self._clock())
        self._recovered()
        return True

    async def _run(self) -> None:
        settings = self.settings
        while not self._closing:
            ok = await self.sync_once()
            await asyncio.sleep(settings.interval if ok else settings.retry)

    def _failed(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if self.table.backend_failed():
            self._down_since = self._clock()
            policy = self.table.on_backend_failure
            action = (
                "refusing new calls (on_backend_failure: closed)"
                if policy == "closed"
                else "deciding on local counters (on_backend_failure: open)"
            )
            log.error("rate table backend unreachable (%s); %s", self.last_error, action)

    def _recovered(self) -> None:
        if self._down_since is None:
            return
        down_for = self._clock() - self._down_since
        self._down_since = None
        log.warning("rate table backend reachable again after %.1fs; sharing counters", down_for)
