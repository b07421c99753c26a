"""asyncio transports: UDP endpoints and TCP connections (ring 3).

The transports know nothing about SIP beyond framing: a datagram, or a
complete message cut from a TCP stream by `StreamFramer`, is handed to a
`MessageSink` with the `Peer` it came from. Outbound, `Transports.send()`
writes bytes to a peer: over the UDP socket, over the TCP connection that
peer opened, or over a new connection to it.

Inbound TCP connections are counted against an allowance per address
(`tcp_connections_per_source`). The driver may hand in `trunk_of`, which
names the trunk a source address and port belong to: a trunk's connections
from an address and a stranger's from the same address then count apart,
so strangers cannot use up a trunk's places. The allowance stays per
address, never per trunk, so one address inside a trunk's network cannot
use up the places of the trunk's other addresses either.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Protocol, cast

from sipguard.errors import SipProtocolError
from sipguard.peer import Peer
from sipguard.sip.parser import DEFAULT_MAX_MESSAGE_SIZE, StreamFramer

__all__ = ["MessageSink", "Transports", "DEFAULT_TCP_IDLE_TIMEOUT"]

log = logging.getLogger("sipguard.transport")

# A trunk's TCP connection may sit idle through a long call; fifteen minutes
# frees abandoned connections without cutting ordinary calls short.
DEFAULT_TCP_IDLE_TIMEOUT = 900.0
# A message has this long to arrive whole once it began (slow senders), and
# an inbound connection this long after it opened to deliver its first one.
DEFAULT_TCP_MESSAGE_TIMEOUT = 10.0
DEFAULT_TCP_CONNECTIONS_PER_SOURCE = 32
_CONNECT_TIMEOUT = 5.0
# Socket buffers asked for on UDP listeners: a burst of thousands of
# datagrams (a flood, or a pause of the loop) waits in the kernel instead of
# being dropped and retransmitted. The kernel caps the request at
# net.core.rmem_max / wmem_max (docs/deploy.md says how to raise them).
UDP_SOCKET_BUFFER = 4 * 1024 * 1024
# Source addresses whose Peer value the UDP listener keeps.
_REMEMBERED_PEERS = 4096

# What an inbound connection is counted against: its address, and the trunk
# that address and port belong to (None for a source of no trunk).
_Allowance = tuple[str, str | None]


class MessageSink(Protocol):
    def message_received(self, data: bytes, peer: Peer) -> None: ...

    def stream_error(self, data: bytes, peer: Peer, error: SipProtocolError) -> None: ...

    def peer_unreachable(self, peer: Peer) -> None: ...


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, sink: MessageSink) -> None:
        self._sink = sink
        # A trunk sends from a handful of addresses: one Peer value each.
        self._peers: dict[tuple[str | int, ...], Peer] = {}

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        peer = self._peers.get(addr)
        if peer is None:
            peer = self._peer_of(addr)
        self._sink.message_received(data, peer)

    def _peer_of(self, addr: tuple[str | int, ...]) -> Peer:
        peers = self._peers
        if len(peers) >= _REMEMBERED_PEERS:
            peers.clear()  # a scan from many sources: start again, stay bounded
        peer = peers[addr] = Peer("udp", str(addr[0]), int(addr[1]))
        return peer

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: UDP has no connection to fail.
        log.debug("udp error: %s", exc)


class _TcpConnection(asyncio.Protocol):
    """One TCP connection, inbound or outbound, framed into SIP messages."""

    def __init__(self, owner: Transports, *, max_size: int, inbound: bool) -> None:
        self._owner = owner
        self._framer = StreamFramer(max_size=max_size)
        self.inbound = inbound
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.last_active = 0.0
        # When the message now being received began to arrive; None between
        # messages. A peer that takes too long to finish one is closed.
        self.partial_since: float | None = None
        # An inbound connection owes its first message from the moment it
        # opens: a peer that connects and stays silent is on the message
        # clock too. Keepalives do not pay the debt; a whole message does.
        self.first_message_due = inbound
        # The allowance an admitted inbound connection counts against; kept,
        # so that closing gives the place back where it was taken even if
        # the rules changed meanwhile.
        self.allowance: _Allowance | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Peer("tcp", str(host), int(port))
        now = self.last_active = self._owner.loop.time()
        if self.inbound:
            self.allowance = self._owner.admit_inbound(self.peer.host, self.peer.port)
            if self.allowance is None:
                self.peer = None
                self.transport.close()
                return
        if self.first_message_due:
            self.partial_since = now
        self._owner.register(self.peer, self)

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            return  # refused at connection_made
        now = self.last_active = self._owner.loop.time()
        if self.partial_since is None:
            self.partial_since = now
        self._framer.receive_data(data)
        delivered = False
        while True:
            try:
                frame = self._framer.next_message()
            except SipProtocolError as exc:
                # The stream cannot be resynchronised: answer if we can, close.
                self._owner.sink.stream_error(data, self.peer, exc)
                self.close()
                return
            if frame is None:
                break
            delivered = True
            self._owner.sink.message_received(frame, self.peer)
        if delivered:
            # The bytes left over began after the last whole message, so
            # their clock starts now: a busy peer whose reads end mid-message
            # is never taken for a slow one.
            self.first_message_due = False
            self.partial_since = now if self._framer.buffered else None
        elif not self._framer.buffered and not self.first_message_due:
            self.partial_since = None
        if self._framer.keepalives and self.transport is not None:
            self._framer.keepalives = 0
            self.transport.write(b"\r\n")  # RFC 5626 §4.4.1: pong

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self._owner.unregister(self.peer, self)
            self.peer = None

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.last_active = self._owner.loop.time()
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Transports:
    """All sockets of one server: UDP endpoints, TCP listeners and connections.

    `trunk_of(host, port)` names the trunk a source belongs to, or None. It is
    asked once per inbound connection, when it opens, to choose the allowance
    the connection counts against; without it, every connection from an
    address shares one allowance.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sink: MessageSink,
        *,
        max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
        tcp_idle_timeout: float = DEFAULT_TCP_IDLE_TIMEOUT,
        tcp_message_timeout: float = DEFAULT_TCP_MESSAGE_TIMEOUT,
        tcp_connections_per_source: int = DEFAULT_TCP_CONNECTIONS_PER_SOURCE,
        trunk_of: Callable[[str, int], str | None] | None = None,
    ) -> None:
        self.loop = loop
        self.sink = sink
        self._max_size = max_message_size
        self._idle_timeout = tcp_idle_timeout
        self._message_timeout = tcp_message_timeout
        self._per_source = tcp_connections_per_source
        self._trunk_of = trunk_of
        self._inbound: dict[_Allowance, int] = {}
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_all: list[asyncio.DatagramTransport] = []
        self._servers: list[asyncio.Server] = []
        self._connections: dict[Peer, _TcpConnection] = {}
        self._pending: dict[Peer, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def listen_udp(self, host: str, port: int) -> tuple[str, int]:
        transport, _ = await self.loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self.sink), local_addr=(host, port)
        )
        _enlarge_buffers(transport.get_extra_info("socket"))
        self._udp_all.append(transport)
        if self._udp is None:
            self._udp = transport
        bound = transport.get_extra_info("sockname")
        return str(bound[0]), int(bound[1])

    async def listen_tcp(self, host: str, port: int) -> tuple[str, int]:
        server = await self.loop.create_server(self._new_inbound, host, port)
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    def _new_connection(self) -> _TcpConnection:
        return _TcpConnection(self, max_size=self._max_size, inbound=False)

    def _new_inbound(self) -> _TcpConnection:
        return _TcpConnection(self, max_size=self._max_size, inbound=True)

    def admit_inbound(self, host: str, port: int) -> _Allowance | None:
        """Count an inbound connection from `host`:`port` against its allowance.

        Returns:
            The allowance it was counted against, to give back on close; None
            when that allowance is full (the connection is to be closed).
        """
        trunk = None if self._trunk_of is None else self._trunk_of(host, port)
        allowance = (host, trunk)
        count = self._inbound.get(allowance, 0)
        if count >= self._per_source:
            whose = "a source of no trunk" if trunk is None else f"trunk '{trunk}'"
            log.warning(
                "tcp %s:%d: %s already has %d connection(s) from this address; closing",
                host,
                port,
                whose,
                count,
            )
            return None
        self._inbound[allowance] = count + 1
        return allowance

    def register(self, peer: Peer, connection: _TcpConnection) -> None:
        self._connections[peer] = connection

    def unregister(self, peer: Peer, connection: _TcpConnection) -> None:
        if self._connections.get(peer) is connection:
            del self._connections[peer]
        allowance = connection.allowance
        if allowance is not None:
            connection.allowance = None
            left = self._inbound.get(allowance, 0) - 1
            if left > 0:
                self._inbound[allowance] = left
            else:
                self._inbound.pop(allowance, None)

    def send(self, peer: Peer, data: bytes, reconnect: Peer | None = None) -> None:
        """Send `data` to `peer`; TCP connects on demand, to `reconnect` when
        `peer` names an inbound connection that is gone (see Transmit)."""
        if peer.transport == "udp":
            if self._udp is not None:
                self._udp.sendto(data, (peer.host, peer.port))
            return
        connection = self._connections.get(peer)
        if connection is None and reconnect is not None:
            peer = reconnect
            connection = self._connections.get(peer)
        if connection is not None:
            connection.write(data)
            return
        pending = self._pending.get(peer)
        if pending is not None:
            pending.append(data)
            return
        self._pending[peer] = [data]
        task = self.loop.create_task(self._connect(peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, peer: Peer) -> None:
        try:
            _, connection = await asyncio.wait_for(
                self.loop.create_connection(self._new_connection, peer.host, peer.port),
                _CONNECT_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            log.warning("cannot connect to tcp:%s:%d: %s", peer.host, peer.port, exc)
            self._pending.pop(peer, None)
            self.sink.peer_unreachable(peer)
            return
        # The connection registered itself under its peername, which is `peer`.
        self._connections[peer] = connection
        for data in self._pending.pop(peer, []):
            connection.write(data)

    def close_idle(self) -> int:
        """Close TCP connections idle past the idle timeout, too slow to
        finish a message (slowloris), or inbound and silent past the message
        timeout since they opened."""
        now = self.loop.time()
        idle_limit = now - self._idle_timeout
        slow_limit = now - self._message_timeout
        stale = [
            conn
            for conn in self._connections.values()
            if conn.last_active < idle_limit
            or (conn.partial_since is not None and conn.partial_since < slow_limit)
        ]
        for connection in stale:
            if connection.partial_since is not None and connection.partial_since < slow_limit:
                if connection.first_message_due:
                    what = "no whole message since it opened"
                else:
                    what = "a message unfinished for too long"
                peer = connection.peer
                where = "?" if peer is None else f"{peer.host}:{peer.port}"
                log.warning("tcp %s: %s; closing", where, what)
            connection.close()
        return len(stale)

    @property
    def tcp_connection_count(self) -> int:
        return len(self._connections)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for connection in list(self._connections.values()):
            connection.close()
        for transport in self._udp_all:
            transport.close()
        for server in self._servers:
            await server.wait_closed()
        for task in list(self._tasks):
            task.cancel()


def on_loop_exception(callback: Callable[[str], None]) -> Callable[..., None]:
    """An asyncio exception handler that reports and keeps the loop running."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        callback(str(context.get("message")) + ": " + repr(context.get("exception")))

    return handler


def _enlarge_buffers(sock: socket.socket | None) -> None:
    """Ask for UDP_SOCKET_BUFFER bytes of receive and send buffer (capped by the kernel)."""
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, UDP_SOCKET_BUFFER)
        except OSError as exc:  # not fatal: the default buffer still works
            log.warning("udp socket buffer: %s", exc)
