"""A real Kamailio edge proxy around sipguard, for the edge-proxy tests.

This is a helper module for the integration tests, not a test file. It owns
the Kamailio process (the Debian package ``kamailio``, which ``make setup``
installs) and the two call paths it takes part in:

- ``front``: SIPp UAC -> Kamailio -> sipguard -> SIPp UAS. Kamailio is the
  carrier's edge proxy; it record-routes, and the trunk sipguard sees is
  Kamailio's address.
- ``behind``: SIPp UAC -> sipguard -> Kamailio -> SIPp UAS. Kamailio is the
  trunk's route, record-routing toward the callee.

Kamailio runs ``kamailio/edge.cfg`` (stock-style routing: ``record_route()``,
``loose_route()``, in-dialog requests without a Route of its own refused,
``t_relay()``), in the foreground with one worker per listener, its working
and runtime directories in the test's directory, on a free port given on
the command line for UDP and TCP alike, and its next hop as a ``-A``
define. It runs in its own process group, which `Kamailio.stop` ends, so no
worker outlives the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.sipp import (
    CALLERS_CSV,
    DEFAULT_UAC_TIMEOUT,
    HOST,
    CallPath,
    PortTaken,
    SippRun,
    options_ping,
    run_uac,
)

__all__ = ["EDGE_CFG", "EdgePath", "Kamailio", "kamailio_path", "start_kamailio"]

EDGE_CFG = Path(__file__).resolve().parent / "kamailio" / "edge.cfg"
# From exec to answering OPTIONS: Kamailio parses its script, loads a dozen
# modules and forks its workers in well under a second.
DEFAULT_READY_TIMEOUT = 15.0
# How much of Kamailio's log goes into an assertion message.
_LOG_TAIL_CHARS = 4000


def kamailio_path() -> str:
    """The kamailio binary; the test fails with the install hint without it."""
    path = shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None
    )
    if path is None:
        pytest.fail("kamailio is not installed: `make setup` (Debian package kamailio)")
    return path


@dataclass
class Kamailio:
    """A running Kamailio (main process and workers, one process group)."""

    process: subprocess.Popen[bytes]
    port: int
    next_hop: str
    workdir: Path

    @property
    def log(self) -> str:
        """Everything Kamailio logged so far (``-E``: its stderr)."""
        path = self.workdir / "kamailio.stderr"
        return path.read_text(errors="replace") if path.is_file() else ""

    def describe(self) -> str:
        """Kamailio's state and log tail, for assertion messages."""
        status = self.process.poll()
        state = "running" if status is None else f"exited with status {status}"
        return (
            f"kamailio ({state}) on {HOST}:{self.port}, next hop {self.next_hop}:\n"
            f"--- stderr (tail) ---\n{self.log[-_LOG_TAIL_CHARS:]}"
        )

    def stop(self, *, timeout: float = 5.0) -> None:
        """SIGTERM to the process group, then SIGKILL; the workers go with it."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=wait)
                # the main process is gone; make sure no worker is left
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                return


def start_kamailio(
    *,
    port: int,
    next_hop: str,
    workdir: Path,
    ready_timeout: float = DEFAULT_READY_TIMEOUT,
) -> Kamailio:
    """Start Kamailio with ``edge.cfg`` on `port` (UDP and TCP) and wait until it serves.

    Args:
        port: Kamailio's port on 127.0.0.1, for UDP and TCP.
        next_hop: where new calls go, a SIP URI (``sip:127.0.0.1:5060;transport=tcp``).
        workdir: its working and runtime directory, where its log is kept.

    Raises:
        PortTaken: Kamailio could not bind `port` (another process has it).
        RuntimeError: Kamailio exited, or did not answer OPTIONS and accept a
            TCP connection within `ready_timeout` seconds.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    command = [
        kamailio_path(),
        "-f", str(EDGE_CFG),
        "-DD", "-E",  # foreground (workers forked), log to stderr
        "-n", "1",  # one worker per listener
        "-m", "32", "-M", "8",
        "-w", str(workdir), "-Y", str(workdir),
        "-l", f"udp:{HOST}:{port}", "-l", f"tcp:{HOST}:{port}",
        "-A", f'NEXT_HOP="{next_hop}"',
    ]  # fmt: skip
    with open(workdir / "kamailio.stderr", "wb") as stderr:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            start_new_session=True,  # its own process group, for stop()
        )
    kamailio = Kamailio(process, port, next_hop, workdir)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            kamailio.stop()
            if "Address already in use" in kamailio.log:
                raise PortTaken(f"kamailio could not bind {HOST}:{port}\n{kamailio.describe()}")
            raise RuntimeError(f"kamailio exited at start\n{kamailio.describe()}")
        if options_ping(port, timeout=0.2) == 200 and _accepts_tcp(port):
            return kamailio
        time.sleep(0.05)
    kamailio.stop()
    raise RuntimeError(f"kamailio did not serve {HOST}:{port} in time\n{kamailio.describe()}")


def _accepts_tcp(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((HOST, port)) == 0


@dataclass
class EdgePath(CallPath):
    """sipguard and a SIPp UAS with Kamailio in front of sipguard or behind it.

    Attributes (besides `CallPath`'s; `trunk_port` is the caller's own port):
        kamailio: the proxy.
        layout: ``"front"`` (callers reach sipguard through Kamailio, which
            is the trunk) or ``"behind"`` (Kamailio is the trunk's route).
        entry_port: where callers send: Kamailio in front, sipguard behind.
    """

    kamailio: Kamailio | None = None
    layout: str = "front"
    entry_port: int = 0

    def call(
        self,
        scenario: str,
        *,
        calls: int,
        rate: float,
        local_port: int | None = None,
        injection: Path = CALLERS_CSV,
        timeout: int = DEFAULT_UAC_TIMEOUT,
        extra_args: Sequence[str] = (),
    ) -> SippRun:
        """Run a SIPp UAC scenario through the path's entry to completion."""
        name = Path(scenario).stem
        run = run_uac(
            scenario,
            target_port=self.entry_port,
            local_port=self.trunk_port if local_port is None else local_port,
            transport=self.transport,
            calls=calls,
            rate=rate,
            workdir=self.workdir / f"uac-{len(self._runs) + 1}-{name}",
            injection=injection,
            timeout=timeout,
            extra_args=extra_args,
        )
        self._runs.append(run)
        return run

    def explain(self, *runs: SippRun) -> str:
        """`CallPath.explain`, with Kamailio's state and log."""
        parts = [super().explain(*runs)]
        if self.kamailio is not None:
            parts.append(self.kamailio.describe())
        return "\n\n".join(parts)

    def close(self) -> None:
        """Stop the UAS, sipguard, then Kamailio."""
        try:
            super().close()
        finally:
            if self.kamailio is not None:
                self.kamailio.stop()
