"""A real redis-server on 127.0.0.1 for the shared rate-table tests.

`make setup` installs it (Debian package redis-server); a test that needs it
fails with that hint when it is missing rather than skipping. Each server
runs in the test's own directory, on a free port, without persistence, and
can be stopped, paused (SIGSTOP, to play a server that hangs) and started
again on the same port.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.ports import PortTaken, free_ports

HOST = "127.0.0.1"
# redis-server's log line for a port in use ("... Address already in use").
_PORT_TAKEN = "Address already in use"
# First starts that lose their port to another process before giving up.
_ATTEMPTS = 3


def redis_server_path() -> str:
    """The redis-server binary; the test fails with the install hint without it."""
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if path is None:
        pytest.fail("redis-server is not installed: `make setup` (Debian package redis-server)")
    return path


class RedisServer:
    """One redis-server process on `port`, with its log in `workdir`.

    Without a `port` it takes a free one (`free_ports`); should another
    process bind that port before the first start does, the first start
    tries again on a fresh one. Later starts keep the port.
    """

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self._port_is_ours = port is None
        self.port = port or free_ports(1)[0]
        self.process: subprocess.Popen[bytes] | None = None
        self._started = False
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                self._start()
            except PortTaken:
                if self._started or not self._port_is_ours or attempt == _ATTEMPTS:
                    raise
                self.port = free_ports(1)[0]
                continue
            self._started = True
            return

    def _start(self) -> None:
        command = [
            redis_server_path(),
            "--bind", HOST,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log()
                if _PORT_TAKEN in log:
                    raise PortTaken(f"redis-server could not bind {HOST}:{self.port}: {log}")
                raise RuntimeError(f"redis-server exited: {log}")
            if self.ping():
                return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer within 10 s: {self.log()}")

    def ping(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *words: str) -> bytes:
        """One inline command's raw reply (for test checks)."""
        with socket.create_connection((HOST, self.port), timeout=2.0) as sock:
            sock.sendall((" ".join(words) + "\r\n").encode())
            return sock.recv(65536)

    def pause(self) -> None:
        """Freeze the server: connections stay open, nothing is answered."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def log(self) -> str:
        path = self.workdir / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""
