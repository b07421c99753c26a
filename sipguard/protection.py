"""The core's protection: strangers' answers, per-trunk ceilings, stateless answers.

The B2BUA core (`sipguard.b2bua`) runs the call flows; before it spends
state or an answer on a request it asks `Protection`, which owns the state
that bounds what one source can make sipguard hold or send:

- Strangers, the sources no trunk claims. Whatever they send gets one
  uniform answer (`stranger_status`, with `stranger_headers` naming the
  rule `unknown_source` and nothing more), or none: in `drop` mode, and
  over UDP past the address's answer budget (`AnswerBudget`), so that a
  forged source address cannot aim sipguard's answers at a third party
  (reflection). `may_answer_stranger` says which, and counts the drops
  (`dropped_unknown`, a gauge of the driver's).
- Per-trunk ceilings (`calls_per_trunk`, `transactions_per_trunk`): the
  live calls and server transactions of each trunk, counted as the core
  reports them; `capacity_reached` names the ceiling a trunk is at, so no
  one trunk can take all of the core's memory.
- Stateless answers (`AnswerCache`): an INVITE refused or dropped without
  a transaction is remembered by source and transaction key with the bytes
  it was answered with, so its retransmissions are answered by a lookup,
  and decided and logged once (RFC 3261 §17.2.1 asks a transaction to
  absorb them; this is the stateless counterpart).

Rules:
1. Protection decides and counts; it sends nothing. The core sends what
   it is told may go, and tells it what it started and ended.
2. The counts are true: every `call_started` has its `call_ended`, every
   `transaction_added` its `transaction_forgotten`; a count that reaches
   zero leaves its map, so a trunk without calls costs nothing.

Ring 2: it holds state and takes `now`, but performs no I/O and reads no
clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from sipguard.answercache import AnswerCache
from sipguard.peer import Peer
from sipguard.sip.serializer import reason_value
from sipguard.sourcelimit import AnswerBudget

__all__ = ["Protection"]

Fields = tuple[tuple[str, str], ...]


class Protection:
    """What the core asks before it answers a stranger or takes on more state.

    Args:
        calls_per_trunk: live calls one trunk may hold.
        transactions_per_trunk: live server transactions one trunk may hold.
        unknown_source_answer: `reject` (the uniform answer) or `drop` (none).
        unknown_source_rate: answers a second one UDP address of no trunk gets
            (its burst: the rate rounded up, at least 1).
        unknown_source_status: the status and reason phrase of the uniform answer.
        transports: the transports the core answers on.
        warning: the Warning value the core signs `text` with on a transport
            (`warning(transport, text)`), for the uniform answer's Warning.
    """

    def __init__(
        self,
        *,
        calls_per_trunk: int,
        transactions_per_trunk: int,
        unknown_source_answer: str,
        unknown_source_rate: float,
        unknown_source_status: tuple[int, str],
        transports: frozenset[str],
        warning: Callable[[str, str], str],
    ) -> None:
        self.calls_per_trunk = calls_per_trunk
        self.transactions_per_trunk = transactions_per_trunk
        self._drop_all = unknown_source_answer == "drop"
        rate = unknown_source_rate
        self._budget = AnswerBudget(rate=rate, burst=max(1, math.ceil(rate)))
        self.stranger_status = unknown_source_status
        # The one answer to strangers, per transport (its Warning's warn-agent):
        # the rule id, never more, whatever the trunks' answers.detail.
        status = unknown_source_status[0]
        self._stranger_headers: dict[str, Fields] = {
            transport: (
                ("Reason", reason_value(status, "unknown_source")),
                ("Warning", warning(transport, "unknown_source")),
            )
            for transport in transports
        }
        self.dropped_unknown = 0
        self._calls: dict[str, int] = {}
        self._transactions: dict[str, int] = {}
        self._transaction_trunk: dict[tuple[str, ...], str] = {}
        # Out-of-dialog INVITEs answered statelessly, for their retransmissions.
        self._stateless = AnswerCache()

    # -- strangers ---------------------------------------------------------------

    def may_answer_stranger(self, peer: Peer, *, now: float) -> bool:
        """Whether a stranger gets an answer now (mode and budget); counts drops.

        The budget applies to UDP only, whose source address anyone can
        forge; a TCP peer completed a handshake from its address.
        """
        if self._drop_all or (
            peer.transport == "udp" and not self._budget.allow(peer.host, now=now)
        ):
            self.dropped_unknown += 1
            return False
        return True

    def stranger_headers(self, transport: str) -> Fields:
        """The Reason and Warning of the uniform answer on `transport`."""
        return self._stranger_headers[transport]

    @property
    def why_unanswered(self) -> str:
        """Why a stranger's request went unanswered, for the operator."""
        if self._drop_all:
            return "unknown_source_answer: drop"
        return "past the address's answer budget (unknown_source_rate)"

    # -- per-trunk ceilings ------------------------------------------------------

    @property
    def calls_by_trunk(self) -> dict[str, int]:
        """Live calls per trunk (a copy)."""
        return dict(self._calls)

    def call_started(self, trunk: str) -> None:
        calls = self._calls
        calls[trunk] = calls.get(trunk, 0) + 1

    def call_ended(self, trunk: str) -> None:
        _decrement(self._calls, trunk)

    def transaction_added(self, key: tuple[str, ...], trunk: str) -> None:
        """A server transaction of `trunk` is live under `key`."""
        self._transaction_trunk[key] = trunk
        counts = self._transactions
        counts[trunk] = counts.get(trunk, 0) + 1

    def transaction_forgotten(self, key: tuple[str, ...]) -> None:
        """The server transaction under `key` is gone (a key never added: no-op)."""
        trunk = self._transaction_trunk.pop(key, None)
        if trunk is not None:
            _decrement(self._transactions, trunk)

    def capacity_reached(self, trunk: str, *, calls: bool) -> str | None:
        """The protection ceiling `trunk` is at, in words; None below them.

        `calls`: count its live calls too (for a new call), not only its
        transactions.
        """
        if calls and self._calls.get(trunk, 0) >= self.calls_per_trunk:
            return f"trunk {trunk} holds calls_per_trunk {self.calls_per_trunk}"
        if self._transactions.get(trunk, 0) >= self.transactions_per_trunk:
            return f"trunk {trunk} holds transactions_per_trunk {self.transactions_per_trunk}"
        return None

    # -- stateless answers -------------------------------------------------------

    def stateless_answer(self, peer: Peer, key: tuple[str, ...], *, now: float) -> bytes | None:
        """The answer remembered for the INVITE `key` from `peer` (b"": it was
        dropped unanswered, or a stranger's: answer it again), or None."""
        return self._stateless.answer_for((peer, key), now=now)

    def remember_stateless(
        self, peer: Peer, key: tuple[str, ...], answer: bytes, *, now: float
    ) -> None:
        """Keep `answer` (b"" for none) for the retransmissions of INVITE `key` from `peer`."""
        self._stateless.remember((peer, key), answer, now=now)


def _decrement(counts: dict[str, int], key: str) -> None:
    """One less of `key`; a count that reaches zero leaves the dict."""
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]
