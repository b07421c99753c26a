"""How many requests a token bucket admits, bounded by what the sender measured.

A test that checks a rate limit end to end (calls admitted per second, an
unknown source's answer budget) knows the configuration, and when it sent
each request and got each answer; it does not know when sipguard decided
each one, nor whether the machine kept pace. `bucket_bounds` gives the
fewest and the most admissions a token bucket allows for every set of
decision moments consistent with those measurements, so the bounds follow
from the configuration and the measured times, never from an assumption of
speed. On a machine that keeps pace they are tight.

It holds for one sender whose requests sipguard decides in the order they
were sent (one UDP socket, read in order), on a bucket of `burst` tokens
refilled at `rate` a second that is full at the first request: the generic
cell rate algorithm of `sipguard.ratetable` and `sipguard.sourcelimit`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Decision", "bucket_bounds", "one_bucket"]

# Of the float arithmetic, not of the measurement.
_EPSILON = 1e-6


@dataclass(frozen=True, slots=True)
class Decision:
    """One request, as its sender saw it.

    Attributes:
        sent: a time at or before the request left.
        answered: a time at or after its answer arrived; None when no
            answer was seen.
        admitted: whether the answer said it was admitted.
    """

    sent: float
    answered: float | None
    admitted: bool


def bucket_bounds(
    decisions: Sequence[Decision],
    *,
    burst: int,
    rate: float,
    slack: float = 0.0,
    answers_until: float | None = None,
) -> tuple[int, int]:
    """The fewest and the most admissions a bucket of `burst` and `rate` allows.

    Each request was decided at a moment between its `sent` and its
    `answered` (plus `slack`, for a clock that may read that much early), or
    after its `sent` when no answer was seen; `decisions` are in the order
    they were sent, and all of them were decided by now.

    - most: the admissions fall between the first `sent` and the last
      admitted `answered` (or `answers_until`, a time by which every
      admission seen was answered), and no span T holds more than
      burst + rate * T.
    - fewest: the first `burst` requests are admitted; and at the last
      refused request the bucket held less than one token, so every token
      that accrued since the first decision was spent on an admission, but
      those lost while the bucket stood full. It can stand full only in a
      gap followed by an admitted request (a full bucket admits), and that
      request's `answered` bounds the gap.

    Returns:
        (fewest, most).
    """
    if not decisions:
        return 0, 0
    fewest = min(burst, len(decisions))
    ends = [d.answered + slack for d in decisions if d.admitted and d.answered is not None]
    if answers_until is not None:
        ends.append(answers_until + slack)
    most = burst + math.floor(rate * (max(ends) - decisions[0].sent) + _EPSILON) if ends else 0
    refused = [index for index, decision in enumerate(decisions) if not decision.admitted]
    first = decisions[0]
    if refused and first.admitted and first.answered is not None:
        last = refused[-1]
        lost = 0.0
        for before, after in zip(decisions[:last], decisions[1:last], strict=False):
            if not after.admitted:
                continue  # less than a token there: the bucket had not stood full
            if after.answered is None:
                lost = math.inf  # a gap without an upper end: nothing can be said
                break
            gap = after.answered + slack - before.sent
            # After an admission the bucket holds at most burst - 1 tokens,
            # after a refusal less than one; it is full after gaining the rest.
            left = burst - 1 if before.admitted else 1
            lost += max(0.0, rate * gap - (burst - left))
        accrued = burst - 1 + rate * (decisions[last].sent - (first.answered + slack)) - lost
        if math.isfinite(accrued):
            fewest = max(fewest, math.floor(accrued - _EPSILON) + 1)
    return fewest, most


def one_bucket(
    times: Sequence[float], *, burst: int, rate: float, empty_at: float | None = None
) -> list[bool]:
    """Which requests, decided at `times` (ascending), one bucket admits.

    The generic cell rate algorithm written out again, as an oracle
    independent of sipguard's: a bucket of `burst` tokens refilled at `rate`
    a second, full before the first request, or empty at `empty_at`.
    """
    interval = 1.0 / rate
    tolerance = (burst - 1) * interval
    full_at = -math.inf if empty_at is None else empty_at + burst * interval
    admitted = []
    for now in times:
        full_at = max(full_at, now)
        allowed = full_at - now <= tolerance + _EPSILON * interval
        if allowed:
            full_at += interval
        admitted.append(allowed)
    return admitted
