"""The asyncio driver: sockets, the clock, timers, signals and rule reloads (ring 3).

The driver owns everything the core may not touch. For every input it calls
the core with `now = loop.time()`, then flushes the core's transmissions,
drains its events, and re-arms a single `call_at` timer for the core's next
deadline (the shape of aioquic's asyncio protocol).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sipguard.audit import AuditLog, AuditSettings
from sipguard.b2bua import B2BUA, CoreConfig
from sipguard.dialog import IdFactory, LocalAddress
from sipguard.errors import RuleFileErrors, SipProtocolError, StartupError
from sipguard.events import (
    CallEnded,
    CallRefused,
    CallStarted,
    Event,
    InDialogMonitored,
    MessageRejected,
)
from sipguard.gate import PolicyGate, build_policy
from sipguard.heap import CycleCollector, settle
from sipguard.metrics import Metrics, StateReading
from sipguard.peer import Peer
from sipguard.policy.compiled import phrase_for
from sipguard.ratesync import RedisSync, SyncSettings
from sipguard.ratetable import NO_LIMITS, RateTable
from sipguard.rules.loader import load_rules
from sipguard.rules.schema import RateTableSettings, RuleSet
from sipguard.sharedtable import SharedRateTable
from sipguard.sip.parser import ParseLimits
from sipguard.sip.serializer import printable
from sipguard.strangers import StrangerTally
from sipguard.transport import Transports

__all__ = ["Server", "ServerOptions", "serve"]

log = logging.getLogger("sipguard")

# How often the driver looks for a changed rule file and idle TCP connections.
_HOUSEKEEPING_INTERVAL = 2.0
# How often the INVITEs of unknown sources are summed up in one log line
# (each has its audit record; a line each would let a scanner fill the log).
UNKNOWN_SOURCE_SUMMARY_INTERVAL = 10.0
# Keys the rate table may examine per housekeeping tick (a few ms of work).
_SWEEP_BUDGET = 2000

# How long a SIGTERM waits for live calls to end before hanging them up.
DEFAULT_DRAIN_TIMEOUT = 30.0
# How often a drain looks whether the last call has ended.
_DRAIN_POLL = 0.2
# After hanging up at the deadline: time for the BYEs to leave.
_DRAIN_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class ServerOptions:
    rules_path: Path
    watch_rules: bool = True
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT


class Server:
    """One sipguard process: transports, the B2BUA core, and the rules."""

    def __init__(self, rules: RuleSet, options: ServerOptions) -> None:
        self.rules = rules
        self.options = options
        self.loop = asyncio.get_running_loop()
        protection = rules.protection
        self.transports = Transports(
            self.loop,
            self,
            max_message_size=protection.max_message_size,
            tcp_idle_timeout=protection.tcp_idle_timeout,
            tcp_message_timeout=protection.tcp_message_timeout,
            tcp_connections_per_source=protection.tcp_connections_per_source,
            trunk_of=self._trunk_of_source,
        )
        self.core: B2BUA | None = None
        self.ratetable, self.ratesync = _rate_table(rules.ratetable, clock=self.loop.time)
        self.audit = (
            None if rules.audit_log is None else AuditLog(AuditSettings(Path(rules.audit_log)))
        )
        self.metrics = None if rules.metrics is None else Metrics(self._state_from_any_thread)
        self._loop_thread = threading.get_ident()
        self.reloads = 0
        self.last_reload_ok = True
        self.rules_loaded_at = time.time()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._rules_stamp = _file_stamp(options.rules_path)
        self._stopped = asyncio.Event()
        self._housekeeping: asyncio.TimerHandle | None = None
        self._cycles = CycleCollector(now=self.loop.time())
        self.strangers = StrangerTally()
        self._strangers_logged_at = self.loop.time()
        self.listening: list[str] = []
        self.internal_errors = 0

    async def start(self) -> None:
        """Open every listening socket and build the core."""
        local: dict[str, LocalAddress] = {}
        for endpoint in self.rules.listen:
            try:
                if endpoint.transport == "udp":
                    host, port = await self.transports.listen_udp(endpoint.host, endpoint.port)
                else:
                    host, port = await self.transports.listen_tcp(endpoint.host, endpoint.port)
            except OSError as exc:
                raise StartupError(f"cannot listen on {endpoint}: {_cause(exc)}") from exc
            local.setdefault(endpoint.transport, LocalAddress(endpoint.transport, host, port))
            self.listening.append(f"{endpoint.transport}:{host}:{port}")
        self.core = B2BUA(
            config=_core_config(self.rules, local),
            gate=self._gate(self.rules),
            # The kernel's CSPRNG: a stranger sees tags and must not predict them.
            ids=IdFactory(os.urandom),
        )
        self._schedule_housekeeping()
        if self.ratesync is not None:
            self.ratesync.start()
        if self.audit is not None:
            self.audit.start()
        if self.metrics is not None and self.rules.metrics is not None:
            address, _, port_text = self.rules.metrics.rpartition(":")
            try:
                self.metrics.serve(address.strip("[]"), int(port_text))
            except OSError as exc:
                raise StartupError(
                    f"cannot serve metrics on {self.rules.metrics}: {_cause(exc)}"
                ) from exc

    # -- inputs from the transports --------------------------------------------

    def _trunk_of_source(self, host: str, port: int) -> str | None:
        """The trunk a TCP source belongs to under the current rules: its
        connections count apart from strangers' on the same address."""
        core = self.core
        return None if core is None else core.gate.trunk_of(Peer("tcp", host, port))

    def message_received(self, data: bytes, peer: Peer) -> None:
        core = self.core
        if core is None:
            return
        try:
            core.receive_datagram(data, peer, now=self.loop.time())
        except Exception:
            # The driver's catch-all: a defect in the core must not stop the
            # server. Log it with the input that caused it, drop the input,
            # and still send what the core queued before it failed.
            log.exception("internal error on a message from %s:%d; dropped", peer.host, peer.port)
            self.internal_errors += 1
        self._flush()

    def stream_error(self, data: bytes, peer: Peer, error: SipProtocolError) -> None:
        core = self.core
        if core is not None:
            core.stream_failed(data, peer, error, now=self.loop.time())
            self._flush()
        log.warning("tcp %s:%d: %s; closing", peer.host, peer.port, error)

    def peer_unreachable(self, peer: Peer) -> None:
        if self.core is not None:
            self.core.transport_failed(peer, now=self.loop.time())
            self._flush()

    # -- outputs ---------------------------------------------------------------------

    def _flush(self) -> None:
        """End a tick: record its decisions, then send its datagrams, then the rest.

        The audit records go to the operating system (one write) before any
        of the tick's datagrams leave, so a call that got its answer has its
        record even if the process is killed the next instant. Metrics, logs
        and the rate table's call ends come after the sends: the caller's
        answer does not wait for them.
        """
        core = self.core
        assert core is not None
        audit = self.audit
        events: list[Event] = []
        event = core.next_event()
        while event is not None:
            events.append(event)
            if audit is not None and not isinstance(event, MessageRejected):
                audit.add(event)
            event = core.next_event()
        if audit is not None:
            audit.flush()
        send = self.transports.send
        for transmit in core.datagrams_to_send():
            send(transmit.peer, transmit.data, transmit.reconnect)
        metrics = self.metrics
        for event in events:
            if isinstance(event, CallEnded):
                self._call_ended(event)
            elif isinstance(event, CallRefused) and event.trunk is None:
                self.strangers.count(event.peer.host, answered=event.status is not None)
            if metrics is not None:
                metrics.observe(event)
            _log_event(event)
        self._arm_timer(core.next_deadline())

    def _arm_timer(self, deadline: float | None) -> None:
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = None if deadline is None else self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        deadline = self._timer_at
        self._timer = self._timer_at = None
        if self.core is None or deadline is None:
            return
        try:
            self.core.handle_timer(now=max(deadline, self.loop.time()))
        except Exception:
            log.exception("internal error in a timer; continuing")
            self.internal_errors += 1
        self._flush()

    # -- rules --------------------------------------------------------------------------

    def reload(self) -> bool:
        """Load the rule file again; keep the old rules if the new file is bad."""
        path = self.options.rules_path
        self._rules_stamp = _file_stamp(path)
        self.reloads += 1
        self.last_reload_ok = False
        try:
            rules = load_rules(path)
        except RuleFileErrors as exc:
            for error in exc.errors:
                log.error("reload refused, keeping the old rules: %s", error)
            return False
        except OSError as exc:
            log.error("reload refused, keeping the old rules: %s: %s", path, exc)
            return False
        self.last_reload_ok = True
        self.rules_loaded_at = time.time()
        gate = self._gate(rules)
        if rules.audit_log != self.rules.audit_log:
            log.warning("audit_log changed in %s; it takes effect at the next restart", path)
        if rules.protection != self.rules.protection:
            log.warning(
                "protection settings changed in %s; they take effect at the next restart", path
            )
        answers, old = rules.answers, self.rules.answers
        if (answers.warn_agent, answers.server_header) != (old.warn_agent, old.server_header):
            log.warning(
                "answers.warn_agent or answers.server_header changed in %s; they take effect "
                "at the next restart (answers.detail takes effect now)",
                path,
            )
        if rules.ratetable != self.rules.ratetable:
            log.warning(
                "ratetable settings changed in %s; they take effect at the next restart "
                "(the counters stay where they are)",
                path,
            )
        self.rules = rules
        if self.core is not None:
            self.core.gate = gate  # atomic: one reference swap; calls in flight keep going
        log.info("rules reloaded from %s (sha256 %s)", path, rules_digest(path))
        return True

    def _gate(self, rules: RuleSet) -> PolicyGate:
        """A gate over `rules`; the rate table is the process's, so counters
        survive reloads."""
        policy = build_policy(rules)
        if isinstance(self.ratetable, SharedRateTable):
            self.ratetable.configure({trunk.name: trunk.limits for trunk in policy.trunks})
        timer = None if self.metrics is None else self.metrics.decision_seconds.observe
        return PolicyGate(policy, ratetable=self.ratetable, decision_timer=timer)

    # -- metrics ---------------------------------------------------------------------

    def _state_from_any_thread(self) -> StateReading:
        """The live state, read on the loop's thread (a scrape runs in its own)."""
        if threading.get_ident() == self._loop_thread:
            return self.state_reading()
        reading: concurrent.futures.Future[StateReading] = concurrent.futures.Future()

        def read() -> None:
            try:
                reading.set_result(self.state_reading())
            except Exception as exc:  # reported to the scrape, never to the loop
                reading.set_exception(exc)

        self.loop.call_soon_threadsafe(read)
        return reading.result(timeout=5.0)

    def state_reading(self) -> StateReading:
        """Live calls, rate-table keys and the health gauges, now."""
        core = self.core
        stats = self.ratetable.stats
        gauges: dict[str, float] = {
            "reloads_total": self.reloads,
            "last_reload_ok": float(self.last_reload_ok),
            "rules_loaded_timestamp_seconds": self.rules_loaded_at,
            "ratetable_evictions": stats.evictions,
            "internal_errors": self.internal_errors,
            "tcp_connections": self.transports.tcp_connection_count,
        }
        if core is not None:
            gauges["transactions"] = core.transaction_count
            gauges["unknown_source_answers_dropped"] = core.dropped_unknown
            gauges["draining"] = float(core.draining)
        if self.audit is not None:
            audit = self.audit.stats
            gauges["audit_records_written"] = audit.written
            gauges["audit_records_dropped"] = audit.dropped
            gauges["audit_write_errors"] = audit.write_errors
        if isinstance(self.ratetable, SharedRateTable):
            backend = self.ratetable.backend
            gauges["ratetable_backend_up"] = float(backend.up)
            gauges["ratetable_backend_failures"] = backend.failures
            gauges["ratetable_backend_refused_calls"] = backend.refused
        return StateReading(
            live_calls={} if core is None else core.calls_by_trunk,
            gauges=gauges,
            ratetable_keys={
                "callers": stats.caller_windows,
                "callees": stats.callee_windows,
                "one_ring": stats.one_ring_windows,
                "blocks": stats.blocks,
                "trunks": stats.trunks,
            },
        )

    def _call_ended(self, event: CallEnded) -> None:
        """Give the call's rate-table slot back (exactly once per counted call)."""
        if not event.rate_counted or self.core is None:
            return
        gate = self.core.gate
        trunk = gate.policy.by_name.get(event.trunk) if isinstance(gate, PolicyGate) else None
        self.ratetable.call_ended(
            NO_LIMITS if trunk is None else trunk.limits,
            trunk=event.trunk,
            caller=event.caller,
            ringing_for=event.ringing_for,
            answered=event.answered,
            now=self.loop.time(),
        )

    def _schedule_housekeeping(self) -> None:
        self._housekeeping = self.loop.call_later(_HOUSEKEEPING_INTERVAL, self._housekeep)

    def reload_if_changed(self) -> bool:
        """Reload when the rule file's mtime or size changed; True if reloaded."""
        if _file_stamp(self.options.rules_path) == self._rules_stamp:
            return False
        return self.reload()

    def _housekeep(self) -> None:
        if self.options.watch_rules:
            self.reload_if_changed()
        self.transports.close_idle()
        # A bounded pass per tick: a full pass over a million keys would stall
        # the loop for about a second; eviction bounds memory regardless.
        self.ratetable.sweep(now=self.loop.time(), budget=_SWEEP_BUDGET)
        if self._cycles.due(self.loop.time()):
            self._collect_cycles()
        if self.loop.time() - self._strangers_logged_at >= UNKNOWN_SOURCE_SUMMARY_INTERVAL:
            self.log_unknown_sources()
        self._schedule_housekeeping()

    def log_unknown_sources(self) -> None:
        """Log the INVITEs of unknown sources since the last summary, if any,
        in one line (every UNKNOWN_SOURCE_SUMMARY_INTERVAL and at shutdown)."""
        self._strangers_logged_at = self.loop.time()
        line = self.strangers.summary()
        if line is not None:
            log.info("%s", line)

    def _collect_cycles(self) -> None:
        """The periodic full collection (see sipguard.heap); it says what it found."""
        done = self._cycles.collect(self.loop.time())
        # Freed objects mean some state formed a cycle: worth a report.
        level = logging.INFO if done.freed else logging.DEBUG
        log.log(
            level,
            "full garbage collection: %d objects freed in cycles, %.0f ms",
            done.freed,
            done.seconds * 1000,
        )

    # -- lifecycle ---------------------------------------------------------------------

    def stop(self) -> None:
        self._stopped.set()

    def drain(self) -> None:
        """Stop taking new calls; stop once the live ones end, or hang them up
        at the drain deadline. A second call stops at once."""
        core = self.core
        if core is None or core.draining:
            self.stop()
            return
        core.draining = True
        deadline = self.loop.time() + self.options.drain_timeout
        log.info(
            "draining: %d live call(s); new calls get 503; stopping when they end, "
            "at most %.0fs (SIGTERM again to stop now)",
            core.calls_active,
            self.options.drain_timeout,
        )
        self._watch_drain(deadline)

    def _watch_drain(self, deadline: float) -> None:
        core = self.core
        assert core is not None
        if core.calls_active == 0:
            self.stop()
            return
        now = self.loop.time()
        if now < deadline:
            self.loop.call_later(_DRAIN_POLL, self._watch_drain, deadline)
            return
        count = core.hang_up_all(now=now)
        self._flush()
        log.warning("drain deadline reached: hung up %d call(s)", count)
        self.loop.call_later(_DRAIN_GRACE, self.stop)

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def close(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self._timer is not None:
            self._timer.cancel()
        await self.transports.close()
        if self.ratesync is not None:
            await self.ratesync.close()
        if self.metrics is not None:
            await self.loop.run_in_executor(None, self.metrics.close)
        if self.audit is not None:
            # Every record is written already; this fsyncs and closes the file.
            await self.loop.run_in_executor(None, self.audit.close)


def _core_config(rules: RuleSet, local: dict[str, LocalAddress]) -> CoreConfig:
    protection = rules.protection
    spec = rules.response_for("unknown_source")
    unknown_status = (
        (403, "Forbidden") if spec is None else (spec.code, spec.reason or phrase_for(spec.code))
    )
    return CoreConfig(
        local=local,
        parse_limits=ParseLimits(
            max_header_lines=protection.max_header_lines,
            max_line_length=protection.max_line_length,
            max_uri_length=protection.max_uri_length,
        ),
        max_message_size=protection.max_message_size,
        calls_per_trunk=protection.calls_per_trunk,
        transactions_per_trunk=protection.transactions_per_trunk,
        unknown_source_answer=protection.unknown_source_answer,
        unknown_source_rate=protection.unknown_source_rate,
        unknown_source_status=unknown_status,
        server_header=rules.answers.server_header,
        warn_agent=rules.answers.warn_agent,
    )


def _rate_table(
    settings: RateTableSettings, *, clock: Callable[[], float]
) -> tuple[RateTable, RedisSync | None]:
    """The process's rate table, and its sync task when it is shared through Redis."""
    if settings.backend != "redis" or settings.url is None:
        return RateTable(max_keys=settings.max_keys), None
    table = SharedRateTable(
        max_keys=settings.max_keys, on_backend_failure=settings.on_backend_failure
    )
    sync = RedisSync(
        table,
        SyncSettings(url=settings.url, interval=settings.sync_interval, timeout=settings.timeout),
        clock=clock,
    )
    return table, sync


def _log_event(event: Event) -> None:
    if isinstance(event, CallStarted):
        note = ""
        if event.emergency:
            note = " emergency" + (
                f" would-reject={event.monitor_rule}" if event.monitor_rule else ""
            )
        elif event.monitor_rule:
            note = f" monitor-would-reject={event.monitor_rule}"
        if event.anonymized:
            note += " anonymized=home_cli_from_abroad"
        if event.warnings:
            note += f" warn={','.join(event.warnings)}"
        # The callee (and, with no usable caller ID, the caller) is what the
        # request said, decoded: no line break of it may forge a log line.
        log.info(
            "allow   trunk=%s caller=%s callee=%s call-id=%s%s",
            event.trunk,
            printable(event.caller),
            printable(event.callee),
            event.a_call_id,
            note,
        )
    elif isinstance(event, CallRefused):
        # The full explanation, which the caller may not see; JSON-quoted,
        # since it can hold what the request said (a decoded line break).
        # A stranger's INVITE is a debug line: the info log sums them up
        # (Server.log_unknown_sources), so a scan cannot fill it.
        level = logging.INFO if event.trunk is not None else logging.DEBUG
        if not log.isEnabledFor(level):
            return  # not even the JSON quoting, at a scan's rate
        log.log(
            level,
            "%s %s %s trunk=%s source=%s:%d call-id=%s reason=%s%s",
            "reject " if event.status is not None else "drop   ",
            event.status if event.status is not None else "-",
            event.rule,
            event.trunk or "-",
            event.peer.host,
            event.peer.port,
            event.call_id,
            json.dumps(event.detail, ensure_ascii=False),
            "" if event.noted is None else f" monitored={event.noted}",
        )
    elif isinstance(event, InDialogMonitored):
        log.info(
            "monitor %s trunk=%s call-id=%s: relayed, the trunk only monitors this rule",
            event.rule,
            event.trunk,
            event.call_id,
        )
    elif isinstance(event, CallEnded):
        log.debug(
            "end     trunk=%s status=%d by=%s duration=%.1fs%s call-id=%s",
            event.trunk,
            event.status,
            event.ended_by,
            event.time - event.start,
            "" if event.answered_at is None else f" talk={event.time - event.answered_at:.1f}s",
            event.a_call_id,
        )
    elif isinstance(event, MessageRejected):
        if event.status in (420, 483, 503):  # a call refused outside the policy
            log.info(
                "refuse  %d %s source=%s:%d",
                event.status,
                event.reason,
                event.peer.host,
                event.peer.port,
            )
        else:
            log.debug("bad message from %s:%d: %s", event.peer.host, event.peer.port, event.reason)


def startup_summary(rules: RuleSet) -> list[str]:
    """What an engineer checks first: each trunk, and where records and counters go."""
    lines = []
    for trunk in rules.trunks:
        limits = trunk.limits
        shown = [
            f"{key}={value}"
            for key, value in (("cps", limits.cps), ("concurrent", limits.concurrent))
            if value is not None
        ]
        shown += [
            key
            for key in ("per_caller", "per_callee", "one_ring")
            if getattr(limits, key) is not None
        ]
        lines.append(
            f"  trunk {trunk.name}: {trunk.kind}, mode {rules.mode_of(trunk)}, "
            f"{len(trunk.sources)} source(s), {len(trunk.ranges)} range(s), "
            f"route {trunk.route}, limits {' '.join(shown) or 'none'}"
        )
    ratetable = rules.ratetable
    lines.append(
        f"  audit_log {rules.audit_log or 'off'}; metrics {rules.metrics or 'off'}; "
        f"ratetable {ratetable.backend}"
        + (f" ({ratetable.on_backend_failure} on failure)" if ratetable.backend == "redis" else "")
    )
    return lines


def _file_stamp(path: Path) -> tuple[float, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime, stat.st_size)


def rules_digest(path: Path) -> str:
    """The first 12 hex digits of the rule file's SHA-256, for logs."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return "unreadable"


def _cause(exc: OSError) -> str:
    """An OSError in words, without errno numbers or the loop's own wording
    (uvloop keeps the system's error as the cause of its own)."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower()
        cause = cause.__cause__
    return str(exc)


async def serve(rules: RuleSet, options: ServerOptions) -> None:
    """Run a server until SIGINT (at once) or SIGTERM (after draining); reload on SIGHUP.

    Raises:
        StartupError: a listen or metrics address cannot be used.
    """
    server = Server(rules, options)
    try:
        await server.start()
    except StartupError:
        await server.close()
        raise
    settle()
    loop = server.loop
    loop.add_signal_handler(signal.SIGTERM, server.drain)
    loop.add_signal_handler(signal.SIGINT, server.stop)
    loop.add_signal_handler(signal.SIGHUP, server.reload)
    log.info(
        "sipguard listening on %s; %d trunk(s) from %s (sha256 %s), mode %s",
        ", ".join(server.listening),
        len(rules.trunks),
        options.rules_path,
        rules_digest(options.rules_path),
        rules.mode,
    )
    for line in startup_summary(rules):
        log.info("%s", line)
    try:
        await server.wait_stopped()
    finally:
        server.log_unknown_sources()
        core = server.core
        if core is not None:
            log.info(
                "sipguard stopping: active_calls=%d dialogs=%d transactions=%d rate_slots=%d",
                core.calls_active,
                core.dialog_count,
                core.transaction_count,
                server.ratetable.stats.live_calls,
            )
            if isinstance(server.ratetable, SharedRateTable):
                backend = server.ratetable.backend
                log.info(
                    "rate table backend: up=%s syncs=%d failures=%d refused_calls=%d",
                    backend.up,
                    backend.syncs,
                    backend.failures,
                    backend.refused,
                )
        await server.close()
        if server.audit is not None:
            stats = server.audit.stats
            log.info(
                "audit log %s: written=%d dropped=%d write_errors=%d rotations=%d",
                server.audit.settings.path,
                stats.written,
                stats.dropped,
                stats.write_errors,
                stats.rotations,
            )
