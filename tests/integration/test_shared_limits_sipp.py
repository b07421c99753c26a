"""One limit shared by two sipguard processes through one real redis-server, end to end.

Each test starts a redis-server on 127.0.0.1 (tests/integration/redis_server.py),
one SIPp UAS, and one or two ``sipguard run`` processes whose rule files
differ only in ``listen``: the two-trunk limits file of `limits_rules_text`
(sipp.py) plus a ``ratetable:`` section pointing at that redis-server. Every
process lists the same ``trunk-a`` sources: one UAC source port per
sipguard, so each UAC is ``trunk-a`` at the sipguard it calls. The callers
are uac_limited.xml, which logs each call's outcome (answered, or refused
with which status, rule and Retry-After; `call_outcomes`).

- combined cps: trunk-a limited to 20 calls/s (burst 20); each of two UACs
  offers 30 calls/s to its own sipguard for 10 s, 60 calls/s together. The
  two processes admit burst + 20 calls/s over the run *together*, each a
  fair share, not 20 calls/s each as two unshared rate tables would; the
  refusals are 503 ``cps_limit``; trunk-b's calls through one of them all
  pass during the flood.
- redis-server stopped mid-traffic, ``on_backend_failure: open``: every call
  is still decided (answered or refused by the limit), each process goes on
  on its own counters (20 calls/s each from then on), logs that the backend
  is unreachable, and reports the failed syncs when it stops.
- ``on_backend_failure: closed``: with redis-server stopped, calls are
  refused 503 ``ratetable_unavailable``; once it is started again on the
  same port, calls are answered again within a couple of seconds (the sync
  retries every second).
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.buckets import one_bucket
from tests.integration.redis_server import RedisServer
from tests.integration.sipp import (
    OUTCOME_LOG,
    TRUNK_A,
    TRUNK_B,
    CallOutcome,
    LimitedCaller,
    Sipguard,
    SippClient,
    SippRun,
    SippServer,
    call_outcomes,
    limits_rules_text,
    log_count,
    log_times,
    shutdown_summary,
    sipp_available,
    start_sipguard,
    start_uac,
    start_uas,
    wait_for_log,
    with_fresh_ports,
    write_limited_callers,
)

pytestmark = [pytest.mark.integration, pytest.mark.sipp]

SYNC_INTERVAL = "50ms"
# A round trip to redis-server on loopback takes well under a millisecond; a
# round may take the longest a rule file allows (T1) before it counts as
# failed, so that a round on a busy machine is not taken for a store gone
# away (a stopped redis-server refuses the connection at once).
SYNC_TIMEOUT = "500ms"
# sipguard retries a failed sync every second (ratesync.SyncSettings.retry).
SYNC_RETRY = 1.0

# How long sipguard may take to exit after SIGTERM before it is killed.
STOP_GRACE = 5.0
# How long a step may take that needs no deadline to pass: generous.
STEP_TIMEOUT = 10.0

UNREACHABLE = "rate table backend unreachable"
REACHABLE_AGAIN = "rate table backend reachable again"
_BACKEND_LINE = re.compile(
    r"rate table backend: up=(True|False) syncs=(\d+) failures=(\d+) refused_calls=(\d+)"
)


# --------------------------------------------------------------------------
# Setup: one redis-server, one UAS, N sipguard processes sharing the redis


@dataclass
class Node:
    """One sipguard process and the UAC source port that is trunk-a at it."""

    name: str
    guard: Sipguard
    trunk_port: int


@dataclass
class SharedSetup:
    """redis-server, the UAS and the sipguard processes of one test."""

    redis: RedisServer
    uas: SippServer
    nodes: list[Node]
    other_trunk_port: int
    workdir: Path
    clients: list[SippClient] = field(default_factory=list)

    def call(
        self,
        node: Node,
        injection: Path,
        *,
        calls: int,
        rate: float,
        local_port: int | None = None,
        label: str = "",
        timeout: int = 40,
    ) -> SippClient:
        """Start uac_limited.xml towards `node` in the background, logging its outcomes.

        It sends from `node.trunk_port` (trunk-a) unless `local_port` says otherwise.
        """
        number = len(self.clients) + 1
        workdir = self.workdir / f"uac-{number}-{node.name}{'-' + label if label else ''}"
        client = start_uac(
            "uac_limited.xml",
            target_port=node.guard.port,
            local_port=node.trunk_port if local_port is None else local_port,
            transport="udp",
            calls=calls,
            rate=rate,
            workdir=workdir,
            injection=injection,
            timeout=timeout,
            extra_args=["-trace_logs", "-log_file", str(workdir / OUTCOME_LOG)],
        )
        self.clients.append(client)
        return client

    def explain(self, *runs: SippRun) -> str:
        """The runs, the UAS, every sipguard and redis-server, for assertion messages."""
        parts = [run.describe() for run in runs]
        parts.append(self.uas.describe())
        parts += [f"[{node.name}] {node.guard.describe()}" for node in self.nodes]
        parts.append(f"redis-server on port {self.redis.port}:\n{self.redis.log()}")
        return "\n\n".join(parts)

    def close(self) -> None:
        for client in self.clients:
            client.stop()
        try:
            self.uas.stop(timeout=3.0)
        finally:
            for node in self.nodes:
                node.guard.stop()
            self.redis.stop()


StartShared = Callable[..., SharedSetup]


def ratetable_text(url: str, policy: str) -> str:
    """The ``ratetable:`` section appended to the limits rule file."""
    return (
        "ratetable:\n"
        "  backend: redis\n"
        f'  url: "{url}"\n'
        f"  sync_interval: {SYNC_INTERVAL}\n"
        f"  timeout: {SYNC_TIMEOUT}\n"
        f"  on_backend_failure: {policy}\n"
    )


@pytest.fixture
def start_shared(tmp_path: Path) -> Iterator[StartShared]:
    """A factory: ``start_shared(instances=2, limits=..., other_limits=..., policy="open")``.

    Starts redis-server, a uas_check_identity.xml callee, and `instances`
    sipguard processes with the same rule file apart from ``listen``; all
    is stopped at teardown.
    """
    if not sipp_available():
        pytest.fail("SIPp is not on PATH: install it (Debian package sip-tester; `make setup`)")
    stack = contextlib.ExitStack()

    def start(
        *,
        instances: int,
        limits: Mapping[str, object],
        other_limits: Mapping[str, object] | None = None,
        policy: str = "open",
    ) -> SharedSetup:
        workdir = tmp_path / "shared"
        redis = RedisServer(workdir / "redis")
        redis.start()
        stack.callback(redis.stop)

        def start_on(ports: list[int]) -> SharedSetup:
            uas_port, other_port = ports[:2]
            listen_ports = ports[2 : 2 + instances]
            trunk_ports = ports[2 + instances :]
            with contextlib.ExitStack() as started:  # undone if a start fails
                uas = start_uas(
                    "uas_check_identity.xml",
                    port=uas_port,
                    transport="udp",
                    workdir=workdir / "uas",
                )
                started.callback(uas.stop, timeout=3.0)
                nodes: list[Node] = []
                for index, listen_port in enumerate(listen_ports):
                    name = f"sipguard-{index + 1}"
                    rules = workdir / f"{name}.yaml"
                    rules.write_text(
                        limits_rules_text(
                            listen_port=listen_port,
                            trunk_ports=trunk_ports,
                            other_trunk_port=other_port,
                            uas_port=uas_port,
                            limits=limits,
                            other_limits=other_limits,
                        )
                        + ratetable_text(redis.url, policy),
                        encoding="utf-8",
                    )
                    guard = start_sipguard(rules, port=listen_port, workdir=workdir / name)
                    started.callback(guard.stop)
                    nodes.append(Node(name, guard, trunk_ports[index]))
                stack.push(started.pop_all())
            return SharedSetup(redis, uas, nodes, other_port, workdir)

        setup = with_fresh_ports(2 + 2 * instances, start_on)
        stack.callback(setup.close)
        return setup

    with stack:
        yield start


# --------------------------------------------------------------------------
# Helpers


def callers(count: int, rule: str, *, prefix: str = "+8621317712") -> list[LimitedCaller]:
    """`count` injection lines: 50 callers and 10 callees in rotation, expecting `rule`."""
    return [
        LimitedCaller(caller=f"{prefix}{i % 50:02d}", callee=f"+86139001390{i % 10:02d}", rule=rule)
        for i in range(count)
    ]


def assert_clean_run(run: SippRun, setup: SharedSetup, calls: int, *runs: SippRun) -> None:
    """Every call of `run` ended as its scenario allows (answered, or refused naming
    the expected rule), and was logged exactly once."""
    explain = setup.explain(run, *runs)
    assert run.returncode == 0, explain
    assert run.stats.created_calls == calls, explain
    assert run.stats.successful_calls == calls, explain
    assert run.stats.failed_calls == 0, explain
    assert run.stats.unexpected == 0, explain
    assert [o.call_number for o in call_outcomes(run)] == list(range(1, calls + 1)), explain


def split(outcomes: Sequence[CallOutcome]) -> tuple[list[CallOutcome], list[CallOutcome]]:
    """(answered, refused) calls; nothing else may be there."""
    answered = [o for o in outcomes if o.outcome == "answered"]
    refused = [o for o in outcomes if o.outcome == "refused"]
    assert len(answered) + len(refused) == len(outcomes), outcomes
    return answered, refused


def decisions(node: Node, trunk: str = TRUNK_A) -> list[tuple[float, bool]]:
    """When `node` decided each call of `trunk`, and whether it let it through.

    From its decision log (wall clock, to the millisecond), in order: the
    moments of decision themselves, on one clock for every process, where
    a caller's own clock only says when it sent.
    """
    allowed = [(at, True) for at in log_times(node.guard, f"allow   trunk={trunk} ")]
    refused = [(at, False) for at in log_times(node.guard, f" trunk={trunk} source=")]
    return sorted(allowed + refused)


def admitted_within(calls: Sequence[tuple[float, bool]], start: float, end: float) -> int:
    """Calls let through at a moment in [start, end)."""
    return sum(1 for at, allowed in calls if allowed and start <= at < end)


def backend_line(guard: Sipguard) -> dict[str, int | bool] | None:
    """The counters of sipguard's ``rate table backend: ...`` line at SIGTERM."""
    matches = _BACKEND_LINE.findall(guard.stderr)
    if not matches:
        return None
    up, syncs, failures, refused = matches[-1]
    return {
        "up": up == "True",
        "syncs": int(syncs),
        "failures": int(failures),
        "refused_calls": int(refused),
    }


def stop_node(setup: SharedSetup, node: Node, *runs: SippRun) -> dict[str, int | bool]:
    """SIGTERM one sipguard: it exits 0 with nothing left; its backend counters."""
    explain = setup.explain
    status = node.guard.stop(timeout=STOP_GRACE)
    assert status == 0, (
        f"{node.name} exited with status {status}"
        + (f" (still running {STOP_GRACE:.0f} s after SIGTERM, killed)" if status < 0 else "")
        + f"\n{explain(*runs)}"
    )
    summary = shutdown_summary(node.guard)
    assert summary is not None, f"{node.name}: no shutdown line\n{explain(*runs)}"
    for counter in ("active_calls", "dialogs"):
        assert summary[counter] == 0, f"{node.name}: shutdown {summary}\n{explain(*runs)}"
    backend = backend_line(node.guard)
    assert backend is not None, f"{node.name}: no backend line at shutdown\n{explain(*runs)}"
    return backend


def without_retry_after(refused: Sequence[CallOutcome]) -> list[CallOutcome]:
    """The refusals that carried no usable Retry-After (RFC 3261 §20.33)."""
    return [o for o in refused if o.retry_after is None or o.retry_after < 1]


# --------------------------------------------------------------------------
# 1. Two processes, one limit


CPS = 20
BURST = 20
OFFERED_RATE = 30  # per UAC: 60 calls/s together, 3x the shared limit
OFFERED_SECONDS = 10
OTHER_RATE = 10


def test_two_processes_enforce_one_combined_cps_limit(
    start_shared: StartShared, tmp_path: Path
) -> None:
    """trunk-a (20 calls/s, burst 20) offered 30 calls/s at each of two sipguards.

    Shared through redis-server, the bucket starts full and refills at 20
    calls/s for both: over a stream of T seconds the two admit BURST + CPS*T
    together (about 220 for T = 10 s), within 10 %. Two rate tables of their
    own would admit that much *each* (about 440 together). trunk-b, with the
    same limits and offered 10 calls/s at one sipguard, loses no call.

    Both figures come from the moments the two processes decided, from
    their logs: one bucket fed every call at its moment (`one_bucket`) is
    the shared limit; a bucket for each process's calls alone, the control.
    Neither assumes that the callers kept their nominal pace.
    """
    limits = {"cps": CPS, "burst": BURST}
    setup = start_shared(instances=2, limits=limits, other_limits=limits, policy="open")
    offered = OFFERED_RATE * OFFERED_SECONDS
    other_calls = OTHER_RATE * OFFERED_SECONDS
    injection = write_limited_callers(tmp_path / "a.csv", callers(offered, "cps_limit"))
    injection_b = write_limited_callers(
        tmp_path / "b.csv", callers(other_calls, "cps_limit", prefix="+8621317713")
    )
    node1, node2 = setup.nodes

    client1 = setup.call(node1, injection, calls=offered, rate=OFFERED_RATE)
    client2 = setup.call(node2, injection, calls=offered, rate=OFFERED_RATE)
    client_b = setup.call(
        node1,
        injection_b,
        calls=other_calls,
        rate=OTHER_RATE,
        local_port=setup.other_trunk_port,
        label="trunk-b",
    )
    run1, run2, run_b = client1.wait(), client2.wait(), client_b.wait()
    runs = (run1, run2, run_b)
    explain = setup.explain

    # both processes synced with the same redis-server (each holds a lease)
    instances = setup.redis.command("ZCARD", "sipguard:instances")
    assert instances.strip() == b":2", f"instances registered: {instances!r}\n{explain(*runs)}"

    # every call ended as the scenario allows: answered, or 503 cps_limit
    admitted: list[int] = []
    for node, run in ((node1, run1), (node2, run2)):
        assert_clean_run(run, setup, offered, *runs)
        outcomes = call_outcomes(run)
        answered, refused = split(outcomes)
        assert run.stats.received("503") == len(refused), explain(*runs)
        assert refused, f"{node.name} refused nothing\n{explain(*runs)}"
        assert {(o.status, o.rule) for o in refused} == {(503, "cps_limit")}, explain(*runs)
        assert not without_retry_after(refused), explain(*runs)
        admitted.append(len(answered))

    # the combined admission: one bucket for both, at the moments they decided
    calls = [decisions(node1), decisions(node2)]
    moments = sorted(at for node_calls in calls for at, _ in node_calls)
    window = moments[-1] - moments[0]
    combined = sum(admitted)
    allowed = sum(one_bucket(moments, burst=BURST, rate=CPS))
    # control: two rate tables of their own, each fed its own process's calls
    unshared = sum(
        sum(one_bucket([at for at, _ in node_calls], burst=BURST, rate=CPS)) for node_calls in calls
    )
    figures = (
        f"offered {offered} calls at {OFFERED_RATE} calls/s to each sipguard, decided over "
        f"{window:.2f} s; admitted {admitted[0]} ({admitted[0] / window:.1f}/s) + "
        f"{admitted[1]} ({admitted[1] / window:.1f}/s) = {combined} ({combined / window:.1f}/s), "
        f"one shared bucket {allowed}, two of their own {unshared}"
    )
    print(figures)
    assert [len(node_calls) for node_calls in calls] == [offered, offered], explain(*runs)
    assert combined < 0.6 * unshared, (
        f"{figures}: not below 60 % of the {unshared} that two instances with a rate "
        f"table each would admit, so the limit was not shared\n{explain(*runs)}"
    )
    assert combined == pytest.approx(allowed, rel=0.10), f"{figures}\n{explain(*runs)}"
    # both processes really decided: each a fair share of the one limit
    for node, count in zip((node1, node2), admitted, strict=True):
        assert count >= 0.3 * combined, f"{node.name}: {figures}\n{explain(*runs)}"
        # its decision log agrees with its caller, call for call
        assert log_count(node.guard, f"allow   trunk={TRUNK_A} ") == count, explain(*runs)
        assert log_count(node.guard, f"reject  503 cps_limit trunk={TRUNK_A} ") == (
            offered - count
        ), explain(*runs)

    # trunk-b at sipguard-1: every call answered, during trunk-a's flood
    assert_clean_run(run_b, setup, other_calls, *runs)
    outcomes_b = call_outcomes(run_b)
    assert [o.outcome for o in outcomes_b] == ["answered"] * other_calls, explain(*runs)
    assert log_count(node1.guard, f"allow   trunk={TRUNK_B} ") == other_calls, explain(*runs)

    # the callee saw exactly the admitted calls, all completed
    uas = setup.uas.stop()
    assert uas.stats.received("INVITE") == combined + other_calls, explain(*runs)
    assert uas.stats.successful_calls == combined + other_calls, explain(*runs)
    assert uas.stats.failed_calls == 0, explain(*runs)

    # both stop cleanly, having synced all along: a round every 50 ms over
    # >= 10 s, at least half of them however busy the machine; a round may
    # miss its 50 ms budget on a loaded machine (then the next try is 1 s on)
    for node in (node1, node2):
        backend = stop_node(setup, node, *runs)
        print(f"{node.name}: {backend}")
        assert backend["syncs"] >= 100, f"{node.name}: {backend}\n{explain(*runs)}"
        assert backend["failures"] <= 2, f"{node.name}: {backend}\n{explain(*runs)}"
        assert backend["refused_calls"] == 0, f"{node.name}: {backend}\n{explain(*runs)}"


# --------------------------------------------------------------------------
# 2. redis-server goes away mid-traffic, on_backend_failure: open


OPEN_RATE = 30
OPEN_SECONDS = 8
STOP_AFTER = 3.0


def test_redis_lost_mid_traffic_open_keeps_deciding_on_local_counters(
    start_shared: StartShared, tmp_path: Path
) -> None:
    """Two sipguards, each offered 30 calls/s on trunk-a (20 calls/s shared); redis dies at 3 s.

    Before: one shared limit, about 20 calls/s together. After: each
    process decides on its own counters (``open``), so each admits 20
    calls/s of its own. No call fails on the SIPp side: each is answered or
    refused 503 ``cps_limit``. Each process logs the backend unreachable,
    once, and at SIGTERM reports failed syncs and exits 0 with no call left.
    """
    limits = {"cps": CPS, "burst": BURST}
    setup = start_shared(instances=2, limits=limits, policy="open")
    offered = OPEN_RATE * OPEN_SECONDS
    injection = write_limited_callers(tmp_path / "a.csv", callers(offered, "cps_limit"))
    node1, node2 = setup.nodes

    started = time.monotonic()
    client1 = setup.call(node1, injection, calls=offered, rate=OPEN_RATE)
    client2 = setup.call(node2, injection, calls=offered, rate=OPEN_RATE)
    time.sleep(max(0.0, started + STOP_AFTER - time.monotonic()))
    stopped_at = time.time()  # the clock of sipguard's log
    setup.redis.stop()
    still_running = client1.running() and client2.running()
    for node in setup.nodes:
        assert wait_for_log(node.guard, UNREACHABLE, timeout=STEP_TIMEOUT), setup.explain()
    run1, run2 = client1.wait(), client2.wait()
    runs = (run1, run2)
    explain = setup.explain
    assert still_running, f"a UAC had finished before redis-server stopped\n{explain(*runs)}"

    before: list[int] = []
    after: list[int] = []
    after_expected: list[int] = []
    after_seconds: list[float] = []
    totals: list[int] = []
    calls = [decisions(node1), decisions(node2)]
    # The windows, on the clock of the decisions: after the burst, until the
    # stop; from 1 s after the process noticed the loss (the shared debt
    # decayed) to its last decision. What one bucket admits in each is the
    # reference, fed every call at the moment it was decided: both
    # processes' calls before the stop, each process's own after it.
    first = min(node_calls[0][0] for node_calls in calls)
    before_window = (first + 1.0, stopped_at)
    merged = sorted(at for node_calls in calls for at, _ in node_calls)
    shared = one_bucket(merged, burst=BURST, rate=CPS)
    before_expected = sum(
        1
        for at, allowed in zip(merged, shared, strict=True)
        if allowed and at >= before_window[0] and at < before_window[1]
    )
    for node, run, node_calls in ((node1, run1, calls[0]), (node2, run2, calls[1])):
        assert_clean_run(run, setup, offered, *runs)
        outcomes = call_outcomes(run)
        answered, refused = split(outcomes)
        assert {(o.status, o.rule) for o in refused} == {(503, "cps_limit")}, explain(*runs)
        assert len(node_calls) == offered, explain(*runs)
        after_window = (log_times(node.guard, UNREACHABLE)[0] + 1.0, node_calls[-1][0] + 0.001)
        local = [at for at, _ in node_calls if at >= after_window[0]]
        before.append(admitted_within(node_calls, *before_window))
        after.append(admitted_within(node_calls, *after_window))
        after_expected.append(
            sum(one_bucket(local, burst=BURST, rate=CPS, empty_at=after_window[0]))
        )
        after_seconds.append(after_window[1] - after_window[0])
        totals.append(len(answered))
        # decided call for call, before and after the loss
        assert log_count(node.guard, f"allow   trunk={TRUNK_A} ") == len(answered), explain(*runs)
        assert log_count(node.guard, f"reject  503 cps_limit trunk={TRUNK_A} ") == len(refused), (
            explain(*runs)
        )
        assert log_count(node.guard, UNREACHABLE) == 1, explain(*runs)
        assert "on_backend_failure: open" in next(
            line for line in node.guard.stderr.splitlines() if UNREACHABLE in line
        ), explain(*runs)
        assert log_count(node.guard, "ratetable_unavailable") == 0, explain(*runs)

    before_seconds = before_window[1] - before_window[0]
    figures = (
        f"redis-server stopped {stopped_at - first:.2f} s into the stream; shared phase "
        f"({before_seconds:.1f} s): admitted {before[0]} + {before[1]} = {sum(before)} "
        f"({sum(before) / before_seconds:.1f} calls/s together), one bucket {before_expected}; "
        f"local phase ({after_seconds[0]:.1f} s, {after_seconds[1]:.1f} s): admitted {after[0]} "
        f"and {after[1]}, a bucket each {after_expected[0]} and {after_expected[1]}; over the "
        f"run {totals[0]} and {totals[1]} of {offered} offered to each at {OPEN_RATE} calls/s"
    )
    print(figures)
    assert sum(before) == pytest.approx(before_expected, rel=0.20), f"{figures}\n{explain(*runs)}"
    for count, expected in zip(after, after_expected, strict=True):
        assert count == pytest.approx(expected, rel=0.15), f"{figures}\n{explain(*runs)}"

    uas = setup.uas.stop()
    total = sum(len(split(call_outcomes(run))[0]) for run in runs)
    assert uas.stats.received("INVITE") == total, explain(*runs)
    assert uas.stats.failed_calls == 0, explain(*runs)

    for node in (node1, node2):
        backend = stop_node(setup, node, *runs)
        print(f"{node.name}: {backend}")
        assert backend["up"] is False, f"{node.name}: {backend}\n{explain(*runs)}"
        assert backend["failures"] > 0, f"{node.name}: {backend}\n{explain(*runs)}"
        assert backend["syncs"] > 0, f"{node.name}: {backend}\n{explain(*runs)}"
        assert backend["refused_calls"] == 0, f"{node.name}: {backend}\n{explain(*runs)}"


# --------------------------------------------------------------------------
# 3. on_backend_failure: closed


CLOSED_RATE = 10
CLOSED_SECONDS = 5
RESTART_AFTER = 1.5


def test_redis_lost_closed_refuses_until_it_is_back(
    start_shared: StartShared, tmp_path: Path
) -> None:
    """``closed``: with redis-server stopped, trunk-a's calls get 503 ``ratetable_unavailable``.

    trunk-a's limit (50 calls/s) is never reached by the 10 calls/s offered,
    so only the backend decides. Calls pass while redis-server is up; after
    it stops, every call is refused with Retry-After; 1.5 s into a 5 s
    stream it is started again on the same port, and within about one sync
    retry calls are answered again, to the end of the stream.
    """
    setup = start_shared(instances=1, limits={"cps": 50, "burst": 50}, policy="closed")
    (node,) = setup.nodes
    calls = CLOSED_RATE * CLOSED_SECONDS
    injection = write_limited_callers(tmp_path / "a.csv", callers(calls, "ratetable_unavailable"))

    # redis-server up: calls pass
    warmup = setup.call(node, injection, calls=3, rate=10, label="up").wait()
    assert_clean_run(warmup, setup, 3, warmup)
    assert [o.outcome for o in call_outcomes(warmup)] == ["answered"] * 3, setup.explain(warmup)

    setup.redis.stop()
    assert wait_for_log(node.guard, UNREACHABLE, timeout=STEP_TIMEOUT), setup.explain(warmup)
    assert "on_backend_failure: closed" in node.guard.stderr, setup.explain(warmup)

    started = time.monotonic()
    client = setup.call(node, injection, calls=calls, rate=CLOSED_RATE, label="outage")
    time.sleep(max(0.0, started + RESTART_AFTER - time.monotonic()))
    setup.redis.start()  # same port; it accepts connections from now on
    ready_at = time.time()  # the clock of sipguard's log
    ready_in = time.monotonic() - started
    back = wait_for_log(node.guard, REACHABLE_AGAIN, timeout=SYNC_RETRY + STEP_TIMEOUT)
    run = client.wait()
    runs = (warmup, run)
    explain = setup.explain
    assert back, f"no '{REACHABLE_AGAIN}'\n{explain(*runs)}"

    assert_clean_run(run, setup, calls, *runs)
    outcomes = call_outcomes(run)
    answered, refused = split(outcomes)
    shape = [o.outcome for o in outcomes]
    synced_at = log_times(node.guard, REACHABLE_AGAIN)[0]
    figures = (
        f"redis-server back {ready_in:.2f} s into the stream, sipguard synced again "
        f"{synced_at - ready_at:.3f} s later; of {calls} calls {len(refused)} refused, "
        f"{len(answered)} answered"
    )
    print(figures)
    # refused while it was down, answered from its return on, never mixed
    assert refused and answered, f"{figures}\n{explain(*runs)}"
    assert shape == ["refused"] * len(refused) + ["answered"] * len(answered), (
        f"{figures}: {shape}\n{explain(*runs)}"
    )
    assert {(o.status, o.rule) for o in refused} == {(503, "ratetable_unavailable")}, explain(*runs)
    assert not without_retry_after(refused), explain(*runs)
    # sipguard synced again at its next retry: within one retry (and a
    # round trip, and a busy machine's lateness) of redis-server's return
    assert synced_at - ready_at <= SYNC_RETRY + 1.0, f"{figures}\n{explain(*runs)}"
    # the refusals covered the outage and no more: every refusal was
    # decided before sipguard synced again, every answered call after
    lines = node.guard.stderr.splitlines()
    back_line = next(i for i, line in enumerate(lines) if REACHABLE_AGAIN in line)
    refusal_lines = [
        i for i, line in enumerate(lines) if "reject  503 ratetable_unavailable" in line
    ]
    allow_lines = [i for i, line in enumerate(lines) if f"allow   trunk={TRUNK_A} " in line]
    outage_allows = allow_lines[3:]  # the warm-up's three came first
    assert max(refusal_lines) < back_line < min(outage_allows), f"{figures}\n{explain(*runs)}"

    assert log_count(node.guard, f"reject  503 ratetable_unavailable trunk={TRUNK_A} ") == len(
        refused
    ), explain(*runs)
    assert log_count(node.guard, f"allow   trunk={TRUNK_A} ") == 3 + len(answered), explain(*runs)
    uas = setup.uas.stop()
    assert uas.stats.received("INVITE") == 3 + len(answered), explain(*runs)
    assert uas.stats.failed_calls == 0, explain(*runs)

    backend = stop_node(setup, node, *runs)
    print(f"{node.name}: {backend}")
    assert backend["up"] is True, f"{backend}\n{explain(*runs)}"
    assert backend["failures"] >= 1, f"{backend}\n{explain(*runs)}"
    assert backend["refused_calls"] == len(refused), f"{backend}\n{explain(*runs)}"
