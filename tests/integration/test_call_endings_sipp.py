"""Calls that end badly give their live-call slot back: SIPp -> ``sipguard run`` -> SIPp.

sipguard runs the two-trunk limits rule file (`limits_rules_text` in
sipp.py) with ``concurrent: 2`` on ``trunk-a`` (two source ports), at
``--log-level debug`` so that it logs how each call ended (``end ...
status=... by=caller|callee|timeout ... call-id=...``). Each test ends one
call in a way that test_limits_sipp.py does not cover, then shows:

- the call ended exactly once, for the expected reason, and each side got
  what RFC 3261 prescribes;
- its slot is free again: a probe of 3 calls at once (`probe_free_slots`)
  gets exactly 2 answered and the 3rd refused 503 ``concurrent_limit``;
- sipguard stops cleanly with ``active_calls=0 dialogs=0 rate_slots=0``.

The endings:

- lost ACK (UDP): the caller takes the 200 and never ACKs it. sipguard
  retransmits the 200 and, after Timer L (64 * T1 = 32 s, RFC 3261
  §13.3.1.4, RFC 6026), ACKs the callee's 200 and sends BYE on both legs;
- callee crash after answer (UDP): the callee's SIPp is killed (SIGKILL)
  after the ACK; the caller's BYE is answered 200 at once and ends the
  call, freeing the slot, while the BYE relayed toward the dead callee
  times out on its own (Timer F, 32 s);
- caller transport loss (TCP): the caller's SIPp is killed during the call,
  which closes its TCP connection; the callee's BYE cannot be delivered
  (sipguard cannot reconnect to the caller), so sipguard answers it 200 and
  ends the call.

The lost-ACK test waits for its 32 s timer once.
"""

from __future__ import annotations

import contextlib
import re
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.sipp import (
    HOST,
    OUTCOME_LOG,
    TRUNK_A,
    LimitedCaller,
    LimitsPath,
    Sipguard,
    SippClient,
    SippRun,
    call_outcomes,
    free_ports,
    limits_rules_text,
    log_count,
    options_ping,
    shutdown_summary,
    sipp_available,
    start_sipguard,
    start_uas,
    write_limited_callers,
)

pytestmark = [pytest.mark.integration, pytest.mark.sipp]

StartEndingsPath = Callable[..., LimitsPath]

CONCURRENT = 2
# RFC 3261 Table 4: T1 = 500 ms. Timer L (RFC 6026; RFC 3261 §13.3.1.4:
# how long a UAS retransmits its 2xx without an ACK) is 64 * T1.
T1 = 0.5
TIMER_L = 64 * T1
# SIPp stops retransmitting a message (and fails the call) after 9
# retransmissions, i.e. at 31.5 s with T2 = 4 s: just before sipguard's 32 s
# timer. -max_retrans and -max_non_invite_retrans both bound it, so a SIPp
# process that must outlast it gets both raised.
KEEP_RETRANSMITTING = ("-max_retrans", "20", "-max_non_invite_retrans", "20")
# Timeouts of the waits on sipguard or SIPp for things that take about a
# second (the call set-up rings for 1 s in uas.xml).
STEP_TIMEOUT = 15.0


@pytest.fixture
def start_endings_path(tmp_path: Path) -> Iterator[StartEndingsPath]:
    """A factory for call paths with the two-trunk limits rule file.

    ``start_endings_path(transport=..., uas=..., uas_args=...)``: sipguard
    with ``concurrent: 2`` on ``trunk-a`` (two source ports), routed over
    `transport` to the UAS scenario `uas` (default ``uas.xml``) started with
    `uas_args`; sipguard logs at debug level. Everything is stopped at
    teardown.
    """
    if not sipp_available():
        pytest.fail("SIPp is not on PATH: install it (Debian package sip-tester; `make setup`)")
    stack = contextlib.ExitStack()

    def start(
        *, transport: str = "udp", uas: str = "uas.xml", uas_args: Sequence[str] = ()
    ) -> LimitsPath:
        workdir = tmp_path / f"endings-{transport}"
        listen_port, other_port, uas_port, *trunk_ports = free_ports(5)
        server = start_uas(
            uas,
            port=uas_port,
            transport=transport,
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
                    limits={"concurrent": CONCURRENT},
                    transport=transport,
                ),
                encoding="utf-8",
            )
            guard = start_sipguard(
                rules,
                port=listen_port,
                workdir=workdir / "sipguard",
                extra_args=("--log-level", "debug"),
            )
        except BaseException:
            server.stop(timeout=2.0)
            raise
        path = LimitsPath(
            transport,
            guard,
            server,
            trunk_ports[0],
            workdir,
            trunk_ports=tuple(trunk_ports),
            other_trunk_port=other_port,
            uas_port=uas_port,
        )
        stack.callback(path.close)
        return path

    with stack:
        yield start


# --------------------------------------------------------------------------
# Helpers


def write_callers(path: Path, count: int) -> Path:
    """An injection file of `count` lines for the trunk (field 3 for uac_limited.xml)."""
    return write_limited_callers(
        path,
        [
            LimitedCaller(
                caller=f"+8621317712{i:02d}",
                callee=f"+86139001390{i % 10:02d}",
                rule="concurrent_limit",
            )
            for i in range(count)
        ],
    )


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One line of the event log of uac_no_ack.xml or uac_hold_then_bye.xml."""

    at: float  # seconds on SIPp's clock
    call_number: int
    caller: str
    name: str  # answered, bye_sent, bye_answered, bye_received


def call_events(client: SippClient | SippRun) -> list[CallEvent]:
    """The events a caller logged so far (complete lines only), in order."""
    try:
        text = (client.workdir / OUTCOME_LOG).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    events = []
    for line in text.splitlines(keepends=True):
        fields = line.strip().split(";")
        if not line.endswith("\n") or len(fields) != 4:
            continue
        at, number, caller, name = fields
        if at.isdigit() and number.isdigit():
            events.append(CallEvent(int(at) / 1000, int(number), caller, name))
    return events


def event_times(client: SippClient | SippRun) -> dict[str, float]:
    """When each event of a one-call run happened, seconds on SIPp's clock."""
    return {event.name: event.at for event in call_events(client)}


def wait_for_event(
    client: SippClient, name: str, path: LimitsPath, *, timeout: float = STEP_TIMEOUT
) -> CallEvent:
    """Wait until the caller logs event `name`; fail if it exits or times out first."""
    deadline = time.monotonic() + timeout
    while True:
        for event in call_events(client):
            if event.name == name:
                return event
        if not client.running() or time.monotonic() >= deadline:
            client.stop()
            pytest.fail(
                f"{client.scenario.name} logged no {name!r} event within {timeout:.0f} s\n"
                f"{path.explain(client.wait())}"
            )
        time.sleep(0.02)


def a_call_id(client: SippClient, call_number: int = 1) -> str:
    """The Call-ID SIPp gives a call (its default ``-cid_str %u-%p@%s``)."""
    return f"{call_number}-{client.process.pid}@{HOST}"


_ENDING = re.compile(
    r"\bend +trunk=(?P<trunk>\S+) status=(?P<status>\d+) by=(?P<by>\w+) "
    r"duration=\S+(?: talk=\S+)? call-id=(?P<call_id>\S+)"
)


def endings_of(guard: Sipguard, call_id: str) -> list[tuple[str, int, str]]:
    """(trunk, status, ended by) of every ``end`` line sipguard logged for `call_id`."""
    return [
        (match["trunk"], int(match["status"]), match["by"])
        for match in _ENDING.finditer(guard.stderr)
        if match["call_id"] == call_id
    ]


def wait_for_ending(
    guard: Sipguard, call_id: str, *, timeout: float = STEP_TIMEOUT
) -> list[tuple[str, int, str]]:
    """Wait until sipguard logs the end of call `call_id`; its ``end`` lines."""
    deadline = time.monotonic() + timeout
    while not (endings := endings_of(guard, call_id)):
        if time.monotonic() >= deadline or guard.process.poll() is not None:
            break
        time.sleep(0.02)
    return endings


def received_retransmissions(run: SippRun, name: str) -> int:
    """Retransmissions of `name` that the scenario's receive commands absorbed."""
    return sum(
        m.retransmissions for m in run.stats.messages if m.kind == "received" and m.name == name
    )


def probe_free_slots(
    path: LimitsPath, injection: Path, free: int, *, local_port: int | None = None
) -> SippRun:
    """Check that exactly `free` of trunk-a's live-call slots are free.

    `free` + 1 calls of uac_limited.xml within a few milliseconds against
    uas.xml, which rings each for 1 s, so they are all up at once: exactly
    `free` must be answered and the last refused 503 ``concurrent_limit``.
    """
    calls = free + 1
    run = path.run(
        "uac_limited.xml",
        calls=calls,
        rate=500,
        injection=injection,
        local_port=local_port,
        timeout=20,
    )
    assert run.returncode == 0, path.explain(run)
    assert run.stats.successful_calls == calls, path.explain(run)
    assert run.stats.failed_calls == 0, path.explain(run)
    outcomes = call_outcomes(run)
    assert [o.call_number for o in outcomes] == list(range(1, calls + 1)), path.explain(run)
    shape = [(o.outcome, o.rule) for o in outcomes]
    assert sorted(shape) == sorted([("answered", "")] * free + [("refused", "concurrent_limit")]), (
        f"{free} free slot(s) expected: {shape}\n{path.explain(run)}"
    )
    assert shape[-1] == ("refused", "concurrent_limit"), path.explain(run)
    assert [o.status for o in outcomes if o.outcome == "refused"] == [503], path.explain(run)
    return run


def assert_nothing_left(path: LimitsPath, *runs: SippRun) -> dict[str, int]:
    """sipguard exits 0 on SIGTERM with no call, dialog or rate slot left, no internal error."""
    guard = path.sipguard
    assert guard.process.poll() is None, f"sipguard is not running\n{path.explain(*runs)}"
    assert guard.stop() == 0, path.explain(*runs)
    summary = shutdown_summary(guard)
    assert summary is not None, path.explain(*runs)
    for counter in ("active_calls", "dialogs", "rate_slots"):
        assert summary[counter] == 0, f"shutdown counters {summary}\n{path.explain(*runs)}"
    assert log_count(guard, "internal error") == 0, path.explain(*runs)
    assert "Traceback" not in guard.stderr, path.explain(*runs)
    return summary


# --------------------------------------------------------------------------
# Lost ACK


def test_lost_ack_hangs_up_both_legs_and_frees_the_slot(
    start_endings_path: StartEndingsPath, tmp_path: Path
) -> None:
    """The caller never ACKs the 200: after Timer L sipguard BYEs both legs.

    While sipguard waits for the ACK the call holds one of the two slots (a
    probe from the trunk's other port gets one call through, not two).
    sipguard retransmits its 200 to the caller meanwhile; 32 s after the
    200 it ACKs the callee's 200 (RFC 3261 §13.2.2.4: a 2xx is ACKed before
    the dialog is torn down) and sends BYE to both; the callee answers its
    BYE 200, the caller answers its own. Both slots are free afterwards.

    The callee (uas.xml) retransmits its own 200 as long as nobody ACKs it;
    SIPp would give up on it at 31.5 s, just before Timer L, and abort the
    call, so it is told to keep retransmitting.
    """
    path = start_endings_path(uas="uas.xml", uas_args=KEEP_RETRANSMITTING)
    injection = write_callers(tmp_path / "callers.csv", 10)

    no_ack = path.start("uac_no_ack.xml", calls=1, rate=1, injection=injection, timeout=60)
    call_id = a_call_id(no_ack)
    wait_for_event(no_ack, "answered", path)

    # the unacknowledged call holds its slot: one of two is left
    held = probe_free_slots(path, injection, CONCURRENT - 1, local_port=path.trunk_ports[1])
    assert no_ack.running(), path.explain(held, no_ack.wait())
    assert "bye_received" not in event_times(no_ack), path.explain(held)

    run = no_ack.wait()
    runs = [held, run]
    assert run.returncode == 0, path.explain(*runs)
    assert run.stats.successful_calls == 1, path.explain(*runs)
    assert run.stats.failed_calls == 0, path.explain(*runs)
    assert run.stats.unexpected == 0, path.explain(*runs)
    assert run.stats.received("BYE") == 1, path.explain(*runs)
    # sipguard retransmitted its 200 until it gave up: T1 doubling to T2,
    # at 0.5, 1.5, 3.5, 7.5 s and then every 4 s up to 31.5 s (10 times)
    assert received_retransmissions(run, "200") >= 8, path.explain(*runs)
    times = event_times(run)
    assert {"answered", "bye_received"} <= times.keys(), path.explain(*runs)
    waited = times["bye_received"] - times["answered"]
    assert TIMER_L - 1 <= waited <= TIMER_L + 3, (
        f"BYE {waited:.1f} s after the 200\n{path.explain(*runs)}"
    )
    assert wait_for_ending(path.sipguard, call_id) == [(TRUNK_A, 200, "timeout")], path.explain(
        *runs
    )

    # the callee: the lost-ACK call and the probe's answered call, each
    # ACKed and BYEd by sipguard and ended by the callee's 200 for the BYE
    callee = path.replace_uas("uas.xml")
    assert callee.stats.received("INVITE") == 2, path.explain(*runs)
    assert callee.stats.received("ACK") == 2, path.explain(*runs)
    assert callee.stats.received("BYE") == 2, path.explain(*runs)
    assert callee.stats.successful_calls == 2, path.explain(*runs)
    assert callee.stats.failed_calls == 0, path.explain(*runs)

    # both slots are free again, from the lost-ACK caller's own port too
    runs.append(probe_free_slots(path, injection, CONCURRENT))
    assert log_count(path.sipguard, f"reject  503 concurrent_limit trunk={TRUNK_A} ") == 2, (
        path.explain(*runs)
    )
    assert_nothing_left(path, *runs)


# --------------------------------------------------------------------------
# Callee crash after answer (UDP)


def test_callee_crash_after_answer_frees_the_slot_at_once(
    start_endings_path: StartEndingsPath, tmp_path: Path
) -> None:
    """The callee dies (SIGKILL) after the ACK; the caller hangs up 2 s later.

    sipguard answers the caller's BYE 200 at once and ends the call: the
    slot is free (a probe gets both calls through) although the BYE relayed
    toward the dead callee is never answered; sipguard retransmits that one
    until Timer F (32 s) on its own. Before this answer came at once, the
    caller waited those 32 s, and a caller giving up after its own 64*T1
    never saw it.

    The probe needs a callee: a new uas.xml on the dead callee's port, with
    ``-nd`` so that the retransmissions of the orphaned BYE reaching it stay
    unanswered (SIPp answers an unknown BYE 200 by default); it is stopped
    right after the probe.
    """
    path = start_endings_path(uas="uas.xml")
    injection = write_callers(tmp_path / "callers.csv", 10)

    caller = path.start(
        "uac_hold_then_bye.xml",
        calls=1,
        rate=1,
        injection=injection,
        timeout=60,
        extra_args=["-d", "2000"],
    )
    call_id = a_call_id(caller)
    wait_for_event(caller, "answered", path)
    path.uas.process.kill()
    crashed = path.uas.stop()
    assert crashed.returncode == -signal.SIGKILL, path.explain(crashed)

    # the caller's BYE is answered and ends the call at once
    run = caller.wait()
    assert wait_for_ending(path.sipguard, call_id) == [(TRUNK_A, 200, "caller")], path.explain(run)
    assert run.returncode == 0, path.explain(run)
    assert run.stats.successful_calls == 1, path.explain(run)
    assert run.stats.failed_calls == 0, path.explain(run)
    assert run.stats.unexpected == 0, path.explain(run)
    times = event_times(run)
    assert {"answered", "bye_sent", "bye_answered"} <= times.keys(), path.explain(run)
    waited = times["bye_answered"] - times["bye_sent"]
    assert waited < 2.0, f"200 for the BYE {waited:.1f} s after it\n{path.explain(run)}"

    path.replace_uas("uas.xml", extra_args=["-nd"])
    probe = probe_free_slots(path, injection, CONCURRENT, local_port=path.trunk_ports[1])
    probe_callee = path.uas.stop(timeout=1.0)
    assert probe_callee.stats.successful_calls == CONCURRENT, path.explain(probe)
    runs = [probe, run]
    # the call ended once, when the caller hung up
    assert endings_of(path.sipguard, call_id) == [(TRUNK_A, 200, "caller")], path.explain(*runs)
    assert_nothing_left(path, *runs)


# --------------------------------------------------------------------------
# Caller transport loss (TCP)


def test_caller_transport_loss_over_tcp_frees_the_slot(
    start_endings_path: StartEndingsPath, tmp_path: Path
) -> None:
    """The caller dies (SIGKILL) mid-call over TCP; the callee hangs up 3 s later.

    The caller's TCP connection closes with it. sipguard sends the callee's
    BYE over a new connection to the caller's host at its Contact's port
    (RFC 3261 §18.1.1; the connection's own source port may be ephemeral,
    where nothing listens), which is refused; so it answers the callee 200
    itself and ends the call. The slot is free, sipguard keeps answering
    OPTIONS, and it stops with nothing left.
    """
    path = start_endings_path(transport="tcp", uas="uas_hold_then_bye.xml", uas_args=["-d", "3000"])
    injection = write_callers(tmp_path / "callers.csv", 10)

    caller = path.start(
        "uac_hold_then_bye.xml",
        calls=1,
        rate=1,
        injection=injection,
        timeout=60,
        extra_args=["-d", "60000"],
    )
    call_id = a_call_id(caller)
    wait_for_event(caller, "answered", path)
    caller.process.kill()
    killed = caller.wait()
    assert killed.returncode == -signal.SIGKILL, path.explain(killed)
    # it died holding the call, before any BYE of its own
    assert "bye_sent" not in event_times(killed), path.explain(killed)

    assert wait_for_ending(path.sipguard, call_id) == [(TRUNK_A, 200, "callee")], path.explain(
        killed
    )
    # the BYE could not reach the caller any more
    assert log_count(path.sipguard, f"cannot connect to tcp:{HOST}:{path.trunk_port}:") == 1, (
        path.explain(killed)
    )
    # the callee's BYE was answered 200 (by sipguard) and its call ended well
    callee = path.replace_uas("uas.xml")
    assert callee.returncode == 0, path.explain(killed)
    assert callee.stats.sent("BYE") == 1, path.explain(killed)
    assert callee.stats.received("200") == 1, path.explain(killed)
    assert callee.stats.successful_calls == 1, path.explain(killed)
    assert callee.stats.failed_calls == 0, path.explain(killed)

    # sipguard is still up and answers a trunk's OPTIONS
    assert path.sipguard.process.poll() is None, path.explain(killed)
    assert options_ping(path.sipguard.port, source_port=path.trunk_ports[1]) == 200, path.explain(
        killed
    )
    # both slots are free
    probe = probe_free_slots(path, injection, CONCURRENT, local_port=path.trunk_ports[1])
    assert endings_of(path.sipguard, call_id) == [(TRUNK_A, 200, "callee")], path.explain(probe)
    assert_nothing_left(path, killed, probe)
