"""The in-memory rate table: per-trunk call rates, live calls and harassment patterns.

This module owns the per-call hot path of the rate and behaviour rules
(`cps_limit`, `concurrent_limit`, `high_frequency_caller`, `call_bombing`,
`one_ring`) and the limit values it is given (`TrunkLimits` and its parts,
independent of the rule-file schema). One `RateTable` serves a whole process;
its state is keyed by trunk name and survives rule reloads, because the limits
are passed in with every call rather than stored.

Algorithms (docs/ratetable.md gives the error bounds and memory figures):

- `cps`: a token bucket per trunk with lazy refill on access, after aioquic's
  `QuicPacketPacer`: no timer, the bucket is brought up to date whenever it is
  looked at. It is kept as the one time at which it will be full again (the
  virtual-scheduling form of the generic cell rate algorithm).
- `concurrent`: a count of live calls per trunk.
- `per_caller`, `per_callee`, `one_ring`: a sliding-window counter per key
  (`SlidingWindow`): two adjacent fixed sub-windows, the previous one weighted
  by how much of it still overlaps the sliding window.
- Cool-downs: a block per (rule, trunk, number) with an absolute expiry.

Invariants:

- Rule 1: `admit` records a call only when it allows it. A refused call
  consumes no token, no live-call slot and no place in any window; the only
  thing a refusal may write is a cool-down block, when the limit that fired
  has `block_for`.
- Rule 2: every admitted call is ended exactly once with `call_ended` (the
  B2BUA guarantees it); the live-call count never goes below zero.
- Rule 3: at most `max_keys` keys per dimension (caller windows, callee
  windows, one-ring windows, blocks); past it the least recently used key is
  evicted. Trunks are not bounded here: their names come from the rule file.
- Rule 4: `sweep` only removes entries that no longer change any decision
  (empty windows, expired blocks, trunks with no live call whose bucket is
  full again), so sweeping never changes an outcome; it only frees memory
  before eviction would.

Contract with callers: time is `now`, in seconds on one monotonic clock (the
driver's loop time); the table reads no clock and runs no timer, and the
driver calls `sweep(now=..., budget=...)` from time to time. Report to
`call_ended` only calls that `admit` allowed: a call relayed although the
table refused it (a monitor-mode shadow verdict) was never counted and must
not be uncounted.

Ring 1: pure; no I/O, no clock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import islice

__all__ = [
    "ALLOWED",
    "DEFAULT_MAX_KEYS",
    "NO_LIMITS",
    "Admission",
    "OneRingLimit",
    "RateTable",
    "RateTableStats",
    "SlidingWindow",
    "TokenBucketLimit",
    "TrunkLimits",
    "WindowLimit",
]

# One million keys per dimension, as the rule file's `ratetable.max_keys`
# defaults to: a 30-minute per-caller window of 500 new callers a second fits
# in one dimension. docs/ratetable.md measures about 300 bytes per window key
# and 200 per block, so about 1.1 GB with all four dimensions full (at most
# 1.6 GB for the worst hash-table fill).
DEFAULT_MAX_KEYS = 1_000_000

_CPS_LIMIT = "cps_limit"
_CONCURRENT_LIMIT = "concurrent_limit"
_HIGH_FREQUENCY_CALLER = "high_frequency_caller"
_CALL_BOMBING = "call_bombing"
_ONE_RING = "one_ring"


# --------------------------------------------------------------------------
# Limits: what one trunk allows. Frozen values, checked when built.


def _check_positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} {value!r} is not a positive number of seconds")


def _check_count(name: str, value: int, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} {value!r} is not a whole number of at least {low}")


def _check_warn(warn: int | None, calls: int) -> None:
    if warn is None:
        return
    _check_count("warn", warn, low=0)
    if warn >= calls:
        raise ValueError(f"warn {warn} is not below the block level {calls}")


@dataclass(frozen=True, slots=True)
class TokenBucketLimit:
    """A call rate: `rate` calls a second on average, up to `burst` at once.

    The bucket holds at most `burst` tokens and gains `rate` tokens a second;
    each admitted call takes one. In any interval of T seconds at most
    `burst + rate * T` calls are admitted.

    Attributes:
        rate: tokens gained per second.
        burst: the bucket's size.
        interval: derived: seconds per token, `1 / rate`.
        tolerance: derived: how far the bucket's full time may lie ahead of
            now with a token still in it, `(burst - 1) / rate`.
    """

    rate: float
    burst: int
    interval: float = field(init=False, repr=False, compare=False)
    tolerance: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not (self.rate > 0 and math.isfinite(self.rate)):
            raise ValueError(f"rate {self.rate!r} is not a positive number of calls a second")
        _check_count("burst", self.burst, low=1)
        object.__setattr__(self, "interval", 1.0 / self.rate)
        object.__setattr__(self, "tolerance", (self.burst - 1) / self.rate)


@dataclass(frozen=True, slots=True)
class WindowLimit:
    """At most `calls` calls within a sliding `window` of seconds.

    Attributes:
        calls: the block level: a call that would make more than `calls`
            within the window is refused.
        window: the window length, seconds.
        warn: the warn level, below `calls`: a call that would make more
            than `warn` is allowed with a warning; None for no warning.
        block_for: the cool-down, seconds: once the block level is reached
            the number stays refused for this long; None to refuse only while
            the window is full.
    """

    calls: int
    window: float
    warn: int | None = None
    block_for: float | None = None

    def __post_init__(self) -> None:
        _check_count("calls", self.calls, low=1)
        _check_positive("window", self.window)
        _check_warn(self.warn, self.calls)
        if self.block_for is not None:
            _check_positive("block_for", self.block_for)


@dataclass(frozen=True, slots=True)
class OneRingLimit:
    """One-ring calls: unanswered calls torn down within `max_ring` of ringing.

    Attributes:
        max_ring: seconds between the first 18x and the end of the call at
            or under which an unanswered call counts as one-ring.
        calls: the block level: more than `calls` one-ring calls from one
            caller within `window` block that caller for `block_for`.
        window: the window length, seconds.
        block_for: how long the caller stays blocked, seconds.
        warn: the warn level, below `calls`: after more than `warn` one-ring
            calls the caller's calls carry a warning; None for no warning.
    """

    max_ring: float
    calls: int
    window: float
    block_for: float
    warn: int | None = None

    def __post_init__(self) -> None:
        _check_positive("max_ring", self.max_ring)
        _check_count("calls", self.calls, low=1)
        _check_positive("window", self.window)
        _check_positive("block_for", self.block_for)
        _check_warn(self.warn, self.calls)


@dataclass(frozen=True, slots=True)
class TrunkLimits:
    """Every rate and behaviour limit of one trunk; None means unlimited."""

    cps: TokenBucketLimit | None = None
    concurrent: int | None = None
    per_caller: WindowLimit | None = None
    per_callee: WindowLimit | None = None
    one_ring: OneRingLimit | None = None

    def __post_init__(self) -> None:
        if self.concurrent is not None:
            _check_count("concurrent", self.concurrent, low=0)


NO_LIMITS = TrunkLimits()


# --------------------------------------------------------------------------
# Outcomes.


@dataclass(frozen=True, slots=True)
class Admission:
    """The rate table's answer for one new call.

    Attributes:
        allowed: whether the call may proceed.
        rule: the rule id that refused the call; None when allowed.
        retry_after: seconds until a call like this one could be allowed, when
            known: the next token for `cps_limit`, the end of a cool-down, or
            the moment a sliding window has room again; None otherwise (and
            always None for `concurrent_limit`, which waits on other calls).
        warnings: rule ids whose warn level this allowed call passed, in
            evaluation order; () for none.
    """

    allowed: bool
    rule: str | None = None
    retry_after: float | None = None
    warnings: tuple[str, ...] = ()


# The common answer, shared so that an allowed call allocates no Admission.
ALLOWED = Admission(allowed=True)
# A concurrency refusal carries nothing that varies; share it too.
_CONCURRENT_REFUSED = Admission(allowed=False, rule=_CONCURRENT_LIMIT)


@dataclass(frozen=True, slots=True)
class RateTableStats:
    """How many keys each dimension of the table holds.

    Attributes:
        trunks: trunks with a bucket or live calls.
        live_calls: admitted calls not yet ended, all trunks together.
        caller_windows: (trunk, caller) sliding windows, for `per_caller`.
        callee_windows: (trunk, callee) sliding windows, for `per_callee`.
        one_ring_windows: (trunk, caller) sliding windows of one-ring calls.
        blocks: cool-downs in force or not yet swept.
        evictions: keys evicted so far because a dimension was full.
    """

    trunks: int
    live_calls: int
    caller_windows: int
    callee_windows: int
    one_ring_windows: int
    blocks: int
    evictions: int


# --------------------------------------------------------------------------
# State.


class SlidingWindow:
    """A sliding-window counter: an estimate of the events in the last `window` seconds.

    Time is cut into sub-windows of the window's length, starting at the
    first event of the key (so keys do not all roll over at the same
    instant). Only two counts are kept: `current`, the events of the
    sub-window that holds `now`, and `previous`, those of the one before. The
    estimate for the window (now - window, now] is

        current + previous * (1 - elapsed / window)

    where `elapsed` is how far `now` is into the current sub-window: the
    previous sub-window counts in proportion to how much of it the sliding
    window still covers. With `n` the exact count and `phi = elapsed /
    window`, the estimate is within `-phi * previous` and
    `(1 - phi) * previous` of `n` (docs/ratetable.md).

    Mutable and slotted; `estimate` moves the sub-windows on to `now` as a
    side effect, which changes no future estimate.
    """

    __slots__ = ("current", "previous", "start", "window")

    def __init__(self, *, start: float, window: float, current: int = 0, previous: int = 0) -> None:
        self.start = start
        self.window = window
        self.current = current
        self.previous = previous

    def estimate(self, window: float, *, now: float) -> float:
        """Estimated events within (now - window, now].

        `window` is the length in force; a length changed by a rule reload
        applies from the next sub-window on.
        """
        elapsed = now - self.start
        if elapsed >= window:
            if elapsed >= window + window or not self.current:
                # Nothing of the past counts any more.
                self.previous = 0
                self.current = 0
            else:
                self.previous = self.current
                self.current = 0
                self.start += window
                elapsed -= window
        self.window = window
        previous = self.previous
        if not previous:
            if not self.current:
                # Empty: the next event begins the sub-windows afresh, exactly
                # as for a key seen for the first time (so sweeping an empty
                # window changes nothing).
                self.start = now
                return 0.0
            return self.current
        if elapsed <= 0:
            return self.current + previous
        return self.current + previous * (1.0 - elapsed / window)

    def hit(self, window: float, *, now: float) -> None:
        """Count one event at `now`."""
        self.estimate(window, now=now)
        self.current += 1

    def reopens_at(self, limit: int, *, now: float) -> float:
        """The earliest time from `now` on at which the estimate is at most `limit - 1`.

        Call right after `estimate(window, now=now)`; assumes no more events.
        """
        window = self.window
        room = limit - 1
        current, previous = self.current, self.previous
        if current <= room:
            if previous <= 0:
                return now
            # current + previous * (1 - x) <= room, with x the elapsed fraction.
            at = self.start + window * (1.0 - (room - current) / previous)
            return max(now, at)
        # The current sub-window alone is full: wait until, as the previous
        # one, it weighs little enough.
        return max(now, self.start + window * (2.0 - room / current))

    def is_empty(self, *, now: float) -> bool:
        """True when the estimate at `now` and later is zero (nothing to remember)."""
        elapsed = now - self.start
        if elapsed >= self.window + self.window:
            return True
        if self.current:
            return False
        return elapsed >= self.window or not self.previous


class _Trunk:
    """Per-trunk state: the token bucket and the live-call count.

    The bucket is kept as one time, `full_at`: when it will be full again if
    no call takes a token meanwhile (the "theoretical arrival time" of the
    generic cell rate algorithm, ITU-T I.371). With `interval = 1 / rate`,
    the tokens in it at `now` are `burst - max(0, full_at - now) / interval`,
    so one float replaces the pair (tokens, last refill) and the lazy refill
    is the `max`: time that passed is tokens regained, capped at `burst`.
    """

    __slots__ = ("full_at", "live", "remote_live")

    def __init__(self, *, now: float) -> None:
        self.full_at = now
        self.live = 0
        # Live calls of this trunk held by other instances (a shared table's
        # last snapshot); always 0 in a process of its own.
        self.remote_live = 0


_Key = tuple[str, str]
_BlockKey = tuple[str, str, str]


class RateTable:
    """Counters for every trunk of one process, bounded in memory.

    Keep one instance for the life of the process and pass each call's
    trunk limits in with it: a rule reload changes the limits, never the
    counters.

    Args:
        max_keys: at most this many keys in each dimension (caller windows,
            callee windows, one-ring windows, blocks).

    Raises:
        ValueError: `max_keys` is not a whole number of at least 1.
    """

    def __init__(self, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        _check_count("max_keys", max_keys, low=1)
        self._max_keys = max_keys
        self._trunks: dict[str, _Trunk] = {}
        self._callers: OrderedDict[_Key, SlidingWindow] = OrderedDict()
        self._callees: OrderedDict[_Key, SlidingWindow] = OrderedDict()
        self._one_rings: OrderedDict[_Key, SlidingWindow] = OrderedDict()
        self._blocks: OrderedDict[_BlockKey, float] = OrderedDict()
        self._evictions = 0

    @property
    def max_keys(self) -> int:
        """The bound on keys per dimension."""
        return self._max_keys

    @property
    def stats(self) -> RateTableStats:
        """Keys per dimension, live calls and evictions so far."""
        return RateTableStats(
            trunks=len(self._trunks),
            live_calls=sum(state.live for state in self._trunks.values()),
            caller_windows=len(self._callers),
            callee_windows=len(self._callees),
            one_ring_windows=len(self._one_rings),
            blocks=len(self._blocks),
            evictions=self._evictions,
        )

    def live_calls(self, trunk: str) -> int:
        """Admitted calls of `trunk` that have not ended."""
        state = self._trunks.get(trunk)
        return 0 if state is None else state.live

    # -- the hot path ------------------------------------------------------

    def admit(
        self, limits: TrunkLimits, *, trunk: str, caller: str, callee: str, now: float
    ) -> Admission:
        """Decide a new call and, when allowed, count it (limits' "hit").

        Checks, stopping at the first that refuses: `cps_limit`,
        `concurrent_limit`, `high_frequency_caller`, `call_bombing`,
        `one_ring`. An allowed call takes a token, one live-call slot, and a
        place in the caller's and the callee's windows; a refused call takes
        nothing (but may start a cool-down, when the limit has `block_for`).

        Args:
            limits: the trunk's limits in force now.
            trunk: the trunk the call entered on.
            caller: the validated caller number.
            callee: the called number.
            now: the time, seconds.

        Returns:
            `ALLOWED` (the same instance every time) for a plain allow; an
            allowed `Admission` with `warnings` when a warn level was passed;
            a refused one naming the rule otherwise.
        """
        return self._decide(limits, trunk, caller, callee, now, True)

    def test(
        self, limits: TrunkLimits, *, trunk: str, caller: str, callee: str, now: float
    ) -> Admission:
        """What `admit` would answer now, without counting anything (limits' "test").

        No token, slot or window place is taken and no cool-down starts.
        """
        return self._decide(limits, trunk, caller, callee, now, False)

    def call_ended(
        self,
        limits: TrunkLimits,
        *,
        trunk: str,
        caller: str,
        ringing_for: float | None,
        answered: bool,
        now: float,
    ) -> bool:
        """An admitted call ended, for any reason: free its slot, count one-ring calls.

        Args:
            limits: the trunk's limits in force now.
            trunk: the trunk the call was admitted on.
            caller: the caller number it was admitted with.
            ringing_for: seconds between the first 18x and the end; None if
                it never rang.
            answered: whether a 2xx answered it.
            now: the time, seconds.

        Call exactly once per call `admit` allowed. An unanswered call that
        rang for at most `one_ring.max_ring` counts as a one-ring call of the
        caller; the count passing `one_ring.calls` within `one_ring.window`
        blocks the caller for `one_ring.block_for`.

        Returns:
            True when the call counted as a one-ring call.
        """
        state = self._trunks.get(trunk)
        if state is not None and state.live > 0:
            state.live -= 1
        one_ring = limits.one_ring
        if one_ring is None or answered or ringing_for is None:
            return False
        if ringing_for > one_ring.max_ring:
            return False
        key = (trunk, caller)
        windows = self._one_rings
        window = windows.get(key)
        if window is None:
            count = 1.0
            self._remember(
                windows, key, SlidingWindow(start=now, window=one_ring.window, current=1)
            )
        else:
            windows.move_to_end(key)
            count = window.estimate(one_ring.window, now=now) + 1
            window.current += 1
        if count > one_ring.calls:
            self._block((_ONE_RING, trunk, caller), now + one_ring.block_for)
        return True

    def sweep(self, *, now: float, budget: int | None = None) -> int:
        """Reclaim entries that no longer affect any decision.

        Removes empty windows, expired blocks, and trunks with no live call
        whose bucket has filled up again (a bucket made anew starts full).
        Sweeping changes no decision; it returns memory sooner and keeps
        `stats` meaningful. The `max_keys` bound holds without it.

        Args:
            now: the time, seconds.
            budget: examine at most this many keys of each dimension, from
                the least recently used end, where expired entries gather;
                None for a full pass over every key. A full pass costs time
                in proportion to the table (docs/ratetable.md); a small
                budget, called often, keeps each call short.

        Returns:
            How many entries were removed.
        """
        removed = 0
        for windows in (self._callers, self._callees, self._one_rings):
            empty = [
                key for key, window in islice(windows.items(), budget) if window.is_empty(now=now)
            ]
            for key in empty:
                del windows[key]
            removed += len(empty)
        blocks = self._blocks
        expired = [key for key, until in islice(blocks.items(), budget) if now >= until]
        for block in expired:
            del blocks[block]
        removed += len(expired)
        idle = [
            name
            for name, state in self._trunks.items()
            if state.live == 0 and state.remote_live == 0 and now >= state.full_at
        ]
        for name in idle:
            del self._trunks[name]
        return removed + len(idle)

    # -- shared state: snapshots from other instances (sipguard.sharedtable) --

    def apply_bucket(self, trunk: str, *, full_at: float, now: float) -> None:
        """Set `trunk`'s bucket to be full again at `full_at` (never before `now`)."""
        self._trunk(trunk, now).full_at = max(full_at, now)

    def apply_remote_live(self, trunk: str, *, live: int, now: float) -> None:
        """Set how many live calls of `trunk` other instances hold."""
        state = self._trunks.get(trunk)
        if state is None and live == 0:
            return
        self._trunk(trunk, now).remote_live = max(0, live)

    def forget_remote_live(self) -> None:
        """Count only this process's live calls again (the shared view is lost)."""
        for state in self._trunks.values():
            state.remote_live = 0

    def apply_window(self, dimension: str, key: _Key, snapshot: SlidingWindow) -> None:
        """Replace the window of `key` in `dimension` ("caller", "callee",
        "one_ring") with `snapshot`, which the table then owns."""
        windows = self._dimension(dimension)
        if key in windows:
            windows[key] = snapshot
            windows.move_to_end(key)
        else:
            self._remember(windows, key, snapshot)

    def window_of(self, dimension: str, key: _Key) -> SlidingWindow | None:
        """The window of `key` in `dimension`, if the table has one (not a copy)."""
        return self._dimension(dimension).get(key)

    def apply_block(self, key: _BlockKey, *, until: float) -> None:
        """A cool-down in force until `until`, as another instance started it."""
        RateTable._block(self, key, until)

    def _dimension(self, dimension: str) -> OrderedDict[_Key, SlidingWindow]:
        if dimension == "caller":
            return self._callers
        if dimension == "callee":
            return self._callees
        if dimension == "one_ring":
            return self._one_rings
        raise ValueError(f"unknown rate-table dimension {dimension!r}")

    def _trunk(self, trunk: str, now: float) -> _Trunk:
        state = self._trunks.get(trunk)
        if state is None:
            state = self._trunks[trunk] = _Trunk(now=now)
        return state

    # -- internals -----------------------------------------------------------

    def _decide(
        self,
        limits: TrunkLimits,
        trunk: str,
        caller: str,
        callee: str,
        now: float,
        record: bool,
    ) -> Admission:
        state = self._trunks.get(trunk)
        if state is None:
            state = _Trunk(now=now)
            if record:
                self._trunks[trunk] = state

        cps = limits.cps
        full_at = state.full_at
        if full_at < now:
            full_at = now  # the refill: at most a full bucket
        if cps is not None and full_at - now > cps.tolerance:
            # Less than one token: the next one comes when full_at - now has
            # come down to the tolerance.
            return Admission(
                allowed=False, rule=_CPS_LIMIT, retry_after=full_at - now - cps.tolerance
            )

        concurrent = limits.concurrent
        if concurrent is not None and state.live + state.remote_live >= concurrent:
            return _CONCURRENT_REFUSED

        warnings: tuple[str, ...] = ()
        blocks = self._blocks

        per_caller = limits.per_caller
        caller_window: SlidingWindow | None = None
        if per_caller is not None:
            caller_key = (trunk, caller)
            if blocks:
                refusal = self._blocked((_HIGH_FREQUENCY_CALLER, trunk, caller), now)
                if refusal is not None:
                    return refusal
            caller_window = self._callers.get(caller_key)
            if caller_window is not None:
                self._callers.move_to_end(caller_key)
                count = caller_window.estimate(per_caller.window, now=now) + 1
                if count > per_caller.calls:
                    return self._refuse_window(
                        _HIGH_FREQUENCY_CALLER,
                        trunk,
                        caller,
                        caller_window,
                        per_caller,
                        now,
                        record,
                    )
                if per_caller.warn is not None and count > per_caller.warn:
                    warnings += (_HIGH_FREQUENCY_CALLER,)
            elif per_caller.warn is not None and 1 > per_caller.warn:
                warnings += (_HIGH_FREQUENCY_CALLER,)

        per_callee = limits.per_callee
        callee_window: SlidingWindow | None = None
        if per_callee is not None:
            callee_key = (trunk, callee)
            if blocks:
                refusal = self._blocked((_CALL_BOMBING, trunk, callee), now)
                if refusal is not None:
                    return refusal
            callee_window = self._callees.get(callee_key)
            if callee_window is not None:
                self._callees.move_to_end(callee_key)
                count = callee_window.estimate(per_callee.window, now=now) + 1
                if count > per_callee.calls:
                    return self._refuse_window(
                        _CALL_BOMBING, trunk, callee, callee_window, per_callee, now, record
                    )
                if per_callee.warn is not None and count > per_callee.warn:
                    warnings += (_CALL_BOMBING,)
            elif per_callee.warn is not None and 1 > per_callee.warn:
                warnings += (_CALL_BOMBING,)

        one_ring = limits.one_ring
        if one_ring is not None:
            if blocks:
                refusal = self._blocked((_ONE_RING, trunk, caller), now)
                if refusal is not None:
                    return refusal
            if one_ring.warn is not None and self._one_rings:
                ring_key = (trunk, caller)
                ring_window = self._one_rings.get(ring_key)
                if ring_window is not None:
                    self._one_rings.move_to_end(ring_key)
                    if ring_window.estimate(one_ring.window, now=now) > one_ring.warn:
                        warnings += (_ONE_RING,)

        if not record:
            return Admission(allowed=True, warnings=warnings) if warnings else ALLOWED

        # Allowed: take the token, the slot and the window places.
        state.full_at = full_at if cps is None else full_at + cps.interval
        state.live += 1
        if per_caller is not None:
            if caller_window is None:
                self._remember(
                    self._callers,
                    caller_key,
                    SlidingWindow(start=now, window=per_caller.window, current=1),
                )
            else:
                caller_window.current += 1
        if per_callee is not None:
            if callee_window is None:
                self._remember(
                    self._callees,
                    callee_key,
                    SlidingWindow(start=now, window=per_callee.window, current=1),
                )
            else:
                callee_window.current += 1
        return Admission(allowed=True, warnings=warnings) if warnings else ALLOWED

    def _blocked(self, key: _BlockKey, now: float) -> Admission | None:
        """The refusal of a cool-down in force for `key`, or None."""
        until = self._blocks.get(key)
        if until is None:
            return None
        if now >= until:
            del self._blocks[key]
            return None
        self._blocks.move_to_end(key)
        return Admission(allowed=False, rule=key[0], retry_after=until - now)

    def _refuse_window(
        self,
        rule: str,
        trunk: str,
        number: str,
        window: SlidingWindow,
        limit: WindowLimit,
        now: float,
        record: bool,
    ) -> Admission:
        """Refuse for a full window; start the cool-down when the limit has one."""
        if limit.block_for is not None:
            if record:
                self._block((rule, trunk, number), now + limit.block_for)
            return Admission(allowed=False, rule=rule, retry_after=limit.block_for)
        retry_after = window.reopens_at(limit.calls, now=now) - now
        return Admission(allowed=False, rule=rule, retry_after=retry_after)

    def _block(self, key: _BlockKey, until: float) -> None:
        blocks = self._blocks
        current = blocks.get(key)
        if current is not None and current > until:
            until = current  # never shorten a cool-down in force
        blocks[key] = until
        blocks.move_to_end(key)
        if len(blocks) > self._max_keys:
            blocks.popitem(last=False)
            self._evictions += 1

    def _remember(
        self, windows: OrderedDict[_Key, SlidingWindow], key: _Key, window: SlidingWindow
    ) -> None:
        windows[key] = window
        if len(windows) > self._max_keys:
            windows.popitem(last=False)
            self._evictions += 1
