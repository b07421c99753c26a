"""RFC 3261 §17 transactions as sans-IO state machines (with RFC 6026's Accepted).

Four kinds: INVITE client and server, non-INVITE client and server. A
transaction never touches a socket or a clock. It is given `now` with every
input, appends the bytes it wants sent to a shared outbox, exposes the
absolute time it next needs attention as `deadline`, and is driven by
`handle_timer(now=...)` when that time comes.

Rule 1: every state change goes through `TRANSITIONS`, a total table
(kind, state) -> {event: next state}; an event a state does not list leaves
the state unchanged. The table is data so that it can be read, drawn and
property-tested.
Rule 2: retransmissions are absorbed here. A retransmitted request gets the
last response again and never reaches the transaction user (TU); a
retransmitted final response gets the ACK again (non-2xx) or is passed up
(2xx, which the TU must ACK, RFC 3261 §13.2.2.4).
Rule 3: on reliable transports (TCP) no retransmission timers run and the
linger timers D, I, J, K are zero (§17.1.1.2, §17.2.1, §17.2.2); the one
exception is the 2xx to an INVITE, which the UAS core retransmits on every
transport until the ACK (§13.3.1.4).
Rule 4: when a timeout and a retransmission are both due (a late wake-up),
the timeout wins: nothing is sent after the transaction has given up.

Timers (all absolute deadlines): A/E/G retransmit, B/F/H time out, D/I/J/K/L/M
linger in a final state to absorb retransmissions. Timer C is replaced by a
ring timeout for client INVITEs that sit in PROCEEDING (RFC 3261 §16.8 lets a
proxy bound this; a B2BUA needs the same protection against a next hop that
rings forever).
"""

from __future__ import annotations

import enum

from sipguard.events import Transmit
from sipguard.peer import Peer
from sipguard.sip.builders import ack_for_failure
from sipguard.sip.message import Request, Response
from sipguard.sip.serializer import to_bytes

__all__ = [
    "T1",
    "T2",
    "T4",
    "DEFAULT_RING_TIMEOUT",
    "TxEvent",
    "TxKind",
    "TxState",
    "TRANSITIONS",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "Transaction",
]

# RFC 3261 §17.1.1.1 / Table 4: T1 is the RTT estimate (500 ms default), T2 the
# maximum retransmit interval for non-INVITE requests and INVITE responses
# (4 s), T4 the maximum time a message stays in the network (5 s).
T1 = 0.5
T2 = 4.0
T4 = 5.0
TIMER_B = 64 * T1  # INVITE client timeout
TIMER_D = 32.0  # "at least 32 seconds for unreliable transports"
TIMER_F = 64 * T1  # non-INVITE client timeout
TIMER_H = 64 * T1  # wait for ACK of a non-2xx final response
TIMER_I = T4  # absorb ACK retransmissions
TIMER_J = 64 * T1  # absorb non-INVITE request retransmissions
TIMER_K = T4  # absorb non-INVITE response retransmissions
TIMER_L = 64 * T1  # RFC 6026 §8.7: absorb INVITE retransmissions after 2xx
TIMER_M = 64 * T1  # RFC 6026 §8.4: accept 2xx retransmissions from forks
# A next hop may ring for minutes; three minutes is RFC 3261's Timer C floor.
DEFAULT_RING_TIMEOUT = 180.0


class TxKind(enum.Enum):
    INVITE_CLIENT = "invite-client"
    INVITE_SERVER = "invite-server"
    NON_INVITE_CLIENT = "non-invite-client"
    NON_INVITE_SERVER = "non-invite-server"


class TxState(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    ACCEPTED = "accepted"
    TERMINATED = "terminated"


class TxEvent(enum.Enum):
    """Inputs that may change a transaction's state."""

    PROVISIONAL = "1xx"  # sent (server) or received (client)
    SUCCESS = "2xx"
    FAILURE = "3xx-6xx"
    ACK = "ack"  # ACK of a non-2xx final response (server INVITE)
    TIMEOUT = "timeout"  # Timer B, F, H, the ring timeout, or a transport error
    LINGER_DONE = "linger-done"  # Timer D, I, J, K, L or M


_S = TxState
_E = TxEvent

# Rule 1: the transition table. Unlisted (state, event) pairs keep the state.
TRANSITIONS: dict[tuple[TxKind, TxState], dict[TxEvent, TxState]] = {
    # RFC 3261 Figure 5 with RFC 6026 Figure 5's Accepted state.
    (TxKind.INVITE_CLIENT, _S.CALLING): {
        _E.PROVISIONAL: _S.PROCEEDING,
        _E.SUCCESS: _S.ACCEPTED,
        _E.FAILURE: _S.COMPLETED,
        _E.TIMEOUT: _S.TERMINATED,
    },
    (TxKind.INVITE_CLIENT, _S.PROCEEDING): {
        _E.SUCCESS: _S.ACCEPTED,
        _E.FAILURE: _S.COMPLETED,
        _E.TIMEOUT: _S.TERMINATED,
    },
    (TxKind.INVITE_CLIENT, _S.ACCEPTED): {_E.LINGER_DONE: _S.TERMINATED},
    (TxKind.INVITE_CLIENT, _S.COMPLETED): {_E.LINGER_DONE: _S.TERMINATED},
    (TxKind.INVITE_CLIENT, _S.TERMINATED): {},
    # RFC 3261 Figure 7 with RFC 6026 Figure 7's Accepted state.
    (TxKind.INVITE_SERVER, _S.PROCEEDING): {
        _E.SUCCESS: _S.ACCEPTED,
        _E.FAILURE: _S.COMPLETED,
        _E.TIMEOUT: _S.TERMINATED,
    },
    (TxKind.INVITE_SERVER, _S.ACCEPTED): {
        _E.TIMEOUT: _S.TERMINATED,
        _E.LINGER_DONE: _S.TERMINATED,
    },
    (TxKind.INVITE_SERVER, _S.COMPLETED): {
        _E.ACK: _S.CONFIRMED,
        _E.TIMEOUT: _S.TERMINATED,
    },
    (TxKind.INVITE_SERVER, _S.CONFIRMED): {_E.LINGER_DONE: _S.TERMINATED},
    (TxKind.INVITE_SERVER, _S.TERMINATED): {},
    # RFC 3261 Figure 6.
    (TxKind.NON_INVITE_CLIENT, _S.TRYING): {
        _E.PROVISIONAL: _S.PROCEEDING,
        _E.SUCCESS: _S.COMPLETED,
        _E.FAILURE: _S.COMPLETED,
        _E.TIMEOUT: _S.TERMINATED,
    },
    (TxKind.NON_INVITE_CLIENT, _S.PROCEEDING): {
        _E.SUCCESS: _S.COMPLETED,
        _E.FAILURE: _S.COMPLETED,
        _E.TIMEOUT: _S.TERMINATED,
    },
    (TxKind.NON_INVITE_CLIENT, _S.COMPLETED): {_E.LINGER_DONE: _S.TERMINATED},
    (TxKind.NON_INVITE_CLIENT, _S.TERMINATED): {},
    # RFC 3261 Figure 8.
    (TxKind.NON_INVITE_SERVER, _S.TRYING): {
        _E.PROVISIONAL: _S.PROCEEDING,
        _E.SUCCESS: _S.COMPLETED,
        _E.FAILURE: _S.COMPLETED,
        _E.TIMEOUT: _S.TERMINATED,
    },
    (TxKind.NON_INVITE_SERVER, _S.PROCEEDING): {
        _E.SUCCESS: _S.COMPLETED,
        _E.FAILURE: _S.COMPLETED,
        _E.TIMEOUT: _S.TERMINATED,
    },
    (TxKind.NON_INVITE_SERVER, _S.COMPLETED): {_E.LINGER_DONE: _S.TERMINATED},
    (TxKind.NON_INVITE_SERVER, _S.TERMINATED): {},
}


def status_event(status: int) -> TxEvent:
    """Map a status code to the transaction event it causes."""
    if status < 200:
        return TxEvent.PROVISIONAL
    return TxEvent.SUCCESS if status < 300 else TxEvent.FAILURE


class Transaction:
    """State shared by the four kinds: state, peer, timers, outbox.

    `deadline` is the earliest absolute time at which `handle_timer` must run,
    or None. `handle_timer` and `transport_failed` return True when the
    transaction has just ended by a timeout (or a transport error) rather
    than by a response: the TU must react to that once. `timed_out` records
    that it did, and stays True.
    """

    kind: TxKind

    def __init__(self, *, key: tuple[str, ...], peer: Peer, outbox: list[Transmit]) -> None:
        self.key = key
        self.peer = peer
        self.reconnect: Peer | None = None  # see Transmit
        self.state = TxState.TRYING
        self.timed_out = False
        self.transport_error = False
        self._outbox = outbox
        self._retransmit_at: float | None = None
        self._retransmit_interval = T1
        self._timeout_at: float | None = None
        self._retransmit_data: bytes | None = None

    @property
    def deadline(self) -> float | None:
        """The earliest pending timer, or None when no timer runs."""
        retransmit, timeout = self._retransmit_at, self._timeout_at
        if retransmit is None:
            return timeout
        if timeout is None:
            return retransmit
        return min(retransmit, timeout)

    @property
    def is_terminated(self) -> bool:
        return self.state is TxState.TERMINATED

    def _fire(self, event: TxEvent) -> bool:
        """Apply `event` through TRANSITIONS; return whether the state changed."""
        next_state = TRANSITIONS[(self.kind, self.state)].get(event)
        if next_state is None or next_state is self.state:
            return False
        self.state = next_state
        if next_state is TxState.TERMINATED:
            self._retransmit_at = self._timeout_at = None
            self._retransmit_data = None
        return True

    def _send(self, data: bytes) -> None:
        self._outbox.append(Transmit(self.peer, data, self.reconnect))

    def _start_retransmit(self, data: bytes, *, now: float, interval: float = T1) -> None:
        """Arm Timer A/E/G (unreliable transports only, Rule 3)."""
        self._retransmit_data = data
        if self.peer.reliable:
            self._retransmit_at = None
            return
        self._retransmit_interval = interval
        self._retransmit_at = now + interval

    def _stop_retransmit(self) -> None:
        self._retransmit_at = None

    def _linger(self, seconds: float, *, now: float) -> None:
        """Stay in a final state to absorb retransmissions, then terminate."""
        self._retransmit_at = None
        self._timeout_at = now + (0.0 if self.peer.reliable else seconds)

    def _retransmit_due(self, now: float, cap: float) -> bool:
        """Handle a due retransmission timer; double its interval up to `cap`."""
        if self._retransmit_at is None or now < self._retransmit_at:
            return False
        if self._retransmit_data is not None:
            self._send(self._retransmit_data)
        self._retransmit_interval = min(self._retransmit_interval * 2, cap)
        self._retransmit_at = now + self._retransmit_interval
        return True

    def _timeout_due(self, now: float) -> bool:
        return self._timeout_at is not None and now >= self._timeout_at

    def handle_timer(self, *, now: float) -> bool:
        """Run the timers due at `now` (each kind overrides this); whether the
        transaction timed out now."""
        raise NotImplementedError

    def transport_failed(self) -> bool:
        """The driver could not deliver to `peer` (RFC 3261 §17.1.4, §17.2.4);
        whether that ended the transaction now (as a timeout)."""
        if self._fire(TxEvent.TIMEOUT):
            self.timed_out = True
            self.transport_error = True
            return True
        return False


class ClientInviteTransaction(Transaction):
    """RFC 3261 §17.1.1: sends an INVITE, reports responses and timeouts."""

    kind = TxKind.INVITE_CLIENT

    def __init__(
        self,
        request: Request,
        *,
        key: tuple[str, ...],
        peer: Peer,
        outbox: list[Transmit],
        now: float,
        ring_timeout: float = DEFAULT_RING_TIMEOUT,
        reconnect: Peer | None = None,
    ) -> None:
        super().__init__(key=key, peer=peer, outbox=outbox)
        self.reconnect = reconnect
        self.request = request
        self.state = TxState.CALLING
        self.provisional_received = False
        self._ring_timeout = ring_timeout
        self._ack: bytes | None = None
        data = to_bytes(request)
        self._send(data)
        # §17.1.1.2: Timer A starts at T1 (unreliable only); Timer B at 64*T1.
        self._start_retransmit(data, now=now)
        self._timeout_at = now + TIMER_B

    def receive_response(self, response: Response, *, now: float) -> Response | None:
        """Take a response; return it when the TU must see it, else None."""
        event = status_event(response.status)
        state = self.state
        if state is TxState.COMPLETED:
            if event is TxEvent.FAILURE and self._ack is not None:
                self._send(self._ack)  # §17.1.1.2: retransmitted final -> ACK again
            return None
        if state is TxState.ACCEPTED:
            # RFC 6026 §8.4: 2xx retransmissions (and forks) go to the TU.
            return response if event is TxEvent.SUCCESS else None
        if state is TxState.TERMINATED:
            return None
        if event is TxEvent.PROVISIONAL:
            self._fire(event)
            self._stop_retransmit()
            if not self.provisional_received:
                self.provisional_received = True
                self._timeout_at = now + self._ring_timeout
            return response
        self._fire(event)
        if event is TxEvent.SUCCESS:
            self._retransmit_at = None
            self._timeout_at = now + TIMER_M
        else:
            self._ack = to_bytes(ack_for_failure(self.request, response))
            self._send(self._ack)
            self._linger(TIMER_D, now=now)
        return response

    def handle_timer(self, *, now: float) -> bool:
        """Run due timers: A retransmits; B or the ring timeout time out; D/M end."""
        if not self._timeout_due(now):
            self._retransmit_due(now, cap=float("inf"))
            return False
        if self.state in (TxState.CALLING, TxState.PROCEEDING):
            self._fire(TxEvent.TIMEOUT)
            self.timed_out = True
            return True
        self._fire(TxEvent.LINGER_DONE)
        return False


class ClientNonInviteTransaction(Transaction):
    """RFC 3261 §17.1.2: sends a non-INVITE request (BYE, CANCEL, INFO...)."""

    kind = TxKind.NON_INVITE_CLIENT

    def __init__(
        self,
        request: Request,
        *,
        key: tuple[str, ...],
        peer: Peer,
        outbox: list[Transmit],
        now: float,
        reconnect: Peer | None = None,
    ) -> None:
        super().__init__(key=key, peer=peer, outbox=outbox)
        self.reconnect = reconnect
        self.request = request
        data = to_bytes(request)
        self._send(data)
        # §17.1.2.2: Timer E at T1 (unreliable only), Timer F at 64*T1.
        self._start_retransmit(data, now=now)
        self._timeout_at = now + TIMER_F

    def receive_response(self, response: Response, *, now: float) -> Response | None:
        """Take a response; return it when the TU must see it, else None."""
        if self.state in (TxState.COMPLETED, TxState.TERMINATED):
            return None
        event = status_event(response.status)
        self._fire(event)
        if event is TxEvent.PROVISIONAL:
            # §17.1.2.2: in Proceeding, Timer E fires at T2.
            if self._retransmit_at is not None:
                self._retransmit_interval = T2
                self._retransmit_at = now + T2
            return response
        self._linger(TIMER_K, now=now)
        return response

    def handle_timer(self, *, now: float) -> bool:
        """Run due timers: E retransmits; F times out; K ends."""
        if not self._timeout_due(now):
            self._retransmit_due(now, cap=T2)
            return False
        if self.state is TxState.COMPLETED:
            self._fire(TxEvent.LINGER_DONE)
            return False
        self._fire(TxEvent.TIMEOUT)
        self.timed_out = True
        return True


class ServerInviteTransaction(Transaction):
    """RFC 3261 §17.2.1 with RFC 6026: receives an INVITE, sends responses.

    The TU sends every response through `send_response`. A 2xx moves the
    transaction to ACCEPTED, where it also does the UAS core's duty of
    retransmitting the 2xx until the TU reports the ACK (§13.3.1.4), so one
    object absorbs every retransmission of the INVITE and its responses.
    """

    kind = TxKind.INVITE_SERVER

    def __init__(
        self, request: Request, *, key: tuple[str, ...], peer: Peer, outbox: list[Transmit]
    ) -> None:
        super().__init__(key=key, peer=peer, outbox=outbox)
        self.request = request
        self.state = TxState.PROCEEDING
        self.final_status: int | None = None
        self.ack_received = False
        self._last_response: bytes | None = None

    def receive_retransmission(self) -> None:
        """The same INVITE again (§17.2.1): resend the last response, if any."""
        if self.state in (TxState.PROCEEDING, TxState.COMPLETED) and self._last_response:
            self._send(self._last_response)

    def send_response(self, response: Response, *, now: float) -> None:
        """Send a response from the TU; ignored once a final one was sent."""
        event = status_event(response.status)
        state = self.state
        if state is TxState.ACCEPTED and event is TxEvent.SUCCESS:
            self._send(to_bytes(response))  # a 2xx retransmission from the TU
            return
        if state is not TxState.PROCEEDING:
            return
        data = to_bytes(response)
        self._send(data)
        self._last_response = data
        if event is TxEvent.PROVISIONAL:
            return
        self._fire(event)
        self.final_status = response.status
        if event is TxEvent.SUCCESS:
            # §13.3.1.4: retransmit the 2xx at T1, doubling up to T2, until the
            # ACK, on every transport (a proxy between us and the caller may be
            # on UDP); RFC 6026 Timer L bounds the wait.
            self._retransmit_data = data
            self._retransmit_interval = T1
            self._retransmit_at = now + T1
            self._timeout_at = now + TIMER_L
        else:
            # §17.2.1: Timer G retransmits (unreliable), Timer H waits for ACK.
            self._start_retransmit(data, now=now)
            self._timeout_at = now + TIMER_H

    def receive_ack(self, *, now: float) -> bool:
        """An ACK that matches this transaction; whether the TU must see it.

        The ACK for a non-2xx final response belongs to the transaction
        (§17.2.1) and is absorbed here. An ACK matched in the Accepted state
        acknowledges the 2xx: it is end to end, and RFC 6026 §7.1 passes it
        to the TU, which owns the dialog (a peer that reuses the INVITE's
        branch, or an RFC 2543 peer matched by its CSeq, sends one).
        """
        if self.state is TxState.COMPLETED:
            self._fire(TxEvent.ACK)
            self._linger(TIMER_I, now=now)
        return self.state is TxState.ACCEPTED

    def confirm_2xx(self) -> None:
        """The TU matched an ACK to our 2xx: stop retransmitting it."""
        if self.state is TxState.ACCEPTED:
            self.ack_received = True
            self._stop_retransmit()

    def handle_timer(self, *, now: float) -> bool:
        """Run due timers: G (or 2xx) retransmits; H or L end the wait."""
        if not self._timeout_due(now):
            self._retransmit_due(now, cap=T2)
            return False
        if self.state is TxState.COMPLETED:
            self._fire(TxEvent.TIMEOUT)  # Timer H: the ACK never came
            self.timed_out = True
            return True
        if self.state is TxState.ACCEPTED:
            self.timed_out = not self.ack_received  # §13.3.1.4: no ACK -> BYE
            self._fire(TxEvent.LINGER_DONE)
            return self.timed_out
        self._fire(TxEvent.LINGER_DONE)
        return False


class ServerNonInviteTransaction(Transaction):
    """RFC 3261 §17.2.2: receives a non-INVITE request, sends responses."""

    kind = TxKind.NON_INVITE_SERVER

    def __init__(
        self, request: Request, *, key: tuple[str, ...], peer: Peer, outbox: list[Transmit]
    ) -> None:
        super().__init__(key=key, peer=peer, outbox=outbox)
        self.request = request
        self._last_response: bytes | None = None

    def receive_retransmission(self) -> None:
        """The same request again: absorbed in Trying, answered afterwards."""
        if self.state in (TxState.PROCEEDING, TxState.COMPLETED) and self._last_response:
            self._send(self._last_response)

    def send_response(self, response: Response, *, now: float) -> None:
        """Send a response from the TU; ignored once a final one was sent."""
        if self.state not in (TxState.TRYING, TxState.PROCEEDING):
            return
        data = to_bytes(response)
        self._send(data)
        self._last_response = data
        event = status_event(response.status)
        self._fire(event)
        if event is not TxEvent.PROVISIONAL:
            self._linger(TIMER_J, now=now)

    def handle_timer(self, *, now: float) -> bool:
        """Timer J ends the transaction (never a timeout the TU reacts to)."""
        if self._timeout_due(now):
            self._fire(TxEvent.LINGER_DONE)
        return False
