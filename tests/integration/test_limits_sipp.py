"""Rate and behaviour limits end to end: SIPp callers -> ``sipguard run`` -> SIPp callee.

sipguard runs a rule file with two trunks (`limits_rules_text` in sipp.py):
``trunk-a``, the trunk under test, with the limits of each test, and
``trunk-b``, a neighbour on another source port. Both may present any caller
ID and are routed to the same SIPp UAS, over UDP.

The callers (uac_limited.xml, uac_one_ring.xml, uac_no_answer.xml) take
whatever outcome a limit gives them, check the refusal's headers themselves
(`Reason: SIP;cause=<status>;text="<rule>"` naming the rule the injection
file expects, a `Warning: 399`), and log one line per call: answered,
cancelled, timed out, or refused with which status, rule and Retry-After.
The tests check each call's outcome from that log, the message counts of
every SIPp process, sipguard's decision log, and the counters sipguard logs
when it stops (`active_calls`, `dialogs`, `rate_slots`).

- cps: a trunk limited to 20 calls/s (burst 20) offered 60 calls/s admits
  20 calls/s after its burst, and refuses the rest with 503 + Retry-After,
  while the other trunk's calls all go through;
- per_caller: the 6th call of one caller within the window is refused 403
  ``high_frequency_caller``, another caller's calls are not;
- one_ring: a caller that cancels right after the 180 is blocked (403
  ``one_ring``) past its allowance; another caller is not;
- concurrent: every kind of ending gives the live-call slot back: BYE from
  either side, CANCEL, a failure response from the callee, and a callee
  that never answers (408 after Timer B).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.integration.buckets import bucket_bounds
from tests.integration.sipp import (
    SIPP_CLOCK_SLACK,
    TRUNK_A,
    TRUNK_B,
    CallOutcome,
    LimitedCaller,
    LimitsPath,
    SippRun,
    call_outcomes,
    cps_decisions,
    limits_rules_text,
    log_count,
    shutdown_summary,
    sipp_available,
    start_sipguard,
    start_uas,
    wait_for_log,
    with_fresh_ports,
    write_limited_callers,
)

pytestmark = [pytest.mark.integration, pytest.mark.sipp]

StartLimitsPath = Callable[..., LimitsPath]

# Timer B (RFC 3261 §17.1.1.2): 64 * T1, T1 = 500 ms.
TIMER_B = 32.0


@pytest.fixture
def start_limits_path(tmp_path: Path) -> Iterator[StartLimitsPath]:
    """A factory for call paths with the two-trunk limits rule file.

    ``start_limits_path(limits=..., other_limits=..., uas=..., uas_args=...,
    trunk_port_count=...)``: ``limits`` and ``other_limits`` are the
    ``limits:`` of ``trunk-a`` and ``trunk-b``, ``uas`` the UAS scenario
    (default ``uas.xml``), ``uas_args`` more options for it,
    ``trunk_port_count`` how many source ports ``trunk-a`` has. Everything
    is stopped at teardown.
    """
    if not sipp_available():
        pytest.fail("SIPp is not on PATH: install it (Debian package sip-tester; `make setup`)")
    stack = contextlib.ExitStack()

    def start(
        *,
        limits: Mapping[str, object],
        other_limits: Mapping[str, object] | None = None,
        uas: str = "uas.xml",
        uas_args: Sequence[str] = (),
        trunk_port_count: int = 1,
    ) -> LimitsPath:
        workdir = tmp_path / "limits"

        def start_on(ports: list[int]) -> LimitsPath:
            listen_port, other_port, uas_port, *trunk_ports = ports
            server = start_uas(
                uas,
                port=uas_port,
                transport="udp",
                workdir=workdir / f"uas-1-{Path(uas).stem}",
                extra_args=uas_args,
            )
            try:
                workdir.mkdir(parents=True, exist_ok=True)
                rules = workdir / "rules.yaml"
                rules.write_text(
                    limits_rules_text(
                        listen_port=listen_port,
                        trunk_ports=trunk_ports,
                        other_trunk_port=other_port,
                        uas_port=uas_port,
                        limits=limits,
                        other_limits=other_limits,
                    ),
                    encoding="utf-8",
                )
                guard = start_sipguard(rules, port=listen_port, workdir=workdir / "sipguard")
            except BaseException:
                server.stop(timeout=2.0)
                raise
            return LimitsPath(
                "udp",
                guard,
                server,
                trunk_ports[0],
                workdir,
                trunk_ports=tuple(trunk_ports),
                other_trunk_port=other_port,
                uas_port=uas_port,
            )

        path = with_fresh_ports(3 + trunk_port_count, start_on)
        stack.callback(path.close)
        return path

    with stack:
        yield start


# --------------------------------------------------------------------------
# Helpers


def callers(numbers: Sequence[str], rule: str, *, callees: int = 10) -> list[LimitedCaller]:
    """One injection line per call: the callers in order, callees in rotation."""
    return [
        LimitedCaller(caller=number, callee=f"+86139001390{i % callees:02d}", rule=rule)
        for i, number in enumerate(numbers)
    ]


def shape(outcomes: Sequence[CallOutcome]) -> list[tuple[str, str]]:
    """Each call as (outcome, rule), in call order: what the tests compare."""
    return [(o.outcome, o.rule) for o in outcomes]


def assert_clean_run(run: SippRun, path: LimitsPath, calls: int, *runs: SippRun) -> None:
    """Every call of `run` ended the way its scenario allows, and was logged once."""
    assert run.returncode == 0, path.explain(run, *runs)
    assert run.stats.created_calls == calls, path.explain(run, *runs)
    assert run.stats.successful_calls == calls, path.explain(run, *runs)
    assert run.stats.failed_calls == 0, path.explain(run, *runs)
    assert run.stats.unexpected == 0, path.explain(run, *runs)
    numbers = [o.call_number for o in call_outcomes(run)]
    assert numbers == list(range(1, calls + 1)), path.explain(run, *runs)


def stop_sipguard(path: LimitsPath, *runs: SippRun) -> dict[str, int]:
    """SIGTERM sipguard; its shutdown counters (it must exit 0 and log them)."""
    assert path.sipguard.stop() == 0, path.explain(*runs)
    summary = shutdown_summary(path.sipguard)
    assert summary is not None, path.explain(*runs)
    return summary


def assert_nothing_left(path: LimitsPath, *runs: SippRun) -> None:
    """sipguard stops with no call, dialog or rate-table slot left behind."""
    summary = stop_sipguard(path, *runs)
    for counter in ("active_calls", "dialogs", "rate_slots"):
        assert summary[counter] == 0, f"shutdown counters {summary}\n{path.explain(*runs)}"


def probe_capacity(path: LimitsPath, injection: Path, concurrent: int) -> SippRun:
    """Fill every live-call slot of trunk-a at once, and one call more.

    `concurrent` + 1 calls within a few milliseconds against uas.xml, which
    rings each for 1 s: exactly `concurrent` must be answered and the last
    must be refused 503 ``concurrent_limit``. A slot still held by an earlier
    call would refuse one more.
    """
    calls = concurrent + 1
    run = path.run("uac_limited.xml", calls=calls, rate=500, injection=injection, timeout=20)
    assert_clean_run(run, path, calls)
    outcomes = call_outcomes(run)
    expected = [("answered", "")] * concurrent + [("refused", "concurrent_limit")]
    assert sorted(shape(outcomes)) == sorted(expected), path.explain(run)
    assert shape(outcomes)[-1] == ("refused", "concurrent_limit"), path.explain(run)
    assert all(o.status == 503 for o in outcomes if o.outcome == "refused"), path.explain(run)
    return run


def assert_retry_after(runs: Sequence[SippRun], path: LimitsPath) -> None:
    """Every 503 of `runs` carried a Retry-After of at least 1 s (RFC 3261 §20.33)."""
    refusals = [o for run in runs for o in call_outcomes(run) if o.status == 503]
    assert refusals, path.explain(*runs)
    missing = [o for o in refusals if o.retry_after is None or o.retry_after < 1]
    assert not missing, (
        f"{len(missing)} of {len(refusals)} 503 refusals without a Retry-After, e.g. "
        f"{missing[0]}\n{path.explain(*runs)}"
    )


# --------------------------------------------------------------------------
# cps and burst


CPS = 20
BURST = 20
OFFERED_RATE = 60
OFFERED_SECONDS = 6
OTHER_RATE = 10


def test_cps_limit_admits_its_rate_and_spares_the_other_trunk(
    start_limits_path: StartLimitsPath, tmp_path: Path
) -> None:
    """Trunk A (20 calls/s, burst 20) offered 60 calls/s for 6 s; trunk B at 10 calls/s.

    The bucket starts full: A's first `BURST` calls pass at once, then it
    refills at `CPS` a second. So over the offered stream of T seconds
    (first INVITE to last) A admits about BURST + CPS * T calls; exactly how
    many is bounded by the time each INVITE went out and its answer came
    (`bucket_bounds`), which is what sipguard's pace and the machine's
    allowed, not what the nominal rates promise. B has the same limits but
    is offered half its rate: its calls must all pass, which they would not
    if A's flood drew on B's bucket.
    """
    limits = {"cps": CPS, "burst": BURST}
    path = start_limits_path(limits=limits, other_limits=limits, uas="uas_check_identity.xml")
    offered = OFFERED_RATE * OFFERED_SECONDS
    other_calls = OTHER_RATE * OFFERED_SECONDS
    numbers_a = [f"+8621317712{i % 50:02d}" for i in range(offered)]
    numbers_b = [f"+8621317713{i % 50:02d}" for i in range(other_calls)]
    injection_a = write_limited_callers(tmp_path / "a.csv", callers(numbers_a, "cps_limit"))
    injection_b = write_limited_callers(tmp_path / "b.csv", callers(numbers_b, "cps_limit"))

    # both streams at the same time, each from its trunk's source port
    client_a = path.start(
        "uac_limited.xml", calls=offered, rate=OFFERED_RATE, injection=injection_a, timeout=40
    )
    client_b = path.start(
        "uac_limited.xml",
        calls=other_calls,
        rate=OTHER_RATE,
        injection=injection_b,
        local_port=path.other_trunk_port,
        timeout=40,
    )
    run_a, run_b = client_a.wait(), client_b.wait()

    # every call of A ended as its scenario allows: answered, or refused
    # with a 503 whose Reason names cps_limit (the scenario checks it)
    assert_clean_run(run_a, path, offered, run_b)
    outcomes_a = call_outcomes(run_a)
    answered = [o for o in outcomes_a if o.outcome == "answered"]
    refused = [o for o in outcomes_a if o.outcome == "refused"]
    admitted = len(answered)
    assert admitted + len(refused) == offered, path.explain(run_a, run_b)
    assert run_a.stats.received("200") == 2 * admitted, path.explain(run_a, run_b)
    assert run_a.stats.received("503") == len(refused), path.explain(run_a, run_b)

    # the burst: the bucket starts full, so the first BURST calls all pass
    assert shape(outcomes_a[:BURST]) == [("answered", "")] * BURST, path.explain(run_a, run_b)

    # the rate after the burst, over the offered stream (first to last INVITE)
    duration = outcomes_a[-1].sent_at - outcomes_a[0].sent_at
    least, most = bucket_bounds(
        cps_decisions(outcomes_a), burst=BURST, rate=CPS, slack=SIPP_CLOCK_SLACK
    )
    assert least <= admitted <= most, (
        f"admitted {admitted} of {offered} offered over {duration:.3f} s, expected "
        f"{least} to {most} (about {BURST} + {CPS}/s)\n{path.explain(run_a, run_b)}"
    )

    # every refusal: 503, cps_limit, with Retry-After
    assert refused, path.explain(run_a, run_b)
    assert {(o.status, o.rule) for o in refused} == {(503, "cps_limit")}, path.explain(run_a, run_b)
    assert_retry_after([run_a], path)

    # B: every call answered, none failed
    assert_clean_run(run_b, path, other_calls, run_a)
    assert shape(call_outcomes(run_b)) == [("answered", "")] * other_calls, path.explain(
        run_a, run_b
    )
    assert run_b.stats.received("503") == 0, path.explain(run_a, run_b)

    # the callee saw exactly A's admitted calls and all of B's
    uas = path.uas.stop()
    assert uas.stats.received("INVITE") == admitted + other_calls, path.explain(run_a, run_b)
    assert uas.stats.successful_calls == admitted + other_calls, path.explain(run_a, run_b)
    assert uas.stats.failed_calls == 0, path.explain(run_a, run_b)

    # sipguard's decision log agrees, call for call
    guard = path.sipguard
    assert log_count(guard, f"allow   trunk={TRUNK_A} ") == admitted, path.explain(run_a, run_b)
    assert log_count(guard, f"reject  503 cps_limit trunk={TRUNK_A} ") == len(refused), (
        path.explain(run_a, run_b)
    )
    assert log_count(guard, f"allow   trunk={TRUNK_B} ") == other_calls, path.explain(run_a, run_b)
    assert log_count(guard, f" trunk={TRUNK_B} source=") == 0, path.explain(run_a, run_b)
    assert_nothing_left(path, run_a, run_b)


# --------------------------------------------------------------------------
# per_caller


def test_per_caller_refuses_a_repeating_caller_only(
    start_limits_path: StartLimitsPath, tmp_path: Path
) -> None:
    """Caller X calls 8 times, caller Y 5 times, interleaved, within a minute.

    With ``per_caller: {calls: 5, window: 1m}`` X's 6th, 7th and 8th calls
    are refused 403 ``high_frequency_caller``; Y, at the limit but not past
    it, gets every call through.
    """
    path = start_limits_path(
        limits={"per_caller": {"calls": 5, "window": "1m"}}, uas="uas_check_identity.xml"
    )
    x, y = "+862131771201", "+862131771202"
    order = [x, y] * 5 + [x] * 3
    injection = write_limited_callers(
        tmp_path / "callers.csv", callers(order, "high_frequency_caller")
    )

    run = path.run("uac_limited.xml", calls=len(order), rate=10, injection=injection)

    assert_clean_run(run, path, len(order))
    outcomes = call_outcomes(run)
    assert [o.caller for o in outcomes] == order, path.explain(run)
    x_calls = [o for o in outcomes if o.caller == x]
    y_calls = [o for o in outcomes if o.caller == y]
    assert shape(x_calls) == [("answered", "")] * 5 + [("refused", "high_frequency_caller")] * 3, (
        path.explain(run)
    )
    assert all(o.status == 403 for o in x_calls[5:]), path.explain(run)
    assert shape(y_calls) == [("answered", "")] * 5, path.explain(run)
    assert run.stats.received("403") == 3, path.explain(run)

    uas = path.uas.stop()
    assert uas.stats.received("INVITE") == 10, path.explain(run)
    assert uas.stats.successful_calls == 10, path.explain(run)
    assert log_count(path.sipguard, f"reject  403 high_frequency_caller trunk={TRUNK_A} ") == 3, (
        path.explain(run)
    )
    assert log_count(path.sipguard, f"allow   trunk={TRUNK_A} caller={x} ") == 5, path.explain(run)
    assert log_count(path.sipguard, f"allow   trunk={TRUNK_A} caller={y} ") == 5, path.explain(run)
    assert_nothing_left(path, run)


# --------------------------------------------------------------------------
# one_ring


def test_one_ring_caller_is_blocked(start_limits_path: StartLimitsPath, tmp_path: Path) -> None:
    """A caller that hangs up right after the 180 is blocked past `calls` one-ring calls.

    With ``one_ring: {max_ring: 2s, calls: 3, window: 1m, block_for: 1h}``
    caller X's first 4 calls ring and are cancelled (487); the 4th is one
    too many, so X is blocked: its next calls, one-ring or not, get 403
    ``one_ring`` and never reach the callee. Caller Y's 3 one-ring calls
    (at the limit, not past it) are cancelled normally, and Y's ordinary
    calls are answered afterwards.
    """
    path = start_limits_path(
        limits={"one_ring": {"max_ring": "2s", "calls": 3, "window": "1m", "block_for": "1h"}}
    )
    x, y = "+862131771201", "+862131771202"
    x_injection = write_limited_callers(tmp_path / "x.csv", callers([x] * 8, "one_ring"))
    y_injection = write_limited_callers(tmp_path / "y.csv", callers([y] * 3, "one_ring"))

    x_run = path.run("uac_one_ring.xml", calls=8, rate=5, injection=x_injection)
    y_run = path.run("uac_one_ring.xml", calls=3, rate=5, injection=y_injection)
    y_answered = path.run("uac_limited.xml", calls=2, rate=5, injection=y_injection)
    x_later = path.run("uac_limited.xml", calls=1, rate=5, injection=x_injection)
    runs = (x_run, y_run, y_answered, x_later)

    assert_clean_run(x_run, path, 8, *runs)
    assert shape(call_outcomes(x_run)) == [("cancelled", "")] * 4 + [("refused", "one_ring")] * 4, (
        path.explain(*runs)
    )
    assert x_run.stats.received("487") == 4, path.explain(*runs)
    assert x_run.stats.received("403") == 4, path.explain(*runs)
    assert_clean_run(y_run, path, 3, *runs)
    assert shape(call_outcomes(y_run)) == [("cancelled", "")] * 3, path.explain(*runs)
    assert_clean_run(y_answered, path, 2, *runs)
    assert shape(call_outcomes(y_answered)) == [("answered", "")] * 2, path.explain(*runs)
    assert_clean_run(x_later, path, 1, *runs)
    assert shape(call_outcomes(x_later)) == [("refused", "one_ring")], path.explain(*runs)
    assert call_outcomes(x_later)[0].status == 403, path.explain(*runs)

    uas = path.uas.stop()
    # X's 4 and Y's 3 cancelled calls, and Y's 2 answered ones
    assert uas.stats.received("INVITE") == 9, path.explain(*runs)
    assert uas.stats.received("CANCEL") == 7, path.explain(*runs)
    assert uas.stats.sent("487") == 7, path.explain(*runs)
    assert uas.stats.successful_calls == 9, path.explain(*runs)
    assert uas.stats.failed_calls == 0, path.explain(*runs)
    assert log_count(path.sipguard, f"reject  403 one_ring trunk={TRUNK_A} ") == 5, path.explain(
        *runs
    )
    assert_nothing_left(path, *runs)


# --------------------------------------------------------------------------
# concurrent: every kind of ending gives the slot back


def test_concurrency_returns_to_zero_after_every_ending(
    start_limits_path: StartLimitsPath, tmp_path: Path
) -> None:
    """With ``concurrent: 5``: calls ended by every side and every means, in turn.

    After each kind of ending, `probe_capacity` fills all 5 slots at once
    and checks that a 6th call is refused 503 ``concurrent_limit``: a slot
    leaked by any earlier call would refuse one of the 5. The probes' own
    calls are the BYE-ended ones. At the end sipguard stops with nothing
    left: no call, no dialog, no rate slot.
    """
    concurrent = 5
    path = start_limits_path(limits={"concurrent": concurrent})
    numbers = [f"+8621317712{i:02d}" for i in range(10)]
    injection = write_limited_callers(
        tmp_path / "callers.csv", callers(numbers, "concurrent_limit")
    )
    calls = 10
    runs: list[SippRun] = []

    # caller's BYE (and the limit itself): 5 answered at once, the 6th refused
    runs.append(probe_capacity(path, injection, concurrent))
    runs.append(probe_capacity(path, injection, concurrent))

    # callee's BYE
    path.replace_uas("uas_hangup.xml")
    hangup = path.run("uac_callee_hangup.xml", calls=calls, rate=5, injection=injection)
    runs.append(hangup)
    assert hangup.returncode == 0, path.explain(*runs)
    assert hangup.stats.successful_calls == calls, path.explain(*runs)
    assert hangup.stats.received("BYE") == calls, path.explain(*runs)
    hangup_uas = path.replace_uas("uas.xml")
    assert hangup_uas.stats.sent("BYE") == calls, path.explain(*runs)
    assert hangup_uas.stats.successful_calls == calls, path.explain(*runs)
    runs.append(probe_capacity(path, injection, concurrent))

    # caller's CANCEL
    cancel = path.run("uac_cancel.xml", calls=calls, rate=10, injection=injection)
    runs.append(cancel)
    assert cancel.returncode == 0, path.explain(*runs)
    assert cancel.stats.successful_calls == calls, path.explain(*runs)
    assert cancel.stats.received("487") == calls, path.explain(*runs)
    runs.append(probe_capacity(path, injection, concurrent))

    # a failure response from the callee: 486 Busy Here after ringing
    path.replace_uas("uas_busy.xml")
    busy = path.run("uac_busy.xml", calls=calls, rate=10, injection=injection)
    runs.append(busy)
    assert busy.returncode == 0, path.explain(*runs)
    assert busy.stats.successful_calls == calls, path.explain(*runs)
    assert busy.stats.received("486") == calls, path.explain(*runs)
    busy_uas = path.replace_uas("uas.xml")
    assert busy_uas.stats.sent("486") == calls, path.explain(*runs)
    # sipguard ACKed every 486 itself (RFC 3261 §17.1.1.3)
    assert busy_uas.stats.received("ACK") == calls, path.explain(*runs)
    runs.append(probe_capacity(path, injection, concurrent))

    # every limit refusal was logged as one; the rest was allowed
    probes = 5
    assert log_count(path.sipguard, f"reject  503 concurrent_limit trunk={TRUNK_A} ") == probes, (
        path.explain(*runs)
    )
    assert log_count(path.sipguard, f"allow   trunk={TRUNK_A} ") == (
        probes * concurrent + 3 * calls
    ), path.explain(*runs)
    assert_nothing_left(path, *runs)
    # RFC 3261 §20.33, docs/rules.md: concurrent_limit answers 503 with Retry-After
    assert_retry_after([run for run in runs if run.scenario.name == "uac_limited.xml"], path)


def test_concurrency_returns_to_zero_after_callee_never_answers(
    start_limits_path: StartLimitsPath, tmp_path: Path
) -> None:
    """With ``concurrent: 2``: two calls to a callee that never answers.

    They hold both slots (a third call meanwhile is refused 503
    ``concurrent_limit``) until sipguard gives up on the callee after Timer
    B and answers each caller 408; then both slots are free again, so two
    normal calls are answered at once (and a third refused), and sipguard
    stops with nothing left.
    """
    concurrent = 2
    path = start_limits_path(
        limits={"concurrent": concurrent}, uas="uas_silent.xml", trunk_port_count=2
    )
    numbers = [f"+8621317712{i:02d}" for i in range(10)]
    injection = write_limited_callers(
        tmp_path / "callers.csv", callers(numbers, "concurrent_limit")
    )

    started = time.monotonic()
    silent = path.start(
        "uac_no_answer.xml", calls=concurrent, rate=100, injection=injection, timeout=40
    )
    # meanwhile, both slots are taken (once sipguard let both calls through):
    # a call from the trunk's other port is refused
    assert wait_for_log(
        path.sipguard, f"allow   trunk={TRUNK_A} ", count=concurrent, timeout=TIMER_B / 2
    ), path.explain()
    third = path.run(
        "uac_limited.xml",
        calls=1,
        rate=1,
        injection=injection,
        local_port=path.trunk_ports[1],
        timeout=40,
    )
    assert time.monotonic() - started < TIMER_B / 2, path.explain(third)
    unanswered = silent.wait()
    runs = [third, unanswered]

    assert_clean_run(third, path, 1, *runs)
    assert shape(call_outcomes(third)) == [("refused", "concurrent_limit")], path.explain(*runs)
    assert_clean_run(unanswered, path, concurrent, *runs)
    outcomes = call_outcomes(unanswered)
    assert [(o.outcome, o.status) for o in outcomes] == [("timed_out", 408)] * concurrent, (
        path.explain(*runs)
    )
    for outcome in outcomes:
        assert outcome.ended_at is not None, path.explain(*runs)
        waited = outcome.ended_at - outcome.sent_at
        assert TIMER_B - 1 <= waited <= TIMER_B + 3, (
            f"408 after {waited:.1f} s\n{path.explain(*runs)}"
        )

    # the silent callee saw both INVITEs and never a CANCEL (no provisional
    # response came, RFC 3261 §9.1); its calls never end, so stop it at once
    silent_uas = path.replace_uas("uas.xml", stop_timeout=0.5)
    assert silent_uas.stats.received("INVITE") == concurrent, path.explain(*runs)
    assert silent_uas.stats.received("CANCEL") == 0, path.explain(*runs)

    # both slots are free again: 2 calls answered at once, a 3rd refused
    runs.append(probe_capacity(path, injection, concurrent))

    assert log_count(path.sipguard, f"reject  503 concurrent_limit trunk={TRUNK_A} ") == 2, (
        path.explain(*runs)
    )
    assert_nothing_left(path, *runs)
    assert_retry_after([third, runs[-1]], path)
