"""The address of a SIP peer: transport, host and port (a pure value)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Peer"]


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
