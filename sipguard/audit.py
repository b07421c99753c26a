"""The audit trail: one JSON line per decision and per call end, for traceback.

Regulators require the call records of every decision to be kept. The call
path must not wait for a disk, so `AuditLog.submit` only appends the event
(and the wall-clock time) to a bounded in-memory queue; a writer thread turns
queued events into JSON lines, writes them, rotates the file by size or age
(the rotated file is gzipped), and fsyncs on a schedule and on `close`.

What never blocks and what is counted:

- `submit` is an append to a deque: no I/O, no formatting. Past
  `queue_limit` waiting events it drops the event and counts it in
  `dropped` (the shutdown line and the metrics report it): the trail says
  what it lost rather than stalling calls.
- A write error (disk full, permissions) is logged once and counted in
  `write_errors`; the writer keeps trying with the next batch.

The record of a decision carries: `ts` (UTC, ISO 8601 with ms), `event`
(`decision`), `verdict` (`allow`, `reject`, or `monitor` for a call relayed
in monitor mode although a rule fired), `rule`, `code`, `trunk`, `source`
(`transport:host:port`), `call_id` (inbound) and `out_call_id` (outbound,
allowed calls), `from` and `pai` (the headers as received), `caller` and
`callee` (normalised to E.164 when readable), `warnings`, and for a
refusal `reason`: the rule's explanation with what made it fire, in full,
whatever the caller was told (rule file `answers.detail`). The record of a
call end carries `event` (`end`), `trunk`, `call_id`, `out_call_id`,
`caller`, `status` (the final status the caller got), `ended_by` (`caller`,
`callee`, `timeout`, `error`, `shutdown`), `answered`, `duration` (seconds
since the INVITE) and, for unanswered calls that rang, `ringing_for`.

Ring 3: a driver module (threads, files).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sipguard.b2bua import CallEnded, CallRefused, CallStarted

__all__ = ["AuditLog", "AuditSettings", "AuditStats", "record_of"]

log = logging.getLogger("sipguard")

AuditEvent = CallStarted | CallRefused | CallEnded


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """Where and how the trail is written.

    Attributes:
        path: the live file; rotated files sit beside it as
            `<name>.<UTC time>.gz`.
        max_bytes: rotate once the live file reaches this size.
        rotate_every: rotate once the live file is this many seconds old
            (None: by size only).
        keep: rotated files kept; older ones are deleted.
        fsync_every: seconds between fsyncs of the live file.
        queue_limit: events waiting to be written, at most; past it new
            events are dropped and counted.
        flush_every: seconds the writer sleeps between batches at most.
    """

    path: Path
    max_bytes: int = 100 * 1024 * 1024
    rotate_every: float | None = 86_400.0
    keep: int = 90
    fsync_every: float = 1.0
    queue_limit: int = 100_000
    flush_every: float = 0.1


@dataclass(frozen=True, slots=True)
class AuditStats:
    """How the trail is doing: records written, events dropped, write errors, rotations."""

    written: int
    dropped: int
    write_errors: int
    rotations: int
    queued: int


class AuditLog:
    """A bounded queue in front of a writer thread that owns the file.

    Args:
        settings: where and how to write.
        wall_clock: seconds since the epoch (the records' timestamps).
    """

    def __init__(
        self, settings: AuditSettings, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self._clock = wall_clock
        self._queue: deque[tuple[float, AuditEvent]] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._written = 0
        self._dropped = 0
        self._write_errors = 0
        self._rotations = 0
        self._file: Any = None
        self._opened_at = 0.0
        self._last_fsync = 0.0
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)

    @property
    def stats(self) -> AuditStats:
        return AuditStats(
            written=self._written,
            dropped=self._dropped,
            write_errors=self._write_errors,
            rotations=self._rotations,
            queued=len(self._queue),
        )

    def start(self) -> None:
        """Open the live file (creating its directory) and start the writer."""
        self.settings.path.parent.mkdir(parents=True, exist_ok=True)
        self._open()
        self._thread.start()

    def submit(self, event: AuditEvent) -> None:
        """Queue `event` for the trail; never blocks. Dropped (and counted) when full."""
        queue = self._queue
        if len(queue) >= self.settings.queue_limit:
            self._dropped += 1
            return
        queue.append((self._clock(), event))

    def close(self, *, timeout: float = 10.0) -> None:
        """Write everything queued, fsync, and stop the writer."""
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "audit writer did not finish within %.0fs; %d records left",
                timeout,
                len(self._queue),
            )

    # -- the writer thread ---------------------------------------------------------

    def _run(self) -> None:
        settings = self.settings
        while True:
            self._wake.wait(settings.flush_every)
            self._wake.clear()
            self._write_batch()
            stopping = self._stopping
            now = time.monotonic()
            if stopping or now - self._last_fsync >= settings.fsync_every:
                self._sync(now)
            if stopping and not self._queue:
                self._close_file()
                return

    def _write_batch(self) -> None:
        queue = self._queue
        if not queue:
            return
        lines = []
        while queue:
            wall, event = queue.popleft()
            lines.append(json.dumps(record_of(event, wall), separators=(",", ":")))
        text = "\n".join(lines) + "\n"
        try:
            self._rotate_if_due(len(text))
            self._file.write(text)
            self._file.flush()
        except (OSError, ValueError) as exc:
            if not self._write_errors:
                log.error("audit log %s: cannot write: %s", self.settings.path, exc)
            self._write_errors += 1
            return
        self._written += len(lines)

    def _sync(self, now: float) -> None:
        self._last_fsync = now
        if self._file is None:
            return
        try:
            os.fsync(self._file.fileno())
        except (OSError, ValueError) as exc:
            self._write_errors += 1
            log.error("audit log %s: fsync failed: %s", self.settings.path, exc)

    # -- files ---------------------------------------------------------------------------

    def _open(self) -> None:
        self._file = open(self.settings.path, "a", encoding="utf-8")  # noqa: SIM115
        self._opened_at = self._clock()

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _rotate_if_due(self, incoming: int) -> None:
        settings = self.settings
        size = self._file.tell()
        too_big = size > 0 and size + incoming > settings.max_bytes
        too_old = (
            settings.rotate_every is not None
            and size > 0
            and self._clock() - self._opened_at >= settings.rotate_every
        )
        if not (too_big or too_old):
            return
        os.fsync(self._file.fileno())
        self._close_file()
        stamp = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = settings.path
        rotated = path.with_name(f"{path.name}.{stamp}")
        path.rename(rotated)
        self._open()
        with open(rotated, "rb") as plain, gzip.open(f"{rotated}.gz", "wb") as packed:
            shutil.copyfileobj(plain, packed)
        rotated.unlink()
        self._rotations += 1
        self._prune()

    def _prune(self) -> None:
        path = self.settings.path
        rotated = sorted(path.parent.glob(f"{path.name}.*.gz"))
        for old in rotated[: max(0, len(rotated) - self.settings.keep)]:
            old.unlink(missing_ok=True)


def _timestamp(wall: float) -> str:
    """`wall` as ISO 8601 UTC with milliseconds (`...T12:00:00.123Z`); the
    formatted second is reused (thousands of records share it at load)."""
    fraction, whole = math.modf(wall)
    second, micros = int(whole), round(fraction * 1e6)  # as datetime rounds
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    global _last_second
    if _last_second[0] != second:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _last_second = (second, text)
    return f"{_last_second[1]}.{micros // 1000:03d}Z"


_last_second: tuple[int, str] = (-1, "")


def record_of(event: AuditEvent, wall: float) -> dict[str, object]:
    """The JSON object of one audit line."""
    ts = _timestamp(wall)
    if isinstance(event, CallEnded):
        record: dict[str, object] = {
            "ts": ts,
            "event": "end",
            "trunk": event.trunk,
            "call_id": event.a_call_id,
            "out_call_id": event.b_call_id,
            "caller": event.caller,
            "status": event.status,
            "ended_by": event.ended_by,
            "answered": event.answered,
            "duration": round(event.time - event.start, 3),
        }
        if event.ringing_for is not None:
            record["ringing_for"] = round(event.ringing_for, 3)
        return record
    request = event.request
    peer = event.peer
    record = {
        "ts": ts,
        "event": "decision",
        "trunk": event.trunk,
        "source": f"{peer.transport}:{peer.host}:{peer.port}",
    }
    if isinstance(event, CallStarted):
        record |= {
            "verdict": "monitor" if event.monitor_rule else "allow",
            "rule": event.monitor_rule,
            "code": None,
            "call_id": event.a_call_id,
            "out_call_id": event.b_call_id,
        }
    else:
        record |= {
            "verdict": "reject",
            "rule": event.rule,
            "code": event.status,
            "call_id": event.call_id,
            "out_call_id": None,
            "reason": event.detail or None,
        }
    headers = request.headers if request is not None else None
    record |= {
        "from": headers.get("from") if headers is not None else None,
        "pai": ", ".join(headers.get_all("p-asserted-identity")) or None
        if headers is not None
        else None,
        "caller": event.caller,
        "callee": event.callee,
    }
    if isinstance(event, CallStarted) and event.warnings:
        record["warnings"] = list(event.warnings)
    return record
