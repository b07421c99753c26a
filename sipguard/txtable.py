"""The core's transaction table: keys, the two maps, one timer heap.

The B2BUA core (`sipguard.b2bua`) holds every live transaction here, its
server transactions under their RFC 3261 §17.2.3 keys and its client
transactions under §17.1.3 keys, and asks the table when it must wake and
what timed out. The transactions themselves (`sipguard.transaction`) run
their own timers; the table only knows when each is due.

One heap of `(deadline, seq, transaction)` serves them all. An entry is
pushed only when a transaction's deadline moves earlier than the one
scheduled for it; an entry that fires early runs the transaction's timers,
which do nothing yet, and the transaction is scheduled again. So there is
at most about one entry per live transaction, and `next_deadline()` costs
a look at the heap's top.

Rules:
1. A transaction is in the table from `add_server` / `add_client` until it
   is forgotten: `forget`, or `schedule` of a terminated one. A key holds
   one transaction; a newer one under the same key takes its place, and
   forgetting the older one then leaves the newer in place.
2. `run_timers` yields each transaction whose timer ran, one at a time,
   with whether it has just timed out, and goes on only when the caller
   asks for the next: the caller reacts to each (that may add and
   schedule transactions, even ones due at once) and schedules it again
   before the next due timer runs, in deadline order. Nothing is reset
   behind the caller's back: a timeout is reported once, as it happens.

Ring 2: it holds state and takes `now`, but performs no I/O and reads no
clock.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping

from sipguard.sip.message import Request, Response
from sipguard.sip.uri import Via
from sipguard.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    Transaction,
)

__all__ = [
    "ClientTransaction",
    "ServerTransaction",
    "TxKey",
    "TxTable",
    "client_key",
    "response_key",
    "server_key",
    "via_key",
]

TxKey = tuple[str, ...]
ServerTransaction = ServerInviteTransaction | ServerNonInviteTransaction
ClientTransaction = ClientInviteTransaction | ClientNonInviteTransaction


def server_key(request: Request, *, method: str | None = None) -> TxKey:
    """RFC 3261 §17.2.3: branch + sent-by + method (ACK matches its INVITE).

    `method`: match as a request of this method (a CANCEL's INVITE).
    """
    via = request.top_via
    name = method or request.method
    if name == "ACK":
        name = "INVITE"
    key = via_key(via, name)
    if key is not None:
        return key
    # RFC 2543 peers: fall back to the dialog and CSeq identifiers.
    return (request.call_id, request.from_.tag or "", str(request.cseq.seq), via.sent_by, name)


def via_key(via: Via, method: str) -> TxKey | None:
    """The RFC 3261 transaction key of a magic-cookie branch; None for older peers."""
    branch = via.branch
    if branch is None or not branch.startswith("z9hG4bK"):
        return None
    return (branch, via.sent_by, method)


def client_key(request: Request) -> TxKey:
    """The key of a client transaction sending `request`: its branch and method."""
    return (request.top_via.branch or "", request.cseq.method)


def response_key(response: Response) -> TxKey:
    """RFC 3261 §17.1.3: match on the top Via branch and the CSeq method."""
    return (response.top_via.branch or "", response.cseq.method)


class TxTable:
    """The live transactions of a core, by key, and when each is next due."""

    def __init__(self) -> None:
        self._server: dict[TxKey, ServerTransaction] = {}
        self._client: dict[TxKey, ClientTransaction] = {}
        # Read-only views for the core's lookups (plain attributes, not
        # properties: one lookup per request on the hot path). Changed only
        # by `add_server`, `add_client` and `forget`.
        self.server: Mapping[TxKey, ServerTransaction] = self._server
        self.client: Mapping[TxKey, ClientTransaction] = self._client
        self._timers: list[tuple[float, int, Transaction]] = []
        self._scheduled: dict[int, float] = {}
        self._seq = 0

    def __len__(self) -> int:
        """Live transactions, server and client."""
        return len(self._server) + len(self._client)

    def add_server(self, tx: ServerTransaction) -> None:
        self._server[tx.key] = tx

    def add_client(self, tx: ClientTransaction) -> None:
        self._client[tx.key] = tx

    def forget(self, tx: Transaction) -> bool:
        """Drop `tx` and its timer; whether it was the one under its key (Rule 1)."""
        self._scheduled.pop(id(tx), None)
        txs: dict[TxKey, ServerTransaction] | dict[TxKey, ClientTransaction]
        txs = self._client if isinstance(tx, _CLIENT_KINDS) else self._server
        if txs.get(tx.key) is tx:
            del txs[tx.key]
            return True
        return False

    def schedule(self, tx: Transaction) -> None:
        """Wake for `tx`'s deadline (a terminated `tx` is not scheduled)."""
        if tx.is_terminated:
            return
        deadline = tx.deadline
        if deadline is None:
            return
        scheduled = self._scheduled.get(id(tx))
        if scheduled is not None and scheduled <= deadline:
            return  # the earlier entry fires first and re-schedules
        self._scheduled[id(tx)] = deadline
        self._seq += 1
        heapq.heappush(self._timers, (deadline, self._seq, tx))

    def next_deadline(self) -> float | None:
        """The earliest time `run_timers` has something to run, or None."""
        timers = self._timers
        scheduled = self._scheduled
        while timers:
            deadline, _, tx = timers[0]
            if scheduled.get(id(tx)) == deadline and not tx.is_terminated:
                return deadline
            heapq.heappop(timers)
            if scheduled.get(id(tx)) == deadline:
                del scheduled[id(tx)]
        return None

    def run_timers(self, *, now: float) -> Iterator[tuple[Transaction, bool]]:
        """Run every transaction timer due at `now`, in deadline order.

        Yields each transaction whose timer ran and whether it has just
        timed out (`Transaction.handle_timer`); the caller reacts and then
        schedules it again (Rule 2). Entries pushed meanwhile that are due
        at `now` run in the same pass.
        """
        timers = self._timers
        scheduled = self._scheduled
        while timers and timers[0][0] <= now:
            deadline, _, tx = heapq.heappop(timers)
            if scheduled.get(id(tx)) != deadline:
                continue
            del scheduled[id(tx)]
            if tx.is_terminated:
                continue
            yield tx, tx.handle_timer(now=now)


_CLIENT_KINDS = (ClientInviteTransaction, ClientNonInviteTransaction)
