"""The transaction transition table is total, and the machines obey it.

Two halves, after h2's state-machine tests: the table itself (every reachable
(kind, state) has an entry, every target is a state of that kind, TERMINATED
absorbs everything, TERMINATED is reachable from everywhere), and a stateful
Hypothesis run that throws random inputs at each kind of transaction and checks
the invariants after every step.
"""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from sipguard.events import Transmit
from sipguard.peer import Peer
from sipguard.sip.builders import build_response
from sipguard.sip.message import Headers, Request, Response
from sipguard.sip.serializer import to_bytes
from sipguard.transaction import (
    TRANSITIONS,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    Transaction,
    TxEvent,
    TxKind,
    TxState,
    status_event,
)

pytestmark = pytest.mark.property

S = TxState
E = TxEvent

# RFC 3261 Figures 5-8 with RFC 6026's Accepted state.
KIND_STATES: dict[TxKind, frozenset[TxState]] = {
    TxKind.INVITE_CLIENT: frozenset(
        {S.CALLING, S.PROCEEDING, S.COMPLETED, S.ACCEPTED, S.TERMINATED}
    ),
    TxKind.INVITE_SERVER: frozenset(
        {S.PROCEEDING, S.COMPLETED, S.CONFIRMED, S.ACCEPTED, S.TERMINATED}
    ),
    TxKind.NON_INVITE_CLIENT: frozenset({S.TRYING, S.PROCEEDING, S.COMPLETED, S.TERMINATED}),
    TxKind.NON_INVITE_SERVER: frozenset({S.TRYING, S.PROCEEDING, S.COMPLETED, S.TERMINATED}),
}
INITIAL: dict[TxKind, TxState] = {
    TxKind.INVITE_CLIENT: S.CALLING,
    TxKind.INVITE_SERVER: S.PROCEEDING,
    TxKind.NON_INVITE_CLIENT: S.TRYING,
    TxKind.NON_INVITE_SERVER: S.TRYING,
}
# States in which no timer runs: a server waits for its TU without a clock.
TIMERLESS: dict[TxKind, frozenset[TxState]] = {
    TxKind.INVITE_CLIENT: frozenset(),
    TxKind.INVITE_SERVER: frozenset({S.PROCEEDING}),
    TxKind.NON_INVITE_CLIENT: frozenset(),
    TxKind.NON_INVITE_SERVER: frozenset({S.TRYING, S.PROCEEDING}),
}


RING_TIMEOUT = 60.0


def time_limit(kind: TxKind, state: TxState, *, reliable: bool) -> tuple[str, float] | None:
    """How long `state` may last: (measured from "created" or "entered", seconds).

    RFC 3261 Timers B, D, F, H, I, J, K and RFC 6026 Timers L, M; the ring
    timeout bounds a ringing INVITE client. Linger timers are zero on TCP.
    """
    linger = {S.COMPLETED: 32.0, S.CONFIRMED: 5.0}
    if kind is TxKind.INVITE_CLIENT:
        limits = {S.CALLING: 32.0, S.PROCEEDING: RING_TIMEOUT, S.ACCEPTED: 32.0}
        if state is S.COMPLETED:
            return ("entered", 0.0 if reliable else 32.0)  # Timer D
    elif kind is TxKind.INVITE_SERVER:
        limits = {S.COMPLETED: 32.0, S.ACCEPTED: 32.0}  # Timers H and L
        if state is S.CONFIRMED:
            return ("entered", 0.0 if reliable else linger[state])  # Timer I
    elif kind is TxKind.NON_INVITE_CLIENT:
        if state in (S.TRYING, S.PROCEEDING):
            return ("created", 32.0)  # Timer F
        limits = {S.COMPLETED: 0.0 if reliable else 5.0}  # Timer K
    else:
        limits = {S.COMPLETED: 0.0 if reliable else 32.0}  # Timer J
    return ("entered", limits[state]) if state in limits else None


def reachable(kind: TxKind) -> set[TxState]:
    seen = {INITIAL[kind]}
    queue = deque(seen)
    while queue:
        state = queue.popleft()
        for target in TRANSITIONS[(kind, state)].values():
            if target not in seen:
                seen.add(target)
                queue.append(target)
    return seen


# --- the table --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TxKind))
def test_every_reachable_state_has_an_entry_and_nothing_else_does(kind: TxKind) -> None:
    states = reachable(kind)
    assert states == KIND_STATES[kind]
    keyed = {state for (k, state) in TRANSITIONS if k is kind}
    assert keyed == states


def test_table_keys_cover_only_known_kinds() -> None:
    assert {kind for kind, _ in TRANSITIONS} == set(TxKind)


@pytest.mark.parametrize("kind", list(TxKind))
def test_every_target_is_a_state_of_the_kind(kind: TxKind) -> None:
    for state in KIND_STATES[kind]:
        for event, target in TRANSITIONS[(kind, state)].items():
            assert isinstance(event, TxEvent)
            assert target in KIND_STATES[kind], (kind, state, event, target)
            assert target is not INITIAL[kind] or state is INITIAL[kind]


@pytest.mark.parametrize("kind", list(TxKind))
def test_terminated_absorbs_everything(kind: TxKind) -> None:
    assert TRANSITIONS[(kind, S.TERMINATED)] == {}
    for event in TxEvent:
        assert TRANSITIONS[(kind, S.TERMINATED)].get(event, S.TERMINATED) is S.TERMINATED


@pytest.mark.parametrize("kind", list(TxKind))
def test_terminated_is_reachable_from_every_state(kind: TxKind) -> None:
    for start in KIND_STATES[kind]:
        seen = {start}
        queue = deque(seen)
        while queue:
            for target in TRANSITIONS[(kind, queue.popleft())].values():
                if target not in seen:
                    seen.add(target)
                    queue.append(target)
        assert S.TERMINATED in seen, (kind, start)


@pytest.mark.parametrize("kind", list(TxKind))
def test_every_live_state_can_time_out_or_linger_out(kind: TxKind) -> None:
    for state in KIND_STATES[kind] - {S.TERMINATED} - TIMERLESS[kind]:
        row = TRANSITIONS[(kind, state)]
        assert S.TERMINATED in (row.get(E.TIMEOUT), row.get(E.LINGER_DONE)), (kind, state)


def test_rfc_figure_edges() -> None:
    ic, is_, nc, ns = (
        TxKind.INVITE_CLIENT,
        TxKind.INVITE_SERVER,
        TxKind.NON_INVITE_CLIENT,
        TxKind.NON_INVITE_SERVER,
    )
    assert TRANSITIONS[(ic, S.CALLING)][E.PROVISIONAL] is S.PROCEEDING
    assert TRANSITIONS[(ic, S.CALLING)][E.SUCCESS] is S.ACCEPTED
    assert TRANSITIONS[(ic, S.PROCEEDING)][E.FAILURE] is S.COMPLETED
    assert E.PROVISIONAL not in TRANSITIONS[(ic, S.PROCEEDING)]
    assert TRANSITIONS[(is_, S.PROCEEDING)][E.SUCCESS] is S.ACCEPTED
    assert TRANSITIONS[(is_, S.COMPLETED)][E.ACK] is S.CONFIRMED
    assert TRANSITIONS[(is_, S.CONFIRMED)] == {E.LINGER_DONE: S.TERMINATED}
    assert TRANSITIONS[(nc, S.TRYING)][E.SUCCESS] is S.COMPLETED
    assert TRANSITIONS[(ns, S.PROCEEDING)][E.FAILURE] is S.COMPLETED
    assert TRANSITIONS[(ns, S.COMPLETED)] == {E.LINGER_DONE: S.TERMINATED}


@settings(max_examples=100, deadline=None)
@given(key=st.sampled_from(sorted(TRANSITIONS, key=repr)), event=st.sampled_from(TxEvent))
def test_any_lookup_is_defined_and_stays_in_the_kind(
    key: tuple[TxKind, TxState], event: TxEvent
) -> None:
    kind, state = key
    assert TRANSITIONS[key].get(event, state) in KIND_STATES[kind]


@pytest.mark.parametrize("status", [100, 199, 200, 299, 300, 399, 400, 499, 500, 599, 600, 699])
def test_status_event(status: int) -> None:
    expected = E.PROVISIONAL if status < 200 else E.SUCCESS if status < 300 else E.FAILURE
    assert status_event(status) is expected


# --- the machines under random input ----------------------------------------------------------

UDP = Peer("udp", "192.0.2.20", 5060)
TCP = Peer("tcp", "192.0.2.20", 5060)
STATUSES = st.one_of(
    st.sampled_from([100, 180, 183, 200, 202, 302, 404, 408, 486, 487, 500, 503, 603]),
    st.integers(min_value=100, max_value=699),
)
DELAYS = st.one_of(
    st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 31.5, 32.0, 64.0, 200.0]),
    st.floats(min_value=0.0, max_value=100.0, allow_nan=False, allow_infinity=False),
)


def make_request(method: str) -> Request:
    fields = [
        ("Via", "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-prop;rport"),
        ("From", "<sip:caller@10.0.0.1>;tag=a"),
        ("To", "<sip:callee@10.9.0.1>"),
        ("Call-ID", "prop-call"),
        ("CSeq", f"1 {method}"),
    ]
    return Request(method, "sip:callee@10.9.0.1", Headers(fields))


class TransactionMachine(RuleBasedStateMachine):
    """Drive one transaction of a random kind over a random transport."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.outbox: list[Transmit] = []
        self.tx: Transaction | None = None
        self.request: Request | None = None
        self.created_at = 0.0
        self.entered_at = 0.0

    @initialize(kind=st.sampled_from(TxKind), reliable=st.booleans(), start=DELAYS)
    def create(self, kind: TxKind, reliable: bool, start: float) -> None:
        self.now = self.created_at = self.entered_at = start
        peer = TCP if reliable else UDP
        method = "INVITE" if kind in (TxKind.INVITE_CLIENT, TxKind.INVITE_SERVER) else "OPTIONS"
        self.request = make_request(method)
        key = ("z9hG4bK-prop", method)
        tx: Transaction
        if kind is TxKind.INVITE_CLIENT:
            tx = ClientInviteTransaction(
                self.request,
                key=key,
                peer=peer,
                outbox=self.outbox,
                now=start,
                ring_timeout=RING_TIMEOUT,
            )
        elif kind is TxKind.NON_INVITE_CLIENT:
            tx = ClientNonInviteTransaction(
                self.request, key=key, peer=peer, outbox=self.outbox, now=start
            )
        elif kind is TxKind.INVITE_SERVER:
            tx = ServerInviteTransaction(self.request, key=key, peer=peer, outbox=self.outbox)
        else:
            tx = ServerNonInviteTransaction(self.request, key=key, peer=peer, outbox=self.outbox)
        assert tx.kind is kind
        assert tx.state is INITIAL[kind]
        if kind in (TxKind.INVITE_CLIENT, TxKind.NON_INVITE_CLIENT):
            assert [item.data for item in self.outbox] == [to_bytes(self.request)]
        else:
            assert self.outbox == []
        self.tx = tx

    # --- helpers ---

    def _step(self, events: set[TxEvent], action: object) -> None:
        """Run `action` and check that the state moved along one of `events`."""
        tx = self.tx
        assert tx is not None
        before_state, before_sent = tx.state, len(self.outbox)
        action()  # type: ignore[operator]
        allowed = {before_state}
        row = TRANSITIONS[(tx.kind, before_state)]
        allowed.update(row[event] for event in events if event in row)
        assert tx.state in allowed, (tx.kind, before_state, events, tx.state)
        if before_state is S.TERMINATED:
            assert len(self.outbox) == before_sent, "sent data after TERMINATED"
        if tx.state is not before_state:
            self.entered_at = self.now

    def _timer(self) -> None:
        """Run handle_timer at `now`; no timer fires early, none is skipped."""
        tx = self.tx
        assert tx is not None
        before_state = tx.state
        limit = time_limit(tx.kind, before_state, reliable=tx.peer.reliable)
        entered_at = self.entered_at
        before_sent = len(self.outbox)
        was_timed_out = tx.timed_out
        told: list[bool] = []
        self._step({E.TIMEOUT, E.LINGER_DONE}, lambda: told.append(tx.handle_timer(now=self.now)))
        # The TU is told of a timeout once: when `timed_out` turns True.
        assert told == [tx.timed_out and not was_timed_out]
        # RFC 3261 §13.3.1.4: only a 2xx to an INVITE is retransmitted on a
        # reliable transport (by the UAS core, until the ACK).
        if tx.peer.reliable and not (
            tx.kind is TxKind.INVITE_SERVER and before_state is S.ACCEPTED
        ):
            assert len(self.outbox) == before_sent, "a reliable transport retransmitted"
        assert len(self.outbox) - before_sent in (0, 1)
        if limit is None:
            assert tx.state is before_state
            return
        origin, seconds = limit
        expires = (self.created_at if origin == "created" else entered_at) + seconds
        if self.now >= expires:
            assert tx.state is S.TERMINATED, (tx.kind, before_state, self.now, expires)
        else:
            assert tx.state is before_state, (tx.kind, before_state, self.now, expires)

    def _response(self, status: int) -> Response:
        assert self.request is not None
        return build_response(self.request, status, to_tag=None if status == 100 else "b")

    def _is_client(self) -> bool:
        return isinstance(self.tx, ClientInviteTransaction | ClientNonInviteTransaction)

    def _is_server(self) -> bool:
        return isinstance(self.tx, ServerInviteTransaction | ServerNonInviteTransaction)

    # --- rules ---

    @precondition(lambda self: self._is_client())
    @rule(status=STATUSES, retransmit=st.booleans())
    def receive_response(self, status: int, retransmit: bool) -> None:
        tx = self.tx
        assert isinstance(tx, ClientInviteTransaction | ClientNonInviteTransaction)
        message = self._response(status)
        results: list[Response | None] = []

        def action() -> None:
            results.append(tx.receive_response(message, now=self.now))
            if retransmit:
                results.append(tx.receive_response(message, now=self.now))

        self._step({status_event(status)}, action)
        assert all(result is None or result is message for result in results)

    @precondition(lambda self: self._is_server())
    @rule(status=STATUSES)
    def send_response(self, status: int) -> None:
        tx = self.tx
        assert isinstance(tx, ServerInviteTransaction | ServerNonInviteTransaction)
        message = self._response(status)
        self._step({status_event(status)}, lambda: tx.send_response(message, now=self.now))

    @precondition(lambda self: self._is_server())
    @rule()
    def request_retransmitted(self) -> None:
        tx = self.tx
        assert isinstance(tx, ServerInviteTransaction | ServerNonInviteTransaction)
        before = len(self.outbox)
        self._step(set(), tx.receive_retransmission)
        assert len(self.outbox) - before in (0, 1)

    @precondition(lambda self: isinstance(self.tx, ServerInviteTransaction))
    @rule()
    def ack(self) -> None:
        tx = self.tx
        assert isinstance(tx, ServerInviteTransaction)
        self._step({E.ACK}, lambda: tx.receive_ack(now=self.now))

    @precondition(lambda self: isinstance(self.tx, ServerInviteTransaction))
    @rule()
    def confirm_2xx(self) -> None:
        tx = self.tx
        assert isinstance(tx, ServerInviteTransaction)
        self._step(set(), tx.confirm_2xx)

    @rule(delay=DELAYS)
    def timer_at_random_time(self, delay: float) -> None:
        self.now += delay
        self._timer()

    @rule()
    def timer_at_deadline(self) -> None:
        """What the driver does: wake at the deadline and run every due timer."""
        tx = self.tx
        assert tx is not None
        if tx.deadline is None:
            return
        self.now = max(self.now, tx.deadline)
        for _ in range(20):
            self._timer()
            if tx.deadline is None or tx.deadline > self.now:
                break
        else:
            raise AssertionError(f"deadline {tx.deadline} never moved past {self.now}")

    @rule()
    def transport_failed(self) -> None:
        tx = self.tx
        assert tx is not None
        was_terminated, was_timed_out = tx.is_terminated, tx.timed_out
        told: list[bool] = []
        self._step({E.TIMEOUT}, lambda: told.append(tx.transport_failed()))
        if tx.is_terminated and not was_terminated:
            assert tx.timed_out
        assert told == [tx.timed_out and not was_timed_out]

    # --- invariants ---

    @invariant()
    def state_belongs_to_the_kind(self) -> None:
        if self.tx is not None:
            assert self.tx.state in KIND_STATES[self.tx.kind]

    @invariant()
    def deadline_iff_a_timer_applies(self) -> None:
        tx = self.tx
        if tx is None:
            return
        no_timer = tx.state is S.TERMINATED or tx.state in TIMERLESS[tx.kind]
        assert (tx.deadline is None) == no_timer, (tx.kind, tx.state, tx.deadline)

    @invariant()
    def timed_out_only_when_terminated(self) -> None:
        if self.tx is not None and self.tx.timed_out:
            assert self.tx.is_terminated

    @invariant()
    def everything_goes_to_the_peer(self) -> None:
        if self.tx is not None:
            assert all(item.peer == self.tx.peer for item in self.outbox)

    @invariant()
    def retransmissions_are_bounded(self) -> None:
        # 64*T1 of Timer A doubling gives 7 INVITEs; Timer E capped at T2 gives 11.
        tx = self.tx
        if tx is None or self.request is None:
            return
        requests = sum(1 for item in self.outbox if item.data == to_bytes(self.request))
        if isinstance(tx, ClientInviteTransaction):
            assert requests <= (1 if tx.peer.reliable else 7)
        elif isinstance(tx, ClientNonInviteTransaction):
            assert requests <= (1 if tx.peer.reliable else 11)


TransactionMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestTransactionMachine = TransactionMachine.TestCase
