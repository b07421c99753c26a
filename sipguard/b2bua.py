"""The B2BUA core: two legs per call, messages in, messages out (sans-IO).

`B2BUA` consumes parsed messages (or raw datagrams) with the peer they came
from and `now`, and produces `Transmit` commands (`datagrams_to_send`) and
call events (`next_event`), both defined in `sipguard.events`. It never
reads a clock or touches a socket: the driver calls `handle_timer(now=...)`
at `next_deadline()`.

Call model: the inbound leg A (we are its UAS) and the outbound leg B (we are
its UAC) have their own Call-ID, tags, CSeq and Via. Requests are relayed
between the legs by pairing a server transaction on one leg with a client
transaction on the other (`_Relay`); responses travel back the same pair.

The core runs the call flows and hands the rest to parts that own their
state: `TxTable` (sipguard/txtable.py) holds the live transactions by key
and their timers, and reports which timed out; `Protection`
(sipguard/protection.py) says whether a stranger gets an answer, whether a
trunk is at its ceiling, and what a retransmitted INVITE was answered. The
messages the core writes come from `sipguard.sip.builders` and
`sipguard.sip.salvage`.

Rules:
1. No open relay. A new call is admitted only by the `Gate` (trunk lookup and
   policy); a response, an in-dialog request or a CANCEL is accepted only
   from the peer of its leg or transaction (`_speaks_for_leg`, `speaks_for`);
   every request goes to a leg's fixed peer (see dialog.py).
2. Every call ends exactly once (`CallEnded`), whatever ends it: BYE, CANCEL,
   a failure response, a timeout, or a transport error; its dialogs are then
   forgotten, and its transactions linger only as long as RFC 3261 asks.
3. A CANCEL from the caller is answered at once (200 for the CANCEL, 487 for
   the INVITE); the B leg is cancelled as soon as it has sent a provisional
   response (§9.1), and a 2xx that crosses the CANCEL is ACKed and BYEd.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from sipguard.dialog import IdFactory, Leg, LocalAddress, reconnect_address
from sipguard.errors import MessageTooLarge, SipParseError, SipProtocolError
from sipguard.events import (
    CallEnded,
    CallRefused,
    CallStarted,
    Event,
    InDialogMonitored,
    MessageRejected,
    Transmit,
)
from sipguard.peer import Peer, speaks_for
from sipguard.policy.decision import Allow, Refuse, Relay
from sipguard.policy.engine import IdentityNumbers
from sipguard.policy.numbers import number_of_uri
from sipguard.policy.verdict import RULE_DEFAULTS
from sipguard.protection import Protection
from sipguard.rules.values import SERVICE_REFUSALS
from sipguard.sip.builders import (
    cancel_for,
    end_to_end_headers,
    make_response,
    option_tags,
    outbound_uri,
)
from sipguard.sip.headers import CALLER_IDENTITY_HEADERS, STIR_HEADERS
from sipguard.sip.message import Request, Response
from sipguard.sip.parser import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_PARSE_LIMITS,
    ParseLimits,
    parse_message,
    peek_top_via,
)
from sipguard.sip.salvage import error_response_for
from sipguard.sip.serializer import (
    hostport,
    printable,
    reason_value,
    to_bytes,
    warning_value,
)
from sipguard.sip.uri import NameAddr, parse_name_addr
from sipguard.transaction import (
    DEFAULT_RING_TIMEOUT,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    Transaction,
    TxState,
)
from sipguard.txtable import TxTable, client_key, response_key, server_key, via_key

__all__ = [
    "Allow",
    "B2BUA",
    "CoreConfig",
    "Gate",
    "Relay",
    "Refuse",
]

ALLOWED_METHODS = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"
_RELAYED_IN_DIALOG = frozenset(
    {"INVITE", "UPDATE", "INFO", "OPTIONS", "MESSAGE", "NOTIFY", "REFER"}
)
_NONE: frozenset[str] = frozenset()
# Extensions sipguard can relay transparently; a Require naming anything else
# is refused with 420 (RFC 3261 §8.2.2.3). 100rel is not relayed: reliable
# provisional responses would need PRACK handling on both legs.
_SUPPORTED_EXTENSIONS = frozenset({"timer", "replaces", "norefersub", "histinfo"})


# --- admission: what the policy layer tells the core -----------------------


class Gate(Protocol):
    """The core's view of the rules: the server passes the current one in."""

    def decide(self, request: Request, peer: Peer, *, now: float) -> Allow | Refuse:
        """Admit or refuse a dialog-creating INVITE from `peer`."""
        ...

    def is_known(self, peer: Peer) -> bool:
        """Whether `peer` is a trunk source or a trunk's route (for OPTIONS)."""
        ...

    def trunk_of(self, peer: Peer) -> str | None:
        """The name of the trunk `peer` is a source of, or None."""
        ...

    def is_emergency(self, request: Request) -> bool:
        """Whether `request` calls an emergency number (never refused by sipguard's
        own rules, a drain included); False when its callee is unreadable."""
        ...

    def decide_in_dialog(
        self, trunk: str, initial: IdentityNumbers, current: IdentityNumbers
    ) -> Relay | Refuse:
        """Relay or refuse the caller's re-INVITE or UPDATE of a call on `trunk`
        set up with identity `initial`, that presents `current` (rule
        `identity_changed`)."""
        ...


# Retry-After of the 503s of sipguard's own (SERVICE_REFUSALS), in seconds:
# a drain lasts up to its timeout (30 s by default), while a trunk at its
# protection ceiling has room again as soon as a few calls end.
_RETRY_AFTER = {"draining": 30, "trunk_capacity": 5}


# --- per-call state -----------------------------------------------------------


class Side(enum.Enum):
    A = "a"
    B = "b"


class CallState(enum.Enum):
    EARLY = "early"  # INVITE relayed, no final response yet
    ANSWERED = "answered"  # 2xx relayed to A, waiting for A's ACK
    CONFIRMED = "confirmed"
    ENDED = "ended"


@dataclass(slots=True)
class _Relay:
    """A request relayed from one leg to the other, and its way back."""

    call: Call
    origin: Side
    server_tx: ServerInviteTransaction | ServerNonInviteTransaction
    target_cseq: int
    ack: bytes | None = None  # the ACK we sent for the target's 2xx (INVITE only)


@dataclass(slots=True)
class Call:
    trunk: str
    a: Leg
    b: Leg
    a_invite: ServerInviteTransaction
    b_invite: ClientInviteTransaction
    start: float
    state: CallState = CallState.EARLY
    final_status: int = 0
    cancelled: bool = False
    b_answered: bool = False
    invite_relay: _Relay | None = None  # the INVITE (initial or re-) in progress
    identity: IdentityNumbers = (None, ())
    ended_by: str = ""
    caller: str = ""
    rang_at: float | None = None  # when the first provisional (not 100) was relayed
    answered_at: float | None = None  # when the first 2xx was relayed to the caller
    cancel_sent: bool = False
    rate_counted: bool = False
    # Identity headers of the caller's later requests that are not relayed:
    # validated once at set-up (RFC 3325 §5), and STIR/SHAKEN signatures
    # unless the trunk passes them.
    a_strip: frozenset[str] = CALLER_IDENTITY_HEADERS | STIR_HEADERS

    def leg(self, side: Side) -> Leg:
        return self.a if side is Side.A else self.b

    def other(self, side: Side) -> Leg:
        return self.b if side is Side.A else self.a


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Tunables of the core.

    `local` maps a transport name to the address advertised on it.
    """

    local: dict[str, LocalAddress]
    ring_timeout: float = DEFAULT_RING_TIMEOUT
    # The Server header of OPTIONS answers (rule file: answers.server_header);
    # None: no Server header, an answer does not name the software.
    server_header: str | None = None
    # The warn-agent of every Warning (answers.warn_agent); None: the address
    # advertised on the transport the request came in on (RFC 3261 §20.43).
    warn_agent: str | None = None
    parse_limits: ParseLimits = DEFAULT_PARSE_LIMITS
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    calls_per_trunk: int = 10_000
    transactions_per_trunk: int = 20_000
    # `reject`: one uniform 403 to every request of an unknown source;
    # `drop`: no answer at all. Either way at most `unknown_source_rate`
    # answers a second reach one address.
    unknown_source_answer: str = "reject"
    unknown_source_rate: float = 20.0
    # The one answer every request of an unknown source gets (rule file:
    # top-level responses.unknown_source).
    unknown_source_status: tuple[int, str] = (403, "Forbidden")


# --- the core ------------------------------------------------------------------


class B2BUA:
    """The sans-IO B2BUA. See the module docstring for the contract."""

    def __init__(self, *, config: CoreConfig, gate: Gate, ids: IdFactory) -> None:
        self.config = config
        self.gate = gate
        self._ids = ids
        self._outbox: list[Transmit] = []
        self._events: deque[Event] = deque()
        # Every live transaction, by key, and when each is next due.
        self._txs = TxTable()
        self._relays: dict[tuple[str, ...], _Relay] = {}
        self._invite_calls: dict[tuple[str, ...], Call] = {}
        self._b_invites: dict[tuple[str, ...], Call] = {}
        self._dialogs: dict[tuple[str, str], tuple[Call, Side]] = {}
        self.calls_active = 0
        # Strangers' answers, per-trunk ceilings and stateless answers.
        self._protection = Protection(
            calls_per_trunk=config.calls_per_trunk,
            transactions_per_trunk=config.transactions_per_trunk,
            unknown_source_answer=config.unknown_source_answer,
            unknown_source_rate=config.unknown_source_rate,
            unknown_source_status=config.unknown_source_status,
            transports=frozenset({"udp", "tcp", *config.local}),
            warning=self._warning,
        )
        self._own_sent_by = tuple({f"{a.host}:{a.port}" for a in config.local.values()})
        # Responses dropped because they came from another address than the
        # request's peer (forged answers).
        self.foreign_responses = 0
        # Set when the process is stopping: calls in progress go on, new ones
        # are answered 503 so a load balancer sends them elsewhere.
        self.draining = False

    # -- driver interface --------------------------------------------------

    def receive_datagram(self, data: bytes, peer: Peer, *, now: float) -> None:
        """Parse and handle one datagram (or one framed TCP message)."""
        if data[:1] in (b"\r", b"\n") and not data.strip(b"\r\n"):
            return  # keepalive
        config = self.config
        try:
            if len(data) > config.max_message_size:
                raise MessageTooLarge(
                    f"message of {len(data)} bytes; at most {config.max_message_size}"
                )
            if data.startswith(b"ACK ") and self._acknowledges_stateless_answer(data, peer, now):
                return
            message = parse_message(data, config.parse_limits)
        except SipProtocolError as exc:
            self._answer_unparseable(data, peer, exc, now=now)
            return
        try:
            _ = message.top_via
        except SipParseError as exc:
            # No usable Via: no response can be addressed (RFC 3261 §18.2.1).
            self._events.append(MessageRejected(peer, None, str(exc)))
            return
        try:
            _parse_essentials(message)
        except SipParseError as exc:
            # Triage before any state: a header the core relies on is broken.
            self._answer_unparseable(data, peer, exc, now=now)
            return
        self.receive_message(message, peer, now=now)

    def _acknowledges_stateless_answer(self, data: bytes, peer: Peer, now: float) -> bool:
        """The ACK of a stateless answer (RFC 3261 §17.2.3: it carries the
        INVITE's branch) is absorbed by a lookup on its top Via, unparsed."""
        via = peek_top_via(data)
        key = None if via is None else via_key(via, "INVITE")
        return key is not None and self._protection.stateless_answer(peer, key, now=now) is not None

    def receive_message(self, message: Request | Response, peer: Peer, *, now: float) -> None:
        """Handle one parsed message from `peer`."""
        try:
            if isinstance(message, Response):
                self._on_response(message, peer, now=now)
            else:
                self._on_request(message, peer, now=now)
        except SipParseError as exc:
            # A header the parser accepted lazily turned out malformed.
            if isinstance(message, Request) and not self.gate.is_known(peer):
                self._refuse_unknown(message, peer, now=now)
            elif isinstance(message, Request) and message.method != "ACK":
                self._reply(message, peer, exc.status_hint, _short(str(exc)))
            self._events.append(MessageRejected(peer, exc.status_hint, str(exc)))

    def stream_failed(
        self, data: bytes, peer: Peer, error: SipProtocolError, *, now: float
    ) -> None:
        """A stream could not be framed (the driver closes it): answer as for a datagram."""
        self._answer_unparseable(data, peer, error, now=now)

    @property
    def calls_by_trunk(self) -> dict[str, int]:
        """Live calls per trunk (a copy)."""
        return self._protection.calls_by_trunk

    @property
    def dropped_unknown(self) -> int:
        """Requests of sources of no trunk dropped unanswered (`drop` mode, or
        past the address's answer budget)."""
        return self._protection.dropped_unknown

    def transport_failed(self, peer: Peer, *, now: float) -> None:
        """The driver could not reach `peer`: fail its pending client transactions."""
        txs = self._txs.client.values()
        for tx in [tx for tx in txs if tx.peer == peer or tx.reconnect == peer]:
            if tx.state in (TxState.CALLING, TxState.TRYING, TxState.PROCEEDING):
                if tx.transport_failed():
                    self._client_timed_out(tx, now=now)
                self._watch(tx)

    def hang_up_all(self, *, now: float) -> int:
        """End every call now (a drain's deadline passed); return how many.

        An answered call gets a BYE on both legs; a call still ringing gets
        503 toward the caller and a CANCEL toward the callee.
        """
        calls = {id(call): call for call, _ in self._dialogs.values()}
        for call in calls.values():
            if call.state is CallState.EARLY:
                call.cancelled = True  # a CANCEL still owed goes at B's first 1xx
                self._final_to_a(call, 503, "Service Unavailable", now=now)
                self._cancel_b(call, now=now)
            else:
                self._ack_b_if_needed(call, now=now)
                self._bye(call, Side.A, now=now)
                self._bye(call, Side.B, now=now)
            self._end_call(call, "shutdown", now=now)
        return len(calls)

    def datagrams_to_send(self) -> list[Transmit]:
        """Take the queued transmissions (flush required after every input)."""
        # The transactions hold this very list: empty it, never replace it.
        out = self._outbox[:]
        self._outbox.clear()
        return out

    def next_event(self) -> Event | None:
        """Pop the next call event, or None."""
        return self._events.popleft() if self._events else None

    def next_deadline(self) -> float | None:
        """The earliest time `handle_timer` must run, or None."""
        return self._txs.next_deadline()

    def handle_timer(self, *, now: float) -> None:
        """Run every transaction timer due at `now`, and react to timeouts."""
        for tx, timed_out in self._txs.run_timers(now=now):
            if timed_out:
                if isinstance(tx, ClientInviteTransaction | ClientNonInviteTransaction):
                    self._client_timed_out(tx, now=now)
                elif isinstance(tx, ServerInviteTransaction):
                    self._server_invite_timed_out(tx, now=now)
            self._watch(tx)

    @property
    def transaction_count(self) -> int:
        """Live transactions (for leak checks and metrics)."""
        return len(self._txs)

    @property
    def dialog_count(self) -> int:
        """Live dialog entries, two per established call."""
        return len(self._dialogs)

    # -- timers ------------------------------------------------------------------

    def _watch(self, tx: Transaction) -> None:
        """Schedule `tx`'s deadline; forget it once terminated."""
        if tx.is_terminated:
            self._forget(tx)
        else:
            self._txs.schedule(tx)

    def _forget(self, tx: Transaction) -> None:
        """Drop a terminated `tx` from the table and whatever the calls keyed on it."""
        removed = self._txs.forget(tx)
        if isinstance(tx, ClientInviteTransaction | ClientNonInviteTransaction):
            self._relays.pop(tx.key, None)
            self._b_invites.pop(tx.key, None)
        else:
            if removed:
                self._protection.transaction_forgotten(tx.key)
            self._invite_calls.pop(tx.key, None)

    # -- requests -----------------------------------------------------------------

    def _on_request(self, request: Request, peer: Peer, *, now: float) -> None:
        method = request.method
        key = server_key(request)
        existing = self._txs.server.get(key)
        if existing is not None:
            if not speaks_for(existing.peer, peer):
                # Another sender's copy of a transaction: its answers go to
                # the transaction's peer only, and this sender gets none of them.
                self._not_for_this_peer(request, peer, now=now)
            elif method == "ACK":
                if isinstance(existing, ServerInviteTransaction):
                    to_call = existing.receive_ack(now=now)
                    self._watch(existing)
                    # The ACK of our 2xx is end to end: it belongs to the
                    # dialog even when its key matches the INVITE's (RFC 6026
                    # §7.1), or the caller's ACK would never reach the callee.
                    to_tag = request.to.tag
                    if to_call and to_tag is not None:
                        self._on_in_dialog(request, to_tag, peer, now=now)
            else:
                existing.receive_retransmission()
            return
        if method == "CANCEL":
            self._on_cancel(request, peer, now=now)
            return
        to_tag = request.to.tag
        if to_tag is not None:
            self._on_in_dialog(request, to_tag, peer, now=now)
            return
        if method == "ACK":
            return  # ACK for a stateless reject, or stray: RFC 3261 §17.2.3
        if method == "INVITE":
            self._on_invite_or_retransmission(request, key, peer, now=now)
        elif not self.gate.is_known(peer):
            self._refuse_unknown(request, peer, now=now)
        elif method == "OPTIONS":
            if self.draining:  # a load balancer's health check: take this one out
                self._reply(
                    request,
                    peer,
                    503,
                    "Service Unavailable",
                    extra=self._service_headers(peer.transport, "draining"),
                )
            else:
                self._reply(request, peer, 200, "OK", extra=self._capabilities())
        else:
            self._reply(
                request, peer, 405, "Method Not Allowed", extra=[("Allow", ALLOWED_METHODS)]
            )

    def _on_invite_or_retransmission(
        self, request: Request, key: tuple[str, ...], peer: Peer, *, now: float
    ) -> None:
        """A new INVITE, or a copy of one refused (or dropped) statelessly.

        The copies are recognised by source and transaction key together: a
        copy from anywhere else is another sender's request, never answered
        with this one's answer. A stranger's INVITE is remembered without its
        answer: each copy is answered again from its own bytes, within the
        stranger's answer budget, so a primed answer cannot be replayed at
        will (reflection).
        """
        protection = self._protection
        answer = protection.stateless_answer(peer, key, now=now)
        if answer is not None:
            if answer:
                self._outbox.append(Transmit(peer, answer))
            elif self.gate.trunk_of(peer) is None:
                self._refuse_unknown(request, peer, now=now)
            return
        trunk = self.gate.trunk_of(peer)
        queued = len(self._outbox)
        self._on_new_invite(request, key, trunk, peer, now=now)
        if key not in self._txs.server:  # answered statelessly, or dropped unanswered
            answers = [t.data for t in self._outbox[queued:] if t.peer == peer]
            answer = answers[0] if answers and trunk is not None else b""
            protection.remember_stateless(peer, key, answer, now=now)

    def _on_new_invite(
        self, request: Request, key: tuple[str, ...], trunk: str | None, peer: Peer, *, now: float
    ) -> None:
        if trunk is None:
            # Before anything else: a stranger's INVITE gets the stranger's
            # answer, whatever its Max-Forwards or Require say. Its decision
            # is one event, answered or dropped (its copies are absorbed by
            # the caller of this method, with no event).
            detail = RULE_DEFAULTS["unknown_source"][1]
            if self._refuse_unknown(request, peer, now=now):
                status, phrase = self._protection.stranger_status
                refused = CallRefused(
                    None,
                    peer,
                    request.call_id,
                    status,
                    "unknown_source",
                    phrase,
                    now,
                    request=request,
                    detail=detail,
                )
            else:
                why = self._protection.why_unanswered
                refused = CallRefused(
                    None,
                    peer,
                    request.call_id,
                    None,
                    "unknown_source",
                    "",
                    now,
                    request=request,
                    detail=f"{detail}; dropped unanswered: {why}",
                )
            self._events.append(refused)
            return
        if self.draining and not self.gate.is_emergency(request):
            self._refuse_new_call(request, peer, trunk, "draining", now=now)
            return
        if self._looped(request):
            self._reply(request, peer, 482, "Loop Detected")
            self._events.append(MessageRejected(peer, 482, "an INVITE sipguard sent came back"))
            return
        if request.max_forwards == 0:
            self._reply(request, peer, 483, "Too Many Hops")
            self._events.append(MessageRejected(peer, 483, "Max-Forwards 0 on a new call"))
            return
        unsupported = _unsupported(request)
        if unsupported:
            self._reply(request, peer, 420, "Bad Extension", extra=[("Unsupported", unsupported)])
            self._events.append(MessageRejected(peer, 420, f"Require: {unsupported}"))
            return
        full = self._protection.capacity_reached(trunk, calls=True)
        if full is not None:
            self._refuse_new_call(request, peer, trunk, "trunk_capacity", now=now, why=full)
            return
        # Every header the call set-up reads, parsed now: a broken one is
        # answered 400 (by receive_message) before any slot or transaction.
        identity = _parse_call_headers(request)
        decision = self.gate.decide(request, peer, now=now)
        if isinstance(decision, Refuse):
            extra = decision.headers
            if decision.warning is not None:
                extra += (("Warning", self._warning(peer.transport, decision.warning)),)
            self._reply(request, peer, decision.status, decision.reason, extra=extra)
            self._events.append(
                CallRefused(
                    decision.trunk,
                    peer,
                    request.call_id,
                    decision.status,
                    decision.rule,
                    decision.reason,
                    now,
                    caller=decision.caller,
                    callee=decision.callee,
                    request=request,
                    detail=decision.detail,
                    noted=decision.noted,
                )
            )
            return
        server_tx = ServerInviteTransaction(request, key=key, peer=peer, outbox=self._outbox)
        self._add_server_tx(server_tx, decision.trunk)
        # RFC 3261 §17.2.1: answer 100 at once so the caller stops retransmitting.
        server_tx.send_response(make_response(request, peer, 100, "Trying"), now=now)
        call = self._start_call(request, peer, decision, server_tx, identity, now=now)
        self._invite_calls[key] = call
        self._events.append(
            CallStarted(
                decision.trunk,
                peer,
                call.a.call_id,
                call.b.call_id,
                decision.caller or str(request.from_.uri),
                decision.callee or request.uri,
                now,
                monitor_rule=decision.note,
                warnings=decision.warnings,
                request=request,
                emergency=decision.emergency,
                anonymized=decision.anonymized,
            )
        )

    def _start_call(
        self,
        request: Request,
        peer: Peer,
        decision: Allow,
        server_tx: ServerInviteTransaction,
        identity: IdentityNumbers,
        *,
        now: float,
    ) -> Call:
        route = decision.route
        a_local = self._local(peer.transport)
        b_local = self._local(route.transport)
        contact = request.contacts[0].uri if request.contacts else request.from_.uri
        a_leg = Leg(
            call_id=request.call_id,
            local_tag=self._ids.tag(),
            local_uri=request.to,
            remote_uri=request.from_,
            remote_tag=request.from_.tag,
            remote_target=str(contact),
            peer=peer,
            local=a_local,
            local_cseq=0,
            remote_cseq=request.cseq.seq,
            # §12.1.1: the UAS's route set is the Record-Route, in order.
            route_set=request.record_routes,
            reconnect=reconnect_address(peer, request.record_routes, str(contact)),
        )
        b_from = request.from_ if decision.from_value is None else _parse_from(decision.from_value)
        b_leg = Leg(
            call_id=self._ids.call_id(),
            local_tag=self._ids.tag(),
            local_uri=b_from,
            remote_uri=request.to,
            remote_tag=None,
            remote_target=outbound_uri(request, route),
            peer=route,
            local=b_local,
        )
        max_forwards = (request.max_forwards or 70) - 1
        extra = list(end_to_end_headers(request.headers, decision.strip))
        extra.extend(decision.headers)
        invite = b_leg.build_request(
            "INVITE",
            cseq=b_leg.next_cseq(),
            branch=self._ids.branch(),
            max_forwards=max_forwards,
            extra=extra,
            body=request.body,
            with_contact=True,
        )
        client_tx = ClientInviteTransaction(
            invite,
            key=client_key(invite),
            peer=route,
            outbox=self._outbox,
            now=now,
            ring_timeout=self.config.ring_timeout,
        )
        self._txs.add_client(client_tx)
        call = Call(decision.trunk, a_leg, b_leg, server_tx, client_tx, start=now)
        call.identity = identity
        call.caller = decision.caller or str(request.from_.uri)
        call.rate_counted = decision.rate_counted
        call.a_strip = CALLER_IDENTITY_HEADERS | (decision.strip & STIR_HEADERS)
        call.invite_relay = _Relay(call, Side.A, server_tx, b_leg.local_cseq)
        self._b_invites[client_tx.key] = call
        self._dialogs[(a_leg.call_id, a_leg.local_tag)] = (call, Side.A)
        self._dialogs[(b_leg.call_id, b_leg.local_tag)] = (call, Side.B)
        self.calls_active += 1
        self._protection.call_started(call.trunk)
        self._watch(server_tx)
        self._watch(client_tx)
        return call

    def _on_cancel(self, request: Request, peer: Peer, *, now: float) -> None:
        invite_key = server_key(request, method="INVITE")
        call = self._invite_calls.get(invite_key)
        if call is None or not self._speaks_for_leg(call, Side.A, peer):
            # RFC 3261 §9.2: no matching INVITE transaction -> 481.
            self._not_for_this_peer(request, peer, now=now)
            return
        if self._over_capacity(request, peer, call.trunk, calls=False):
            return
        cancel_tx = ServerNonInviteTransaction(
            request, key=server_key(request), peer=peer, outbox=self._outbox
        )
        self._add_server_tx(cancel_tx, call.trunk)
        cancel_tx.send_response(make_response(request, peer, 200, "OK"), now=now)
        self._watch(cancel_tx)
        if call.a_invite.state is TxState.PROCEEDING:
            call.cancelled = True
            self._final_to_a(call, 487, "Request Terminated", now=now)
            self._cancel_b(call, now=now)
            self._end_call(call, "caller", now=now)

    def _on_in_dialog(self, request: Request, to_tag: str, peer: Peer, *, now: float) -> None:
        found = self._dialogs.get((request.call_id, to_tag))
        if found is None:
            self._not_for_this_peer(request, peer, now=now)
            return
        call, side = found
        if not self._speaks_for_leg(call, side, peer):
            # Not the leg's peer: answered as if there were no such dialog.
            status = self._not_for_this_peer(request, peer, now=now)
            self._events.append(
                MessageRejected(peer, status, "in-dialog request from another peer")
            )
            return
        if request.method == "ACK":
            self._on_ack(call, side, request, now=now)
            return
        if self._over_capacity(request, peer, call.trunk, calls=False):
            return
        if request.method in ("INVITE", "UPDATE"):
            _identity_numbers(request)  # broken identity headers: 400, before any state
        key = server_key(request)
        server_tx: ServerInviteTransaction | ServerNonInviteTransaction
        if request.method == "INVITE":
            server_tx = ServerInviteTransaction(request, key=key, peer=peer, outbox=self._outbox)
            server_tx.send_response(make_response(request, peer, 100, "Trying"), now=now)
        else:
            server_tx = ServerNonInviteTransaction(request, key=key, peer=peer, outbox=self._outbox)
        self._add_server_tx(server_tx, call.trunk)
        self._in_dialog_request(call, side, request, server_tx, now=now)
        self._watch(server_tx)

    def _in_dialog_request(
        self,
        call: Call,
        side: Side,
        request: Request,
        server_tx: ServerInviteTransaction | ServerNonInviteTransaction,
        *,
        now: float,
    ) -> None:
        leg = call.leg(side)
        method = request.method
        if not leg.accepts_cseq(request.cseq.seq):
            self._respond(server_tx, 500, "CSeq Out of Order", now=now)
            return
        if request.max_forwards == 0:
            self._respond(server_tx, 483, "Too Many Hops", now=now)
            return
        if method == "BYE":
            self._on_bye(call, side, request, server_tx, now=now)
        elif method not in _RELAYED_IN_DIALOG:
            self._respond(
                server_tx, 405, "Method Not Allowed", extra=[("Allow", ALLOWED_METHODS)], now=now
            )
        elif call.state is not CallState.CONFIRMED and method in ("INVITE", "UPDATE"):
            # Early-dialog offers are not relayed; 491 asks to try again later.
            self._respond(server_tx, 491, "Request Pending", now=now)
        elif (
            side is Side.A
            and method in ("INVITE", "UPDATE")
            and self._identity_refused(call, request, server_tx, now=now)
        ):
            return
        elif method == "INVITE" and call.invite_relay is not None:
            # RFC 3261 §14.2: an INVITE while another is in progress -> 491.
            self._respond(server_tx, 491, "Request Pending", now=now)
        else:
            relay = self._relay_request(call, side, request, server_tx, now=now)
            if method == "INVITE":
                call.invite_relay = relay

    def _identity_refused(
        self,
        call: Call,
        request: Request,
        server_tx: ServerInviteTransaction | ServerNonInviteTransaction,
        *,
        now: float,
    ) -> bool:
        """The caller's identity was checked when the call was set up; the gate
        decides a re-INVITE or UPDATE that presents another one (a modified
        caller ID). Returns whether it was refused (and answered)."""
        decision = self.gate.decide_in_dialog(call.trunk, call.identity, _identity_numbers(request))
        if isinstance(decision, Relay):
            if decision.note is not None:
                self._events.append(
                    InDialogMonitored(
                        call.trunk, call.a.peer, request.call_id, decision.note, now, call.caller
                    )
                )
            return False
        extra = decision.headers
        if decision.warning is not None:
            extra += (("Warning", self._warning(call.a.local.transport, decision.warning)),)
        self._respond(server_tx, decision.status, decision.reason, now=now, extra=extra)
        self._events.append(
            CallRefused(
                call.trunk,
                call.a.peer,
                request.call_id,
                decision.status,
                decision.rule,
                decision.reason,
                now,
                caller=call.caller,
                request=request,
                detail=decision.detail,
            )
        )
        return True

    def _on_bye(
        self,
        call: Call,
        side: Side,
        request: Request,
        server_tx: ServerInviteTransaction | ServerNonInviteTransaction,
        *,
        now: float,
    ) -> None:
        ended_by = "caller" if side is Side.A else "callee"
        other_established = call.b_answered if side is Side.A else call.state is not CallState.EARLY
        if call.state is CallState.ENDED or not other_established:
            self._respond(server_tx, 200, "OK", now=now)
            if call.state is CallState.EARLY:
                self._final_to_a(call, 487, "Request Terminated", now=now)
                self._cancel_b(call, now=now)
            self._end_call(call, ended_by, now=now)
            return
        # §13.2.2.4: the callee's 2xx is ACKed before anything else reaches
        # it; a BYE that overtook the ACK would hit a dialog not yet confirmed.
        self._ack_b_if_needed(call, now=now)
        self._relay_request(call, side, request, server_tx, now=now)
        # Answer the hang-up at once: the call is over whatever the other side
        # says, and a dead other side would otherwise hold the answer until
        # our BYE times out (64*T1), just when the caller's own BYE gives up.
        self._respond(server_tx, 200, "OK", now=now)
        self._end_call(call, ended_by, now=now)

    def _on_ack(self, call: Call, side: Side, request: Request, *, now: float) -> None:
        relay = call.invite_relay
        if (
            relay is None
            or relay.origin is not side
            or request.cseq.seq != relay.server_tx.request.cseq.seq
        ):
            return  # a retransmitted ACK, or one for an INVITE we no longer track
        if not isinstance(relay.server_tx, ServerInviteTransaction) or relay.ack is not None:
            return
        relay.server_tx.confirm_2xx()
        target = call.other(side)
        if relay.server_tx.final_status is None or relay.server_tx.final_status >= 300:
            return
        extra = list(end_to_end_headers(request.headers, frozenset()))
        ack = target.build_request(
            "ACK", cseq=relay.target_cseq, branch=self._ids.branch(), extra=extra, body=request.body
        )
        relay.ack = to_bytes(ack)
        self._outbox.append(Transmit(target.peer, relay.ack, target.reconnect))
        call.invite_relay = None
        if call.state is CallState.ANSWERED:
            call.state = CallState.CONFIRMED

    # -- relaying --------------------------------------------------------------------

    def _relay_request(
        self,
        call: Call,
        side: Side,
        request: Request,
        server_tx: ServerInviteTransaction | ServerNonInviteTransaction,
        *,
        now: float,
    ) -> _Relay:
        target = call.other(side)
        cseq = target.next_cseq()
        outbound = target.build_request(
            request.method,
            cseq=cseq,
            branch=self._ids.branch(),
            max_forwards=(request.max_forwards or 70) - 1,
            # Identity headers from the caller were validated once, at call
            # set-up; they are not copied onto later requests (RFC 3325 §5).
            extra=list(
                end_to_end_headers(request.headers, call.a_strip if side is Side.A else _NONE)
            ),
            body=request.body,
            with_contact=request.method in ("INVITE", "UPDATE", "REFER", "NOTIFY"),
        )
        client_tx: ClientInviteTransaction | ClientNonInviteTransaction
        if request.method == "INVITE":
            client_tx = ClientInviteTransaction(
                outbound,
                key=client_key(outbound),
                peer=target.peer,
                reconnect=target.reconnect,
                outbox=self._outbox,
                now=now,
                ring_timeout=self.config.ring_timeout,
            )
        else:
            client_tx = ClientNonInviteTransaction(
                outbound,
                key=client_key(outbound),
                peer=target.peer,
                outbox=self._outbox,
                now=now,
                reconnect=target.reconnect,
            )
        relay = _Relay(call, side, server_tx, cseq)
        self._txs.add_client(client_tx)
        self._relays[client_tx.key] = relay
        self._watch(client_tx)
        return relay

    def _on_response(self, response: Response, peer: Peer, *, now: float) -> None:
        key = response_key(response)
        tx = self._txs.client.get(key)
        if tx is None:
            return  # stray or late: nothing to match (RFC 3261 §17.1.3)
        if not speaks_for(tx.peer, peer):
            # Only the peer the request went to may answer it: a stranger who
            # guessed the branch must not answer a call (media hijack) or end it.
            self.foreign_responses += 1
            self._events.append(
                MessageRejected(peer, None, f"response for a request sent to {tx.peer}")
            )
            return
        passed = tx.receive_response(response, now=now)
        if passed is not None:
            call = self._b_invites.get(key)
            if call is not None:
                self._on_b_invite_response(call, passed, now=now)
            else:
                relay = self._relays.get(key)
                if relay is not None:
                    self._on_relayed_response(relay, passed, now=now)
        self._watch(tx)

    def _on_b_invite_response(self, call: Call, response: Response, *, now: float) -> None:
        status = response.status
        if call.cancelled or call.state is CallState.ENDED:
            if status < 200 and call.cancelled:
                self._cancel_b(call, now=now)
            elif 200 <= status < 300:
                # A 2xx crossed our CANCEL or teardown: accept it, then hang up.
                self._adopt_b_dialog(call, response)
                self._ack_b(call, now=now)
                self._bye(call, Side.B, now=now)
            return
        if status == 100:
            return  # hop-by-hop (RFC 3261 §16.7 item 5)
        if status < 200:
            self._adopt_b_dialog(call, response)
            if call.rang_at is None:
                call.rang_at = now
            if call.invite_relay is not None:
                self._relay_response(call.invite_relay, response, now=now)
            return
        if status < 300:
            if call.b_answered:
                if call.invite_relay is None or call.invite_relay.ack is not None:
                    self._ack_b(call, now=now)  # 2xx retransmission: ACK again
                return
            call.b_answered = True
            if not self._adopt_b_dialog(call, response):
                # No usable target or route set for the callee's dialog:
                # nothing could reach it later (ACK, BYE). Confirm and end it
                # at once, and give the caller a clean failure instead of a
                # broken call.
                call.invite_relay = None
                self._ack_b(call, now=now)
                self._bye(call, Side.B, now=now)
                self._final_to_a(call, 502, "Bad Gateway", now=now)
                self._end_call(call, "error", now=now)
                self._events.append(
                    MessageRejected(
                        call.b.peer, None, "callee's 2xx has an unusable Contact or Record-Route"
                    )
                )
                return
            call.state = CallState.ANSWERED
            if call.invite_relay is not None:
                self._relay_response(call.invite_relay, response, now=now)
            return
        relay = call.invite_relay
        call.invite_relay = None
        if relay is not None:
            self._relay_response(relay, response, now=now)
        self._end_call(call, "callee", now=now)

    def _on_relayed_response(self, relay: _Relay, response: Response, *, now: float) -> None:
        call = relay.call
        if response.status == 100:
            return
        if response.status >= 200 and relay.ack is not None:
            # 2xx retransmission for a re-INVITE we already ACKed.
            target = call.other(relay.origin)
            self._outbox.append(Transmit(target.peer, relay.ack, target.reconnect))
            return
        if relay.server_tx.state not in (TxState.TRYING, TxState.PROCEEDING):
            return
        self._relay_response(relay, response, now=now)
        if response.status >= 300 and call.invite_relay is relay:
            call.invite_relay = None

    def _relay_response(self, relay: _Relay, response: Response, *, now: float) -> None:
        origin_leg = relay.call.leg(relay.origin)
        request = relay.server_tx.request
        extra: list[tuple[str, str]] = []
        # Our answers to the caller's INVITE carry our To-tag, so every one
        # above 100 and below 300 creates the dialog (early or confirmed).
        creates_dialog = relay.server_tx is relay.call.a_invite and response.status < 300
        if creates_dialog or (
            request.method in ("INVITE", "UPDATE") and response.status < 300 and response.to.tag
        ):
            extra.append(("Contact", origin_leg.local.contact()))
        if creates_dialog:
            # RFC 3261 §12.1.1: "the UAS MUST copy all Record-Route header
            # field values from the request into the response ... and MUST
            # maintain the order": the caller's in-dialog requests then go
            # through the proxies that asked to stay on the path.
            extra.extend(("Record-Route", value) for value in request.record_routes)
        extra.extend(end_to_end_headers(response.headers, frozenset()))
        reply = make_response(
            request,
            relay.server_tx.peer,
            response.status,
            response.reason,
            to_tag=origin_leg.local_tag,
            extra=extra,
            body=response.body,
        )
        relay.server_tx.send_response(reply, now=now)
        if relay.call.a_invite is relay.server_tx and response.status >= 200:
            relay.call.final_status = response.status
            if response.status < 300 and relay.call.answered_at is None:
                relay.call.answered_at = now  # the answer time: talk time runs from here
        self._watch(relay.server_tx)

    def _adopt_b_dialog(self, call: Call, response: Response) -> bool:
        """Learn the B dialog's remote tag, target and route set (§12.1.2).

        Returns False when the Contact or Record-Route is unusable; the leg
        then keeps the target the INVITE was sent to (requests go to the
        leg's fixed next hop anyway).
        """
        tag = response.to.tag
        if tag is None:
            return True
        b = call.b
        b.remote_tag = tag
        try:
            target = str(response.contacts[0].uri) if response.contacts else None
            # §12.1.2: the UAC's route set is the Record-Route, reversed.
            route_set = _checked_routes(tuple(reversed(response.record_routes)))
        except SipParseError:
            return False
        if target is not None:
            b.remote_target = target
        b.route_set = route_set
        return True

    # -- call teardown ----------------------------------------------------------------

    def _final_to_a(self, call: Call, status: int, reason: str, *, now: float) -> None:
        tx = call.a_invite
        if tx.state is not TxState.PROCEEDING:
            return
        request = tx.request
        response = make_response(request, tx.peer, status, reason, to_tag=call.a.local_tag)
        tx.send_response(response, now=now)
        call.final_status = status
        self._watch(tx)

    def _cancel_b(self, call: Call, *, now: float) -> None:
        """RFC 3261 §9.1: CANCEL the B INVITE once it has a provisional response."""
        tx = call.b_invite
        if tx.state is not TxState.PROCEEDING:
            return  # not yet provisional: cancelled when the first 1xx arrives
        if call.cancel_sent:
            return
        call.cancel_sent = True
        cancel = cancel_for(tx.request)
        client_tx = ClientNonInviteTransaction(
            cancel, key=client_key(cancel), peer=tx.peer, outbox=self._outbox, now=now
        )
        self._txs.add_client(client_tx)
        self._watch(client_tx)

    def _ack_b(self, call: Call, *, now: float) -> None:
        ack = call.b.build_request(
            "ACK", cseq=call.b_invite.request.cseq.seq, branch=self._ids.branch()
        )
        self._outbox.append(Transmit(call.b.peer, to_bytes(ack)))

    def _ack_b_if_needed(self, call: Call, *, now: float) -> None:
        """Before a BYE toward B, make sure B's 2xx was ACKed (§13.2.2.4)."""
        relay = call.invite_relay
        if call.state is CallState.ANSWERED and relay is not None and relay.ack is None:
            self._ack_b(call, now=now)

    def _bye(self, call: Call, side: Side, *, now: float) -> None:
        leg = call.leg(side)
        bye = leg.build_request("BYE", cseq=leg.next_cseq(), branch=self._ids.branch())
        client_tx = ClientNonInviteTransaction(
            bye,
            key=client_key(bye),
            peer=leg.peer,
            outbox=self._outbox,
            now=now,
            reconnect=leg.reconnect,
        )
        self._txs.add_client(client_tx)
        self._watch(client_tx)

    def _end_call(self, call: Call, ended_by: str, *, now: float) -> None:
        """Rule 2: end a call exactly once and forget its dialogs."""
        if call.state is CallState.ENDED:
            return
        answered = call.state is not CallState.EARLY
        call.state = CallState.ENDED
        call.ended_by = ended_by
        self._dialogs.pop((call.a.call_id, call.a.local_tag), None)
        self._dialogs.pop((call.b.call_id, call.b.local_tag), None)
        self._invite_calls.pop(call.a_invite.key, None)
        self.calls_active -= 1
        self._protection.call_ended(call.trunk)
        self._events.append(
            CallEnded(
                call.trunk,
                call.a.call_id,
                call.b.call_id,
                call.final_status or 0,
                ended_by,
                answered,
                call.start,
                now,
                caller=call.caller,
                ringing_for=None if answered or call.rang_at is None else now - call.rang_at,
                rate_counted=call.rate_counted,
                answered_at=call.answered_at if answered else None,
            )
        )

    def _client_timed_out(
        self, tx: ClientInviteTransaction | ClientNonInviteTransaction, *, now: float
    ) -> None:
        call = self._b_invites.get(tx.key)
        if call is not None:
            if call.state is CallState.EARLY and not call.cancelled:
                if tx.provisional_received if isinstance(tx, ClientInviteTransaction) else False:
                    self._cancel_b(call, now=now)  # rang too long
                # RFC 3261 §8.1.3.1: a transport error counts as a 503.
                if tx.transport_error:
                    self._final_to_a(call, 503, "Service Unavailable", now=now)
                    self._end_call(call, "error", now=now)
                else:
                    self._final_to_a(call, 408, "Request Timeout", now=now)
                    self._end_call(call, "timeout", now=now)
            return
        relay = self._relays.get(tx.key)
        if relay is None:
            return
        if relay.server_tx.state in (TxState.TRYING, TxState.PROCEEDING):
            status, reason = (200, "OK") if tx.request.method == "BYE" else (408, "Request Timeout")
            self._respond(relay.server_tx, status, reason, now=now)
        if relay.call.invite_relay is relay:
            relay.call.invite_relay = None

    def _server_invite_timed_out(self, tx: ServerInviteTransaction, *, now: float) -> None:
        """No ACK came for our 2xx (§13.3.1.4): hang up both legs."""
        for call, side in list(self._dialogs.values()):
            if side is Side.A and (
                call.a_invite is tx or (call.invite_relay and call.invite_relay.server_tx is tx)
            ):
                break
        else:
            return
        if tx.final_status is not None and tx.final_status < 300:
            self._ack_b_if_needed(call, now=now)
            self._bye(call, Side.A, now=now)
            self._bye(call, Side.B, now=now)
            self._end_call(call, "timeout", now=now)

    # -- small helpers ------------------------------------------------------------------

    def _respond(
        self,
        tx: ServerInviteTransaction | ServerNonInviteTransaction,
        status: int,
        reason: str,
        *,
        now: float,
        extra: Iterable[tuple[str, str]] = (),
    ) -> None:
        request = tx.request
        tx.send_response(
            make_response(request, tx.peer, status, reason, extra=extra),
            now=now,
        )
        self._watch(tx)

    # -- protection ---------------------------------------------------------------

    def _looped(self, request: Request) -> bool:
        """Whether `request` is one of sipguard's own outbound INVITEs come
        back (a route that leads to sipguard): a Via of the chain carries the
        branch of an INVITE sipguard has in progress (RFC 3261 §8.2.2.2,
        §16.3 item 4). The Via lines are parsed only when one names one of
        sipguard's own addresses."""
        own = self._own_sent_by
        if not any(sent_by in value for value in request.headers.get_all("via") for sent_by in own):
            return False
        client_txs = self._txs.client
        return any((via.branch or "", "INVITE") in client_txs for via in request.vias)

    def _speaks_for_leg(self, call: Call, side: Side, peer: Peer) -> bool:
        """Rule 1: only a leg's peer may send requests on it.

        The leg's peer itself (see `speaks_for`); on the caller's leg also
        another port of the same host when the trunk is defined by an address
        or a network rather than by IP:port, so the port is not part of its
        identity (the source attributes to the call's trunk).
        """
        expected = call.leg(side).peer
        if speaks_for(expected, peer):
            return True
        return (
            side is Side.A
            and peer.transport == expected.transport
            and peer.host == expected.host
            and self.gate.trunk_of(peer) == call.trunk
        )

    def _not_for_this_peer(self, request: Request, peer: Peer, *, now: float) -> int | None:
        """A request for a dialog or transaction `peer` has no part in.

        Trunks and routes get 481 whether or not the dialog exists (another
        customer's calls are not confirmed to exist); strangers get the
        uniform unknown-source answer. ACKs are never answered. Returns the
        status sent, or None.
        """
        if request.method == "ACK":
            return None
        if self.gate.is_known(peer):
            self._reply(request, peer, 481, "Call/Transaction Does Not Exist")
            return 481
        return (
            self._protection.stranger_status[0]
            if self._refuse_unknown(request, peer, now=now)
            else None
        )

    def _refuse_unknown(self, request: Request, peer: Peer, *, now: float) -> bool:
        """One uniform answer to any request from a source of no trunk, within budget.

        Every method gets the same 403 (a scanner learns nothing from which
        requests it sends), or nothing in `drop` mode or past the source's
        answer budget (no reflection: the budget applies to UDP, whose source
        address anyone can forge; a TCP peer completed a handshake from its
        address). ACKs are never answered.
        """
        protection = self._protection
        if request.method == "ACK" or not protection.may_answer_stranger(peer, now=now):
            return False
        status, phrase = protection.stranger_status
        # The top Via alone: what a stranger can make sipguard send stays
        # within the size of what it sent, whatever Via chain it carried.
        self._reply(
            request,
            peer,
            status,
            phrase,
            extra=protection.stranger_headers(peer.transport),
            top_via_only=True,
        )
        return True

    def _over_capacity(self, request: Request, peer: Peer, trunk: str, *, calls: bool) -> bool:
        """Answer 503 if `trunk` holds its most calls or transactions (protection).

        For a request within a call or a CANCEL: answered as a new call
        would be (`trunk_capacity`), but no decision: a flood of them is what
        the ceiling stops, and a record each would let it write the trail.
        """
        full = self._protection.capacity_reached(trunk, calls=calls)
        if full is None:
            return False
        if request.method != "ACK":
            extra = self._service_headers(peer.transport, "trunk_capacity")
            self._reply(request, peer, 503, "Service Unavailable", extra=extra)
        self._events.append(MessageRejected(peer, 503, full))
        return True

    def _refuse_new_call(
        self, request: Request, peer: Peer, trunk: str, rule: str, *, now: float, why: str = ""
    ) -> None:
        """Answer a new call 503 for a refusal of sipguard's own (`rule` in
        SERVICE_REFUSALS), statelessly, and report it as a decision."""
        extra = self._service_headers(peer.transport, rule)
        self._reply(request, peer, 503, "Service Unavailable", extra=extra)
        detail = SERVICE_REFUSALS[rule]
        self._events.append(
            CallRefused(
                trunk,
                peer,
                request.call_id,
                503,
                rule,
                "Service Unavailable",
                now,
                request=request,
                detail=f"{detail}: {why}" if why else detail,
            )
        )

    def _service_headers(self, transport: str, rule: str) -> tuple[tuple[str, str], ...]:
        """Retry-After, and Reason and Warning naming `rule` (a SERVICE_REFUSALS
        id), as a refusal by a rule names it (RFC 3326; RFC 3261 §20.43)."""
        return (
            ("Retry-After", str(_RETRY_AFTER[rule])),
            ("Reason", reason_value(503, rule)),
            ("Warning", self._warning(transport, rule)),
        )

    def _add_server_tx(
        self, tx: ServerInviteTransaction | ServerNonInviteTransaction, trunk: str
    ) -> None:
        self._txs.add_server(tx)
        self._protection.transaction_added(tx.key, trunk)

    def _reply(
        self,
        request: Request,
        peer: Peer,
        status: int,
        reason: str,
        *,
        extra: Iterable[tuple[str, str]] = (),
        top_via_only: bool = False,
    ) -> None:
        """A stateless response (RFC 3261 §8.2.7), sent to the request's source."""
        to_tag = self._ids.tag() if request.to.tag is None else None
        response = make_response(
            request, peer, status, reason, to_tag=to_tag, extra=extra, top_via_only=top_via_only
        )
        self._outbox.append(Transmit(peer, to_bytes(response)))

    def _answer_unparseable(
        self, data: bytes, peer: Peer, exc: SipProtocolError, *, now: float
    ) -> None:
        if not self.gate.is_known(peer):
            # A stranger learns no more from a broken message than from a
            # good one: the uniform 403, within its budget, or nothing.
            protection = self._protection
            if protection.may_answer_stranger(peer, now=now):
                status, phrase = protection.stranger_status
                response = error_response_for(
                    data,
                    status,
                    phrase,
                    protection.stranger_headers(peer.transport),
                    first_via_only=True,
                )
            else:
                response = None
            self._events.append(MessageRejected(peer, 403 if response else None, str(exc)))
            if response is not None:
                self._outbox.append(Transmit(peer, response))
            return
        response = error_response_for(data, exc.status_hint, _short(str(exc)))
        if response is not None:
            self._outbox.append(Transmit(peer, response))
        self._events.append(MessageRejected(peer, exc.status_hint if response else None, str(exc)))

    def _capabilities(self) -> list[tuple[str, str]]:
        capabilities = [
            ("Allow", ALLOWED_METHODS),
            ("Accept", "application/sdp"),
            ("Supported", ", ".join(sorted(_SUPPORTED_EXTENSIONS))),
        ]
        if self.config.server_header is not None:
            capabilities.append(("Server", self.config.server_header))
        return capabilities

    def _warning(self, transport: str, text: str) -> str:
        """A Warning value: the configured warn-agent, else this side's address
        on `transport` (RFC 3261 §20.43), never the software's name."""
        agent = self.config.warn_agent
        if agent is None:
            local = self._local(transport)
            agent = hostport(local.host, local.port)
        return warning_value(agent, text)

    def _local(self, transport: str) -> LocalAddress:
        local = self.config.local
        found = local.get(transport)
        if found is not None:
            return found
        any_local = next(iter(local.values()))
        return LocalAddress(transport, any_local.host, any_local.port)


# --- pure helpers -------------------------------------------------------------------


def _parse_essentials(message: Request | Response) -> None:
    """Parse the headers every message's handling reads (cached for later).

    Raises:
        SipParseError: one of them is malformed.
    """
    _ = (message.from_, message.to, message.cseq)
    if isinstance(message, Request):
        _ = message.max_forwards


def _parse_call_headers(request: Request) -> IdentityNumbers:
    """Parse what `_start_call` reads from a new INVITE; its identity numbers.

    Raises:
        SipParseError: Contact, Record-Route, the Request-URI or an identity
            header is malformed.
    """
    _ = request.contacts, _checked_routes(request.record_routes), request.request_uri
    return _identity_numbers(request)


def _checked_routes(values: tuple[str, ...]) -> tuple[str, ...]:
    """`values` (Record-Route values, to become a route set), each parsed once
    so that a broken one is refused before a dialog keeps it.

    Raises:
        SipParseError: a value is not a name-addr.
    """
    for value in values:
        parse_name_addr(value)
    return values


def _identity_numbers(request: Request) -> IdentityNumbers:
    """The From number and the asserted numbers of a request, as written."""
    asserted = tuple(
        number_of_uri(parse_name_addr(value).uri)
        for value in request.headers.get_all("p-asserted-identity")
    )
    return number_of_uri(request.from_.uri), asserted


def _unsupported(request: Request) -> str:
    required = [item for value in request.headers.get_all("require") for item in option_tags(value)]
    return ", ".join(item for item in required if item.lower() not in _SUPPORTED_EXTENSIONS)


def _parse_from(value: str) -> NameAddr:
    return parse_name_addr(value)


def _short(text: str) -> str:
    """A reason phrase: one line, bounded, no control characters."""
    return printable(text, limit=120)
