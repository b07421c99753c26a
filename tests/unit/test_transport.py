"""The UDP listener's socket settings."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

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
