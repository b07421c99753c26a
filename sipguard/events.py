"""What the sans-IO core hands its driver: commands and call events.

The core (`sipguard.b2bua`) and its transactions (`sipguard.transaction`)
never touch a socket or a log. What they want sent is a `Transmit` command,
queued in the outbox the driver drains with `datagrams_to_send()`; what
happened to a call is an event, queued for `next_event()`. The driver turns
the commands into datagrams or stream writes, and the events into the log,
the audit trail, the metrics and the rate table's releases.

Rules:
1. Every value here is frozen: the core queues it and forgets it.
2. Events are past-tense facts, each emitted once: `CallStarted` and
   `CallRefused` once per decided INVITE (a copy absorbed as a
   retransmission gives none), `CallEnded` once per started call (Rule 2
   of the core), `MessageRejected` for a message answered with an error or
   dropped before any call logic.
"""

from __future__ import annotations

from dataclasses import dataclass

from sipguard.peer import Peer
from sipguard.sip.message import Request

__all__ = [
    "CallEnded",
    "CallRefused",
    "CallStarted",
    "Event",
    "InDialogMonitored",
    "MessageRejected",
    "Transmit",
]


@dataclass(frozen=True, slots=True)
class Transmit:
    """A command to the driver: send `data` to `peer`.

    `reconnect` is where to open a new TCP connection when `peer`'s (an
    inbound connection, from a port nothing listens on) is gone: the same
    host at the port its Contact or first Route names (RFC 3261 §18.1.1).
    """

    peer: Peer
    data: bytes
    reconnect: Peer | None = None


@dataclass(frozen=True, slots=True)
class CallStarted:
    """A new call was admitted and relayed to its route."""

    trunk: str
    peer: Peer
    a_call_id: str
    b_call_id: str
    caller: str
    callee: str
    time: float
    monitor_rule: str | None = None  # relayed although this rule fired (monitored, or emergency)
    emergency: bool = False  # a call to an emergency number: no rule of sipguard's refused it
    warnings: tuple[str, ...] = ()  # rate rules whose warn level the call passed
    request: Request | None = None  # the caller's INVITE, for the audit trail
    # A home-country caller ID from abroad, relayed withheld (home_cli:
    # anonymize): intercepted, not authenticated.
    anonymized: bool = False


@dataclass(frozen=True, slots=True)
class CallRefused:
    """A new call was refused before any state was created (or, with rule
    `identity_changed`, a mid-call request that changed the caller's identity).

    `status` is None when the INVITE was dropped unanswered: an unknown
    source in `drop` mode or past its answer budget (`reason` is then "").
    """

    trunk: str | None
    peer: Peer
    call_id: str
    status: int | None
    rule: str
    reason: str
    time: float
    caller: str | None = None  # the normalised caller number, when readable
    callee: str | None = None  # the normalised called number, when readable
    request: Request | None = None  # the refused INVITE, for the audit trail
    detail: str = ""  # why, in full, for the operator (the caller may see less)
    noted: str | None = None  # a monitored rule that fired before `rule` refused the call


@dataclass(frozen=True, slots=True)
class InDialogMonitored:
    """A rule fired on the caller's mid-call request (`identity_changed`) but
    the trunk only monitors it: the request was relayed all the same."""

    trunk: str
    peer: Peer
    call_id: str
    rule: str
    time: float
    caller: str = ""


@dataclass(frozen=True, slots=True)
class CallEnded:
    """A call that was started has ended; emitted exactly once per call."""

    trunk: str
    a_call_id: str
    b_call_id: str
    status: int  # final status of the INVITE as relayed to the caller
    ended_by: str  # "caller", "callee", "timeout", "error", "shutdown"
    answered: bool
    start: float  # when the caller's INVITE came in
    time: float  # when the call ended
    caller: str = ""  # the validated caller number (or the From URI)
    ringing_for: float | None = None  # unanswered calls: seconds since the first 18x
    rate_counted: bool = False  # the rate table counted it: release it now
    answered_at: float | None = None  # answered calls: when the 2xx was relayed to the caller


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """A message was answered with an error or dropped before any call logic."""

    peer: Peer
    status: int | None  # None when dropped unanswered
    reason: str


Event = CallStarted | CallRefused | CallEnded | MessageRejected | InDialogMonitored
