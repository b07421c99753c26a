"""`sipguard run --check-config`: will this rule file start and serve here?

`sipguard check` says whether a rule file is valid. Pre-flight goes on to
what only the machine can tell: every `listen` socket can be bound, the
audit trail's directory is writable, the metrics port is free, and the
shared rate table's Redis answers. Each check prints one line; the exit
status is 0 when all pass.

Ring 3: a driver module (sockets, files).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sipguard.rules.schema import RuleSet
from sipguard.rules.values import masked_url

__all__ = ["Check", "preflight"]


@dataclass(frozen=True, slots=True)
class Check:
    """One pre-flight check: what was checked, whether it passed, and why not."""

    what: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return f"{mark} {self.what}" + (f": {self.detail}" if self.detail else "")


def preflight(
    rules: RuleSet, *, redis_ping: Callable[[str], str | None] | None = None
) -> list[Check]:
    """Every check for `rules`, in the order a start-up would meet them."""
    checks = [_bind(endpoint.transport, endpoint.host, endpoint.port) for endpoint in rules.listen]
    if rules.audit_log is not None:
        checks.append(_writable(Path(rules.audit_log)))
    if rules.metrics is not None:
        host, _, port = rules.metrics.rpartition(":")
        checks.append(_bind("tcp", host.strip("[]"), int(port), what="metrics"))
    settings = rules.ratetable
    if settings.backend == "redis" and settings.url is not None:
        ping = redis_ping or _redis_ping
        problem = ping(settings.url)
        checks.append(
            Check(f"ratetable redis {masked_url(settings.url)}", problem is None, problem or "")
        )
    return checks


def _bind(transport: str, host: str, port: int, *, what: str = "listen") -> Check:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    label = f"{what} {transport}:{host}:{port}"
    try:
        with socket.socket(family, kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        return Check(label, False, exc.strerror or str(exc))
    return Check(label, True)


def _writable(path: Path) -> Check:
    label = f"audit_log {path}"
    directory = path.parent
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return Check(label, False, f"cannot create {directory}: {exc.strerror or exc}")
    if path.exists() and not os.access(path, os.W_OK):
        return Check(label, False, "the file is not writable")
    if not os.access(directory, os.W_OK):
        return Check(label, False, f"{directory} is not writable")
    return Check(label, True)


def _redis_ping(url: str) -> str | None:
    """None when Redis answers PING within a second, else what went wrong."""
    import redis
    from redis.exceptions import RedisError

    try:
        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        client.ping()
        client.close()
    except (RedisError, OSError) as exc:
        return str(exc) or type(exc).__name__
    return None
