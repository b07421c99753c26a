"""Side-by-side SIPp benchmark: sipguard, Kamailio, Sippy B2BUA and a 403 floor.

Run from the repository root: `python -m bench` (or `make bench`); `--help`
lists the options. For each system and scenario it starts the SIPp UAS, the
system and, step by step, the SIPp UACs at rising rates, and stops a system's
ramp at its first failing step. Results: a table on the terminal,
bench/results/latest.json (every step) and bench/results/latest.png.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from bench import procfs
from bench.catalog import (
    HOST,
    NOT_APPLICABLE,
    PEERS,
    QUICK_RATES,
    QUICK_STEP_SECONDS,
    RATES,
    ROOT,
    SCENARIOS,
    STEP_SECONDS,
    SYSTEM_PORT,
    SYSTEMS,
    TRUNK_PORTS,
    UAC_MEDIA_PORT,
    UAS_MEDIA_PORT,
    UAS_PORT,
    Scenario,
    System,
    Uac,
    environment,
    uac_xml,
)
from bench.report import Display, write_outputs
from bench.sipp import SippCounts, parse_rtt_csv, parse_stat_csv
from bench.steps import ServerUse, Step, UacRun, combine

RESULTS = ROOT / "bench" / "results"
SOCKET_BUFFER = 4194304
WANTED_RMEM = 8388608
SIPP_TIMEOUT = "30s"


class BenchError(Exception):
    pass


@dataclass(frozen=True)
class Options:
    systems: list[str]
    scenarios: list[str]
    rates: list[int]
    seconds: float
    settle: float
    sipp_timeout: str
    grace: float  # seconds a step may run past its calls before its UACs are stopped
    out: Path
    plot: bool


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=", ".join(SYSTEMS))
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=", ".join(SCENARIOS))
    parser.add_argument("--rates", help="comma-separated calls/s (default 250 ... 32000, doubling)")
    parser.add_argument("--seconds", type=float, help=f"seconds of calls per step ({STEP_SECONDS})")
    parser.add_argument("--quick", action="store_true", help="2 s steps at 250 ... 4000 calls/s")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG")
    args = parser.parse_args(argv)
    systems = split(args.systems, SYSTEMS, parser)
    scenarios = split(args.scenarios, SCENARIOS, parser)
    default_rates = QUICK_RATES if args.quick else RATES
    rates = parse_rates(args.rates, parser) if args.rates else list(default_rates)
    seconds = args.seconds or (QUICK_STEP_SECONDS if args.quick else STEP_SECONDS)
    settle, timeout, grace = (0.5, "8s", 6.0) if args.quick else (2.0, SIPP_TIMEOUT, 45.0)
    return Options(
        systems, scenarios, rates, seconds, settle, timeout, grace, args.out, not args.no_plot
    )


def parse_rates(value: str, parser: argparse.ArgumentParser) -> list[int]:
    """`--rates 250, 1000`: whole, positive calls/s; a usage error otherwise."""
    rates = [item.strip() for item in value.split(",") if item.strip()]
    for item in rates:
        if not (item.isascii() and item.isdigit()) or int(item) == 0:
            parser.error(f"--rates: {item!r} is not a whole number of calls/s above 0")
    if not rates:
        parser.error("--rates: no rate given")
    return [int(item) for item in rates]


def split(value: str, known: Mapping[str, object], parser: argparse.ArgumentParser) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    for name in names:
        if name not in known:
            parser.error(f"unknown name {name!r}; choose from {', '.join(known)}")
    return names


def raise_socket_buffers() -> str:
    """Raise net.core.rmem_max/wmem_max to 8 MiB when allowed; say what happened."""
    notes = []
    for name in ("rmem_max", "wmem_max"):
        path = Path("/proc/sys/net/core") / name
        current = int(path.read_text())
        if current >= WANTED_RMEM:
            notes.append(f"{name}={current}")
            continue
        try:
            path.write_text(str(WANTED_RMEM))
            notes.append(f"{name}={WANTED_RMEM} (raised from {current})")
        except OSError as error:
            notes.append(f"{name}={current} (could not raise: {error.strerror})")
    return ", ".join(notes)


def start(
    argv: list[str], cwd: Path, log: Path, env: dict[str, str] | None = None, screen: bool = False
) -> subprocess.Popen[bytes]:
    """Start argv in its own process group; stderr (and stdout unless it is a screen) to log."""
    with log.open("wb") as out:
        return subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if screen else out,  # SIPp redraws its screen there
            stderr=out,
            env=environment(env or {}),
            start_new_session=True,  # its own process group: stopped as a whole, by its id
        )


def stop(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGINT to the process group (sipguard stops at once rather than draining), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def wait_bound(proc: subprocess.Popen[bytes], port: int, log: Path, what: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
            raise BenchError(f"{what} exited with {proc.returncode} at start-up:\n{tail}")
        if procfs.port_in_use(port):
            time.sleep(0.5)  # workers of a forking server come up after the bind
            return
        time.sleep(0.1)
    raise BenchError(f"{what} did not bind UDP {port} within 15 s")


def sipp_base(xml: Path, port: int, media_port: int) -> list[str]:
    return [
        "sipp", "-sf", str(xml), "-i", HOST, "-p", str(port), "-t", "u1",
        "-buff_size", str(SOCKET_BUFFER), "-nostdin", "-ci", HOST, "-mp", str(media_port),
    ]  # fmt: skip


def uac_argv(
    system: System, uac: Uac, cps: int, calls: int, media_port: int, timeout: str
) -> list[str]:
    return sipp_base(uac_xml(system, uac.role), uac.port, media_port) + [
        "-inf", str(PEERS / uac.csv), "-r", str(cps), "-rp", "1000", "-m", str(calls),
        "-timeout", timeout, "-trace_stat", "-stf", "stat.csv", "-fd", "1",
        "-trace_rtt", "-rtt_freq", "1", f"{HOST}:{SYSTEM_PORT}",
    ]  # fmt: skip


def collect(workdir: Path, uac: Uac, cps: int, calls: int) -> UacRun:
    stat = workdir / "stat.csv"
    counts = SippCounts(0, 0, 0, 0)  # a UAC that never wrote a data line counted nothing
    if stat.exists():
        with contextlib.suppress(ValueError):
            counts = parse_stat_csv(stat.read_text())
    samples = [s for f in workdir.glob("*_rtt.csv") for s in parse_rtt_csv(f.read_text())]
    return UacRun(uac.role, uac.port, cps, calls, counts, samples, uac.timed)


@dataclass
class Running:
    system: System
    scenario: Scenario
    server: subprocess.Popen[bytes]
    uas: subprocess.Popen[bytes]
    workdir: Path


@dataclass(frozen=True)
class Counters:
    """Cumulative counters read at the start and at the end of a step."""

    at: float
    server_cpu: float
    uas_cpu: float
    children_cpu: float  # reaped children: the step's UACs
    host: tuple[int, int]
    drops: int


def read_counters(run: Running) -> Counters:
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Counters(
        at=time.monotonic(),
        server_cpu=procfs.cpu_seconds([run.server.pid]),
        uas_cpu=procfs.cpu_seconds([run.uas.pid]),
        children_cpu=kids.ru_utime + kids.ru_stime,
        host=procfs.host_cpu(),
        drops=procfs.udp_receive_drops(),
    )


def usage(before: Counters, after: Counters, peak: procfs.Memory) -> ServerUse:
    busy, total = (after.host[0] - before.host[0]), (after.host[1] - before.host[1])
    loadgen = (after.uas_cpu - before.uas_cpu) + (after.children_cpu - before.children_cpu)
    return ServerUse(
        cpu_seconds=after.server_cpu - before.server_cpu,
        wall_seconds=after.at - before.at,
        peak_pss_kib=peak.pss_kib,
        peak_rss_kib=peak.rss_kib,
        loadgen_cpu_seconds=loadgen,
        host_busy_pct=100 * busy / max(1, total),
        udp_drops=after.drops - before.drops,
    )


@dataclass(frozen=True)
class UacProc:
    uac: Uac
    cps: int
    calls: int
    workdir: Path
    proc: subprocess.Popen[bytes]


def start_uacs(run: Running, number: int, rate: int, opts: Options) -> list[UacProc]:
    started = []
    for index, uac in enumerate(run.scenario.uacs):
        cps = uac.cps(rate)
        calls = max(1, round(cps * opts.seconds))
        workdir = run.workdir / f"step{number}-{rate}" / f"uac-{uac.port}"
        workdir.mkdir(parents=True)
        media = UAC_MEDIA_PORT + 100 * index
        argv = uac_argv(run.system, uac, cps, calls, media, opts.sipp_timeout)
        proc = start(argv, workdir, workdir / "sipp.log", screen=True)
        started.append(UacProc(uac, cps, calls, workdir, proc))
    return started


def watch(run: Running, uacs: list[UacProc], deadline: float) -> procfs.Memory:
    """Wait for the UACs (stopping them at the deadline); the server's peak memory meanwhile."""
    peak = procfs.Memory(0, 0)
    try:
        while any(u.proc.poll() is None for u in uacs) and time.monotonic() < deadline:
            mem = procfs.memory(run.server.pid)
            peak = procfs.Memory(max(peak.pss_kib, mem.pss_kib), max(peak.rss_kib, mem.rss_kib))
            time.sleep(0.25)
    finally:
        for u in uacs:
            stop(u.proc)
    return peak


def run_step(run: Running, number: int, rate: int, opts: Options) -> Step:
    before = read_counters(run)
    uacs = start_uacs(run, number, rate, opts)
    # calls lost on an overloaded step keep SIPp retransmitting for 32 s; the stat file
    # is rewritten every second (-fd 1), so stopping it loses at most a second of counts
    peak = watch(run, uacs, before.at + opts.seconds + opts.grace)
    use = usage(before, read_counters(run), peak)
    runs = [collect(u.workdir, u.uac, u.cps, u.calls) for u in uacs]
    step = combine(run.system.name, run.scenario.name, rate, runs, use)
    if run.server.poll() is not None:
        step.passed, step.why = False, f"server exited with {run.server.returncode}"
    return step


def check_ports() -> None:
    busy = [p for p in (SYSTEM_PORT, UAS_PORT, *TRUNK_PORTS) if procfs.port_in_use(p)]
    if busy:
        raise BenchError(f"UDP port(s) {busy} on this machine are in use; stop what holds them")


def run_ramp(
    system: System, scenario: Scenario, opts: Options, display: Display, steps: list[Step]
) -> None:
    """Ramp one system through one scenario, appending each step to steps as it ends."""
    check_ports()
    workdir = opts.out / "work" / f"{system.name}-{scenario.name}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    with ExitStack() as stack:
        uas_argv = sipp_base(PEERS / "uas.xml", UAS_PORT, UAS_MEDIA_PORT)
        uas = start(uas_argv, workdir, workdir / "uas.log", screen=True)
        stack.callback(stop, uas)
        wait_bound(uas, UAS_PORT, workdir / "uas.log", "SIPp UAS")
        launch = system.launch(scenario, workdir)
        server = start(launch.argv, ROOT, workdir / "server.log", launch.env)
        stack.callback(stop, server)
        wait_bound(server, SYSTEM_PORT, workdir / "server.log", system.name)
        run = Running(system, scenario, server, uas, workdir)
        for number, rate in enumerate(opts.rates, 1):
            display.status(f"{system.name} · {scenario.name} · {rate} calls/s · {opts.seconds:g} s")
            step = run_step(run, number, rate, opts)
            steps.append(step)
            display.add(step)
            if not step.passed:
                break
            time.sleep(opts.settle)


def plan(opts: Options) -> tuple[list[tuple[System, Scenario]], list[dict[str, str]]]:
    todo: list[tuple[System, Scenario]] = []
    skipped: list[dict[str, str]] = []
    for name in opts.systems:
        system = SYSTEMS[name]
        missing = system.missing()
        if missing:
            skipped.append({"system": name, "scenario": "*", "why": missing})
            continue
        for scenario_name in opts.scenarios:
            if scenario_name in system.scenarios:
                todo.append((system, SCENARIOS[scenario_name]))
            else:
                why = f"not applicable: {NOT_APPLICABLE.get(name, '')}"
                skipped.append({"system": name, "scenario": scenario_name, "why": why})
    return todo, skipped


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    if shutil.which("sipp") is None:
        print("sipp not found: apt-get install -y sip-tester", file=sys.stderr)
        return 2
    buffers = raise_socket_buffers()
    todo, skipped = plan(opts)
    steps: list[Step] = []
    display = Display(opts, buffers)
    for item in skipped:
        display.note(f"skipped {item['system']} ({item['scenario']}): {item['why']}")
    code = 0
    with display:
        try:
            for system, scenario in todo:
                try:
                    run_ramp(system, scenario, opts, display, steps)
                except BenchError as error:
                    display.note(f"{system.name} ({scenario.name}) failed: {error}")
                    skipped.append(
                        {"system": system.name, "scenario": scenario.name, "why": str(error)}
                    )
                    code = 1
        except KeyboardInterrupt:
            display.note("interrupted; writing what was measured")
            code = 130
        finally:
            write_outputs(opts.out, steps, skipped, buffers, opts, display)
    return code
