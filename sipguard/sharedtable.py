"""The rate table shared by several sipguard instances: local decisions, shared counts.

`SharedRateTable` is a `RateTable` that every instance behind a load balancer
keeps in its own memory, and that is brought in line with the others through
a shared store (Redis: `sipguard.ratesync`) every few tens of milliseconds.
Every call is decided locally, at in-memory cost, so a slow or lost store
never delays a call; the store only ever sees batches.

One sync round:

1. `cut(now)` closes the journal of what this instance counted since the
   last cut (admitted calls per trunk, per caller, per callee; one-ring
   calls; cool-downs it started) and returns it as a `SyncBatch`, together
   with this instance's live calls per trunk.
2. The driver sends the batch to the store, which adds it to the shared
   counters atomically and answers each entry with the shared state after
   the addition (`SyncReply`): when each trunk's bucket is full again, the
   live calls the other instances hold, each window's two sub-window counts,
   each cool-down's remaining time.
3. `apply(batch, reply, now)` replaces the local state of every entry with
   the shared one, plus what this instance counted since the cut (the
   "pending" part of the new journal), so nothing is counted twice or lost.

What this buys, and its bound (docs/ratetable.md, "Several instances"):
between two syncs of a key, an instance's view of it is the shared state of
its last sync plus its own calls since: it misses only what other instances
counted meanwhile. The local view therefore never exceeds the shared truth
(no call is refused that one shared counter would have allowed), and the
excess admitted over one shared counter is at most what the other instances
admit within one sync interval, plus, for a key an instance has not counted
recently, its first call (a key is synced when this instance counts it).
Trunks (buckets and live calls) are synced every round.

If the store cannot be reached, `backend_failed` says so: with
`on_backend_failure: open` the instance goes on deciding on its own counters
(other instances' live calls are forgotten), with `closed` it refuses new
calls (rule `ratetable_unavailable`) until a sync succeeds again.

Ring 1: pure; no I/O, no clock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from sipguard.ratetable import (
    Admission,
    RateTable,
    SlidingWindow,
    TrunkLimits,
)

__all__ = [
    "BACKEND_UNAVAILABLE",
    "BackendStatus",
    "BlockEntry",
    "BucketEntry",
    "LiveEntry",
    "SharedRateTable",
    "SyncBatch",
    "SyncReply",
    "WindowEntry",
    "WindowState",
]

FailurePolicy = Literal["open", "closed"]
Dimension = Literal["caller", "callee", "one_ring"]

_RATETABLE_UNAVAILABLE = "ratetable_unavailable"
BACKEND_UNAVAILABLE = Admission(allowed=False, rule=_RATETABLE_UNAVAILABLE)

_Key = tuple[str, str]
_BlockKey = tuple[str, str, str]


# --------------------------------------------------------------------------
# What goes to the store and what comes back.


@dataclass(frozen=True, slots=True)
class BucketEntry:
    """A trunk's token bucket: `calls` admitted here since the last cut."""

    trunk: str
    calls: int
    interval: float  # seconds per token


@dataclass(frozen=True, slots=True)
class LiveEntry:
    """A trunk's live calls held by this instance now."""

    trunk: str
    live: int


@dataclass(frozen=True, slots=True)
class WindowEntry:
    """A sliding window: `hits` counted here since the last cut."""

    dimension: Dimension
    trunk: str
    number: str
    hits: int
    window: float  # seconds


@dataclass(frozen=True, slots=True)
class BlockEntry:
    """A cool-down: `ttl` seconds started here, or 0 to only read it."""

    rule: str
    trunk: str
    number: str
    ttl: float


@dataclass(frozen=True, slots=True)
class SyncBatch:
    """One instance's counts since the last cut, and the keys it wants back."""

    buckets: tuple[BucketEntry, ...] = ()
    live: tuple[LiveEntry, ...] = ()
    windows: tuple[WindowEntry, ...] = ()
    blocks: tuple[BlockEntry, ...] = ()

    def __len__(self) -> int:
        return len(self.buckets) + len(self.live) + len(self.windows) + len(self.blocks)


@dataclass(frozen=True, slots=True)
class WindowState:
    """A shared window: its two sub-window counts and how long ago the current began."""

    current: int
    previous: int
    age: float  # seconds


@dataclass(frozen=True, slots=True)
class SyncReply:
    """The shared state after a batch was added, entry for entry.

    Attributes:
        buckets: per bucket entry, seconds until the shared bucket is full.
        live: per live entry, live calls the other instances hold.
        windows: per window entry, the shared window.
        blocks: per block entry, seconds the cool-down still runs; 0 for none.
    """

    buckets: tuple[float, ...] = ()
    live: tuple[int, ...] = ()
    windows: tuple[WindowState, ...] = ()
    blocks: tuple[float, ...] = ()


# --------------------------------------------------------------------------
# The journal: what this instance counted since the last cut.


@dataclass(slots=True)
class _Journal:
    calls: defaultdict[str, int] = field(default_factory=lambda: defaultdict(int))
    windows: defaultdict[tuple[Dimension, str, str], int] = field(
        default_factory=lambda: defaultdict(int)
    )
    blocks: dict[_BlockKey, float] = field(default_factory=dict)
    # Numbers of admitted calls with no window hit whose cool-downs to read back.
    numbers: set[tuple[Dimension, str, str]] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """The shared store as this instance sees it.

    Attributes:
        up: whether the last sync succeeded (True before the first).
        failures: syncs that failed so far.
        syncs: syncs that succeeded so far.
        refused: calls refused because the store was down (`closed` only).
    """

    up: bool
    failures: int
    syncs: int
    refused: int


class SharedRateTable(RateTable):
    """A `RateTable` kept in line with other instances through `cut` and `apply`.

    Args:
        max_keys: as for `RateTable`.
        on_backend_failure: `open` to decide on local counters while the
            store is down, `closed` to refuse new calls meanwhile.
    """

    def __init__(self, *, max_keys: int, on_backend_failure: FailurePolicy = "open") -> None:
        super().__init__(max_keys=max_keys)
        if on_backend_failure not in ("open", "closed"):
            raise ValueError(f"unknown on_backend_failure policy {on_backend_failure!r}")
        self._on_failure = on_backend_failure
        self._journal = _Journal()
        self._limits: dict[str, TrunkLimits] = {}
        self._up = True
        self._failures = 0
        self._syncs = 0
        self._refused = 0

    @property
    def on_backend_failure(self) -> FailurePolicy:
        """What this table does while the store is down."""
        return self._on_failure

    @property
    def backend(self) -> BackendStatus:
        """How the shared store has answered so far."""
        return BackendStatus(
            up=self._up, failures=self._failures, syncs=self._syncs, refused=self._refused
        )

    # -- the hot path: count locally, journal what the others must learn ----

    def admit(
        self, limits: TrunkLimits, *, trunk: str, caller: str, callee: str, now: float
    ) -> Admission:
        if not self._up and self._on_failure == "closed":
            self._refused += 1
            return BACKEND_UNAVAILABLE
        if self._limits.get(trunk) is not limits:
            self._limits[trunk] = limits
        admission = super().admit(limits, trunk=trunk, caller=caller, callee=callee, now=now)
        if admission.allowed:
            journal = self._journal
            journal.calls[trunk] += 1
            if limits.per_caller is not None:
                journal.windows["caller", trunk, caller] += 1
            elif limits.one_ring is not None:
                journal.numbers.add(("caller", trunk, caller))  # for its one-ring cool-down
            if limits.per_callee is not None:
                journal.windows["callee", trunk, callee] += 1
        return admission

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
        one_ring = super().call_ended(
            limits, trunk=trunk, caller=caller, ringing_for=ringing_for, answered=answered, now=now
        )
        if one_ring:
            self._journal.windows["one_ring", trunk, caller] += 1
        return one_ring

    def _block(self, key: _BlockKey, until: float) -> None:
        super()._block(key, until)
        self._journal.blocks[key] = until

    def configure(self, limits: Mapping[str, TrunkLimits]) -> None:
        """Sync these trunks from the next round on (the rule file's trunks).

        A trunk is otherwise synced once this instance has admitted a call
        on it, so its first call here would not know the others' counts.
        """
        self._limits.update(limits)

    # -- the sync round --------------------------------------------------------

    def cut(self, *, now: float) -> SyncBatch:
        """Close the journal: this instance's counts since the last cut, as a batch."""
        journal, self._journal = self._journal, _Journal()
        buckets: list[BucketEntry] = []
        live: list[LiveEntry] = []
        for trunk, limits in self._limits.items():
            if limits.cps is not None:
                buckets.append(BucketEntry(trunk, journal.calls.get(trunk, 0), limits.cps.interval))
            if limits.concurrent is not None:
                live.append(LiveEntry(trunk, self.live_calls(trunk)))
        windows = [
            WindowEntry(dimension, trunk, number, hits, window)
            for (dimension, trunk, number), hits in journal.windows.items()
            if (window := self._window_length(dimension, trunk)) is not None
        ]
        return SyncBatch(
            buckets=tuple(buckets),
            live=tuple(live),
            windows=tuple(windows),
            blocks=self._blocks_to_sync(journal, now),
        )

    def apply(self, batch: SyncBatch, reply: SyncReply, *, now: float) -> None:
        """Take the shared state of `reply` for every entry of `batch`.

        What was counted here since `batch` was cut is added on top, so a call
        admitted while the round trip was under way is neither lost nor
        counted twice.
        """
        pending = self._journal
        for bucket, full_in in zip(batch.buckets, reply.buckets, strict=True):
            ahead = pending.calls.get(bucket.trunk, 0) * bucket.interval
            self.apply_bucket(bucket.trunk, full_at=now + full_in + ahead, now=now)
        for entry, others in zip(batch.live, reply.live, strict=True):
            self.apply_remote_live(entry.trunk, live=others, now=now)
        for window, state in zip(batch.windows, reply.windows, strict=True):
            key = (window.dimension, window.trunk, window.number)
            snapshot = SlidingWindow(
                start=now - state.age,
                window=window.window,
                current=state.current + pending.windows.get(key, 0),
                previous=state.previous,
            )
            self.apply_window(window.dimension, (window.trunk, window.number), snapshot)
        for block, remaining in zip(batch.blocks, reply.blocks, strict=True):
            if remaining > 0:
                self.apply_block((block.rule, block.trunk, block.number), until=now + remaining)
        self._up = True
        self._syncs += 1

    def backend_failed(self) -> bool:
        """The store could not be reached; True if it was up until now.

        Other instances' live calls are forgotten (they can no longer be
        known); buckets and windows keep their last shared state, which only
        decays from here.
        """
        self._failures += 1
        was_up, self._up = self._up, False
        if was_up:
            self.forget_remote_live()
        return was_up

    # -- internals -----------------------------------------------------------

    def _window_length(self, dimension: Dimension, trunk: str) -> float | None:
        limits = self._limits.get(trunk)
        if limits is None:
            return None
        if dimension == "caller":
            return None if limits.per_caller is None else limits.per_caller.window
        if dimension == "callee":
            return None if limits.per_callee is None else limits.per_callee.window
        return None if limits.one_ring is None else limits.one_ring.window

    def _blocks_to_sync(self, journal: _Journal, now: float) -> tuple[BlockEntry, ...]:
        """Cool-downs started here (to share) and those of numbers counted here (to read)."""
        entries: dict[_BlockKey, float] = {
            key: max(0.0, until - now) for key, until in journal.blocks.items()
        }
        for dimension, trunk, number in journal.numbers | journal.windows.keys():
            limits = self._limits.get(trunk)
            if limits is None:
                continue
            for rule in _block_rules(dimension, limits):
                entries.setdefault((rule, trunk, number), 0.0)
        return tuple(
            BlockEntry(rule, trunk, number, ttl) for (rule, trunk, number), ttl in entries.items()
        )


def _block_rules(dimension: Dimension, limits: TrunkLimits) -> tuple[str, ...]:
    """The cool-downs that can hold a number counted in `dimension`."""
    if dimension == "callee":
        bombing = limits.per_callee
        return ("call_bombing",) if bombing is not None and bombing.block_for else ()
    rules: list[str] = []
    caller = limits.per_caller
    if caller is not None and caller.block_for:
        rules.append("high_frequency_caller")
    if limits.one_ring is not None:
        rules.append("one_ring")
    return tuple(rules)
