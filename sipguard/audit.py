"""The audit trail: one JSON line per decision and per call end, for traceback.

Regulators require the call records of every decision to be kept, and a
call that was answered must have its record. The driver therefore hands
each event-loop tick's records to the operating system before that tick's
datagrams leave: `add` formats a record (no I/O), `flush` writes the tick's
records with a single `os.write` on the live file's descriptor (flush
required before the tick's sends). Once `flush` returns, the records are
in the kernel's page cache: a crash of the process (SIGKILL, a segfault,
the OOM killer) loses none of them. A thread fsyncs the live file every
`fsync_every` seconds and at `close`, so a crash of the machine (power,
kernel) loses at most that much.

What the call path pays, and what is counted:

- One `write(2)` per tick that produced records: a copy into the page
  cache, microseconds. The kernel may hold a writer back when dirty pages
  pile up faster than the disk takes them; then calls wait with the trail
  rather than go unrecorded. There is no queue to overflow.
- Rotation by size or age is a rename and an open on the loop; the old
  file's fsync, its gzip and the pruning of old files run on the thread.
  A rotated file a crash left uncompressed is compressed at the next start.
- A failed write (disk full, I/O error) is logged once, counted in
  `write_errors`, and its records in `dropped`; the next tick tries again.

The record of a decision carries: `ts` (UTC, ISO 8601 with ms), `event`
(`decision`), `verdict` (`allow`, `reject`, `monitor` for a call relayed
although a rule it only monitors fired, or `drop` for an unknown source's
INVITE dropped unanswered, with `code` null), `rule`, `code`, `trunk`, `source`
(`transport:host:port`), `call_id` (inbound) and `out_call_id` (outbound,
allowed calls), `from` and `pai` (the headers as received), `caller` and
`callee` (normalised to E.164 when readable), `warnings`, `emergency`
(true for a call to an emergency number; `rule` then names a rule that
would have refused it), `anonymized` (true for a home-country caller ID
that came in on an international trunk with `home_cli: anonymize` and was
relayed withheld; `caller` is then `anonymous`), and for a
refusal `reason`: the rule's explanation with what made it fire, in full,
whatever the caller was told (rule file `answers.detail`), and `monitored`
when a rule the trunk only monitors fired before the refusing one. The record of a
call end carries `event` (`end`), `trunk`, `call_id`, `out_call_id`,
`caller`, `status` (the final status the caller got), `ended_by` (`caller`,
`callee`, `timeout`, `error`, `shutdown`), `answered`, `duration` (seconds
from the INVITE to the end), for unanswered calls that rang `ringing_for`
(seconds from the first ringing response to the end), and for answered
calls `answered_at` (when the 2xx was relayed to the caller, UTC like
`ts`), `answer_after` (seconds from the INVITE to that 2xx: the ring time,
post-dial delay included) and `talk_time` (seconds from that 2xx to the
end; `answer_after` + `talk_time` = `duration`, to the millisecond). A
mid-call request relayed although a rule the trunk only monitors fired
(`identity_changed`) is an `in_dialog` record: `trunk`, `source`,
`verdict` (`monitor`), `rule`, `call_id`, `caller`.

Ring 3: a driver module (files, a thread).
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import re
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sipguard.events import CallEnded, CallRefused, CallStarted, InDialogMonitored

__all__ = ["AuditLog", "AuditSettings", "AuditStats", "record_of"]

log = logging.getLogger("sipguard")

AuditEvent = CallStarted | CallRefused | CallEnded | InDialogMonitored

# The live file is opened for appending only: each write lands at the end of
# the file, whatever else has it open.
_OPEN_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
# The UTC time in a rotated file's name: `<name>.20261118T110640250000Z`.
_STAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"
_STAMP = re.compile(r"\d{8}T\d{12}Z")
# One encoder for every record: json.dumps with `separators` builds a new one
# per call (measured: 5.3 us a record, 4.2 us with this one).
_ENCODER = json.JSONEncoder(separators=(",", ":"))
# After a failed rotation, keep writing to the live file this long (seconds)
# before trying again, rather than retrying (and logging) every tick.
_ROTATION_RETRY = 60.0


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
    """

    path: Path
    max_bytes: int = 100 * 1024 * 1024
    rotate_every: float | None = 86_400.0
    keep: int = 90
    fsync_every: float = 1.0


@dataclass(frozen=True, slots=True)
class AuditStats:
    """How the trail is doing.

    Attributes:
        written: records handed to the operating system.
        dropped: records lost to a failed write, or added after `close`.
        write_errors: failed writes, fsyncs and rotations.
        rotations: files rotated.
        pending: records added and not yet flushed (0 between ticks).
    """

    written: int
    dropped: int
    write_errors: int
    rotations: int
    pending: int


class AuditLog:
    """The live file, written one tick at a time; fsync and gzip on a thread.

    `add` and `flush` are called from one thread, the event loop's.

    Args:
        settings: where and how to write.
        wall_clock: seconds since the epoch (the records' timestamps).
    """

    def __init__(
        self, settings: AuditSettings, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self._clock = wall_clock
        self._pending: list[str] = []
        self._fd: int | None = None
        self._size = 0
        self._opened_at = 0.0
        self._retry_rotation_at = 0.0
        self._written = 0
        self._dropped = 0
        self._write_errors = 0
        self._rotations = 0
        # Rotated files for the thread: (descriptor to fsync and close, or
        # None; the plain file to compress).
        self._rotated: deque[tuple[int | None, Path]] = deque()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="audit-sync", daemon=True)

    @property
    def stats(self) -> AuditStats:
        return AuditStats(
            written=self._written,
            dropped=self._dropped,
            write_errors=self._write_errors,
            rotations=self._rotations,
            pending=len(self._pending),
        )

    def start(self) -> None:
        """Open the live file (creating its directory) and start the fsync thread.

        Raises:
            OSError: the directory or the file cannot be created or opened.
        """
        path = self.settings.path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._open()
        # Rotated files a crash left uncompressed (and half-written archives).
        for leftover in sorted(path.parent.glob(f"{path.name}.*")):
            stamp = leftover.name[len(path.name) + 1 :]
            if _STAMP.fullmatch(stamp):
                self._rotated.append((None, leftover))
            elif stamp.endswith(".gz.part") and _STAMP.fullmatch(stamp[: -len(".gz.part")]):
                leftover.unlink(missing_ok=True)
        self._thread.start()

    def add(self, event: AuditEvent) -> None:
        """Format `event`'s record for this tick's write; no I/O (flush required)."""
        self._pending.append(_ENCODER.encode(record_of(event, self._clock())))

    def flush(self) -> None:
        """Hand the records added since the last flush to the operating system.

        One `os.write` (more only if the kernel takes part of it), after a
        rotation if one is due. A failure is logged once and counted; the
        records are counted as dropped. Never raises.
        """
        pending = self._pending
        if not pending:
            return
        self._pending = []
        data = ("\n".join(pending) + "\n").encode()
        if self._fd is None:
            self._dropped += len(pending)
            return
        self._rotate_if_due(len(data))
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            if not self._write_errors:
                log.error("audit log %s: cannot write: %s", self.settings.path, exc)
            self._write_errors += 1
            self._dropped += len(pending)
            return
        self._size += len(data)
        self._written += len(pending)

    def close(self, *, timeout: float = 10.0) -> None:
        """Write what is pending, finish rotations, fsync and close the live file."""
        self.flush()
        self._stopping = True
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.error(
                "audit log %s: %d rotated file(s) not compressed within %.0fs",
                self.settings.path,
                len(self._rotated),
                timeout,
            )
        fd, self._fd = self._fd, None
        if fd is not None:
            self._sync(fd)
            try:
                os.close(fd)
            except OSError:
                self._write_errors += 1

    # -- the fsync thread ----------------------------------------------------------

    def _run(self) -> None:
        every = self.settings.fsync_every
        last_sync = time.monotonic()
        while True:
            self._wake.wait(every)
            self._wake.clear()
            stopping = self._stopping
            self._finish_rotations()
            now = time.monotonic()
            if now - last_sync >= every:
                last_sync = now
                fd = self._fd
                if fd is not None:
                    self._sync(fd)
            if stopping:
                self._finish_rotations()
                return

    def _sync(self, fd: int) -> None:
        try:
            os.fsync(fd)
        except OSError as exc:
            self._write_errors += 1
            log.error("audit log %s: fsync failed: %s", self.settings.path, exc)

    def _finish_rotations(self) -> None:
        """Fsync and close each rotated file, gzip it, then prune (on the thread)."""
        rotated = self._rotated
        if not rotated:
            return
        while rotated:
            fd, plain = rotated.popleft()
            if fd is not None:
                self._sync(fd)
                try:
                    os.close(fd)
                except OSError:
                    self._write_errors += 1
            try:
                _compress(plain)
            except OSError as exc:
                self._write_errors += 1
                log.error("audit log %s: cannot compress %s: %s", self.settings.path, plain, exc)
        self._prune()

    # -- files (on the loop) -------------------------------------------------------

    def _open(self) -> None:
        fd = os.open(self.settings.path, _OPEN_FLAGS, 0o666)
        self._fd = fd
        self._size = os.fstat(fd).st_size
        self._opened_at = self._clock()

    def _rotate_if_due(self, incoming: int) -> None:
        """Rename the live file and open a new one if it is too big or too old.

        The rename and the open are quick metadata operations; everything
        slow is left to the thread. If the new file cannot be opened, the
        old name is restored and writing goes on in the old file.
        """
        settings = self.settings
        size = self._size
        too_big = size > 0 and size + incoming > settings.max_bytes
        too_old = (
            settings.rotate_every is not None
            and size > 0
            and self._clock() - self._opened_at >= settings.rotate_every
        )
        if not (too_big or too_old) or self._clock() < self._retry_rotation_at:
            return
        path = settings.path
        stamp = datetime.fromtimestamp(self._clock(), UTC).strftime(_STAMP_FORMAT)
        rotated = path.with_name(f"{path.name}.{stamp}")
        old = self._fd
        try:
            path.rename(rotated)
        except OSError as exc:
            self._rotation_failed(exc)
            return
        try:
            self._open()
        except OSError as exc:
            self._rotation_failed(exc)
            self._fd = old
            try:
                rotated.rename(path)
            except OSError as again:
                # The old descriptor still writes, under the rotated name; the
                # next start compresses that file.
                log.error("audit log %s: cannot rename %s back: %s", path, rotated, again)
            return
        self._rotations += 1
        self._rotated.append((old, rotated))
        self._wake.set()

    def _rotation_failed(self, exc: OSError) -> None:
        """Count and log a failed rotation; keep writing, try again in a while."""
        self._write_errors += 1
        self._retry_rotation_at = self._clock() + _ROTATION_RETRY
        log.error(
            "audit log %s: cannot rotate (next try in %.0fs): %s",
            self.settings.path,
            _ROTATION_RETRY,
            exc,
        )

    def _prune(self) -> None:
        path = self.settings.path
        rotated = sorted(path.parent.glob(f"{path.name}.*.gz"))
        for old in rotated[: max(0, len(rotated) - self.settings.keep)]:
            old.unlink(missing_ok=True)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data`: a regular file takes it whole unless a limit hits."""
    written = os.write(fd, data)
    if written < len(data):
        view = memoryview(data)
        while written < len(data):
            written += os.write(fd, view[written:])


def _compress(plain: Path) -> None:
    """`plain` -> `plain.gz`, through a `.part` file that `sipguard trace` ignores."""
    part = plain.with_name(f"{plain.name}.gz.part")
    with open(plain, "rb") as source, gzip.open(part, "wb") as packed:
        shutil.copyfileobj(source, packed)
    part.rename(plain.with_name(f"{plain.name}.gz"))
    plain.unlink()


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
        answered_at = event.answered_at
        if answered_at is not None:
            # Ring time is answer_after; the talk time runs from the answer
            # to the end. The record is written as the call ends, so the
            # answer was `talk` seconds before `wall`.
            talk = event.time - answered_at
            record["answered_at"] = _timestamp(wall - talk)
            record["answer_after"] = round(answered_at - event.start, 3)
            record["talk_time"] = round(talk, 3)
        return record
    if isinstance(event, InDialogMonitored):
        peer = event.peer
        return {
            "ts": ts,
            "event": "in_dialog",
            "trunk": event.trunk,
            "source": f"{peer.transport}:{peer.host}:{peer.port}",
            "verdict": "monitor",
            "rule": event.rule,
            "call_id": event.call_id,
            "caller": event.caller,
        }
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
            "verdict": "monitor" if event.monitor_rule and not event.emergency else "allow",
            "rule": event.monitor_rule,
            "code": None,
            "call_id": event.a_call_id,
            "out_call_id": event.b_call_id,
        }
        if event.emergency:
            record["emergency"] = True  # an emergency bypass: `rule` would have refused it
        if event.anonymized:
            record["anonymized"] = True  # a home-country caller ID from abroad, withheld
    else:
        record |= {
            # An unknown source's INVITE dropped unanswered has no code.
            "verdict": "reject" if event.status is not None else "drop",
            "rule": event.rule,
            "code": event.status,
            "call_id": event.call_id,
            "out_call_id": None,
            "reason": event.detail or None,
        }
        if event.noted is not None:
            record["monitored"] = event.noted  # a rule only monitored fired first
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
