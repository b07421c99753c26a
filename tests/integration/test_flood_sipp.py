"""Floods and faults end to end: SIPp and raw UDP senders -> ``sipguard run`` -> next hop.

sipguard runs the two-trunk limits rule file (`limits_rules_text` in
sipp.py): ``trunk-a`` is the trunk under attack or behind a broken next
hop, ``trunk-b`` a neighbour on another source port.

- flood: trunk-a, limited to 10 calls/s, is offered ten times that for a
  minute while trunk-b carries ordinary calls through the same process.
  trunk-a gets exactly its rate, trunk-b every call; sipguard answers a
  health check within 0.5 s throughout, its memory stays bounded, and once
  the flood stops trunk-a is served again and nothing is left behind;
- never-ACKed INVITEs and CANCELs for transactions that do not exist: every
  CANCEL is answered 481 without touching a call, every unacknowledged call
  is hung up after Timer L, and once the linger timers have run sipguard
  holds no call, dialog, transaction or rate slot;
- a next hop that does not exist, and one that answers every INVITE with
  bytes that are not SIP: the caller gets 408 after Timer B and nothing
  leaks.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest

from tests.integration.buckets import bucket_bounds
from tests.integration.sipp import (
    HOST,
    OUTCOME_LOG,
    SIPP_CLOCK_SLACK,
    TRUNK_A,
    TRUNK_B,
    CallOutcome,
    LimitedCaller,
    LimitsPath,
    PortTaken,
    Sipguard,
    SippClient,
    SippRun,
    call_outcomes,
    cps_decisions,
    limits_rules_text,
    log_count,
    options_ping,
    shutdown_summary,
    sipp_available,
    start_sipguard,
    start_uac,
    start_uas,
    wait_for_log,
    wait_until_idle,
    with_fresh_ports,
    write_limited_callers,
)

pytestmark = [pytest.mark.integration, pytest.mark.sipp]

# RFC 3261 timers over UDP, T1 = 500 ms: Timer B (INVITE client) and Timer L
# (RFC 6026: the 2xx waits for its ACK) are 64 * T1; Timers I and K (linger
# after the ACK of a failure, after a non-INVITE final response) are T4.
TIMER_B = 32.0
TIMER_L = 32.0
T4 = 5.0
# The callee retransmits its 200 until the ACK; SIPp would give up on it at
# 31.5 s, just before sipguard's Timer L, unless told to keep going.
KEEP_RETRANSMITTING = ("-max_retrans", "20", "-max_non_invite_retrans", "20")
# Signs of a defect that sipguard survived (the driver's catch-all).
DEFECT_MARKERS = ("internal error", "Traceback")


# --------------------------------------------------------------------------
# Fixtures


class StartLimitsPath(Protocol):
    def __call__(
        self,
        *,
        limits: Mapping[str, object] | None = None,
        other_limits: Mapping[str, object] | None = None,
        uas: str = ...,
        uas_args: Sequence[str] = ...,
        trunk_port_count: int = ...,
        metrics: bool = ...,
    ) -> LimitsPath: ...


@pytest.fixture
def start_limits_path(tmp_path: Path) -> Iterator[StartLimitsPath]:
    """Call paths with the two-trunk limits rule file and a SIPp UAS behind it.

    ``limits`` and ``other_limits`` are the ``limits:`` of ``trunk-a`` and
    ``trunk-b`` (None: none), ``uas`` the UAS scenario, ``uas_args`` more
    options for it, ``trunk_port_count`` how many source ports ``trunk-a``
    has, ``metrics`` whether sipguard serves its metrics (on the path's
    ``metrics_port``). Everything is stopped at teardown.
    """
    if not sipp_available():
        pytest.fail("SIPp is not on PATH: install it (Debian package sip-tester; `make setup`)")
    stack = contextlib.ExitStack()

    def start(
        *,
        limits: Mapping[str, object] | None = None,
        other_limits: Mapping[str, object] | None = None,
        uas: str = "uas_check_identity.xml",
        uas_args: Sequence[str] = (),
        trunk_port_count: int = 2,
        metrics: bool = False,
    ) -> LimitsPath:
        workdir = tmp_path / "flood"

        def start_on(ports: list[int]) -> LimitsPath:
            metrics_port = ports.pop() if metrics else None
            listen_port, other_port, uas_port, *trunk_ports = ports
            server = start_uas(
                uas,
                port=uas_port,
                transport="udp",
                workdir=workdir / f"uas-1-{Path(uas).stem}",
                extra_args=uas_args,
            )
            try:
                rules = write_rule_file(
                    workdir,
                    listen_port=listen_port,
                    trunk_ports=trunk_ports,
                    other_trunk_port=other_port,
                    route_port=uas_port,
                    limits=limits,
                    other_limits=other_limits,
                    metrics_port=metrics_port,
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
                metrics_port=metrics_port,
            )

        path = with_fresh_ports(3 + trunk_port_count + metrics, start_on)
        stack.callback(path.close)
        return path

    with stack:
        yield start


def write_rule_file(
    workdir: Path,
    *,
    listen_port: int,
    trunk_ports: Sequence[int],
    other_trunk_port: int,
    route_port: int,
    limits: Mapping[str, object] | None = None,
    other_limits: Mapping[str, object] | None = None,
    metrics_port: int | None = None,
) -> Path:
    """The two-trunk limits rule file, both trunks routed to `route_port` over UDP."""
    workdir.mkdir(parents=True, exist_ok=True)
    rules = workdir / "rules.yaml"
    rules.write_text(
        limits_rules_text(
            listen_port=listen_port,
            trunk_ports=trunk_ports,
            other_trunk_port=other_trunk_port,
            uas_port=route_port,
            limits=limits,
            other_limits=other_limits,
            metrics_port=metrics_port,
        ),
        encoding="utf-8",
    )
    return rules


# --------------------------------------------------------------------------
# Helpers

# A failing assertion's message, built only when it fails (it may stop the UAS
# to read its statistics).
Explain = Callable[[], str]


def callers(count: int, rule: str, *, prefix: str = "+8621317712") -> list[LimitedCaller]:
    """`count` injection lines: 50 callers and 10 callees in rotation."""
    return [
        LimitedCaller(caller=f"{prefix}{i % 50:02d}", callee=f"+86139001390{i % 10:02d}", rule=rule)
        for i in range(count)
    ]


def shape(outcomes: Sequence[CallOutcome]) -> list[tuple[str, str]]:
    """Each call as (outcome, rule), in call order."""
    return [(o.outcome, o.rule) for o in outcomes]


def assert_clean_run(run: SippRun, calls: int, explain: Explain) -> None:
    """Every call of `run` ended the way its scenario allows, and was logged once."""
    assert run.returncode == 0, explain()
    assert run.stats.created_calls == calls, explain()
    assert run.stats.successful_calls == calls, explain()
    assert run.stats.failed_calls == 0, explain()
    assert run.stats.unexpected == 0, explain()
    numbers = [o.call_number for o in call_outcomes(run)]
    assert numbers == list(range(1, calls + 1)), explain()


def assert_no_defect(guard: Sipguard) -> None:
    """sipguard logged no defect it survived (the driver's catch-all)."""
    for marker in DEFECT_MARKERS:
        assert log_count(guard, marker) == 0, guard.describe()


# How long sipguard may take, after a test's last message, to run every timer
# still due: Timers K and I (T4) of the last transactions, and a generous
# margin for a busy machine; `wait_until_idle` returns as soon as it is done.
SETTLE_TIMEOUT = T4 + 30.0


def settle(metrics_port: int | None, explain: Explain) -> None:
    """Wait until sipguard holds no transaction and no call (its metrics say so)."""
    assert metrics_port is not None
    samples = wait_until_idle(metrics_port, timeout=SETTLE_TIMEOUT)
    busy = {
        name: value
        for (name, _), value in samples.items()
        if name in ("sipguard_transactions", "sipguard_live_calls") and value
    }
    assert not busy, f"still busy {SETTLE_TIMEOUT:.0f} s after the last call: {busy}\n{explain()}"


def stop_and_count(guard: Sipguard, explain: Explain) -> dict[str, int]:
    """SIGTERM sipguard; it must exit 0 and log its shutdown counters."""
    assert guard.stop() == 0, explain()
    summary = shutdown_summary(guard)
    assert summary is not None, explain()
    return summary


def vm_kib(pid: int, name: str) -> int | None:
    """A ``/proc/PID/status`` memory field (``VmRSS``, ``VmHWM``) in KiB."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(f"{name}:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class RssSampler:
    """Samples a process's resident set size (``VmRSS``) every `interval` seconds.

    The samples keep to a fixed schedule from the start (a late one is
    taken at once, not pushed back), so a run of T seconds holds one
    sample for each interval begun, however busy the machine.
    """

    def __init__(self, pid: int, *, interval: float = 1.0) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[int] = []  # KiB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        due = time.monotonic()
        while True:
            value = vm_kib(self.pid, "VmRSS")
            if value is not None:
                self.samples.append(value)
            due += self.interval
            if self._stop.wait(max(0.0, due - time.monotonic())):
                return

    @property
    def peak_kib(self) -> int:
        return max(self.samples, default=0)


@dataclass(frozen=True, slots=True)
class Probe:
    """One OPTIONS health check: when (monotonic), its answer, its latency."""

    at: float
    status: int | None
    latency: float


def probe(port: int, source_port: int, *, timeout: float) -> Probe:
    started = time.monotonic()
    status = options_ping(port, source_port=source_port, timeout=timeout)
    return Probe(started, status, time.monotonic() - started)


def cancel_request(*, target_port: int, local_port: int, call_id: str, callee: str) -> bytes:
    """A CANCEL for an INVITE transaction nobody sent: a fresh branch and From tag."""
    branch = f"z9hG4bK-{secrets.token_hex(8)}"
    return (
        f"CANCEL sip:{callee}@{HOST}:{target_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{local_port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:+862131771299@{HOST}:{local_port}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:{callee}@{HOST}:{target_port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 CANCEL\r\n"
        "Content-Length: 0\r\n"
        "\r\n"
    ).encode("ascii")


# How long the last CANCELs' answers may take, once every resend went out.
CANCEL_TIMEOUT = 10.0
_STATUS_LINE = re.compile(rb"^SIP/2\.0 (\d{3}) ")
_CALL_ID = re.compile(rb"^(?:Call-ID|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


def send_cancels(
    *, target_port: int, local_port: int, call_ids: Sequence[str], rate: float
) -> dict[str, list[int]]:
    """Send one CANCEL per Call-ID at `rate` a second; the statuses each got back.

    Like a UAC's Timer E, a CANCEL still unanswered 0.5 s after the last
    one went out is sent again (loopback UDP may drop a datagram when a
    receive buffer is full), up to three times; then the answers still due
    get `CANCEL_TIMEOUT` to come.
    """
    answers: dict[str, list[int]] = {call_id: [] for call_id in call_ids}
    requests = {
        call_id: cancel_request(
            target_port=target_port,
            local_port=local_port,
            call_id=call_id,
            callee=f"+86139001390{i % 10:02d}",
        )
        for i, call_id in enumerate(call_ids)
    }
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, local_port))
        sock.setblocking(False)

        def collect(until: float, *, until_answered: bool = False) -> None:
            while True:
                try:
                    data = sock.recv(65535)
                except BlockingIOError:
                    if time.monotonic() >= until:
                        return
                    if until_answered and all(answers.values()):
                        return
                    time.sleep(0.002)
                    continue
                status, call_id = _STATUS_LINE.match(data), _CALL_ID.search(data)
                if status and call_id and call_id.group(1).decode() in answers:
                    answers[call_id.group(1).decode()].append(int(status.group(1)))

        pending = list(call_ids)
        for _attempt in range(4):
            started = time.monotonic()
            for i, call_id in enumerate(pending):
                sock.sendto(requests[call_id], (HOST, target_port))
                collect(until=started + (i + 1) / rate)
            collect(until=time.monotonic() + 0.5)
            pending = [call_id for call_id in pending if not answers[call_id]]
            if not pending:
                break
        collect(until=time.monotonic() + CANCEL_TIMEOUT, until_answered=True)
    return answers


# What the garbage next hop answers, each followed by up to 199 random bytes:
# a TLS record header, an HTTP answer, NULs, a status line cut short. None of
# it parses as SIP, and none of it has a Via that an answer could follow.
GARBAGE_REPLIES: tuple[bytes, ...] = (
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    b"\x00" * 64,
    b"SIP/2.0",
)


@dataclass
class GarbageResponder:
    """A next hop on UDP that answers every datagram with bytes that are not SIP."""

    port: int
    received: list[bytes] = field(default_factory=list)
    sent: int = 0
    _sock: socket.socket | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> GarbageResponder:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((HOST, self.port))
        self._sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._run, name="garbage-responder", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, source = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            self.received.append(data)
            count = len(self.received)
            garbage = GARBAGE_REPLIES[count % len(GARBAGE_REPLIES)] + os.urandom(count % 200)
            self._sock.sendto(garbage, source)
            self.sent += 1

    def methods(self) -> list[str]:
        return [data.split(b" ", 1)[0].decode("ascii", "replace") for data in self.received]

    def call_ids(self) -> set[str]:
        found = (_CALL_ID.search(data) for data in self.received)
        return {match.group(1).decode() for match in found if match}


def start_caller(
    guard: Sipguard,
    scenario: str,
    *,
    local_port: int,
    calls: int,
    rate: float,
    injection: Path,
    workdir: Path,
    timeout: int,
) -> SippClient:
    """A SIPp UAC through `guard`, logging its calls as `LimitsPath.start` does."""
    workdir.mkdir(parents=True, exist_ok=True)
    return start_uac(
        scenario,
        target_port=guard.port,
        local_port=local_port,
        transport="udp",
        calls=calls,
        rate=rate,
        workdir=workdir,
        injection=injection,
        timeout=timeout,
        extra_args=["-trace_logs", "-log_file", str(workdir / OUTCOME_LOG)],
    )


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One line of uac_no_ack.xml's log: ``ms;call;caller;event``."""

    at: float
    call_number: int
    name: str


def call_events(client: SippClient | SippRun) -> list[CallEvent]:
    events = []
    for line in (client.workdir / OUTCOME_LOG).read_text(errors="replace").splitlines():
        fields = line.strip().split(";")
        if len(fields) == 4 and fields[0].isdigit() and fields[1].isdigit():
            events.append(CallEvent(int(fields[0]) / 1000, int(fields[1]), fields[3]))
    return events


# --------------------------------------------------------------------------
# A flood at ten times a trunk's limit


FLOOD_CPS = 10
FLOOD_BURST = 10
FLOOD_OFFERED_RATE = 10 * FLOOD_CPS
FLOOD_SECONDS = 60
NEIGHBOUR_RATE = 5
# OPTIONS health checks during the flood: one every few seconds, each
# answered within this long.
PROBE_INTERVAL = 4.0
PROBE_TIMEOUT = 0.5
# sipguard's resident memory (VmRSS sampled every second, and VmHWM),
# measured on CPython 3.11 with uvloop: 40 MiB idle, 49.8 MiB at the peak of
# this flood. It grows for the first 32 s, while the transactions of the
# admitted calls linger (Timers L and M), and is flat from then on. The
# bound is 1.5 times that peak: 75 MiB.
RSS_BOUND_KIB = 75 * 1024


def test_flood_at_ten_times_the_limit_spares_the_neighbour_and_leaves_nothing(
    start_limits_path: StartLimitsPath, tmp_path: Path
) -> None:
    """trunk-a (``cps: 10, burst: 10``) offered 100 calls/s for 60 s; trunk-b 5 calls/s.

    One SIPp caller floods trunk-a with 6000 calls of uac_limited.xml, which
    takes either outcome and logs it; another places 300 ordinary calls on
    trunk-b (no limits) at the same time, through the same sipguard, to a
    callee that answers at once and checks the asserted identity.

    - trunk-a admits its burst, then 10 calls/s: burst + 10 * (first to
      last INVITE) calls, as bounded by when each INVITE went out and its
      answer came (`bucket_bounds`); every other call gets 503
      ``cps_limit`` with Retry-After;
    - trunk-b: every call answered, none failed;
    - an OPTIONS from a source port of trunk-a, every few seconds of the
      flood, is answered 200 within 0.5 s, every time;
    - sipguard's resident memory, sampled every second, stays under
      `RSS_BOUND_KIB`;
    - afterwards trunk-a is served normally (5 calls at 2 calls/s all
      answered), and sipguard stops with no call, dialog or rate slot left.

    The full rate, 100 + 5 calls/s for 60 s, runs without a SIPp failure on
    a two-core machine, so it is not scaled down.
    """
    path = start_limits_path(limits={"cps": FLOOD_CPS, "burst": FLOOD_BURST})
    guard = path.sipguard
    offered = FLOOD_OFFERED_RATE * FLOOD_SECONDS
    neighbour_calls = NEIGHBOUR_RATE * FLOOD_SECONDS
    injection_a = write_limited_callers(tmp_path / "a.csv", callers(offered, "cps_limit"))
    injection_b = write_limited_callers(
        tmp_path / "b.csv", callers(neighbour_calls, "cps_limit", prefix="+8621317713")
    )
    idle_kib = vm_kib(guard.process.pid, "VmRSS")
    sipp_timeout = FLOOD_SECONDS + 30

    probes: list[Probe] = []
    with RssSampler(guard.process.pid) as rss:
        flood = path.start(
            "uac_limited.xml",
            calls=offered,
            rate=FLOOD_OFFERED_RATE,
            injection=injection_a,
            timeout=sipp_timeout,
        )
        neighbour = path.start(
            "uac_limited.xml",
            calls=neighbour_calls,
            rate=NEIGHBOUR_RATE,
            injection=injection_b,
            local_port=path.other_trunk_port,
            timeout=sipp_timeout,
        )
        flood_started = time.monotonic()
        # health checks from trunk-a's second source port while the flood
        # runs, on a fixed schedule (a slow probe does not push the next back)
        for number in itertools.count():
            due = flood_started + PROBE_INTERVAL / 2 + number * PROBE_INTERVAL
            if not flood.running() or due - flood_started >= sipp_timeout:
                break
            time.sleep(max(0.0, due - time.monotonic()))
            if flood.running():
                probes.append(probe(guard.port, path.trunk_ports[1], timeout=PROBE_TIMEOUT))
        run_a, run_b = flood.wait(), neighbour.wait()
        hwm_kib = vm_kib(guard.process.pid, "VmHWM")
    runs = (run_a, run_b)

    outcomes_a = call_outcomes(run_a)
    answered = [o for o in outcomes_a if o.outcome == "answered"]
    refused = [o for o in outcomes_a if o.outcome == "refused"]
    admitted = len(answered)
    duration = outcomes_a[-1].sent_at - outcomes_a[0].sent_at if outcomes_a else 0.0
    expected = FLOOD_BURST + FLOOD_CPS * duration
    least, most = bucket_bounds(
        cps_decisions(outcomes_a), burst=FLOOD_BURST, rate=FLOOD_CPS, slack=SIPP_CLOCK_SLACK
    )
    latencies = [p.latency for p in probes]
    figures = (
        f"trunk-a offered {offered} calls in {duration:.2f} s "
        f"({(offered - 1) / duration if duration else 0:.1f}/s), admitted {admitted} "
        f"(expected {expected:.0f}, bounds {least} to {most}: "
        f"{(admitted - FLOOD_BURST) / duration if duration else 0:.2f}/s "
        f"after the burst), refused {len(refused)}; trunk-b offered {neighbour_calls}, answered "
        f"{sum(o.outcome == 'answered' for o in call_outcomes(run_b))}; "
        f"OPTIONS {len(probes)} probes, statuses {sorted({p.status for p in probes}, key=str)}, "
        f"latency max {max(latencies, default=0) * 1000:.1f} ms "
        f"mean {sum(latencies) / max(1, len(latencies)) * 1000:.1f} ms; "
        f"RSS idle {idle_kib} KiB, peak sampled {rss.peak_kib} KiB "
        f"({len(rss.samples)} samples), VmHWM {hwm_kib} KiB"
    )
    print(figures)

    def explain(*more: SippRun) -> str:
        # evaluated only when an assertion fails: it stops the UAS
        return f"{figures}\n{path.explain(*runs, *more)}"

    # SIPp itself kept up: every call of both callers ended as its scenario allows
    assert_clean_run(run_a, offered, explain)
    assert_clean_run(run_b, neighbour_calls, explain)

    # trunk-a: the burst, then its rate; everything else refused 503 cps_limit
    assert admitted + len(refused) == offered, explain()
    assert shape(outcomes_a[:FLOOD_BURST]) == [("answered", "")] * FLOOD_BURST, explain()
    assert least <= admitted <= most, explain()
    assert {(o.status, o.rule) for o in refused} == {(503, "cps_limit")}, explain()
    without_retry_after = [o for o in refused if o.retry_after is None or o.retry_after < 1]
    assert not without_retry_after, explain()
    assert run_a.stats.received("503") == len(refused), explain()

    # trunk-b: every call answered, none refused or failed
    assert shape(call_outcomes(run_b)) == [("answered", "")] * neighbour_calls, explain()
    assert run_b.stats.received("503") == 0, explain()

    # sipguard answered every health check, quickly, all through the flood
    minimum_probes = int(FLOOD_SECONDS / PROBE_INTERVAL) - 2
    assert len(probes) >= minimum_probes, explain()
    assert probes[-1].at - probes[0].at >= FLOOD_SECONDS - 2 * PROBE_INTERVAL, explain()
    assert [p.status for p in probes] == [200] * len(probes), explain()
    assert max(latencies) < PROBE_TIMEOUT, explain()

    # bounded memory
    assert len(rss.samples) >= FLOOD_SECONDS, explain()
    assert rss.peak_kib < RSS_BOUND_KIB, explain()
    assert hwm_kib is not None and hwm_kib < RSS_BOUND_KIB, explain()

    # sipguard's decision log agrees, call for call
    assert log_count(guard, f"allow   trunk={TRUNK_A} ") == admitted, explain()
    assert log_count(guard, f"reject  503 cps_limit trunk={TRUNK_A} ") == len(refused), explain()
    assert log_count(guard, f"allow   trunk={TRUNK_B} ") == neighbour_calls, explain()

    # back to normal a few seconds later: trunk-a's calls at its rate all pass
    time.sleep(2.0)
    after = path.run(
        "uac_limited.xml",
        calls=5,
        rate=2,
        injection=write_limited_callers(tmp_path / "after.csv", callers(5, "cps_limit")),
        timeout=20,
    )
    assert_clean_run(after, 5, lambda: explain(after))
    assert shape(call_outcomes(after)) == [("answered", "")] * 5, explain(after)

    uas = path.uas.stop()
    assert uas.stats.received("INVITE") == admitted + neighbour_calls + 5, explain()
    assert uas.stats.successful_calls == admitted + neighbour_calls + 5, explain()
    assert uas.stats.failed_calls == 0, explain()

    summary = stop_and_count(guard, explain)
    for counter in ("active_calls", "dialogs", "rate_slots"):
        assert summary[counter] == 0, f"shutdown counters {summary}\n{explain()}"
    assert_no_defect(guard)


# --------------------------------------------------------------------------
# INVITEs never ACKed, CANCELs for no transaction


UNACKED_CALLS = 500
UNACKED_RATE = 200
STRAY_CANCELS = 500


def test_unacked_invites_and_stray_cancels_leak_nothing(
    start_limits_path: StartLimitsPath, tmp_path: Path
) -> None:
    """500 answered calls whose 200 is never ACKed, and 500 CANCELs matching no INVITE.

    A SIPp caller (uac_no_ack.xml) places 500 calls on trunk-a at 200
    calls/s and never ACKs the 200s. Meanwhile a raw UDP socket on trunk-a's
    second source port sends 500 CANCELs with fresh branches: half with
    random Call-IDs, half with the Call-IDs of those very calls (a CANCEL
    matches its INVITE by branch, RFC 3261 §9.2, so they match nothing
    either). Each CANCEL gets 481 and cancels no call.

    32 s after each 200 (Timer L) sipguard ACKs the callee's 200 and sends
    BYE on both legs; both are answered. Once the BYE transactions have
    lingered their T4 (Timer K), sipguard stops holding nothing: no call,
    dialog, transaction or rate slot.
    """
    path = start_limits_path(
        uas="uas_check_identity.xml", uas_args=KEEP_RETRANSMITTING, metrics=True
    )
    guard = path.sipguard
    injection = write_limited_callers(tmp_path / "no_ack.csv", callers(UNACKED_CALLS, "none"))

    no_ack = path.start(
        "uac_no_ack.xml",
        calls=UNACKED_CALLS,
        rate=UNACKED_RATE,
        injection=injection,
        timeout=int(TIMER_L) + 30,
    )
    # Call-IDs of the live calls (SIPp's default -cid_str %u-%p@%s) and random ones
    live_ids = [f"{n}-{no_ack.process.pid}@{HOST}" for n in range(1, STRAY_CANCELS // 2 + 1)]
    random_ids = [f"{secrets.token_hex(12)}@{HOST}" for _ in range(STRAY_CANCELS - len(live_ids))]
    cancel_ids = [cid for pair in zip(random_ids, live_ids, strict=True) for cid in pair]
    # the calls of those Call-IDs are up (SIPp places them in order)
    assert wait_for_log(guard, f"allow   trunk={TRUNK_A} ", count=len(live_ids), timeout=TIMER_L), (
        path.explain(no_ack.wait())
    )
    cancels_started = time.monotonic()
    answers = send_cancels(
        target_port=guard.port,
        local_port=path.trunk_ports[1],
        call_ids=cancel_ids,
        rate=500,
    )
    cancels_took = time.monotonic() - cancels_started
    assert no_ack.running(), path.explain(no_ack.wait())  # all sent well before Timer L

    run = no_ack.wait()

    statuses = [tuple(codes) for codes in answers.values()]
    events = call_events(run)
    answered = {e.call_number: e.at for e in events if e.name == "answered"}
    byes = {e.call_number: e.at for e in events if e.name == "bye_received"}
    waits = [byes[n] - answered[n] for n in byes if n in answered]
    figures = (
        f"{UNACKED_CALLS} unACKed calls: answered {len(answered)}, BYE received {len(byes)}, "
        f"BYE after {min(waits, default=0):.1f}-{max(waits, default=0):.1f} s; "
        f"{len(cancel_ids)} CANCELs sent in {cancels_took:.2f} s "
        f"({sum(len(codes) for codes in statuses)} answers, "
        f"{sum(len(codes) > 1 for codes in statuses)} resent): "
        f"{sorted({code for codes in statuses for code in codes})}"
    )
    print(figures)

    def explain() -> str:
        # evaluated only when an assertion fails: it stops the UAS
        return f"{figures}\n{path.explain(run)}"

    # every CANCEL answered 481, once (a lost one was resent), and nothing else
    assert all(codes and set(codes) == {481} for codes in statuses), explain()

    # every call answered, never ACKed, hung up by sipguard after Timer L
    assert run.returncode == 0, explain()
    assert run.stats.successful_calls == UNACKED_CALLS, explain()
    assert run.stats.failed_calls == 0, explain()
    assert run.stats.unexpected == 0, explain()
    assert run.stats.received("BYE") == UNACKED_CALLS, explain()
    assert sorted(answered) == list(range(1, UNACKED_CALLS + 1)), explain()
    assert sorted(byes) == list(range(1, UNACKED_CALLS + 1)), explain()
    assert all(TIMER_L - 1 <= w <= TIMER_L + 3 for w in waits), explain()

    # the callee: every call ACKed (by sipguard, at Timer L) and BYEd
    uas = path.uas.stop()
    assert uas.stats.received("INVITE") == UNACKED_CALLS, explain()
    assert uas.stats.received("ACK") == UNACKED_CALLS, explain()
    assert uas.stats.received("BYE") == UNACKED_CALLS, explain()
    assert uas.stats.successful_calls == UNACKED_CALLS, explain()
    assert uas.stats.failed_calls == 0, explain()

    assert log_count(guard, f"allow   trunk={TRUNK_A} ") == UNACKED_CALLS, explain()
    assert log_count(guard, "reject ") == 0, explain()
    # Timer K of the last BYE transactions (T4 after their 200) has run
    settle(path.metrics_port, explain)
    summary = stop_and_count(guard, explain)
    assert summary == {"active_calls": 0, "dialogs": 0, "transactions": 0, "rate_slots": 0}, (
        f"shutdown counters {summary}\n{explain()}"
    )
    assert_no_defect(guard)


# --------------------------------------------------------------------------
# A next hop that is not there, or answers garbage


FAULT_CALLS = 20
FAULT_RATE = 20


@dataclass
class FaultNode:
    """The ports of one sipguard of the next-hop fault test, and the sipguard."""

    listen: int
    trunk: int
    other: int
    route: int
    metrics: int
    guard: Sipguard | None = None

    @property
    def sipguard(self) -> Sipguard:
        assert self.guard is not None
        return self.guard


def test_dead_or_garbage_next_hop_gets_408_after_timer_b_and_frees_everything(
    tmp_path: Path,
) -> None:
    """Two sipguards side by side, each with a broken route, 20 calls each.

    (a) The route is a UDP port where nothing listens: the INVITEs go
    nowhere (sipguard ignores ICMP errors on UDP), so Timer B ends each
    client transaction and the caller gets 408 (`_client_timed_out`: 503
    only for a transport error, which UDP never reports).
    (b) The route is a responder that answers every datagram with bytes
    that are not SIP: sipguard drops them unanswered, keeps retransmitting
    its INVITE (Timer A), never sends a CANCEL (no provisional response),
    and answers the caller 408 after Timer B as well.

    Both callers (uac_no_answer.xml) run at the same time, so the test
    waits for Timer B once. Once the 408s are ACKed and Timer I has run,
    each sipguard stops holding no call, dialog, transaction or rate slot
    (the test waits until their metrics say so, then stops them).
    """
    if not sipp_available():
        pytest.fail("SIPp is not on PATH: install it (Debian package sip-tester; `make setup`)")
    injection = write_limited_callers(tmp_path / "callers.csv", callers(FAULT_CALLS, "none"))
    names = ("dead", "garbage")

    with contextlib.ExitStack() as stack:

        def start_on(ports: list[int]) -> tuple[GarbageResponder, dict[str, FaultNode]]:
            with contextlib.ExitStack() as started:  # undone if a start fails
                nodes = {
                    name: FaultNode(*ports[5 * index : 5 * index + 5])
                    for index, name in enumerate(names)
                }
                responder = GarbageResponder(nodes["garbage"].route)
                try:
                    started.enter_context(responder)
                except OSError as exc:
                    raise PortTaken(f"garbage next hop: {exc}") from exc
                for name, node in nodes.items():
                    rules = write_rule_file(
                        tmp_path / name,
                        listen_port=node.listen,
                        trunk_ports=[node.trunk],
                        other_trunk_port=node.other,
                        route_port=node.route,
                        metrics_port=node.metrics,
                    )
                    node.guard = start_sipguard(
                        rules, port=node.listen, workdir=tmp_path / name / "sipguard"
                    )
                    started.callback(node.guard.stop)
                stack.push(started.pop_all())
            return responder, nodes

        responder, nodes = with_fresh_ports(5 * len(names), start_on)
        guards = {name: node.sipguard for name, node in nodes.items()}
        clients = {
            name: start_caller(
                guards[name],
                "uac_no_answer.xml",
                local_port=node.trunk,
                calls=FAULT_CALLS,
                rate=FAULT_RATE,
                injection=injection,
                workdir=tmp_path / name / "uac",
                timeout=int(TIMER_B) + 15,
            )
            for name, node in nodes.items()
        }
        for client in clients.values():
            stack.callback(client.stop)
        runs = {name: client.wait() for name, client in clients.items()}

        def explain(name: str) -> str:
            return f"{runs[name].describe()}\n\n{guards[name].describe()}"

        # Timer I (T4) of the last server transactions after their ACK has run
        for name, node in nodes.items():
            settle(node.metrics, functools.partial(explain, name))
        received = list(responder.received)
        garbage_sent = responder.sent
        methods = responder.methods()
        call_ids = responder.call_ids()

        for name, run in runs.items():
            assert_clean_run(run, FAULT_CALLS, functools.partial(explain, name))
            outcomes = call_outcomes(run)
            endings = [(o.outcome, o.status) for o in outcomes]
            assert endings == [("timed_out", 408)] * FAULT_CALLS, explain(name)
            waits = [o.ended_at - o.sent_at for o in outcomes if o.ended_at is not None]
            print(
                f"{name} next hop: {FAULT_CALLS} calls, 408 after "
                f"{min(waits, default=0):.1f}-{max(waits, default=0):.1f} s"
            )
            assert len(waits) == FAULT_CALLS, explain(name)
            assert all(TIMER_B - 1 <= w <= TIMER_B + 3 for w in waits), explain(name)
            assert run.stats.received("408") == FAULT_CALLS, explain(name)
            allowed = log_count(guards[name], f"allow   trunk={TRUNK_A} ")
            assert allowed == FAULT_CALLS, explain(name)

        # the garbage responder saw INVITEs only (retransmitted by Timer A up
        # to Timer B: at 0, 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s), no CANCEL and
        # no ACK, and nothing sipguard sent ever answered its garbage
        print(
            f"garbage next hop: {len(received)} datagrams received "
            f"({len(call_ids)} calls), {garbage_sent} garbage answers"
        )
        assert set(methods) == {"INVITE"}, explain("garbage")
        assert len(call_ids) == FAULT_CALLS, explain("garbage")
        assert 6 * FAULT_CALLS <= len(received) <= 7 * FAULT_CALLS, explain("garbage")
        assert garbage_sent == len(received), explain("garbage")

        for name, guard in guards.items():
            summary = stop_and_count(guard, functools.partial(explain, name))
            print(f"{name} next hop: shutdown {summary}")
            assert summary == {
                "active_calls": 0,
                "dialogs": 0,
                "transactions": 0,
                "rate_slots": 0,
            }, f"shutdown counters {summary}\n{explain(name)}"
            assert_no_defect(guard)
