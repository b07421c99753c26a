"""The driver's protection limits on real sockets: TCP per source, slow senders, sizes.

An in-process server on 127.0.0.1 with a `protection:` section small enough
to reach in a test: two TCP connections per address, a message must arrive
whole within one second, 4 KiB messages.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipguard.peer import Peer
from sipguard.rules.loader import load_rules
from sipguard.server import Server, ServerOptions
from tests.helpers import invite
from tests.integration.sipp import free_ports

pytestmark = pytest.mark.integration

RULES = """\
version: 1
numbering: {country_code: "86"}
listen: ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]
protection:
  tcp_connections_per_source: 2
  tcp_message_timeout: 1s
  max_message_size: 4096
  unknown_source_rate: 3
trunks:
  - name: test-trunk
    sources: ["127.0.0.2"]
    route: "udp:127.0.0.1:9"
    ranges: ["*"]
"""


def options(branch: str, *, transport: str = "TCP") -> bytes:
    return (
        f"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:1;branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=t1\r\n"
        f"To: <sip:probe@127.0.0.1>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(RULES)
    running = Server(
        load_rules(rules_path), ServerOptions(rules_path=rules_path, watch_rules=False)
    )
    await running.start()
    yield running
    await running.close()


def port_of(server: Server, transport: str) -> int:
    return next(int(a.rsplit(":", 1)[1]) for a in server.listening if a.startswith(transport))


async def test_a_source_gets_at_most_its_tcp_connections(server: Server) -> None:
    port = port_of(server, "tcp")
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    try:
        # The third is closed at once: reading it gives EOF.
        third_reader = connections[2][0]
        assert await asyncio.wait_for(third_reader.read(), 5.0) == b""
        # The first two still work.
        for index, (reader, writer) in enumerate(connections[:2]):
            writer.write(options(f"z9hG4bKc{index}"))
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            assert answer.startswith(b"SIP/2.0 403")
        assert server.transports.tcp_connection_count == 2
    finally:
        for _, writer in connections:
            writer.close()
    # Closing frees the places: a new connection is served.
    await asyncio.sleep(0.1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(options("z9hG4bKagain"))
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)).startswith(b"SIP/2.0")
    writer.close()


async def test_a_slow_sender_is_closed(server: Server, caplog: pytest.LogCaptureFixture) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server, "tcp"))
    try:
        message = options("z9hG4bKslow")
        writer.write(message[:40])  # a message begins, and goes no further
        await writer.drain()
        await asyncio.sleep(1.2)
        # Past its deadline: closed now, or already by the server's own
        # housekeeping (every 2 s), whichever ran first.
        server.transports.close_idle()
        assert await asyncio.wait_for(reader.read(), 5.0) == b""
        assert "no whole message since it opened; closing" in caplog.text
        assert server.transports.tcp_connection_count == 0
    finally:
        writer.close()


async def test_a_sender_that_finishes_in_time_is_kept(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server, "tcp"))
    try:
        message = options("z9hG4bKsteady")
        writer.write(message[:40])
        await asyncio.sleep(0.5)
        writer.write(message[40:])
        assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)).startswith(b"SIP/2.0")
        await asyncio.sleep(0.7)  # past the timeout since the first byte, but between messages
        assert server.transports.close_idle() == 0
    finally:
        writer.close()


async def test_a_silent_tcp_connection_is_closed_at_its_deadline(server: Server) -> None:
    """Connecting and saying nothing does not hold a connection for the idle
    timeout: the first message is due within tcp_message_timeout (1 s here).

    The server's own housekeeping (every 2 s) does the closing, so the test
    waits for it with a generous bound. The speaker connects first: the pass
    that closes the silent connection is past the speaker's deadline too, and
    keeps it only because its first message came in time.
    """
    port = port_of(server, "tcp")
    speaker_reader, speaker_writer = await asyncio.open_connection("127.0.0.1", port)
    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        speaker_writer.write(options("z9hG4bKearly"))
        answer = await asyncio.wait_for(speaker_reader.readuntil(b"\r\n\r\n"), 5.0)
        assert answer.startswith(b"SIP/2.0 403")
        assert await asyncio.wait_for(silent_reader.read(), 15.0) == b""  # EOF: closed
        speaker_writer.write(options("z9hG4bKlater"))
        answer = await asyncio.wait_for(speaker_reader.readuntil(b"\r\n\r\n"), 5.0)
        assert answer.startswith(b"SIP/2.0 403")
        assert server.transports.tcp_connection_count == 1
    finally:
        speaker_writer.close()
        silent_writer.close()


async def test_an_oversized_tcp_message_gets_513_and_is_closed(server: Server) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port_of(server, "tcp"), local_addr=("127.0.0.2", 0)
    )
    try:
        body = b"x" * 5000
        data = options("z9hG4bKbig").replace(
            b"Content-Length: 0", f"Content-Length: {len(body)}".encode()
        )
        writer.write(data + body)
        answer = await asyncio.wait_for(reader.read(), 5.0)
        assert answer.startswith(b"SIP/2.0 513")
    finally:
        writer.close()


async def test_a_trunks_tcp_message_without_content_length_gets_400_and_is_closed(
    server: Server,
) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port_of(server, "tcp"), local_addr=("127.0.0.2", 0)
    )
    try:
        writer.write(options("z9hG4bKnolength").replace(b"Content-Length: 0\r\n", b""))
        answer = await asyncio.wait_for(reader.read(), 5.0)  # EOF: the server closes
        assert answer.startswith(b"SIP/2.0 400 Content-Length is mandatory")
    finally:
        writer.close()


@pytest.mark.parametrize(("source", "status"), [("127.0.0.2", b"513"), ("127.0.0.1", b"403")])
async def test_an_oversized_datagram_gets_513_or_the_strangers_403(
    server: Server, source: str, status: bytes
) -> None:
    """A trunk learns why; a stranger gets the one answer strangers get."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(5.0)
        body = b"x" * 5000
        data = options("z9hG4bKdgram", transport="UDP").replace(
            b"Content-Length: 0", f"Content-Length: {len(body)}".encode()
        )
        sock.sendto(data + body, ("127.0.0.1", port_of(server, "udp")))
        answer = await asyncio.get_running_loop().run_in_executor(None, sock.recv, 65535)
        assert answer.startswith(b"SIP/2.0 " + status)


async def test_unknown_udp_source_answers_are_budgeted(server: Server) -> None:
    """A forged-source flood cannot be reflected: 3 answers, then silence."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.5)
        for index in range(10):
            sock.sendto(
                options(f"z9hG4bKu{index}", transport="UDP"), ("127.0.0.1", port_of(server, "udp"))
            )
        answers = 0
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.run_in_executor(None, sock.recv, 65535)
            except TimeoutError:
                break
            assert data.startswith(b"SIP/2.0 403 Forbidden")
            answers += 1
        assert answers == 3
        assert server.core is not None and server.core.dropped_unknown == 7


TRUNK_RULES = """\
version: 1
numbering: {{country_code: "86"}}
listen: ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]
protection:
  tcp_connections_per_source: 2
trunks:
  - name: fixed-port
    sources: ["127.0.0.1:{trunk_port}"]
    route: "udp:127.0.0.1:{route_port}"
    ranges: ["*"]
"""


async def test_strangers_filling_their_places_do_not_lock_a_trunk_out(tmp_path: Path) -> None:
    """The trunk sends from a fixed port of 127.0.0.1; strangers use every
    other port of the same address, and take all the places they may. The
    trunk still connects, and its INVITE is answered and relayed."""
    (trunk_port,) = free_ports(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as route:
        route.bind(("127.0.0.1", 0))
        route.settimeout(10.0)
        rules_path = tmp_path / "rules.yaml"
        rules_path.write_text(
            TRUNK_RULES.format(trunk_port=trunk_port, route_port=route.getsockname()[1])
        )
        running = Server(
            load_rules(rules_path), ServerOptions(rules_path=rules_path, watch_rules=False)
        )
        await running.start()
        port = port_of(running, "tcp")
        strangers = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
        try:
            # The strangers' third connection is one too many: closed at once.
            assert await asyncio.wait_for(strangers[2][0].read(), 5.0) == b""
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, local_addr=("127.0.0.1", trunk_port)
            )
            caller = Peer("tcp", "127.0.0.1", trunk_port)
            writer.write(invite(call_id="fixed-port-1", caller=caller).replace(b"/UDP", b"/TCP"))
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            assert answer.startswith(b"SIP/2.0 100 "), answer
            loop = asyncio.get_running_loop()
            relayed = await loop.run_in_executor(None, route.recv, 65535)
            assert relayed.startswith(b"INVITE ")
            writer.close()
        finally:
            for _, stranger in strangers:
                stranger.close()
            await running.close()
