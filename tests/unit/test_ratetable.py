"""RateTable: token buckets, live calls, sliding windows, cool-downs, one-ring, sweep, memory.

Time is scripted by hand: every `now` below is a literal number of seconds.
"""

from __future__ import annotations

import gc
import random
import tracemalloc

import pytest

from sipguard.ratetable import (
    ALLOWED,
    DEFAULT_MAX_KEYS,
    NO_LIMITS,
    Admission,
    OneRingLimit,
    RateTable,
    RateTableStats,
    SlidingWindow,
    TokenBucketLimit,
    TrunkLimits,
    WindowLimit,
)

pytestmark = pytest.mark.unit

TRUNK = "sh-callcenter"
OTHER = "intl-gateway"
ALICE = "+862131771200"
BOB = "+862131771201"
CAROL = "+862131771202"
VICTIM = "+8613800138000"
NEIGHBOUR = "+8613800138001"
DAY = 86_400.0


def admit(
    table: RateTable,
    limits: TrunkLimits,
    now: float,
    *,
    trunk: str = TRUNK,
    caller: str = ALICE,
    callee: str = VICTIM,
) -> Admission:
    return table.admit(limits, trunk=trunk, caller=caller, callee=callee, now=now)


def end(
    table: RateTable,
    limits: TrunkLimits,
    now: float,
    *,
    trunk: str = TRUNK,
    caller: str = ALICE,
    ringing_for: float | None = None,
    answered: bool = True,
) -> None:
    table.call_ended(
        limits, trunk=trunk, caller=caller, ringing_for=ringing_for, answered=answered, now=now
    )


def refused(rule: str, retry_after: float | None = None) -> Admission:
    return Admission(allowed=False, rule=rule, retry_after=retry_after)


# --- limit values -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TokenBucketLimit(0, 10), "rate 0 is not a positive"),
        (lambda: TokenBucketLimit(float("inf"), 10), "rate inf"),
        (lambda: TokenBucketLimit(5, 0), "burst 0 is not a whole number of at least 1"),
        (lambda: TokenBucketLimit(5, True), "burst True"),
        (lambda: WindowLimit(0, 60), "calls 0"),
        (lambda: WindowLimit(5, 0), "window 0"),
        (lambda: WindowLimit(5, 60, warn=5), "warn 5 is not below the block level 5"),
        (lambda: WindowLimit(5, 60, warn=-1), "warn -1"),
        (lambda: WindowLimit(5, 60, block_for=-1), "block_for -1"),
        (lambda: OneRingLimit(0, 10, 3600, DAY), "max_ring 0"),
        (lambda: OneRingLimit(3, 10, 3600, 0), "block_for 0"),
        (lambda: OneRingLimit(3, 10, 3600, DAY, warn=10), "warn 10"),
        (lambda: TrunkLimits(concurrent=-1), "concurrent -1"),
        (lambda: RateTable(max_keys=0), "max_keys 0"),
    ],
)
def test_impossible_limits_cannot_be_built(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_token_bucket_derives_its_interval_and_tolerance() -> None:
    bucket = TokenBucketLimit(rate=50, burst=100)
    assert bucket.interval == 0.02
    assert bucket.tolerance == 99 / 50
    assert bucket == TokenBucketLimit(50, 100)


def test_a_new_table_is_empty_and_bounded_by_default() -> None:
    table = RateTable()
    assert table.max_keys == DEFAULT_MAX_KEYS
    assert table.stats == RateTableStats(
        trunks=0,
        live_calls=0,
        caller_windows=0,
        callee_windows=0,
        one_ring_windows=0,
        blocks=0,
        evictions=0,
    )


# --- allowed calls ------------------------------------------------------------------------------


def test_an_allowed_call_gets_the_shared_admission() -> None:
    table = RateTable()
    limits = TrunkLimits(
        cps=TokenBucketLimit(50, 100),
        concurrent=300,
        per_caller=WindowLimit(30, 1800),
        per_callee=WindowLimit(5, 3600),
        one_ring=OneRingLimit(3, 10, 3600, DAY, warn=5),
    )
    assert admit(table, limits, 0.0) is ALLOWED
    assert admit(table, limits, 0.5, caller=BOB) is ALLOWED
    assert ALLOWED == Admission(allowed=True, rule=None, retry_after=None, warnings=())


def test_without_limits_every_call_is_allowed_and_still_counted_live() -> None:
    table = RateTable()
    for n in range(1000):
        assert admit(table, NO_LIMITS, 0.0, caller=f"+86213177{n:04d}") is ALLOWED
    assert table.live_calls(TRUNK) == 1000
    assert table.stats.caller_windows == 0  # no limit, no window to keep


# --- cps_limit: the token bucket ----------------------------------------------------------------

CPS = TrunkLimits(cps=TokenBucketLimit(rate=2, burst=3))


def test_bucket_admits_its_burst_then_one_call_per_interval() -> None:
    table = RateTable()
    assert [admit(table, CPS, 0.0).allowed for _ in range(3)] == [True, True, True]
    assert admit(table, CPS, 0.0) == refused("cps_limit", 0.5)
    assert admit(table, CPS, 0.25) == refused("cps_limit", 0.25)
    assert admit(table, CPS, 0.5) is ALLOWED
    assert admit(table, CPS, 0.5) == refused("cps_limit", 0.5)
    assert admit(table, CPS, 1.0) is ALLOWED


def test_refused_calls_take_no_token() -> None:
    table = RateTable()
    limits = TrunkLimits(cps=TokenBucketLimit(rate=1, burst=1))
    assert admit(table, limits, 0.0) is ALLOWED
    assert [admit(table, limits, now).retry_after for now in (0.25, 0.5, 0.75)] == [
        0.75,
        0.5,
        0.25,
    ]
    assert admit(table, limits, 1.0) is ALLOWED  # not pushed back by the refusals


def test_an_idle_bucket_refills_up_to_its_burst_only() -> None:
    table = RateTable()
    limits = TrunkLimits(cps=TokenBucketLimit(rate=10, burst=5))
    assert sum(admit(table, limits, 0.0).allowed for _ in range(20)) == 5
    assert sum(admit(table, limits, 3600.0).allowed for _ in range(20)) == 5


def test_the_bucket_refills_lazily_at_the_rate() -> None:
    table = RateTable()
    limits = TrunkLimits(cps=TokenBucketLimit(rate=4, burst=4))
    assert sum(admit(table, limits, 10.0).allowed for _ in range(10)) == 4
    # Half a second later two tokens have come back, no more.
    assert sum(admit(table, limits, 10.5).allowed for _ in range(10)) == 2


def test_time_going_backwards_gives_no_tokens() -> None:
    table = RateTable()
    limits = TrunkLimits(cps=TokenBucketLimit(rate=1, burst=1))
    assert admit(table, limits, 100.0) is ALLOWED
    assert admit(table, limits, 50.0) == refused("cps_limit", 51.0)
    assert admit(table, limits, 101.0) is ALLOWED


def test_one_trunks_flood_never_consumes_another_trunks_budget() -> None:
    table = RateTable()
    limits = TrunkLimits(cps=TokenBucketLimit(rate=20, burst=20))
    flood = [admit(table, limits, n / 1000, trunk=OTHER).allowed for n in range(1000)]
    assert sum(flood) == 20 + 19  # its burst, then 20 a second for 0.999 s
    calm = [admit(table, limits, n / 20, caller=BOB).allowed for n in range(20)]
    assert all(calm)


# --- concurrent_limit: live calls ---------------------------------------------------------------

CONCURRENT = TrunkLimits(concurrent=2)


def test_live_calls_are_limited_and_freed_when_calls_end() -> None:
    table = RateTable()
    assert admit(table, CONCURRENT, 0.0) is ALLOWED
    assert admit(table, CONCURRENT, 0.0, caller=BOB) is ALLOWED
    assert admit(table, CONCURRENT, 1.0, caller=CAROL) == refused("concurrent_limit")
    assert table.live_calls(TRUNK) == 2  # the refusal took no slot
    end(table, CONCURRENT, 2.0)
    assert table.live_calls(TRUNK) == 1
    assert admit(table, CONCURRENT, 2.0, caller=CAROL) is ALLOWED


def test_live_calls_of_one_trunk_do_not_count_on_another() -> None:
    table = RateTable()
    admit(table, CONCURRENT, 0.0)
    admit(table, CONCURRENT, 0.0)
    assert admit(table, CONCURRENT, 0.0, trunk=OTHER) is ALLOWED
    assert (table.live_calls(TRUNK), table.live_calls(OTHER)) == (2, 1)


def test_live_calls_never_go_below_zero() -> None:
    table = RateTable()
    end(table, CONCURRENT, 0.0)
    assert table.live_calls(TRUNK) == 0
    admit(table, CONCURRENT, 1.0)
    end(table, CONCURRENT, 2.0)
    end(table, CONCURRENT, 2.0)
    assert table.live_calls(TRUNK) == 0
    assert [admit(table, CONCURRENT, 3.0).allowed for _ in range(3)] == [True, True, False]


# Every way a call can end, as (answered, ringing_for) the B2BUA reports.
ENDINGS = {
    "bye after answer": (True, 4.0),
    "bye after answer without ringing": (True, None),
    "cancel before any 18x": (False, None),
    "cancel right after 180": (False, 0.5),
    "cancel after a long ring": (False, 40.0),
    "failure response after ringing": (False, 12.0),
    "failure response without ringing": (False, None),
    "no answer, timer B": (False, None),
    "ack lost, timer H after 200": (True, 2.0),
    "far end crashed mid-call": (True, 1.0),
    "transport lost while ringing": (False, 6.0),
}


@pytest.mark.parametrize("ending", sorted(ENDINGS))
def test_live_calls_return_to_zero_after_each_kind_of_ending(ending: str) -> None:
    table = RateTable()
    limits = TrunkLimits(concurrent=50, one_ring=OneRingLimit(3, 10, 3600, DAY))
    answered, ringing_for = ENDINGS[ending]
    for n in range(50):
        assert admit(table, limits, float(n), caller=f"+86213177{n:04d}") is ALLOWED
    assert admit(table, limits, 50.0) == refused("concurrent_limit")
    for n in range(50):
        end(
            table,
            limits,
            100.0 + n,
            caller=f"+86213177{n:04d}",
            answered=answered,
            ringing_for=ringing_for,
        )
    assert table.live_calls(TRUNK) == 0
    assert table.stats.live_calls == 0


def test_live_calls_return_to_zero_after_a_mix_of_endings() -> None:
    table = RateTable()
    limits = TrunkLimits(concurrent=1000)
    rng = random.Random(4)
    endings = list(ENDINGS.values())
    for n in range(len(endings) * 20):
        admit(table, limits, float(n), caller=f"+86213177{n:04d}")
    for n in rng.sample(range(len(endings) * 20), len(endings) * 20):
        answered, ringing_for = endings[n % len(endings)]
        end(table, limits, 1000.0, answered=answered, ringing_for=ringing_for)
    assert table.live_calls(TRUNK) == 0


# --- high_frequency_caller and call_bombing: sliding windows ------------------------------------

PER_CALLER = TrunkLimits(per_caller=WindowLimit(calls=5, window=60))


def test_more_than_calls_from_one_caller_within_the_window_are_refused() -> None:
    table = RateTable()
    assert [admit(table, PER_CALLER, float(t)).allowed for t in range(5)] == [True] * 5
    refusal = admit(table, PER_CALLER, 5.0)
    assert (refusal.allowed, refusal.rule) == (False, "high_frequency_caller")
    assert admit(table, PER_CALLER, 5.0, caller=BOB) is ALLOWED
    assert admit(table, PER_CALLER, 5.0, trunk=OTHER) is ALLOWED


def test_a_full_window_says_when_it_has_room_again() -> None:
    table = RateTable()
    for t in range(5):
        admit(table, PER_CALLER, float(t))
    # Five calls in the sub-window [0, 60): once the sliding window is 72 s
    # past 0, they weigh 5 * (1 - 12/60) = 4 and a fifth call fits.
    assert admit(table, PER_CALLER, 10.0) == refused("high_frequency_caller", 62.0)
    assert admit(table, PER_CALLER, 71.5).allowed is False
    assert admit(table, PER_CALLER, 72.0) is ALLOWED


def test_a_burst_straddling_a_sub_window_boundary_is_caught() -> None:
    table = RateTable()
    assert admit(table, PER_CALLER, 0.0) is ALLOWED  # sub-windows [0, 60), [60, 120), ...
    # Three calls just before 120 and two just after: five within 5 s. A
    # fixed window that resets at 120 would take a sixth at 123; the sliding
    # window still counts the three.
    for now in (117.0, 118.0, 119.0, 121.0, 122.0):
        assert admit(table, PER_CALLER, now) is ALLOWED
    assert admit(table, PER_CALLER, 123.0).rule == "high_frequency_caller"


def test_the_window_forgets_gradually_not_all_at_once() -> None:
    table = RateTable()
    for t in range(5):
        admit(table, PER_CALLER, float(t))
    # At 61 the previous sub-window still weighs 5 * 59/60: full. Only as
    # it slides out does room come back, one call at a time.
    assert admit(table, PER_CALLER, 61.0).allowed is False
    assert admit(table, PER_CALLER, 72.0) is ALLOWED
    assert admit(table, PER_CALLER, 73.0).allowed is False
    assert admit(table, PER_CALLER, 84.0) is ALLOWED


def test_callee_windows_catch_call_bombing_from_many_callers() -> None:
    table = RateTable()
    limits = TrunkLimits(per_callee=WindowLimit(calls=2, window=3600))
    assert admit(table, limits, 0.0, caller=ALICE) is ALLOWED
    assert admit(table, limits, 10.0, caller=BOB) is ALLOWED
    assert admit(table, limits, 20.0, caller=CAROL).rule == "call_bombing"
    assert admit(table, limits, 20.0, caller=CAROL, callee=NEIGHBOUR) is ALLOWED
    assert admit(table, limits, 20.0, caller=CAROL, trunk=OTHER) is ALLOWED


def test_a_refused_call_records_nothing() -> None:
    table = RateTable()
    limits = TrunkLimits(
        cps=TokenBucketLimit(rate=1, burst=3),
        per_caller=WindowLimit(calls=1, window=60),
        per_callee=WindowLimit(calls=2, window=60),
    )
    assert admit(table, limits, 0.0, caller=ALICE) is ALLOWED
    assert admit(table, limits, 0.0, caller=ALICE).rule == "high_frequency_caller"
    # The refused call took no token, no live slot and no place for VICTIM.
    assert admit(table, limits, 0.0, caller=BOB) is ALLOWED
    assert admit(table, limits, 0.0, caller=CAROL, callee=NEIGHBOUR) is ALLOWED
    assert admit(table, limits, 0.0, caller=CAROL).rule == "cps_limit"
    assert table.live_calls(TRUNK) == 3


def test_counters_survive_a_change_of_limits() -> None:
    table = RateTable()
    for t in range(3):
        assert admit(table, PER_CALLER, float(t)) is ALLOWED
    reloaded = TrunkLimits(per_caller=WindowLimit(calls=3, window=60))
    assert admit(table, reloaded, 3.0).rule == "high_frequency_caller"
    assert admit(table, PER_CALLER, 3.0) is ALLOWED


def test_removing_a_limit_stops_enforcing_it() -> None:
    table = RateTable()
    limits = TrunkLimits(per_caller=WindowLimit(calls=1, window=60, block_for=DAY))
    admit(table, limits, 0.0)
    assert admit(table, limits, 1.0).rule == "high_frequency_caller"
    assert admit(table, NO_LIMITS, 2.0) is ALLOWED
    assert admit(table, limits, 3.0).rule == "high_frequency_caller"  # the block is kept


# --- evaluation order ---------------------------------------------------------------------------


def test_checks_run_in_order_and_the_first_refusal_decides() -> None:
    one_ring = OneRingLimit(max_ring=3, calls=1, window=3600, block_for=DAY)
    every = TrunkLimits(
        cps=TokenBucketLimit(rate=1, burst=4),
        concurrent=3,
        per_caller=WindowLimit(calls=1, window=3600),
        per_callee=WindowLimit(calls=1, window=3600),
        one_ring=one_ring,
    )
    table = RateTable()
    # ALICE rings VICTIM twice, hanging up after one second of ringing.
    assert admit(table, every, 0.0) is ALLOWED
    end(table, every, 1.0, ringing_for=1.0, answered=False)
    assert admit(table, TrunkLimits(one_ring=one_ring), 1.0) is ALLOWED
    end(table, every, 2.0, ringing_for=1.0, answered=False)
    # Now ALICE is past per_caller, VICTIM past per_callee, ALICE blocked for
    # one-ring calls. Lift the limits one at a time, first to last.
    assert admit(table, every, 2.0).rule == "high_frequency_caller"
    no_caller = TrunkLimits(
        cps=every.cps,
        concurrent=every.concurrent,
        per_callee=every.per_callee,
        one_ring=one_ring,
    )
    assert admit(table, no_caller, 2.0).rule == "call_bombing"
    assert admit(table, TrunkLimits(one_ring=one_ring), 2.0).rule == "one_ring"
    # Three live calls fill `concurrent`; then the bucket runs dry.
    for caller in (BOB, CAROL, "+862131771203"):
        assert admit(table, NO_LIMITS, 2.0, caller=caller) is ALLOWED
    assert admit(table, every, 2.0).rule == "concurrent_limit"
    drain = TrunkLimits(cps=every.cps)
    while admit(table, drain, 2.0, caller=BOB).allowed:
        pass
    assert admit(table, every, 2.0).rule == "cps_limit"


# --- warn and block levels, cool-downs ----------------------------------------------------------


def test_the_warn_level_relays_with_a_warning_and_the_block_level_refuses() -> None:
    table = RateTable()
    limits = TrunkLimits(per_caller=WindowLimit(calls=4, window=600, warn=2))
    assert admit(table, limits, 0.0) is ALLOWED
    assert admit(table, limits, 1.0) is ALLOWED
    warned = Admission(allowed=True, warnings=("high_frequency_caller",))
    assert admit(table, limits, 2.0) == warned
    assert admit(table, limits, 3.0) == warned
    assert admit(table, limits, 4.0).allowed is False


def test_warnings_of_several_rules_come_in_evaluation_order() -> None:
    table = RateTable()
    limits = TrunkLimits(
        per_caller=WindowLimit(calls=10, window=600, warn=1),
        per_callee=WindowLimit(calls=10, window=600, warn=1),
    )
    assert admit(table, limits, 0.0) is ALLOWED
    assert admit(table, limits, 1.0).warnings == ("high_frequency_caller", "call_bombing")
    assert admit(table, limits, 2.0, caller=BOB).warnings == ("call_bombing",)


def test_a_warn_level_of_zero_warns_from_the_first_call() -> None:
    table = RateTable()
    limits = TrunkLimits(per_callee=WindowLimit(calls=3, window=60, warn=0))
    assert admit(table, limits, 0.0).warnings == ("call_bombing",)


def test_a_caller_past_the_block_level_stays_refused_for_the_cool_down() -> None:
    sixty_days = 60 * DAY
    limits = TrunkLimits(per_caller=WindowLimit(calls=2, window=3600, block_for=sixty_days))
    table = RateTable()
    assert admit(table, limits, 0.0) is ALLOWED
    assert admit(table, limits, 10.0) is ALLOWED
    assert admit(table, limits, 20.0) == refused("high_frequency_caller", sixty_days)
    # Long after the window has emptied, the cool-down still holds; refused
    # attempts do not extend it.
    assert admit(table, limits, 20.0 + 30 * DAY) == refused("high_frequency_caller", 30 * DAY)
    assert admit(table, limits, 20.0 + sixty_days - 1) == refused("high_frequency_caller", 1.0)
    assert admit(table, limits, 20.0 + sixty_days) is ALLOWED
    assert admit(table, limits, 20.0 + sixty_days, caller=BOB) is ALLOWED


def test_a_callee_past_the_block_level_is_protected_for_the_cool_down() -> None:
    limits = TrunkLimits(per_callee=WindowLimit(calls=1, window=60, block_for=DAY))
    table = RateTable()
    assert admit(table, limits, 0.0, caller=ALICE) is ALLOWED
    assert admit(table, limits, 5.0, caller=BOB) == refused("call_bombing", DAY)
    assert admit(table, limits, 3600.0, caller=CAROL) == refused("call_bombing", DAY - 3595.0)
    assert admit(table, limits, 3600.0, caller=CAROL, trunk=OTHER) is ALLOWED
    assert admit(table, limits, DAY + 5.0, caller=CAROL) is ALLOWED


# --- one_ring -----------------------------------------------------------------------------------

ONE_RING = TrunkLimits(one_ring=OneRingLimit(max_ring=3, calls=2, window=3600, block_for=DAY))


def ring(table: RateTable, now: float, *, ringing_for: float | None, answered: bool) -> None:
    assert admit(table, ONE_RING, now) is ALLOWED
    end(table, ONE_RING, now + 1, ringing_for=ringing_for, answered=answered)


def test_only_unanswered_short_rings_count_as_one_ring_calls() -> None:
    table = RateTable()
    for n in range(10):
        ring(table, 10.0 * n, ringing_for=1.0, answered=True)  # answered
        ring(table, 10.0 * n + 2, ringing_for=None, answered=False)  # never rang
        ring(table, 10.0 * n + 4, ringing_for=3.5, answered=False)  # rang long enough
    assert table.stats.one_ring_windows == 0
    assert admit(table, ONE_RING, 200.0) is ALLOWED


def test_more_than_calls_one_ring_calls_block_the_caller() -> None:
    table = RateTable()
    ring(table, 0.0, ringing_for=3.0, answered=False)  # at max_ring: counts
    ring(table, 10.0, ringing_for=0.2, answered=False)
    assert admit(table, ONE_RING, 20.0) is ALLOWED  # two: not past the level yet
    end(table, ONE_RING, 21.0, ringing_for=0.0, answered=False)
    assert admit(table, ONE_RING, 22.0) == refused("one_ring", DAY - 1.0)
    assert admit(table, ONE_RING, 22.0, caller=BOB) is ALLOWED
    assert admit(table, ONE_RING, 22.0, trunk=OTHER) is ALLOWED
    assert admit(table, ONE_RING, 21.0 + DAY) is ALLOWED


def test_one_ring_calls_outside_the_window_are_forgotten() -> None:
    table = RateTable()
    for now in (0.0, 8000.0, 16000.0, 24000.0):
        ring(table, now, ringing_for=1.0, answered=False)
    assert admit(table, ONE_RING, 30000.0) is ALLOWED


def test_the_one_ring_warn_level_marks_the_callers_calls() -> None:
    limits = TrunkLimits(one_ring=OneRingLimit(3, 3, 3600, DAY, warn=1))
    table = RateTable()
    for now in (0.0, 10.0):
        assert admit(table, limits, now) is ALLOWED
        end(table, limits, now + 1, ringing_for=1.0, answered=False)
    assert admit(table, limits, 20.0) == Admission(allowed=True, warnings=("one_ring",))
    assert admit(table, limits, 20.0, caller=BOB) is ALLOWED


# --- test(): the dry run ------------------------------------------------------------------------


def test_a_dry_run_counts_nothing() -> None:
    table = RateTable()
    limits = TrunkLimits(
        cps=TokenBucketLimit(1, 1),
        concurrent=1,
        per_caller=WindowLimit(1, 60, block_for=DAY),
    )
    for _ in range(5):
        assert table.test(limits, trunk=TRUNK, caller=ALICE, callee=VICTIM, now=0.0) is ALLOWED
    assert table.stats.trunks == 0
    assert admit(table, limits, 0.0) is ALLOWED
    end(table, limits, 1.0)
    probe = table.test(limits, trunk=TRUNK, caller=ALICE, callee=VICTIM, now=1.0)
    assert probe.rule == "high_frequency_caller"
    assert table.stats.blocks == 0  # no cool-down started by a dry run
    assert admit(table, limits, 120.0) is ALLOWED


# --- bounded memory: LRU eviction and sweep -----------------------------------------------------


def test_the_least_recently_used_key_is_evicted_when_a_dimension_is_full() -> None:
    table = RateTable(max_keys=2)
    limits = TrunkLimits(per_caller=WindowLimit(calls=1, window=3600))
    admit(table, limits, 0.0, caller=ALICE)
    admit(table, limits, 1.0, caller=BOB)
    assert admit(table, limits, 2.0, caller=ALICE).allowed is False  # touches ALICE
    admit(table, limits, 3.0, caller=CAROL)  # evicts BOB, the least recently used
    assert table.stats.caller_windows == 2
    assert table.stats.evictions == 1
    assert admit(table, limits, 4.0, caller=ALICE).allowed is False
    assert admit(table, limits, 4.0, caller=BOB) is ALLOWED  # history lost


def test_blocks_are_bounded_too() -> None:
    table = RateTable(max_keys=3)
    limits = TrunkLimits(per_caller=WindowLimit(calls=1, window=60, block_for=DAY))
    for n in range(10):
        caller = f"+86213177{n:04d}"
        admit(table, limits, float(n), caller=caller)
        admit(table, limits, float(n), caller=caller)
    assert table.stats.blocks == 3
    assert table.stats.caller_windows == 3


def full_table(*, max_keys: int = DEFAULT_MAX_KEYS) -> tuple[RateTable, TrunkLimits]:
    """A table with something in every dimension, all of it gone after 3 days."""
    limits = TrunkLimits(
        cps=TokenBucketLimit(rate=10, burst=10),
        concurrent=100,
        per_caller=WindowLimit(calls=1, window=600, block_for=DAY),
        per_callee=WindowLimit(calls=5, window=3600),
        one_ring=OneRingLimit(max_ring=3, calls=1, window=3600, block_for=2 * DAY),
    )
    table = RateTable(max_keys=max_keys)
    for n in range(20):
        caller = f"+86213177{n:04d}"
        assert admit(table, limits, float(n), caller=caller, callee=f"+861380013{n:04d}").allowed
        end(table, limits, n + 0.5, caller=caller, ringing_for=1.0, answered=False)
        assert admit(table, limits, n + 0.6, caller=caller).allowed is False
    assert admit(table, limits, 30.0, caller="+8613900000000", trunk=OTHER).allowed
    return table, limits


def test_sweep_reclaims_everything_once_every_window_and_block_has_expired() -> None:
    table, limits = full_table()
    end(table, limits, 40.0, trunk=OTHER, caller="+8613900000000")
    before = table.stats
    assert (before.caller_windows, before.callee_windows, before.one_ring_windows) == (21, 21, 20)
    assert before.blocks == 20
    assert before.trunks == 2
    assert table.sweep(now=3 * DAY) == 21 + 21 + 20 + 20 + 2
    assert table.stats == RateTableStats(
        trunks=0,
        live_calls=0,
        caller_windows=0,
        callee_windows=0,
        one_ring_windows=0,
        blocks=0,
        evictions=0,
    )


def test_sweep_keeps_what_still_counts() -> None:
    table, limits = full_table()
    # TRUNK has no live call left and its bucket is full again: it goes.
    # OTHER's bucket is full too, but a call of it is still up.
    assert table.sweep(now=31.0) == 1
    assert table.stats.trunks == 1
    assert table.live_calls(OTHER) == 1
    # After two per-caller windows (1200 s) those windows are empty; the
    # one-ring and callee windows (3600 s) are not, nor the blocks.
    assert table.sweep(now=1300.0) == 21
    assert table.stats.callee_windows == 21
    assert table.stats.blocks == 20
    # A trunk with a live call stays however long it is idle.
    table.sweep(now=3 * DAY)
    assert table.stats.trunks == 1
    end(table, limits, 3 * DAY, trunk=OTHER, caller="+8613900000000")
    assert table.sweep(now=3 * DAY) == 1


def test_sweep_keeps_a_bucket_until_it_is_full_again() -> None:
    table = RateTable()
    limits = TrunkLimits(cps=TokenBucketLimit(rate=1, burst=10))
    for _ in range(10):
        admit(table, limits, 0.0)
        end(table, limits, 0.0)
    assert table.sweep(now=9.5) == 0  # 9.5 tokens back, not 10
    assert admit(table, limits, 9.5).allowed
    end(table, limits, 9.5)
    assert table.sweep(now=10.9) == 0  # 8.5 tokens, full at 11
    assert table.sweep(now=11.0) == 1


def test_a_budgeted_sweep_examines_the_least_recently_used_keys_first() -> None:
    table = RateTable()
    limits = TrunkLimits(per_caller=WindowLimit(calls=5, window=60))
    for n in range(10):
        admit(table, limits, float(n), caller=f"+86213177{n:04d}")
    # Every window is empty from 129 on; three at a time go, oldest first.
    assert table.sweep(now=130.0, budget=3) == 3
    assert table.stats.caller_windows == 7
    assert admit(table, limits, 130.0, caller="+862131770003").allowed
    assert table.sweep(now=130.0, budget=3) == 3  # 4, 5, 6; 3 was touched
    assert table.sweep(now=130.0) == 3  # 7, 8, 9; the new call of 3 stays
    assert table.stats.caller_windows == 1


def test_a_budgeted_sweep_stops_short_behind_keys_still_in_use() -> None:
    table = RateTable()
    long_window = TrunkLimits(per_caller=WindowLimit(calls=5, window=3600))
    short_window = TrunkLimits(per_caller=WindowLimit(calls=5, window=60))
    admit(table, long_window, 0.0, trunk=OTHER)
    for n in range(5):
        admit(table, short_window, 1.0, caller=f"+86213177{n:04d}")
    assert table.sweep(now=500.0, budget=1) == 0  # only the long window seen
    assert table.sweep(now=500.0, budget=2) == 1
    assert table.sweep(now=500.0) == 4  # a full pass finds the rest
    assert table.stats.caller_windows == 1


# docs/ratetable.md, "Memory": the most a tracked key can take (CPython 3.11,
# numbers of up to 15 digits), from the object sizes and the worst fill of
# the hash table.
WINDOW_KEY_BYTES = 410
BLOCK_KEY_BYTES = 290


def test_a_flood_of_distinct_callers_stays_within_the_memory_bound() -> None:
    max_keys = 2_000
    limits = TrunkLimits(
        per_caller=WindowLimit(calls=1, window=3600, block_for=DAY),
        per_callee=WindowLimit(calls=5, window=3600),
        one_ring=OneRingLimit(max_ring=3, calls=5, window=3600, block_for=DAY),
    )
    rng = random.Random(10)
    gc.collect()
    tracemalloc.start()
    try:
        table = RateTable(max_keys=max_keys)
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for n in range(10 * max_keys):
            caller = f"+86{rng.randrange(10**10, 10**11)}"
            callee = f"+86{rng.randrange(10**10, 10**11)}"
            now = n / 100
            assert admit(table, limits, now, caller=caller, callee=callee) is ALLOWED
            end(table, limits, now, caller=caller, ringing_for=1.0, answered=False)
            assert admit(table, limits, now, caller=caller).rule == "high_frequency_caller"
            stats = table.stats
            assert (
                max(
                    stats.caller_windows, stats.callee_windows, stats.one_ring_windows, stats.blocks
                )
                <= max_keys
            )
        del caller, callee
        gc.collect()
        used, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert table.stats.evictions == 4 * 9 * max_keys
    # docs/ratetable.md, "Memory": at most WINDOW_KEY_BYTES per window key and
    # BLOCK_KEY_BYTES per block key sharing its number with a window key,
    # plus a trunk entry and four dictionaries' fixed parts.
    bound = max_keys * (3 * WINDOW_KEY_BYTES + BLOCK_KEY_BYTES) + 16_384
    assert used - start <= bound
    # The peak adds what one insert holds for a moment: while a dictionary
    # grows, its old hash table (at most 168 bytes a key) is still there.
    assert peak - start <= bound + max_keys * 168


# --- the counter itself -------------------------------------------------------------------------


def test_the_sliding_window_weights_the_previous_sub_window_by_its_overlap() -> None:
    window = SlidingWindow(start=0.0, window=60.0)
    for now in (0.0, 10.0, 20.0, 30.0):
        window.hit(60.0, now=now)
    assert window.estimate(60.0, now=59.0) == 4
    assert window.estimate(60.0, now=75.0) == 4 * 0.75  # rolled: [60, 120) is current
    assert (window.previous, window.current, window.start) == (4, 0, 60.0)
    assert window.estimate(60.0, now=120.0) == 0.0
    assert window.is_empty(now=120.0)


def test_an_idle_window_is_empty_after_two_window_lengths() -> None:
    window = SlidingWindow(start=0.0, window=60.0, current=3)
    assert not window.is_empty(now=119.9)
    assert window.is_empty(now=120.0)
    assert window.estimate(60.0, now=500.0) == 0.0
    window.hit(60.0, now=500.0)
    assert (window.start, window.current, window.previous) == (500.0, 1, 0)
