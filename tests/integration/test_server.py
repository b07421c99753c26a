"""The asyncio driver in-process: real sockets on 127.0.0.1, no SIPp."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipguard.rules.loader import load_rules
from sipguard.server import Server, ServerOptions

pytestmark = pytest.mark.integration

RULES = """\
version: 1
numbering: {{country_code: "86"}}
listen: ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]
trunks:
  - name: test-trunk
    sources: ["127.0.0.1:{trunk_port}"]
    route: "udp:127.0.0.1:9"
    ranges: ["*"]
"""


def _request(method: str, *, port: int, transport: str = "UDP", branch: str = "z9hG4bKt1") -> bytes:
    return (
        f"{method} sip:probe@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=t1\r\n"
        f"To: <sip:probe@127.0.0.1>\r\n"
        f"Call-ID: probe-{branch}\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.put_nowait(data)


@pytest.fixture
async def udp_client() -> AsyncIterator[tuple[asyncio.DatagramTransport, _Client]]:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(_Client, local_addr=("127.0.0.1", 0))
    yield transport, client
    transport.close()


@pytest.fixture
async def server(
    tmp_path: Path, udp_client: tuple[asyncio.DatagramTransport, _Client]
) -> AsyncIterator[Server]:
    trunk_port = udp_client[0].get_extra_info("sockname")[1]
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(RULES.format(trunk_port=trunk_port))
    running = Server(
        load_rules(rules_path), ServerOptions(rules_path=rules_path, watch_rules=False)
    )
    await running.start()
    yield running
    await running.close()


def _port(server: Server, transport: str) -> int:
    return next(int(a.rsplit(":", 1)[1]) for a in server.listening if a.startswith(transport))


async def _ask(client: tuple[asyncio.DatagramTransport, _Client], data: bytes, port: int) -> bytes:
    transport, protocol = client
    transport.sendto(data, ("127.0.0.1", port))
    return await asyncio.wait_for(protocol.received.get(), 5.0)


async def test_options_from_a_trunk_source_gets_200(server: Server, udp_client) -> None:
    port = udp_client[0].get_extra_info("sockname")[1]
    answer = await _ask(udp_client, _request("OPTIONS", port=port), _port(server, "udp"))
    assert answer.startswith(b"SIP/2.0 200 OK\r\n")
    assert b"Allow: INVITE" in answer


async def test_unparseable_request_gets_400_and_the_server_keeps_answering(
    server: Server, udp_client
) -> None:
    port = udp_client[0].get_extra_info("sockname")[1]
    bad = _request("OPTIONS", port=port).replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
    answer = await _ask(udp_client, bad, _port(server, "udp"))
    assert answer.startswith(b"SIP/2.0 400 ")
    again = await _ask(
        udp_client, _request("OPTIONS", port=port, branch="z9hG4bKt2"), _port(server, "udp")
    )
    assert again.startswith(b"SIP/2.0 200 OK\r\n")


async def test_response_goes_to_the_real_source_not_the_via(server: Server, udp_client) -> None:
    # The Via names a third party; the answer must still come back to us.
    data = _request("OPTIONS", port=5060).replace(b"127.0.0.1:5060", b"192.0.2.99:5060")
    answer = await _ask(udp_client, data, _port(server, "udp"))
    port = udp_client[0].get_extra_info("sockname")[1]
    assert answer.startswith(b"SIP/2.0 200 OK\r\n")
    assert f"received=127.0.0.1;rport={port}".encode() in answer


async def test_tcp_message_without_content_length_from_a_stranger_is_closed(
    server: Server,
) -> None:
    """The stream cannot be framed: closed, with the stranger's uniform 403 (a
    trunk gets the 400 with the reason: test_server_protection.py)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server, "tcp"))
    try:
        data = _request("OPTIONS", port=1, transport="TCP").replace(b"Content-Length: 0\r\n", b"")
        writer.write(data)
        answer = await asyncio.wait_for(reader.read(), 5.0)  # read to EOF: the server closes
        assert answer.startswith(b"SIP/2.0 403 Forbidden")
        assert b'text="unknown_source"' in answer
    finally:
        writer.close()
        await writer.wait_closed()


async def test_tcp_keepalive_is_answered_and_messages_are_framed(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server, "tcp"))
    try:
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 5.0) == b"\r\n"
        # two requests in one write, the second split over a later write
        first = _request("OPTIONS", port=1, transport="TCP", branch="z9hG4bKa")
        second = _request("OPTIONS", port=1, transport="TCP", branch="z9hG4bKb")
        writer.write(first + second[:30])
        await writer.drain()
        writer.write(second[30:])
        answers = b""
        while answers.count(b"SIP/2.0 403") < 2:  # the TCP peer is neither trunk nor route
            answers += await asyncio.wait_for(reader.read(4096), 5.0)
        assert b"branch=z9hG4bKa" in answers and b"branch=z9hG4bKb" in answers
    finally:
        writer.close()
        await writer.wait_closed()


async def test_idle_tcp_connections_are_closed(server: Server) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server, "tcp"))
    try:
        writer.write(b"\r\n\r\n")
        await asyncio.wait_for(reader.readexactly(2), 5.0)
        assert server.transports.tcp_connection_count == 1
        for connection in server.transports._connections.values():
            connection.last_active -= 10_000  # as if idle for hours
        assert server.transports.close_idle() == 1
        assert await asyncio.wait_for(reader.read(), 5.0) == b""  # EOF
    finally:
        writer.close()
        await writer.wait_closed()


async def test_reload_keeps_the_old_rules_when_the_new_file_is_bad(server: Server) -> None:
    old = server.rules
    server.options.rules_path.write_text("version: 1\ntrunks: [oops\n")
    assert server.reload() is False
    assert server.rules is old
    server.options.rules_path.write_text(
        RULES.format(trunk_port=7).replace("test-trunk", "renamed-trunk")
    )
    assert server.reload() is True
    assert server.rules.trunks[0].name == "renamed-trunk"


def test_free_port_helper_is_not_needed_for_port_zero() -> None:
    # Listening on port 0 is how these tests avoid collisions; make sure the
    # kernel really hands out a port for it on this machine.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        assert sock.getsockname()[1] > 0


async def test_a_changed_rule_file_is_picked_up_without_a_signal(server: Server) -> None:
    assert server.reload_if_changed() is False  # nothing changed yet
    server.options.rules_path.write_text(
        RULES.format(trunk_port=7).replace("test-trunk", "edited-trunk") + "# edited\n"
    )
    assert server.reload_if_changed() is True
    assert server.rules.trunks[0].name == "edited-trunk"
    assert server.reload_if_changed() is False


async def test_a_defect_in_the_core_is_logged_and_the_server_keeps_serving(
    server: Server, udp_client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert server.core is not None
    real = server.core.receive_message

    def broken(message, peer, *, now):  # type: ignore[no-untyped-def]
        if message.call_id == "probe-z9hG4bKboom":
            raise RuntimeError("simulated defect")
        real(message, peer, now=now)

    monkeypatch.setattr(server.core, "receive_message", broken)
    port = udp_client[0].get_extra_info("sockname")[1]
    udp_client[0].sendto(
        _request("OPTIONS", port=port, branch="z9hG4bKboom"), ("127.0.0.1", _port(server, "udp"))
    )
    answer = await _ask(
        udp_client, _request("OPTIONS", port=port, branch="z9hG4bKfine"), _port(server, "udp")
    )
    assert answer.startswith(b"SIP/2.0 200 OK") and b"z9hG4bKfine" in answer
    assert server.internal_errors == 1
    assert "internal error on a message" in caplog.text


async def test_a_strangers_invites_are_summed_up_in_the_log_not_logged_one_by_one(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """A scan must not write an info line per INVITE: they are debug lines,
    and one info line sums them up (housekeeping calls the summary every
    10 s, and the shutdown once more)."""
    caplog.set_level(logging.DEBUG, logger="sipguard")
    loop = asyncio.get_running_loop()
    stranger, client = await loop.create_datagram_endpoint(_Client, local_addr=("127.0.0.1", 0))
    try:
        port = stranger.get_extra_info("sockname")[1]
        for index in range(3):
            invite = _request("INVITE", port=port, branch=f"z9hG4bKscan{index}")
            answer = await _ask((stranger, client), invite, _port(server, "udp"))
            assert answer.startswith(b"SIP/2.0 403 Forbidden")
    finally:
        stranger.close()
    per_invite = [r for r in caplog.records if "unknown_source trunk=-" in r.getMessage()]
    assert [r.levelno for r in per_invite] == [logging.DEBUG] * 3
    caplog.clear()
    server.log_unknown_sources()
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            logging.INFO,
            "unknown sources: 3 INVITEs refused, 0 dropped, from 1 address; top: 127.0.0.1 (3)",
        )
    ]
    caplog.clear()
    server.log_unknown_sources()
    assert caplog.records == [], "nothing new: no line"
