"""RateTable bounds over generated traffic: the bucket's rate, the window counter's error,
live calls, retry_after, and sweeping that changes no decision."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipguard.ratetable import (
    Admission,
    OneRingLimit,
    RateTable,
    SlidingWindow,
    TokenBucketLimit,
    TrunkLimits,
    WindowLimit,
)

pytestmark = pytest.mark.property

TRUNK = "sh-callcenter"
CALLER = "+862131771200"
CALLEE = "+8613800138000"
# Float slack for sums of up to a few hundred float times.
EPSILON = 1e-9


def arrival_times(*, max_gap: float, max_size: int = 200) -> st.SearchStrategy[list[float]]:
    """Non-decreasing times from 0, with bursts (zero gaps) and lulls."""
    gaps = st.lists(
        st.one_of(st.just(0.0), st.floats(0.0, max_gap, allow_nan=False)),
        min_size=1,
        max_size=max_size,
    )

    def accumulate(steps: list[float]) -> list[float]:
        times, now = [], 0.0
        for step in steps:
            now += step
            times.append(now)
        return times

    return gaps.map(accumulate)


def integer_times(*, high: int, max_size: int = 150) -> st.SearchStrategy[list[int]]:
    """Sorted whole seconds: window arithmetic on them is exact in floats."""
    return st.lists(st.integers(0, high), min_size=1, max_size=max_size).map(sorted)


# --- the token bucket ---------------------------------------------------------------------------


@settings(max_examples=300)
@given(
    rate=st.floats(0.1, 200.0),
    burst=st.integers(1, 30),
    times=arrival_times(max_gap=1.0, max_size=300),
)
def test_admissions_in_any_interval_are_at_most_burst_plus_rate_times_its_length(
    rate: float, burst: int, times: list[float]
) -> None:
    table = RateTable()
    limits = TrunkLimits(cps=TokenBucketLimit(rate, burst))
    admitted = [
        now
        for now in times
        if table.admit(limits, trunk=TRUNK, caller=CALLER, callee=CALLEE, now=now).allowed
    ]
    for first in range(len(admitted)):
        for last in range(first, len(admitted)):
            span = admitted[last] - admitted[first]
            assert last - first + 1 <= burst + rate * span + EPSILON


@given(
    rate=st.floats(0.1, 200.0),
    burst=st.integers(1, 30),
    gaps=st.lists(st.floats(1.0, 3.0), min_size=1, max_size=100),
)
def test_calls_spaced_at_the_rate_are_never_refused(
    rate: float, burst: int, gaps: list[float]
) -> None:
    table = RateTable()
    limits = TrunkLimits(cps=TokenBucketLimit(rate, burst))
    now = 0.0
    for gap in gaps:
        now += gap * (1 + 1e-9) / rate
        assert table.admit(limits, trunk=TRUNK, caller=CALLER, callee=CALLEE, now=now).allowed


@given(
    rate=st.floats(0.1, 200.0),
    burst=st.integers(1, 30),
    times=arrival_times(max_gap=0.5),
)
def test_cps_retry_after_is_when_the_next_token_comes(
    rate: float, burst: int, times: list[float]
) -> None:
    table = RateTable()
    limits = TrunkLimits(cps=TokenBucketLimit(rate, burst))
    for now in times:
        answer = table.admit(limits, trunk=TRUNK, caller=CALLER, callee=CALLEE, now=now)
        if answer.allowed:
            continue
        assert answer.rule == "cps_limit"
        assert answer.retry_after is not None and 0 < answer.retry_after <= 1 / rate + EPSILON
        later = copy.deepcopy(table)
        at = now + answer.retry_after * (1 + 1e-9) + EPSILON
        assert later.admit(limits, trunk=TRUNK, caller=CALLER, callee=CALLEE, now=at).allowed
        if answer.retry_after > 1e-6:
            earlier = copy.deepcopy(table)
            at = now + answer.retry_after - 1e-6
            probe = earlier.admit(limits, trunk=TRUNK, caller=CALLER, callee=CALLEE, now=at)
            assert not probe.allowed


# --- the sliding-window counter -----------------------------------------------------------------


def exact_count(events: list[int], *, window: int, now: int) -> int:
    """The oracle: events within the sliding window (now - window, now]."""
    return sum(1 for event in events if now - window < event <= now)


@settings(max_examples=300)
@given(
    window=st.integers(1, 100),
    events=integer_times(high=500),
    queries=st.lists(st.integers(0, 600), max_size=20),
)
def test_the_counter_is_within_its_documented_error_of_an_exact_log(
    window: int, events: list[int], queries: list[int]
) -> None:
    """-phi * previous <= estimate - exact <= (1 - phi) * previous, always."""
    counter = SlidingWindow(start=float(events[0]), window=float(window))
    moments = sorted([(event, True) for event in events] + [(query, False) for query in queries])
    seen: list[int] = []
    for now, is_event in moments:
        if seen and now < seen[-1]:
            continue  # queries only move forward in time, as the clock does
        empty = counter.is_empty(now=float(now))
        estimate = counter.estimate(float(window), now=float(now))
        assert empty == (estimate == 0)  # what sweep removes counts for nothing
        exact = exact_count(seen, window=window, now=now)
        phi = (now - counter.start) / window
        assert 0 <= phi < 1
        assert -phi * counter.previous - EPSILON <= estimate - exact
        assert estimate - exact <= (1 - phi) * counter.previous + EPSILON
        assert exact - counter.previous <= counter.current <= exact  # the current part is exact
        if is_event:
            counter.hit(float(window), now=float(now))
            seen.append(now)


@settings(max_examples=300)
@given(
    calls=st.integers(1, 12),
    window=st.integers(1, 60),
    times=integer_times(high=400, max_size=200),
)
def test_per_caller_admissions_in_any_window_stay_under_twice_the_limit(
    calls: int, window: int, times: list[int]
) -> None:
    """At most 2 * calls - 1 admitted in any window (the counter's worst case),
    and never a refusal while the last two windows held fewer than `calls`."""
    table = RateTable()
    limits = TrunkLimits(per_caller=WindowLimit(calls, float(window)))
    admitted: list[int] = []
    for now in times:
        answer = table.admit(limits, trunk=TRUNK, caller=CALLER, callee=CALLEE, now=float(now))
        if not answer.allowed:
            assert answer.rule == "high_frequency_caller"
            assert exact_count(admitted, window=2 * window, now=now) >= calls
            continue
        admitted.append(now)
        assert exact_count(admitted, window=window, now=now) <= 2 * calls - 1


@given(
    calls=st.integers(1, 8),
    window=st.integers(1, 60),
    times=integer_times(high=300, max_size=100),
)
def test_window_retry_after_is_when_the_window_has_room_again(
    calls: int, window: int, times: list[int]
) -> None:
    table = RateTable()
    limits = TrunkLimits(per_callee=WindowLimit(calls, float(window)))
    for now in times:
        answer = table.admit(limits, trunk=TRUNK, caller=CALLER, callee=CALLEE, now=float(now))
        if answer.allowed:
            continue
        assert answer.rule == "call_bombing"
        assert answer.retry_after is not None and 0 < answer.retry_after <= 2 * window
        at = now + answer.retry_after
        later = copy.deepcopy(table)
        assert later.admit(limits, trunk=TRUNK, caller=CALLER, callee=CALLEE, now=at + 1e-6).allowed
        if answer.retry_after > 1e-6:
            earlier = copy.deepcopy(table)
            probe = earlier.admit(limits, trunk=TRUNK, caller=CALLER, callee=CALLEE, now=at - 1e-6)
            assert not probe.allowed


# --- live calls ---------------------------------------------------------------------------------

TRUNKS = ("sh-callcenter", "intl-gateway", "bj-pbx")


@given(
    steps=st.lists(
        st.tuples(st.sampled_from(TRUNKS), st.booleans(), st.integers(0, 1000)), max_size=300
    ),
    concurrent=st.integers(0, 6),
)
def test_live_calls_count_admitted_calls_not_yet_ended_and_return_to_zero(
    steps: list[tuple[str, bool, int]], concurrent: int
) -> None:
    table = RateTable()
    limits = TrunkLimits(concurrent=concurrent)
    up: dict[str, list[str]] = {trunk: [] for trunk in TRUNKS}
    now = 0.0
    for trunk, start, pick in steps:
        now += 1.0
        if start or not up[trunk]:
            caller = f"+86213177{pick:04d}"
            answer = table.admit(limits, trunk=trunk, caller=caller, callee=CALLEE, now=now)
            assert answer.allowed == (len(up[trunk]) < concurrent)
            if answer.allowed:
                up[trunk].append(caller)
        else:
            caller = up[trunk].pop(pick % len(up[trunk]))
            table.call_ended(
                limits, trunk=trunk, caller=caller, ringing_for=None, answered=True, now=now
            )
        assert table.live_calls(trunk) == len(up[trunk]) <= concurrent
    for trunk, callers in up.items():
        for caller in callers:
            table.call_ended(
                limits, trunk=trunk, caller=caller, ringing_for=2.0, answered=False, now=now
            )
        assert table.live_calls(trunk) == 0


# --- sweeping -----------------------------------------------------------------------------------

SWEPT_LIMITS = TrunkLimits(
    cps=TokenBucketLimit(rate=2, burst=4),
    concurrent=3,
    per_caller=WindowLimit(calls=3, window=30, warn=1, block_for=100),
    per_callee=WindowLimit(calls=4, window=20, warn=2),
    one_ring=OneRingLimit(max_ring=3, calls=1, window=40, block_for=60, warn=0),
)
OPERATIONS = st.tuples(
    st.sampled_from(("admit", "end", "sweep")),
    st.sampled_from(TRUNKS[:2]),
    st.integers(0, 3),
    st.integers(0, 3),
    st.floats(0.0, 25.0),
    st.sampled_from((None, 1.0, 5.0)),
    st.one_of(st.none(), st.integers(0, 4)),
)


@settings(max_examples=300)
@given(operations=st.lists(OPERATIONS, max_size=200))
def test_sweeping_never_changes_a_decision(
    operations: list[tuple[str, str, int, int, float, float | None, int | None]],
) -> None:
    swept, kept = RateTable(), RateTable()
    up: list[tuple[str, str]] = []
    now = 0.0
    for kind, trunk, caller_no, callee_no, gap, ringing_for, budget in operations:
        now += gap
        caller, callee = f"+86213177120{caller_no}", f"+8613800138{callee_no:03d}"
        if kind == "sweep":
            swept.sweep(now=now, budget=budget)
        elif kind == "admit":
            answers = [
                table.admit(SWEPT_LIMITS, trunk=trunk, caller=caller, callee=callee, now=now)
                for table in (swept, kept)
            ]
            assert answers[0] == answers[1]
            if answers[0].allowed:
                up.append((trunk, caller))
        elif up:
            trunk, caller = up.pop(caller_no % len(up))
            for table in (swept, kept):
                table.call_ended(
                    SWEPT_LIMITS,
                    trunk=trunk,
                    caller=caller,
                    ringing_for=ringing_for,
                    answered=ringing_for is None,
                    now=now,
                )
    assert swept.stats.evictions == kept.stats.evictions == 0
    kept.sweep(now=now)
    swept.sweep(now=now)
    assert swept.stats == kept.stats


def test_admission_values_compare_by_content() -> None:
    assert Admission(allowed=False, rule="cps_limit", retry_after=0.5) == Admission(
        False, "cps_limit", 0.5, ()
    )
