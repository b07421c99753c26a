"""Stateless answers remembered for retransmissions (RFC 3261 §8.2.7, §17.2.1).

A refused INVITE keeps no transaction, but over UDP the caller resends it
until an answer arrives (T1, 2·T1, … for up to 64·T1 = 32 s). Deciding each
copy again would cost the whole policy again and, worse, count and log the
same call several times. `AnswerCache` maps the request's transaction key to
the bytes it was answered with (empty bytes: it was dropped unanswered), so
a retransmission is answered by a lookup.

Entries live `ttl` seconds (64·T1 by default); at most `max_entries`
entries and `max_bytes` bytes of answers are kept, the oldest forgotten
first: a forgotten entry only means a late copy is decided again.

Ring 1: pure; no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

__all__ = ["AnswerCache"]


class AnswerCache:
    """Bounded, expiring memory of stateless answers, keyed by transaction."""

    def __init__(
        self, *, ttl: float = 32.0, max_entries: int = 50_000, max_bytes: int = 64 << 20
    ) -> None:
        if ttl <= 0 or max_entries < 1 or max_bytes < 1:
            raise ValueError("ttl must be positive, max_entries and max_bytes at least 1")
        self._ttl = ttl
        self._max = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()
        self.absorbed = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """Bytes of answers held."""
        return self._bytes

    def remember(self, key: Hashable, answer: bytes, *, now: float) -> None:
        """Keep `answer` (b"" for none) for retransmissions of `key` until now + ttl."""
        entries = self._entries
        old = entries.get(key)
        if old is not None:
            self._bytes -= len(old[1])
        entries[key] = (now + self._ttl, answer)
        entries.move_to_end(key)
        self._bytes += len(answer)
        self._expire(now)
        while len(entries) > self._max or self._bytes > self._max_bytes:
            self._bytes -= len(entries.popitem(last=False)[1][1])

    def answer_for(self, key: Hashable, *, now: float) -> bytes | None:
        """The remembered answer of `key` (b"": stay silent), or None if unknown."""
        found = self._entries.get(key)
        if found is None:
            return None
        expires, answer = found
        if now >= expires:
            del self._entries[key]
            self._bytes -= len(answer)
            return None
        self.absorbed += 1
        return answer

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries:
            expires, _ = next(iter(entries.values()))
            if expires > now:
                return
            self._bytes -= len(entries.popitem(last=False)[1][1])
