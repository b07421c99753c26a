"""The UDP listener's socket settings."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any, cast

from sipguard.errors import SipProtocolError
from sipguard.peer import Peer
from sipguard.transport import UDP_SOCKET_BUFFER, Transports


class _Sink:
    def __init__(self) -> None:
        self.received: list[tuple[bytes, Peer]] = []

    def message_received(self, data: bytes, peer: Peer) -> None:
        self.received.append((data, peer))

    def stream_error(self, data: bytes, peer: Peer, error: SipProtocolError) -> None:
        raise AssertionError(error)

    def peer_unreachable(self, peer: Peer) -> None:
        raise AssertionError(peer)


def _kernel_cap(name: str) -> int:
    return int(Path(f"/proc/sys/net/core/{name}").read_text())


async def test_udp_listener_asks_for_large_socket_buffers() -> None:
    transports = Transports(asyncio.get_running_loop(), _Sink())
    await transports.listen_udp("127.0.0.1", 0)
    try:
        sock = transports._udp_all[0].get_extra_info("socket")
        received = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        sent = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        # Linux reports twice what was granted; the grant is capped by the kernel.
        assert received >= 2 * min(UDP_SOCKET_BUFFER, _kernel_cap("rmem_max"))
        assert sent >= 2 * min(UDP_SOCKET_BUFFER, _kernel_cap("wmem_max"))
    finally:
        await transports.close()


async def test_datagrams_from_one_source_share_one_peer_value() -> None:
    sink = _Sink()
    transports = Transports(asyncio.get_running_loop(), sink)
    host, port = await transports.listen_udp("127.0.0.1", 0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.bind(("127.0.0.1", 0))
        for payload in (b"one", b"two"):
            sender.sendto(payload, (host, port))
        for _ in range(100):
            if len(sink.received) == 2:
                break
            await asyncio.sleep(0.01)
        (first, a), (second, b) = sink.received
        assert (first, second) == (b"one", b"two")
        assert a is b and a == Peer("udp", "127.0.0.1", sender.getsockname()[1])
    finally:
        sender.close()
        await transports.close()


async def test_a_request_for_a_gone_tcp_connection_goes_to_the_reconnect_address() -> None:
    """The caller's connection came from a port nothing listens on; once it
    is gone, a request for it opens a connection to the address given."""
    received: asyncio.Queue[bytes] = asyncio.Queue()

    async def listener(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.put_nowait(await reader.readexactly(5))
        writer.close()

    server = await asyncio.start_server(listener, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    gone = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    gone.bind(("127.0.0.1", 0))
    gone_port = gone.getsockname()[1]
    gone.close()  # a port where nothing listens: connecting there would fail
    transports = Transports(asyncio.get_running_loop(), _Sink())
    try:
        transports.send(
            Peer("tcp", "127.0.0.1", gone_port), b"hello", Peer("tcp", "127.0.0.1", port)
        )
        assert await asyncio.wait_for(received.get(), 5.0) == b"hello"
    finally:
        await transports.close()
        server.close()
        await server.wait_closed()


# -- TCP connections on a scripted clock ---------------------------------------
#
# A connection only reads the loop's clock, so a loop whose `time()` the test
# sets, and a transport that records what happens to it, script the timeouts
# exactly: no sockets, no sleeping.


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def time(self) -> float:
        return self.now


class _FakeTransport:
    def __init__(self, host: str, port: int) -> None:
        self.peername = (host, port)
        self.closed = False
        self.written: list[bytes] = []

    def get_extra_info(self, name: str) -> object:
        return self.peername if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def _scripted(**options: Any) -> tuple[Transports, _Clock, _Sink]:
    clock, sink = _Clock(), _Sink()
    return Transports(cast(asyncio.AbstractEventLoop, clock), sink, **options), clock, sink


def _open(
    transports: Transports, host: str = "192.0.2.1", port: int = 40000, *, inbound: bool = True
) -> _FakeTransport:
    connection = transports._new_inbound() if inbound else transports._new_connection()
    transport = _FakeTransport(host, port)
    connection.connection_made(cast(asyncio.Transport, transport))
    return transport


def _feed(transports: Transports, transport: _FakeTransport, data: bytes) -> None:
    peer = Peer("tcp", *transport.peername)
    transports._connections[peer].data_received(data)


def _message(branch: str) -> bytes:
    return (
        f"OPTIONS sip:probe@192.0.2.9 SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 192.0.2.1:5060;branch={branch}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:probe@192.0.2.1>;tag=t1\r\n"
        f"To: <sip:probe@192.0.2.9>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def test_a_busy_stream_whose_reads_end_mid_message_is_not_slow() -> None:
    """Each read completes one message and begins the next: every message
    arrives within the timeout, so the connection stays, however long the
    stream has never been empty."""
    transports, clock, sink = _scripted(tcp_message_timeout=10.0)
    transport = _open(transports)
    message = _message("z9hG4bKbusy")
    _feed(transports, transport, message[:50])
    for _ in range(10):
        clock.now += 6.0
        _feed(transports, transport, message[50:] + message[:50])
        assert transports.close_idle() == 0
    assert len(sink.received) == 10 and not transport.closed
    clock.now += 10.5  # the last message began 10.5 s ago and is still unfinished
    assert transports.close_idle() == 1 and transport.closed


def test_an_inbound_connection_that_never_speaks_is_closed_at_the_message_timeout() -> None:
    transports, clock, _ = _scripted(tcp_message_timeout=10.0)
    transport = _open(transports)
    clock.now += 9.9
    assert transports.close_idle() == 0
    clock.now += 0.2
    assert transports.close_idle() == 1 and transport.closed


def test_keepalives_do_not_stand_in_for_the_first_message() -> None:
    transports, clock, _ = _scripted(tcp_message_timeout=10.0)
    transport = _open(transports)
    clock.now += 5.0
    _feed(transports, transport, b"\r\n\r\n")
    assert transport.written == [b"\r\n"]  # the ping is answered all the same
    clock.now += 5.1
    assert transports.close_idle() == 1 and transport.closed


def test_a_connection_whose_first_message_came_in_time_is_kept() -> None:
    transports, clock, sink = _scripted(tcp_message_timeout=10.0, tcp_idle_timeout=900.0)
    transport = _open(transports)
    clock.now += 9.0
    _feed(transports, transport, _message("z9hG4bKfirst"))
    assert len(sink.received) == 1
    clock.now += 600.0  # quiet between messages: only the idle timeout applies
    assert transports.close_idle() == 0 and not transport.closed


def test_a_connection_we_open_owes_no_first_message() -> None:
    """An outbound connection to a route waits for answers at the route's pace."""
    transports, clock, _ = _scripted(tcp_message_timeout=10.0, tcp_idle_timeout=900.0)
    transport = _open(transports, inbound=False)
    clock.now += 600.0
    assert transports.close_idle() == 0 and not transport.closed


def _trunk_at(host: str, port: int) -> str | None:
    """A trunk whose source is 192.0.2.1:5071 (a fixed source port): other
    ports of that address are strangers, as the trunk index has it."""
    return "fixed-port" if (host, port) == ("192.0.2.1", 5071) else None


def test_strangers_on_a_trunks_address_do_not_use_up_the_trunks_connections() -> None:
    transports, _, _ = _scripted(tcp_connections_per_source=2, trunk_of=_trunk_at)
    strangers = [_open(transports, "192.0.2.1", port) for port in (40000, 40001, 40002)]
    assert [t.closed for t in strangers] == [False, False, True]  # the strangers' two places
    trunk = _open(transports, "192.0.2.1", 5071)
    assert not trunk.closed
    assert transports.tcp_connection_count == 3


def test_a_trunks_allowance_is_per_address_not_per_trunk() -> None:
    """Each address of a trunk's network has its own places, so one host in
    the network (the trunk's or a neighbour's) cannot take the others'."""

    def network_trunk(host: str, port: int) -> str | None:
        return "network" if host.startswith("192.0.2.") else None

    transports, _, _ = _scripted(tcp_connections_per_source=2, trunk_of=network_trunk)
    crowd = [_open(transports, "192.0.2.66", port) for port in (40000, 40001, 40002)]
    assert [t.closed for t in crowd] == [False, False, True]
    assert not _open(transports, "192.0.2.1", 40000).closed


def test_a_closed_connection_gives_its_place_back_where_it_took_it() -> None:
    """A reload may move an address to another trunk while a connection is
    open; closing it frees the place it was counted in."""
    owner: dict[str, str | None] = {"192.0.2.1": "before"}
    transports, _, _ = _scripted(
        tcp_connections_per_source=1, trunk_of=lambda host, port: owner[host]
    )
    first = _open(transports, "192.0.2.1", 40000)
    owner["192.0.2.1"] = "after"
    second = _open(transports, "192.0.2.1", 40001)  # counted under 'after'
    assert not first.closed and not second.closed
    peer = Peer("tcp", "192.0.2.1", 40000)
    transports._connections[peer].connection_lost(None)
    owner["192.0.2.1"] = "before"
    assert not _open(transports, "192.0.2.1", 40002).closed  # 'before' has its place again
    owner["192.0.2.1"] = "after"
    assert _open(transports, "192.0.2.1", 40003).closed  # 'after' is still full
