"""Drive real SIPp processes against a real ``sipguard run`` process.

This is a helper module for the integration tests, not a test file. It owns
the process plumbing, so that a test reads as "start a callee, start
sipguard, place N calls, check the counts":

- `free_ports()` picks 127.0.0.1 ports free for both UDP and TCP, outside
  the kernel's ephemeral range and claimed for this process (ports.py);
  a start that still finds its port taken raises `PortTaken`, and
  `with_fresh_ports()` starts again with new ones;
- `write_rules()` writes a one-trunk rule file into a temporary directory;
- `start_sipguard()` starts ``sipguard run --rules FILE`` and waits until it
  answers a SIP OPTIONS (`options_ping()`) over UDP;
- `start_uas()` starts a SIPp UAS in the background; `SippServer.stop()`
  asks it to finish its calls and returns its statistics;
- `run_uac()` runs a SIPp UAC to completion and returns its statistics;
- `CallPath` ties one UAS and one sipguard together for a test (the
  ``start_call_path`` fixture in conftest.py builds them).

SIPp statistics come from two files each process writes on exit: the
``-stf`` statistics CSV (successful and failed calls, failure causes) and
the ``-trace_counts`` CSV (per-message counts of the scenario). Every SIPp
process runs in its own directory, where it also leaves its error log and
final screen; `SippRun.describe()` gathers them for assertion messages.

Everything listens and sends on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.buckets import Decision
from tests.integration.ports import PortTaken, free_ports, with_fresh_ports

__all__ = [
    "HOST",
    "SCENARIO_DIR",
    "CALLERS_CSV",
    "CallPath",
    "MessageCount",
    "PortTaken",
    "SippRun",
    "SippServer",
    "SippStats",
    "StartCallPath",
    "Sipguard",
    "free_ports",
    "options_ping",
    "parse_counts_file",
    "parse_stat_file",
    "run_uac",
    "sipguard_command",
    "sipp_available",
    "start_sipguard",
    "start_uas",
    "with_fresh_ports",
    "write_rules",
]

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIO_DIR = REPO_ROOT / "sipp_scenarios"
CALLERS_CSV = SCENARIO_DIR / "callers.csv"

# How long sipguard may take from exec to answering OPTIONS: imports,
# rule compilation and socket setup take well under a second on a laptop.
DEFAULT_READY_TIMEOUT = 15.0
# How long a SIPp UAS gets to finish its calls after SIGUSR1 before it is
# interrupted: the longest call of our scenarios lasts about 2 s.
DEFAULT_STOP_TIMEOUT = 5.0
# SIPp's own global timeout for a UAC run (-timeout, seconds); the Python
# side waits this long plus a margin before killing it.
DEFAULT_UAC_TIMEOUT = 60
_UAC_KILL_MARGIN = 15.0
# How much of a log file goes into an assertion message.
_LOG_TAIL_CHARS = 4000


def sipp_available() -> bool:
    """Whether a ``sipp`` binary is on PATH."""
    return shutil.which("sipp") is not None


# --------------------------------------------------------------------------
# Rule files


def write_rules(
    directory: Path,
    *,
    listen_port: int,
    trunk_source_port: int,
    uas_port: int,
    transport: str = "udp",
    mode: str = "enforce",
    limits: Mapping[str, int] | None = None,
    name: str = "rules.yaml",
) -> Path:
    """Write a rule file with one trunk and return its path.

    sipguard listens on `listen_port` over UDP and TCP; the trunk
    ``test-trunk`` is whoever sends from 127.0.0.1:`trunk_source_port`, may
    present any caller ID, and is routed to the UAS at `uas_port` over
    `transport`.

    Args:
        directory: where to write the file (a test's ``tmp_path``).
        listen_port: sipguard's SIP port.
        trunk_source_port: the UAC's local port (SIPp ``-p``).
        uas_port: the SIPp UAS's port.
        transport: ``"udp"`` or ``"tcp"``, for the route to the UAS.
        mode: ``"enforce"`` or ``"monitor"``.
        limits: optional ``limits:`` mapping of the trunk (e.g.
            ``{"concurrent": 10}``); integer values only.
        name: file name inside `directory`.
    """
    if transport not in ("udp", "tcp"):
        raise ValueError(f"transport must be udp or tcp, not {transport!r}")
    lines = [
        "version: 1",
        f"mode: {mode}",
        "numbering:",
        '  country_code: "86"',
        '  national_prefix: "0"',
        '  international_prefix: "00"',
        f'listen: ["udp:{HOST}:{listen_port}", "tcp:{HOST}:{listen_port}"]',
        "trunks:",
        "  - name: test-trunk",
        f'    sources: ["{HOST}:{trunk_source_port}"]',
        f'    route: "{transport}:{HOST}:{uas_port}"',
        '    ranges: ["*"]',
    ]
    if limits:
        lines.append("    limits:")
        lines.extend(f"      {key}: {int(value)}" for key, value in limits.items())
    path = directory / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------
# SIP OPTIONS probe


def options_ping(
    port: int,
    *,
    source_port: int = 0,
    timeout: float = 0.5,
    host: str = HOST,
) -> int | None:
    """Send one SIP OPTIONS over UDP and return the response status code.

    Args:
        port: the UDP port to probe on `host`.
        source_port: local port to send from (0: any), e.g. a trunk source
            port to be recognised as that trunk.
        timeout: seconds to wait for a response.
        host: the address to probe (always loopback in these tests).

    Returns:
        The status code of the first SIP response to this request, or None
        when nothing answered in time.
    """
    call_id = secrets.token_hex(8)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, source_port))
        local_port = sock.getsockname()[1]
        request = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local_port};branch=z9hG4bK-{call_id};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{HOST}:{local_port}>;tag={call_id[:8]}\r\n"
            f"To: <sip:{host}:{port}>\r\n"
            f"Call-ID: {call_id}@{HOST}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            f"Contact: <sip:probe@{HOST}:{local_port}>\r\n"
            "Accept: application/sdp\r\n"
            "Content-Length: 0\r\n"
            "\r\n"
        ).encode("ascii")
        sock.sendto(request, (host, port))
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            sock.settimeout(remaining)
            try:
                data = sock.recv(65535)
            except (TimeoutError, ConnectionRefusedError):
                # ICMP port unreachable surfaces as ECONNREFUSED on Linux.
                return None
            status = _status_of(data, call_id)
            if status is not None:
                return status
    return None


def _status_of(data: bytes, call_id: str) -> int | None:
    """The status code of `data` if it is a response to our `call_id`."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or parts[0] != "SIP/2.0" or not parts[1].isdigit():
        return None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() in ("call-id", "i"):
            return int(parts[1]) if call_id in value else None
    return None


# --------------------------------------------------------------------------
# sipguard


def sipguard_command() -> list[str]:
    """The command that starts sipguard from the running interpreter's env.

    The ``sipguard`` console script installed next to the interpreter, or
    ``python -m sipguard.cli`` when there is none (source checkout without
    an install).
    """
    script = Path(sys.executable).parent / "sipguard"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "sipguard.cli"]


@dataclass
class Sipguard:
    """A running ``sipguard run`` process."""

    process: subprocess.Popen[bytes]
    rules: Path
    port: int
    stdout_path: Path
    stderr_path: Path

    @property
    def stderr(self) -> str:
        """Everything sipguard wrote to stderr so far (its log)."""
        return _read_text(self.stderr_path)

    def describe(self) -> str:
        """sipguard's exit status and log tail, for assertion messages."""
        status = self.process.poll()
        state = "running" if status is None else f"exited with status {status}"
        return (
            f"sipguard ({state}), rules {self.rules}:\n"
            f"--- stderr (tail) ---\n{_tail(self.stderr)}\n"
            f"--- stdout (tail) ---\n{_tail(_read_text(self.stdout_path))}"
        )

    def stop(self, *, timeout: float = 5.0) -> int:
        """Terminate sipguard (SIGTERM, then SIGKILL) and return its status."""
        return _terminate(self.process, timeout=timeout)


# How sipguard's one-line error for a listen port in use ends.
_SIPGUARD_PORT_TAKEN = ": address already in use"


def start_sipguard(
    rules: Path,
    *,
    port: int,
    workdir: Path,
    ready_timeout: float = DEFAULT_READY_TIMEOUT,
    extra_args: Sequence[str] = (),
) -> Sipguard:
    """Start ``sipguard run --rules RULES`` and wait until it answers OPTIONS.

    Readiness is any SIP response to an OPTIONS sent over UDP to `port`
    (sipguard answers 200 to a known source and 403 to an unknown one; the
    probe comes from an unknown port). The process runs in `workdir`, where
    its stdout and stderr are kept.

    Raises:
        PortTaken: sipguard could not listen on a port of its rule file
            (another process has it).
        RuntimeError: sipguard exited, or did not answer within
            `ready_timeout` seconds; the message carries its stderr.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    stdout_path = workdir / "sipguard.stdout"
    stderr_path = workdir / "sipguard.stderr"
    command = [*sipguard_command(), "run", "--rules", str(rules), *extra_args]
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    guard = Sipguard(process, rules, port, stdout_path, stderr_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            if _SIPGUARD_PORT_TAKEN in guard.stderr:
                raise PortTaken(f"sipguard could not listen\n{guard.describe()}")
            raise RuntimeError(f"sipguard exited before it was ready\n{guard.describe()}")
        if options_ping(port, timeout=0.2) is not None:
            return guard
        time.sleep(0.05)
    guard.stop()
    raise RuntimeError(
        f"sipguard did not answer OPTIONS on {HOST}:{port} within {ready_timeout:.0f} s\n"
        f"{guard.describe()}"
    )


# --------------------------------------------------------------------------
# SIPp statistics


@dataclass(frozen=True, slots=True)
class MessageCount:
    """One command of a SIPp scenario and how often it happened.

    Attributes:
        index: position of the command in the scenario (0-based).
        name: the method or status code (``"INVITE"``, ``"200"``), or
            ``"Pause"`` / ``"NOP"`` for non-message commands.
        kind: ``"sent"``, ``"received"`` or ``"other"``.
        count: messages sent or received (sessions for a pause).
        retransmissions: retransmissions sent or received.
        timeouts: times this command timed out.
        unexpected: unexpected messages received while at this command.
    """

    index: int
    name: str
    kind: str
    count: int
    retransmissions: int = 0
    timeouts: int = 0
    unexpected: int = 0


@dataclass(frozen=True)
class SippStats:
    """Final statistics of one SIPp process.

    Attributes:
        successful_calls: calls that reached the end of the scenario.
        failed_calls: calls that did not.
        created_calls: calls placed (UAC) or taken (UAS).
        counters: every cumulative counter of the ``-stf`` file, by name
            without the ``(C)`` suffix (``"FailedUnexpectedMessage"``,
            ``"Retransmissions"``, ...), as integers where they are counts.
        messages: per-command counts of the scenario, in scenario order.
    """

    successful_calls: int
    failed_calls: int
    created_calls: int
    counters: Mapping[str, str] = field(default_factory=dict)
    messages: tuple[MessageCount, ...] = ()

    def received(self, name: str) -> int:
        """Messages named `name` received, over every recv command."""
        return sum(m.count for m in self.messages if m.kind == "received" and m.name == name)

    def sent(self, name: str) -> int:
        """Messages named `name` sent, over every send command."""
        return sum(m.count for m in self.messages if m.kind == "sent" and m.name == name)

    @property
    def unexpected(self) -> int:
        """Unexpected messages, over the whole scenario."""
        return sum(m.unexpected for m in self.messages)

    @property
    def timeouts(self) -> int:
        """Command timeouts, over the whole scenario."""
        return sum(m.timeouts for m in self.messages)

    def counter(self, name: str) -> int:
        """A cumulative counter of the statistics file as an integer (0 if absent)."""
        value = self.counters.get(name, "")
        return int(value) if value.isdigit() else 0

    def summary(self) -> str:
        """A few lines for humans: totals, then one line per command."""
        lines = [
            f"calls: created {self.created_calls}, successful {self.successful_calls}, "
            f"failed {self.failed_calls}"
        ]
        failures = {
            name: value
            for name, value in self.counters.items()
            if name.startswith("Failed") and name != "FailedCall" and value not in ("", "0")
        }
        if failures:
            lines.append("failure causes: " + ", ".join(f"{k}={v}" for k, v in failures.items()))
        for m in self.messages:
            lines.append(
                f"  {m.index:>2} {m.kind:<8} {m.name:<8} {m.count:>6}"
                f"  retrans {m.retransmissions}  timeout {m.timeouts}  unexpected {m.unexpected}"
            )
        return "\n".join(lines)


_KIND_OF_COLUMN = {"Sent": "sent", "Recv": "received"}
_FIELD_OF_COLUMN = {
    "Sent": "count",
    "Recv": "count",
    "Sessions": "count",
    "Retrans": "retransmissions",
    "Timeout": "timeouts",
    "Unexp": "unexpected",
}


def parse_counts_file(path: Path) -> tuple[MessageCount, ...]:
    """Parse the last row of a SIPp ``-trace_counts`` CSV file.

    The header names one column per command and counter, e.g.
    ``0_INVITE_Sent;0_INVITE_Retrans;1_100_Recv;1_100_Unexp;5_Pause_Sessions``.
    """
    rows = _read_csv(path)
    if len(rows) < 2:
        return ()
    names: dict[int, str] = {}
    kinds: dict[int, str] = {}
    numbers: dict[int, dict[str, int]] = {}
    for column, value in zip(rows[0], rows[-1], strict=False):
        index_text, _, rest = column.partition("_")
        name, _, counter = rest.rpartition("_")
        if not index_text.isdigit() or counter not in _FIELD_OF_COLUMN:
            continue
        index = int(index_text)
        names[index] = name
        kinds.setdefault(index, "other")
        if counter in _KIND_OF_COLUMN:
            kinds[index] = _KIND_OF_COLUMN[counter]
        value = value.strip()
        numbers.setdefault(index, {})[_FIELD_OF_COLUMN[counter]] = (
            int(value) if value.isdigit() else 0
        )
    return tuple(
        MessageCount(index=index, name=names[index], kind=kinds[index], **numbers[index])
        for index in sorted(names)
    )


def parse_stat_file(path: Path) -> dict[str, str]:
    """Parse the last row of a SIPp ``-stf`` statistics CSV file.

    Returns the cumulative counters by name, without the ``(C)`` suffix;
    periodic ``(P)`` columns are dropped. Empty when the file is missing or
    has no data row yet.
    """
    rows = _read_csv(path)
    if len(rows) < 2:
        return {}
    counters: dict[str, str] = {}
    for column, value in zip(rows[0], rows[-1], strict=False):
        if column.endswith("(P)"):
            continue
        counters[column.removesuffix("(C)")] = value.strip()
    return counters


def _read_csv(path: Path) -> list[list[str]]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        return [row for row in csv.reader(handle, delimiter=";") if any(row)]


def _stats_from(workdir: Path, stat_file: Path) -> SippStats:
    counters = parse_stat_file(stat_file)
    counts_files = sorted(workdir.glob("*_counts.csv"))
    messages = parse_counts_file(counts_files[-1]) if counts_files else ()

    def number(name: str) -> int:
        value = counters.get(name, "")
        return int(value) if value.isdigit() else 0

    return SippStats(
        successful_calls=number("SuccessfulCall"),
        failed_calls=number("FailedCall"),
        created_calls=number("TotalCallCreated"),
        counters=counters,
        messages=messages,
    )


# --------------------------------------------------------------------------
# SIPp processes


def _sipp_base_command(
    scenario: Path,
    *,
    local_port: int,
    transport: str,
    workdir: Path,
) -> list[str]:
    """Options every SIPp process here gets: files, loopback, no keyboard."""
    if transport not in ("udp", "tcp"):
        raise ValueError(f"transport must be udp or tcp, not {transport!r}")
    return [
        "sipp",
        "-sf",
        str(scenario),
        "-i",
        HOST,
        "-p",
        str(local_port),
        "-t",
        "u1" if transport == "udp" else "t1",
        # keep SIPp's control socket on loopback too (default: all addresses)
        "-ci",
        HOST,
        "-nostdin",
        "-trace_err",
        "-error_file",
        str(workdir / "errors.log"),
        "-trace_screen",
        "-screen_file",
        str(workdir / "screen.log"),
        "-trace_stat",
        "-stf",
        str(workdir / "stat.csv"),
        "-fd",
        "1",
        "-trace_counts",
    ]


@dataclass
class SippRun:
    """The outcome of one SIPp process.

    Attributes:
        role: ``"uac"`` or ``"uas"``.
        scenario: the scenario file.
        command: the full command line.
        returncode: SIPp's exit status (0: every call succeeded, 1: some
            failed, 97/99: stopped, 254/255: fatal error), or None if it was
            killed by a signal we sent.
        stats: the final statistics.
        workdir: where its files are.
    """

    role: str
    scenario: Path
    command: list[str]
    returncode: int | None
    stats: SippStats
    workdir: Path

    def describe(self) -> str:
        """Everything useful when an assertion about this run fails."""
        return (
            f"SIPp {self.role} {self.scenario.name} (exit status {self.returncode}) in "
            f"{self.workdir}\ncommand: {' '.join(self.command)}\n"
            f"{self.stats.summary()}\n"
            f"--- errors.log (tail) ---\n{_tail(_sipp_errors(self.workdir / 'errors.log'))}\n"
            f"--- stderr (tail) ---\n{_tail(_read_text(self.workdir / 'sipp.stderr'))}"
        )


def run_uac(
    scenario: str | Path,
    *,
    target_port: int,
    local_port: int,
    transport: str,
    calls: int,
    rate: float,
    workdir: Path,
    injection: Path = CALLERS_CSV,
    timeout: int = DEFAULT_UAC_TIMEOUT,
    extra_args: Sequence[str] = (),
) -> SippRun:
    """Run a SIPp UAC to completion and return its statistics.

    Args:
        scenario: a file name in ``sipp_scenarios/`` or a path.
        target_port: where to send (sipguard, or a UAS directly) on 127.0.0.1.
        local_port: the UAC's own port (``-p``), i.e. its trunk identity.
        transport: ``"udp"`` or ``"tcp"``.
        calls: calls to place (``-m``).
        rate: calls per second (``-r``).
        workdir: a fresh directory for this run's files.
        injection: the ``-inf`` CSV (caller; P-Asserted-Identity; callee).
        timeout: SIPp's global timeout in seconds; reaching it fails the run.
        extra_args: more SIPp options.
    """
    path = _scenario_path(scenario)
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        *_sipp_base_command(path, local_port=local_port, transport=transport, workdir=workdir),
        "-inf",
        str(injection),
        "-m",
        str(calls),
        "-r",
        f"{rate:g}",
        "-timeout",
        f"{timeout}s",
        "-timeout_error",
        *extra_args,
        f"{HOST}:{target_port}",
    ]
    with (
        open(workdir / "sipp.stdout", "wb") as stdout,
        open(workdir / "sipp.stderr", "wb") as stderr,
    ):
        process = subprocess.Popen(
            command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )
    try:
        returncode: int | None = process.wait(timeout=timeout + _UAC_KILL_MARGIN)
    except subprocess.TimeoutExpired:
        _terminate(process, timeout=5.0)
        returncode = None
    return SippRun(
        role="uac",
        scenario=path,
        command=command,
        returncode=returncode,
        stats=_stats_from(workdir, workdir / "stat.csv"),
        workdir=workdir,
    )


@dataclass
class SippServer:
    """A SIPp UAS running in the background."""

    scenario: Path
    command: list[str]
    process: subprocess.Popen[bytes]
    port: int
    workdir: Path
    result: SippRun | None = None

    def stop(self, *, timeout: float = DEFAULT_STOP_TIMEOUT) -> SippRun:
        """Let the UAS finish its calls, stop it and return its statistics.

        SIGUSR1 makes SIPp take no new calls and exit once the running ones
        have ended. A call that waits for a message that never comes (its
        caller failed) would keep it running, so after `timeout` seconds
        SIGINT stops it at once (SIPp still writes its final statistics),
        and SIGKILL follows if even that does not help. Calling it again
        returns the first result.
        """
        if self.result is not None:
            return self.result
        returncode: int | None = None
        for sig, wait in ((signal.SIGUSR1, timeout), (signal.SIGINT, 3.0)):
            if self.process.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=wait)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        else:
            returncode = self.process.returncode
        self.result = SippRun(
            role="uas",
            scenario=self.scenario,
            command=self.command,
            returncode=returncode,
            stats=_stats_from(self.workdir, self.workdir / "stat.csv"),
            workdir=self.workdir,
        )
        return self.result

    def describe(self) -> str:
        """The UAS's files so far, for assertion messages."""
        run = self.result or SippRun(
            role="uas",
            scenario=self.scenario,
            command=self.command,
            returncode=self.process.poll(),
            stats=_stats_from(self.workdir, self.workdir / "stat.csv"),
            workdir=self.workdir,
        )
        return run.describe()


def start_uas(
    scenario: str | Path,
    *,
    port: int,
    transport: str,
    workdir: Path,
    ready_timeout: float = 10.0,
    extra_args: Sequence[str] = (),
) -> SippServer:
    """Start a SIPp UAS on 127.0.0.1:`port` and wait until it listens.

    Readiness: this SIPp process holds a socket bound to the port (UDP) or
    listening on it (TCP), as the kernel's socket tables say; a port held
    by another process is never taken for SIPp's.

    Raises:
        PortTaken: SIPp could not bind the port (another process has it).
        RuntimeError: SIPp exited or did not bind its port in time.
    """
    path = _scenario_path(scenario)
    workdir.mkdir(parents=True, exist_ok=True)
    # A start again in the same directory (`with_fresh_ports`) must not read
    # the files of the attempt before it.
    for leftover in (*workdir.glob("*.csv"), *workdir.glob("*.log")):
        leftover.unlink()
    command = [
        *_sipp_base_command(path, local_port=port, transport=transport, workdir=workdir),
        *extra_args,
    ]
    with (
        open(workdir / "sipp.stdout", "wb") as stdout,
        open(workdir / "sipp.stderr", "wb") as stderr,
    ):
        process = subprocess.Popen(
            command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )
    server = SippServer(path, command, process, port, workdir)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            if _SIPP_PORT_TAKEN in _read_text(workdir / "errors.log"):
                raise PortTaken(f"SIPp UAS could not bind {HOST}:{port}\n{server.describe()}")
            raise RuntimeError(f"SIPp UAS exited at start\n{server.describe()}")
        if _holds_port(process.pid, port, transport):
            return server
        time.sleep(0.05)
    server.stop(timeout=2.0)
    raise RuntimeError(f"SIPp UAS did not bind {HOST}:{port}\n{server.describe()}")


# SIPp's error log line for a port in use (errno 98, EADDRINUSE).
_SIPP_PORT_TAKEN = "Unable to bind main socket"


def _holds_port(pid: int, port: int, transport: str) -> bool:
    """Whether process `pid` has a socket bound to 127.0.0.1:`port` (TCP: listening).

    Reads the kernel's socket table (``/proc/net/udp`` or ``/proc/net/tcp``)
    for the sockets on that port, then the process's descriptors for one of
    them.
    """
    table = Path("/proc/net/udp" if transport == "udp" else "/proc/net/tcp")
    local = f"{socket.htonl(0x7F000001):08X}:{port:04X}"
    inodes = set()
    for line in _read_text(table).splitlines()[1:]:
        fields = line.split()
        # sl local_address rem_address st ... inode (the tenth field)
        if len(fields) > 9 and fields[1] == local and (transport == "udp" or fields[3] == "0A"):
            inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for descriptor in descriptors:
        with contextlib.suppress(OSError):
            if os.readlink(descriptor) in inodes:
                return True
    return False


def _scenario_path(scenario: str | Path) -> Path:
    path = Path(scenario)
    if not path.is_absolute() and not path.exists():
        path = SCENARIO_DIR / path
    if not path.is_file():
        raise FileNotFoundError(f"no SIPp scenario {path}")
    return path


# --------------------------------------------------------------------------
# A call path: UAC -> sipguard -> UAS


@dataclass
class CallPath:
    """A running UAS behind a running sipguard, and the trunk's UAC port.

    Attributes:
        transport: ``"udp"`` or ``"tcp"``, on both sides of sipguard.
        sipguard: the sipguard process.
        uas: the SIPp UAS that sipguard routes the trunk's calls to.
        trunk_port: the local port a UAC must use to be the trunk.
        workdir: where every process of this path keeps its files.
    """

    transport: str
    sipguard: Sipguard
    uas: SippServer
    trunk_port: int
    workdir: Path
    _runs: list[SippRun] = field(default_factory=list)

    def call(
        self,
        scenario: str,
        *,
        calls: int,
        rate: float,
        local_port: int | None = None,
        injection: Path = CALLERS_CSV,
        timeout: int = DEFAULT_UAC_TIMEOUT,
    ) -> SippRun:
        """Run a SIPp UAC scenario through sipguard to completion.

        Args:
            scenario: a file in ``sipp_scenarios/``.
            calls: calls to place.
            rate: calls per second.
            local_port: the UAC's port; the trunk's source port by default.
            injection: the ``-inf`` CSV (caller; P-Asserted-Identity; callee).
            timeout: SIPp's global timeout in seconds.
        """
        name = Path(scenario).stem
        run = run_uac(
            scenario,
            target_port=self.sipguard.port,
            local_port=self.trunk_port if local_port is None else local_port,
            transport=self.transport,
            calls=calls,
            rate=rate,
            workdir=self.workdir / f"uac-{len(self._runs) + 1}-{name}",
            injection=injection,
            timeout=timeout,
        )
        self._runs.append(run)
        return run

    def explain(self, *runs: SippRun) -> str:
        """Diagnostics for an assertion message: the runs, the UAS, sipguard.

        Meant for the message of a failing assertion (evaluated only when it
        fails): it stops the UAS to get its final statistics.
        """
        parts = [run.describe() for run in runs]
        parts.append(self.uas.stop().describe())
        parts.append(self.sipguard.describe())
        return "\n\n".join(parts)

    def close(self) -> None:
        """Stop the UAS (letting it finish its calls), then sipguard."""
        try:
            self.uas.stop()
        finally:
            self.sipguard.stop()


StartCallPath = Callable[..., CallPath]


# --------------------------------------------------------------------------
# Small utilities


def _terminate(process: subprocess.Popen[bytes], *, timeout: float) -> int:
    """SIGTERM, wait up to `timeout`, then SIGKILL; return the exit status."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


# SIPp writes each error log entry as "YYYY-MM-DD<TAB>time<TAB>epoch: text",
# not always followed by a newline.
_SIPP_LOG_ENTRY = re.compile(r"(?=\d{4}-\d{2}-\d{2}\t)")
# uas.xml waits for a CANCEL with a receive timeout; SIPp logs a warning for
# every call that times out there and jumps to answering. Not an error.
_EXPECTED_SIPP_WARNING = "jumping to label"


def _sipp_errors(path: Path) -> str:
    """SIPp's error log without the warnings our scenarios cause on purpose."""
    entries = _SIPP_LOG_ENTRY.split(_read_text(path))
    kept = [e.strip() for e in entries if e.strip() and _EXPECTED_SIPP_WARNING not in e]
    return "\n".join(kept)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def _tail(text: str, limit: int = _LOG_TAIL_CHARS) -> str:
    text = text.strip()
    if not text:
        return "(empty)"
    return text if len(text) <= limit else "...\n" + text[-limit:]


# --------------------------------------------------------------------------
# Caller-ID policy: a two-trunk rule file, background callers, reloads
#
# The policy and reload tests (test_policy_sipp.py, test_reload_sipp.py) use
# a rule file with real allocations: trunk ``sh-callcenter`` (the callers'
# trunk, one or more source ports) owns `SH_RANGES`, trunk ``bj-callcenter``
# (another source port) owns `OTHER_RANGES`, and `DO_NOT_ORIGINATE` holds the
# numbers no trunk may present. The injection files valid_callers.csv,
# spoofed_callers.csv and mixed_callers.csv are written for this file.

SH_TRUNK = "sh-callcenter"
OTHER_TRUNK = "bj-callcenter"
SH_RANGES: tuple[str, ...] = ("+862131771200-+862131771299", "+869521")
OTHER_RANGES: tuple[str, ...] = ("+861058001000-+861058001999",)
DO_NOT_ORIGINATE: tuple[str, ...] = ("+86400", "+86110")
VALID_CALLERS_CSV = SCENARIO_DIR / "valid_callers.csv"
SPOOFED_CALLERS_CSV = SCENARIO_DIR / "spoofed_callers.csv"
MIXED_CALLERS_CSV = SCENARIO_DIR / "mixed_callers.csv"


@dataclass(frozen=True, slots=True)
class ExtraTrunk:
    """One more trunk for `policy_rules_text` (e.g. one a reload adds)."""

    name: str
    source_port: int
    ranges: tuple[str, ...]


def policy_rules_text(
    *,
    listen_port: int,
    trunk_ports: Sequence[int],
    other_trunk_port: int,
    uas_port: int,
    transport: str = "udp",
    ranges: Sequence[str] = SH_RANGES,
    extra_trunks: Sequence[ExtraTrunk] = (),
) -> str:
    """The text of the two-trunk policy rule file (see the section comment).

    Both trunks, and every extra trunk, are routed to the UAS at `uas_port`
    over `transport`; none has limits, so only the caller-ID rules decide.
    `ranges` replaces the ranges of ``sh-callcenter`` (a reload that changes
    policy).
    """
    if transport not in ("udp", "tcp"):
        raise ValueError(f"transport must be udp or tcp, not {transport!r}")

    def quoted(values: Sequence[str]) -> str:
        return "[" + ", ".join(f'"{value}"' for value in values) + "]"

    route = f'    route: "{transport}:{HOST}:{uas_port}"'
    lines = [
        "version: 1",
        "mode: enforce",
        "numbering:",
        '  country_code: "86"',
        '  national_prefix: "0"',
        '  international_prefix: "00"',
        f'listen: ["udp:{HOST}:{listen_port}", "tcp:{HOST}:{listen_port}"]',
        f"do_not_originate: {quoted(DO_NOT_ORIGINATE)}",
        "trunks:",
        f"  - name: {SH_TRUNK}",
        f"    sources: {quoted([f'{HOST}:{port}' for port in trunk_ports])}",
        route,
        f"    ranges: {quoted(ranges)}",
        "    identity:",
        "      from_must_match_pai: true",
        "      display_name: reject",
        f"  - name: {OTHER_TRUNK}",
        f"    sources: {quoted([f'{HOST}:{other_trunk_port}'])}",
        route,
        f"    ranges: {quoted(OTHER_RANGES)}",
    ]
    for trunk in extra_trunks:
        lines += [
            f"  - name: {trunk.name}",
            f"    sources: {quoted([f'{HOST}:{trunk.source_port}'])}",
            route,
            f"    ranges: {quoted(trunk.ranges)}",
        ]
    return "\n".join(lines) + "\n"


def replace_file(path: Path, text: str) -> None:
    """Write `text` to `path` atomically (a reader sees the old or the new file)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


@dataclass
class SippClient:
    """A SIPp UAC running in the background (`start_uac`)."""

    scenario: Path
    command: list[str]
    process: subprocess.Popen[bytes]
    workdir: Path
    timeout: int
    result: SippRun | None = None

    def running(self) -> bool:
        """Whether SIPp is still placing or finishing calls."""
        return self.process.poll() is None

    def wait(self) -> SippRun:
        """Wait until SIPp has finished (or kill it past its timeout); its outcome.

        Calling it again returns the first result.
        """
        if self.result is not None:
            return self.result
        try:
            returncode: int | None = self.process.wait(timeout=self.timeout + _UAC_KILL_MARGIN)
        except subprocess.TimeoutExpired:
            _terminate(self.process, timeout=5.0)
            returncode = None
        self.result = SippRun(
            role="uac",
            scenario=self.scenario,
            command=self.command,
            returncode=returncode,
            stats=_stats_from(self.workdir, self.workdir / "stat.csv"),
            workdir=self.workdir,
        )
        return self.result

    def stop(self) -> None:
        """Interrupt SIPp if it is still running (teardown after a failure)."""
        if self.process.poll() is None:
            _terminate(self.process, timeout=5.0)


def start_uac(
    scenario: str | Path,
    *,
    target_port: int,
    local_port: int,
    transport: str,
    calls: int,
    rate: float,
    workdir: Path,
    injection: Path = CALLERS_CSV,
    timeout: int = DEFAULT_UAC_TIMEOUT,
    extra_args: Sequence[str] = (),
) -> SippClient:
    """Start a SIPp UAC in the background; `SippClient.wait()` gives its outcome.

    The arguments are those of `run_uac`.
    """
    path = _scenario_path(scenario)
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        *_sipp_base_command(path, local_port=local_port, transport=transport, workdir=workdir),
        "-inf",
        str(injection),
        "-m",
        str(calls),
        "-r",
        f"{rate:g}",
        "-timeout",
        f"{timeout}s",
        "-timeout_error",
        *extra_args,
        f"{HOST}:{target_port}",
    ]
    with (
        open(workdir / "sipp.stdout", "wb") as stdout,
        open(workdir / "sipp.stderr", "wb") as stderr,
    ):
        process = subprocess.Popen(
            command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
        )
    return SippClient(path, command, process, workdir, timeout)


# sipguard's log format: "%(asctime)s ...", local time to the millisecond.
_LOG_TIME = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),(\d{3}) ")


def log_times(guard: Sipguard, text: str) -> list[float]:
    """When sipguard logged each line containing `text`, in order.

    Seconds since the epoch, on the clock of `time.time()`, truncated to
    the millisecond (a line is logged as its event happens: a decision
    line as the call is decided).
    """
    times = []
    for line in guard.stderr.splitlines():
        if text in line and (match := _LOG_TIME.match(line)):
            stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S")
            times.append(stamp.timestamp() + int(match.group(2)) / 1000)
    return times


def log_count(guard: Sipguard, text: str) -> int:
    """How many lines of sipguard's log so far contain `text`."""
    return sum(text in line for line in guard.stderr.splitlines())


def wait_for_log(guard: Sipguard, text: str, *, count: int = 1, timeout: float = 10.0) -> bool:
    """Wait until `count` lines of sipguard's log contain `text`; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if log_count(guard, text) >= count:
            return True
        if time.monotonic() >= deadline or guard.process.poll() is not None:
            return False
        time.sleep(0.05)


def wait_for_lines(path: Path, text: str, *, count: int, timeout: float = 10.0) -> bool:
    """Wait until `count` lines of the file at `path` contain `text`; False on timeout.

    For the log a SIPp scenario writes as it goes (``-trace_logs``).
    """
    deadline = time.monotonic() + timeout
    while True:
        if sum(text in line for line in _read_text(path).splitlines()) >= count:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def send_sighup(guard: Sipguard) -> None:
    """Ask sipguard to reload its rule file."""
    guard.process.send_signal(signal.SIGHUP)


@dataclass
class PolicyPath(CallPath):
    """A call path whose sipguard runs the two-trunk policy rule file.

    Attributes (besides `CallPath`'s, where `trunk_port` is the first of
    `trunk_ports`):
        trunk_ports: the source ports of trunk ``sh-callcenter``.
        other_trunk_port: the source port of trunk ``bj-callcenter``.
        uas_port: the SIPp UAS's port (the trunks' route).
    """

    trunk_ports: tuple[int, ...] = ()
    other_trunk_port: int = 0
    uas_port: int = 0
    _clients: list[SippClient] = field(default_factory=list)

    def rules_text(
        self,
        *,
        ranges: Sequence[str] = SH_RANGES,
        extra_trunks: Sequence[ExtraTrunk] = (),
    ) -> str:
        """This path's rule file, with other ``sh-callcenter`` ranges or more trunks."""
        return policy_rules_text(
            listen_port=self.sipguard.port,
            trunk_ports=self.trunk_ports,
            other_trunk_port=self.other_trunk_port,
            uas_port=self.uas_port,
            transport=self.transport,
            ranges=ranges,
            extra_trunks=extra_trunks,
        )

    def run(
        self,
        scenario: str,
        *,
        calls: int,
        rate: float,
        injection: Path,
        local_port: int | None = None,
        timeout: int = DEFAULT_UAC_TIMEOUT,
        extra_args: Sequence[str] = (),
    ) -> SippRun:
        """`CallPath.call` with more SIPp options (e.g. ``-d`` for the call length)."""
        return self.start(
            scenario,
            calls=calls,
            rate=rate,
            injection=injection,
            local_port=local_port,
            timeout=timeout,
            extra_args=extra_args,
        ).wait()

    def start(
        self,
        scenario: str,
        *,
        calls: int,
        rate: float,
        injection: Path,
        local_port: int | None = None,
        timeout: int = DEFAULT_UAC_TIMEOUT,
        extra_args: Sequence[str] = (),
    ) -> SippClient:
        """Start a SIPp UAC through sipguard in the background."""
        number = len(self._runs) + len(self._clients) + 1
        client = start_uac(
            scenario,
            target_port=self.sipguard.port,
            local_port=self.trunk_port if local_port is None else local_port,
            transport=self.transport,
            calls=calls,
            rate=rate,
            workdir=self.workdir / f"uac-{number}-{Path(scenario).stem}",
            injection=injection,
            timeout=timeout,
            extra_args=extra_args,
        )
        self._clients.append(client)
        return client

    def close(self) -> None:
        """Stop any caller still running, then the UAS and sipguard."""
        try:
            for client in self._clients:
                client.stop()
        finally:
            super().close()


__all__ += [
    "DO_NOT_ORIGINATE",
    "ExtraTrunk",
    "MIXED_CALLERS_CSV",
    "OTHER_RANGES",
    "OTHER_TRUNK",
    "PolicyPath",
    "SH_RANGES",
    "SH_TRUNK",
    "SPOOFED_CALLERS_CSV",
    "SippClient",
    "VALID_CALLERS_CSV",
    "log_count",
    "log_times",
    "policy_rules_text",
    "replace_file",
    "send_sighup",
    "start_uac",
    "wait_for_lines",
    "wait_for_log",
]


# --------------------------------------------------------------------------
# Rate and behaviour limits: trunks with `limits`, per-call outcome logs
#
# The limits tests (test_limits_sipp.py) run a rule file with two trunks,
# ``trunk-a`` (the trunk under test, one or more source ports) and
# ``trunk-b`` (another source port), both allowed any caller ID and routed to
# one SIPp UAS, each with its own ``limits``. Their callers (uac_limited.xml,
# uac_one_ring.xml, uac_no_answer.xml) log one line per call, saying how it
# ended; `call_outcomes` reads them back.

TRUNK_A = "trunk-a"
TRUNK_B = "trunk-b"
# The file each limits caller logs its calls to, in its run directory.
OUTCOME_LOG = "outcomes.log"


def limits_rules_text(
    *,
    listen_port: int,
    trunk_ports: Sequence[int],
    other_trunk_port: int,
    uas_port: int,
    limits: Mapping[str, object] | None = None,
    other_limits: Mapping[str, object] | None = None,
    transport: str = "udp",
    metrics_port: int | None = None,
) -> str:
    """The text of the two-trunk limits rule file (see the section comment).

    With `metrics_port`, sipguard serves its Prometheus metrics there
    (`scrape_metrics`, `wait_until_idle`).

    `limits` and `other_limits` are the ``limits:`` mappings of ``trunk-a``
    and ``trunk-b`` (None: no limits), written as YAML flow mappings, e.g.
    ``{"cps": 20, "burst": 20}`` or ``{"per_caller": {"calls": 5, "window":
    "1m"}}``; durations are strings.
    """
    if transport not in ("udp", "tcp"):
        raise ValueError(f"transport must be udp or tcp, not {transport!r}")

    def quoted(values: Sequence[str]) -> str:
        return "[" + ", ".join(f'"{value}"' for value in values) + "]"

    def trunk(
        name: str, ports: Sequence[int], trunk_limits: Mapping[str, object] | None
    ) -> list[str]:
        lines = [
            f"  - name: {name}",
            f"    sources: {quoted([f'{HOST}:{port}' for port in ports])}",
            f'    route: "{transport}:{HOST}:{uas_port}"',
            '    ranges: ["*"]',
        ]
        if trunk_limits:
            lines.append(f"    limits: {_flow(trunk_limits)}")
        return lines

    lines = [
        "version: 1",
        "mode: enforce",
        "numbering:",
        '  country_code: "86"',
        '  national_prefix: "0"',
        '  international_prefix: "00"',
        f'listen: ["udp:{HOST}:{listen_port}", "tcp:{HOST}:{listen_port}"]',
        "trunks:",
        *trunk(TRUNK_A, trunk_ports, limits),
        *trunk(TRUNK_B, [other_trunk_port], other_limits),
    ]
    if metrics_port is not None:
        lines.append(f'metrics: "{HOST}:{metrics_port}"')
    return "\n".join(lines) + "\n"


def _flow(value: object) -> str:
    """`value` (mappings, strings, numbers) as YAML flow: ``{cps: 20, window: "1m"}``."""
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{key}: {_flow(item)}" for key, item in value.items()) + "}"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


@dataclass(frozen=True, slots=True)
class LimitedCaller:
    """One line of a limits injection file (see sipp_scenarios/README.md)."""

    caller: str  # From and P-Asserted-Identity user, E.164
    callee: str
    rule: str  # the rule id a refusal must name

    def csv_line(self) -> str:
        return ";".join((self.caller, self.caller, self.callee, self.rule))


def write_limited_callers(path: Path, callers: Sequence[LimitedCaller]) -> Path:
    """Write a SEQUENTIAL injection file with one line per call, in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "SEQUENTIAL\n" + "".join(caller.csv_line() + "\n" for caller in callers),
        encoding="utf-8",
    )
    return path


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """How one call of a limits caller ended, from its log line.

    Attributes:
        sent_at: when SIPp sent the INVITE, seconds on SIPp's clock.
        call_number: SIPp's call number (1 for the first call).
        caller: the caller ID the call presented.
        outcome: ``"answered"``, ``"refused"``, ``"cancelled"`` or
            ``"timed_out"``.
        status: the final response to the INVITE.
        rule: the rule a refusal named (Reason text); ``""`` otherwise.
        retry_after: the refusal's Retry-After in seconds; None when absent.
        ended_at: when the final response came, seconds on SIPp's clock,
            where the scenario logs it (uac_limited.xml, uac_no_answer.xml);
            None otherwise.
    """

    sent_at: float
    call_number: int
    caller: str
    outcome: str
    status: int
    rule: str
    retry_after: int | None
    ended_at: float | None = None


def call_outcomes(run: SippRun | SippClient) -> list[CallOutcome]:
    """The calls of a limits caller's run, by call number.

    Reads the ``-log_file`` that `LimitsPath` gives every caller; each line
    is ``sent_ms;call;caller;outcome;status;rule;retry_after[;ended_ms]``.
    """
    outcomes = []
    for line in _read_text(run.workdir / OUTCOME_LOG).splitlines():
        fields = line.strip().split(";")
        if len(fields) < 7 or not fields[0].isdigit():
            continue
        sent, number, caller, outcome, status, rule, retry = fields[:7]
        ended = fields[7] if len(fields) > 7 and fields[7].isdigit() else None
        outcomes.append(
            CallOutcome(
                sent_at=int(sent) / 1000,
                call_number=int(number),
                caller=caller,
                outcome=outcome,
                status=int(status) if status.isdigit() else 0,
                rule="" if rule == "-" else rule,
                retry_after=int(retry) if retry.isdigit() else None,
                ended_at=None if ended is None else int(ended) / 1000,
            )
        )
    return sorted(outcomes, key=lambda outcome: outcome.call_number)


def _sipp_clock_slack() -> float:
    """How much earlier than the moment it stamps a time on SIPp's clock may read.

    SIPp 3.6 reads CLOCK_MONOTONIC_COARSE, which lags by up to one kernel
    tick, and keeps whole milliseconds.
    """
    try:
        tick = time.clock_getres(6)  # CLOCK_MONOTONIC_COARSE on Linux
    except OSError:
        tick = 0.01
    return tick + 0.001


# See `_sipp_clock_slack`.
SIPP_CLOCK_SLACK = _sipp_clock_slack()


def cps_decisions(outcomes: Sequence[CallOutcome]) -> list[Decision]:
    """Calls of one caller as `bucket_bounds` takes them: answered is admitted.

    The caller's scenario must log when the final response came
    (uac_limited.xml); SIPp's times are bounds given `SIPP_CLOCK_SLACK`.
    """
    return [Decision(o.sent_at, o.ended_at, o.outcome == "answered") for o in outcomes]


MetricSamples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_metrics(port: int) -> MetricSamples:
    """sipguard's /metrics on 127.0.0.1:`port`: each sample by name and sorted labels."""
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=10.0) as response:
        text = response.read().decode("utf-8")
    samples: MetricSamples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def wait_until_idle(port: int, *, timeout: float) -> MetricSamples:
    """Wait until sipguard's metrics show no transaction and no live call; the last scrape.

    What an engineer reads before a clean stop: every timer of every call
    (Timers K, I, D... after the last message) has run. Returns the last
    scrape whether or not it got there within `timeout`; the caller asserts.
    """
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape_metrics(port)
        busy = samples.get(("sipguard_transactions", ()), 1.0) + sum(
            value for (name, _), value in samples.items() if name == "sipguard_live_calls"
        )
        if busy == 0 or time.monotonic() >= deadline:
            return samples
        time.sleep(0.2)


_SHUTDOWN_LINE = re.compile(r"sipguard stopping: ((?:\w+=\d+ ?)+)")


def shutdown_summary(guard: Sipguard) -> dict[str, int] | None:
    """The counters of sipguard's last ``sipguard stopping: ...`` log line.

    E.g. ``{"active_calls": 0, "dialogs": 0, "transactions": 0,
    "rate_slots": 0}``; None when sipguard has not logged it (yet).
    """
    matches = _SHUTDOWN_LINE.findall(guard.stderr)
    if not matches:
        return None
    return {name: int(value) for name, value in (pair.split("=") for pair in matches[-1].split())}


@dataclass
class LimitsPath(CallPath):
    """A call path whose sipguard runs the two-trunk limits rule file.

    Attributes (besides `CallPath`'s, where `trunk_port` is the first of
    `trunk_ports`):
        trunk_ports: the source ports of ``trunk-a``.
        other_trunk_port: the source port of ``trunk-b``.
        uas_port: the SIPp UAS's port (both trunks' route).
        metrics_port: where sipguard serves its metrics; None: it does not.
        retired_uas: the UASes `replace_uas` stopped, oldest first.
    """

    trunk_ports: tuple[int, ...] = ()
    other_trunk_port: int = 0
    uas_port: int = 0
    metrics_port: int | None = None
    retired_uas: list[SippRun] = field(default_factory=list)
    _clients: list[SippClient] = field(default_factory=list)

    def start(
        self,
        scenario: str,
        *,
        calls: int,
        rate: float,
        injection: Path,
        local_port: int | None = None,
        timeout: int = DEFAULT_UAC_TIMEOUT,
        extra_args: Sequence[str] = (),
    ) -> SippClient:
        """Start a SIPp UAC through sipguard in the background.

        It logs its calls to `OUTCOME_LOG` in its run directory (for the
        scenarios that log them; see `call_outcomes`). `local_port` is the
        first port of ``trunk-a`` by default.
        """
        number = len(self._runs) + len(self._clients) + 1
        workdir = self.workdir / f"uac-{number}-{Path(scenario).stem}"
        client = start_uac(
            scenario,
            target_port=self.sipguard.port,
            local_port=self.trunk_port if local_port is None else local_port,
            transport=self.transport,
            calls=calls,
            rate=rate,
            workdir=workdir,
            injection=injection,
            timeout=timeout,
            extra_args=[*extra_args, "-trace_logs", "-log_file", str(workdir / OUTCOME_LOG)],
        )
        self._clients.append(client)
        return client

    def run(
        self,
        scenario: str,
        *,
        calls: int,
        rate: float,
        injection: Path,
        local_port: int | None = None,
        timeout: int = DEFAULT_UAC_TIMEOUT,
        extra_args: Sequence[str] = (),
    ) -> SippRun:
        """`start`, then wait until SIPp has finished."""
        return self.start(
            scenario,
            calls=calls,
            rate=rate,
            injection=injection,
            local_port=local_port,
            timeout=timeout,
            extra_args=extra_args,
        ).wait()

    def replace_uas(
        self,
        scenario: str,
        *,
        extra_args: Sequence[str] = (),
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
    ) -> SippRun:
        """Stop the UAS and start `scenario` on the same port; the old UAS's outcome.

        The trunks' route stays the same, so sipguard's next calls reach the
        new callee. `stop_timeout` is how long the old UAS may take to finish
        its calls (see `SippServer.stop`).
        """
        old = self.uas.stop(timeout=stop_timeout)
        self.retired_uas.append(old)
        number = len(self.retired_uas) + 1
        self.uas = start_uas(
            scenario,
            port=self.uas_port,
            transport=self.transport,
            workdir=self.workdir / f"uas-{number}-{Path(scenario).stem}",
            extra_args=extra_args,
        )
        return old

    def explain(self, *runs: SippRun) -> str:
        """`CallPath.explain`, with the UASes `replace_uas` stopped before it."""
        retired = [uas.describe() for uas in self.retired_uas]
        return "\n\n".join([*retired, super().explain(*runs)])

    def close(self) -> None:
        """Stop any caller still running, then the UAS and sipguard."""
        try:
            for client in self._clients:
                client.stop()
        finally:
            super().close()


__all__ += [
    "OUTCOME_LOG",
    "TRUNK_A",
    "TRUNK_B",
    "CallOutcome",
    "LimitedCaller",
    "LimitsPath",
    "SIPP_CLOCK_SLACK",
    "MetricSamples",
    "call_outcomes",
    "cps_decisions",
    "scrape_metrics",
    "wait_until_idle",
    "limits_rules_text",
    "shutdown_summary",
    "write_limited_callers",
]
