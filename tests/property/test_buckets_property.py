"""The integration tests' rate bounds never fail a bucket that kept its rate.

`tests.integration.buckets.bucket_bounds` turns a sender's measurements
into the fewest and most admissions a token bucket allows; a bound that
a correct bucket can break would be a flaky test. Here the decisions come
at any moments after their sending (a machine that stalls now and then),
`one_bucket` decides them, and the answers arrive at any moment after:
the true count always lies within the bounds, whether the sender saw an
answer for every request (SIPp) or for the admitted ones only (a scanner).
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.integration.buckets import Decision, bucket_bounds, one_bucket

pytestmark = pytest.mark.property

delays = st.one_of(
    st.just(0.0),
    st.floats(0.0, 0.05),  # a machine that keeps pace
    st.floats(0.0, 2.0),  # a stall
)


@given(
    burst=st.integers(1, 20),
    rate=st.sampled_from([2.0, 5.0, 10.0, 20.0, 50.0]),
    gaps=st.lists(delays, min_size=1, max_size=80),
    lags=st.lists(delays, min_size=80, max_size=80),
    returns=st.lists(delays, min_size=80, max_size=80),
    answers_for_all=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_the_true_count_lies_within_the_bounds(
    burst: int,
    rate: float,
    gaps: list[float],
    lags: list[float],
    returns: list[float],
    answers_for_all: bool,
) -> None:
    sent = list(itertools.accumulate(gaps))
    # Decided in order, each some time after it went out.
    decided: list[float] = []
    for at, lag in zip(sent, lags, strict=False):
        decided.append(max(decided[-1] if decided else at, at + lag))
    admitted = one_bucket(decided, burst=burst, rate=rate)
    decisions = [
        Decision(s, d + back if ok or answers_for_all else None, ok)
        for s, d, back, ok in zip(sent, decided, returns, admitted, strict=False)
    ]

    fewest, most = bucket_bounds(decisions, burst=burst, rate=rate)

    assert fewest <= sum(admitted) <= most


def test_a_bucket_that_keeps_pace_is_bounded_exactly() -> None:
    """Requests every 10 ms for 2 s, answered at once: the bounds meet."""
    sent = [index / 100 for index in range(200)]
    admitted = one_bucket(sent, burst=5, rate=10.0)
    decisions = [Decision(s, s + 0.001, ok) for s, ok in zip(sent, admitted, strict=True)]

    assert sum(admitted) == 5 + 19  # the burst, then 10 a second for 1.99 s
    fewest, most = bucket_bounds(decisions, burst=5, rate=10.0)
    assert (fewest, most) == (sum(admitted), sum(admitted))
