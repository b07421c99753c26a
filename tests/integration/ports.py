"""Ports for the integration tests' processes: out of the kernel's way, and ours alone.

sipguard, SIPp, Kamailio and redis-server are told their ports on the
command line or in a rule file, so a test chooses each port before the
process that binds it starts, and in between the port is free for anyone
to take. A port the kernel hands out for a bind to port 0 lies in its
ephemeral range (``net.ipv4.ip_local_port_range``), the range from which
every outgoing connection and every bind to port 0 on the machine draws:
another test's OPTIONS probe, sipguard's own TCP connection to a callee, a
SIPp caller, any unrelated process. So `free_ports` chooses outside that
range, where the kernel never hands a port out by itself, and only ports
that are free for UDP and TCP alike when chosen.

Two test processes on one machine (parallel workers, or two runs at once)
would still choose alike. Each port is therefore also claimed with a lock
on one byte, at the port's offset, of a lock file shared by every test
process of this user; the kernel drops the lock when the process exits.
A process never hands out a port twice, so ports chosen for processes not
started yet stay distinct. What this cannot stop is an unrelated program
that binds a fixed port of the range at that very moment: `PortTaken`
lets a start-up that loses such a race be retried with fresh ports
(`with_fresh_ports`).

The allocator is one per test process, like the ports it hands out.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import random
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["PortTaken", "free_ports", "with_fresh_ports"]

HOST = "127.0.0.1"
# The lowest port chosen: above SIPp's media (6000 and up) and control
# (8888 and up) ports, which each SIPp process binds by itself, and above
# the well-known services.
_FLOOR = 20000
# Below this many candidates the choice falls back to the whole range above
# the floor (a kernel configured with an ephemeral range that covers it).
_MIN_CANDIDATES = 2000
# Linux's default, for a system that does not say.
_DEFAULT_EPHEMERAL = (32768, 60999)
# How often `with_fresh_ports` starts again after a lost race.
_ATTEMPTS = 3

T = TypeVar("T")


class PortTaken(RuntimeError):
    """A process could not bind a port chosen for it: someone else took it."""


def free_ports(count: int) -> list[int]:
    """Return `count` distinct ports on 127.0.0.1, free for UDP and TCP alike.

    They lie outside the kernel's ephemeral range and are claimed for this
    process, so neither a bind to port 0 anywhere on the machine nor
    another test process picks them up meanwhile (see the module docstring).
    """
    return _allocator().take(count)


def with_fresh_ports(count: int, start: Callable[[list[int]], T]) -> T:
    """``start(free_ports(count))``, again with fresh ports if it raises `PortTaken`.

    `start` must stop whatever it started before it raises.
    """
    attempt = 1
    while True:
        try:
            return start(free_ports(count))
        except PortTaken:
            if attempt >= _ATTEMPTS:
                raise
            attempt += 1


def _ephemeral_range() -> tuple[int, int]:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii")
        low, high = (int(value) for value in text.split())
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL
    return low, high


def _candidates() -> range:
    """The ports to choose from: the larger stretch above the floor outside the
    ephemeral range, or everything above the floor if neither is large enough."""
    low, high = _ephemeral_range()
    below = range(_FLOOR, max(_FLOOR, low))
    above = range(max(_FLOOR, high + 1), 65536)
    best = max(below, above, key=len)
    return best if len(best) >= _MIN_CANDIDATES else range(_FLOOR, 65536)


def _bindable(port: int) -> bool:
    """Whether nothing holds `port` on 127.0.0.1, over UDP or TCP.

    TCP binds without SO_REUSEADDR, so a port with a connection still in
    TIME_WAIT counts as taken: stricter than the servers, which reuse it.
    """
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                return False
    return True


class _PortAllocator:
    """Hands out ports of `candidates`, each at most once, each claimed in `lock_path`."""

    def __init__(self, candidates: range, lock_path: Path) -> None:
        self._candidates = candidates
        self._given: set[int] = set()
        # Where this process starts in the range: a run and a parallel one
        # start far apart, so they rarely even try the same port.
        self._next = random.SystemRandom().randrange(len(candidates))
        self._lock: int | None = None
        with contextlib.suppress(OSError):
            self._lock = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)

    def take(self, count: int) -> list[int]:
        ports: list[int] = []
        for _ in range(len(self._candidates)):
            if len(ports) == count:
                return ports
            port = self._candidates[self._next]
            self._next = (self._next + 1) % len(self._candidates)
            if port in self._given or not self._claim(port):
                continue
            self._given.add(port)
            if _bindable(port):
                ports.append(port)
        if len(ports) == count:
            return ports
        raise RuntimeError(f"fewer than {count} free ports left in {self._candidates}")

    def _claim(self, port: int) -> bool:
        """Lock byte `port` of the lock file; False if another process holds it.

        POSIX record locks belong to the process: they are kept until it
        exits (the descriptor is never closed) and are not inherited by the
        processes it starts.
        """
        if self._lock is None:
            return True
        try:
            fcntl.lockf(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
        except OSError:
            return False
        return True


@functools.cache
def _allocator() -> _PortAllocator:
    lock_path = Path(tempfile.gettempdir()) / f"sipguard-test-ports-{os.getuid()}.lock"
    return _PortAllocator(_candidates(), lock_path)
