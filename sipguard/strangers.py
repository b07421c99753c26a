"""What sources of no trunk sent, summed up for one log line per interval.

A scan sends thousands of INVITEs from addresses no trunk claims. Each one
is decided (refused with the uniform answer, or dropped) and each has its
audit record, but one log line per INVITE would drown the log and let a
scanner write it at will. `StrangerTally` counts the INVITEs refused and
dropped per source address; the driver logs `summary()` once per interval
and at shutdown:

    unknown sources: 1200 INVITEs refused, 300 dropped, from 14 addresses;
    top: 192.0.2.66 (900), 192.0.2.67 (200), 198.51.100.4 (50)

At most `max_addresses` addresses are told apart per interval, so a flood
of forged source addresses costs bounded memory; past it, INVITEs from new
addresses are still counted, and the summary says "more than N addresses".

Ring 1: pure; no I/O, no clock.
"""

from __future__ import annotations

import heapq

__all__ = ["StrangerTally"]

# Addresses told apart within one interval: far more than one scan uses,
# a few hundred kilobytes at most.
DEFAULT_MAX_ADDRESSES = 10_000


class StrangerTally:
    """INVITEs of unknown sources since the last summary, per address.

    Args:
        max_addresses: addresses counted apart per interval.
    """

    def __init__(self, *, max_addresses: int = DEFAULT_MAX_ADDRESSES) -> None:
        if max_addresses < 1:
            raise ValueError("max_addresses must be at least 1")
        self._max = max_addresses
        self._per_address: dict[str, int] = {}
        self._overflow = False
        self.refused = 0
        self.dropped = 0

    def count(self, host: str, *, answered: bool) -> None:
        """One INVITE from `host`, answered with the refusal or dropped."""
        if answered:
            self.refused += 1
        else:
            self.dropped += 1
        per_address = self._per_address
        seen = per_address.get(host)
        if seen is not None:
            per_address[host] = seen + 1
        elif len(per_address) < self._max:
            per_address[host] = 1
        else:
            self._overflow = True

    def summary(self, *, top: int = 3) -> str | None:
        """The line for the INVITEs counted since the last call, then start
        over; None when there were none.

        The `top` addresses are the busiest, ties in the order first seen.
        """
        if not self.refused and not self.dropped:
            return None
        per_address = self._per_address
        addresses = f"more than {len(per_address)}" if self._overflow else str(len(per_address))
        busiest = heapq.nlargest(top, per_address.items(), key=lambda item: item[1])
        shown = ", ".join(f"{host} ({count})" for host, count in busiest)
        line = (
            f"unknown sources: {self.refused} INVITEs refused, {self.dropped} dropped, "
            f"from {addresses} address{'' if addresses == '1' else 'es'}; top: {shown}"
        )
        self._per_address = {}
        self._overflow = False
        self.refused = self.dropped = 0
        return line
