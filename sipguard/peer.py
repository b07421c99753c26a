"""The address of a SIP peer: transport, host and port (a pure value)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Peer", "speaks_for"]


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from or goes to. For TCP, (host, port) names the
    remote end of the connection, which the driver maps to a socket."""

    transport: str  # "udp" or "tcp"
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        """Whether the transport retransmits by itself (TCP)."""
        return self.transport != "udp"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def speaks_for(expected: Peer, actual: Peer) -> bool:
    """Whether a message from `actual` may stand for one from `expected`.

    Over UDP only the same address and port: any other source is a stranger,
    or a forged address. Over TCP the same connection, or a new connection
    from the same host: TCP source addresses cannot be forged, and a peer
    whose connection is gone opens a new one (RFC 3261 §18.2.2, §18.2.1).
    """
    if actual == expected:
        return True
    return (
        actual.transport == "tcp" and expected.transport == "tcp" and actual.host == expected.host
    )
