"""The driver's protection limits on real sockets: TCP per source, slow senders, sizes.

An in-process server on 127.0.0.1 with a `protection:` section small enough
to reach in a test: two TCP connections per address, a message must arrive
whole within `MESSAGE_TIMEOUT`, 4 KiB messages.

The server reads the time from its event loop only, which is the test's:
a test moves that clock forward (`Clock.advance`) to pass a deadline at
once, rather than sleeping and hoping the machine kept pace. The timeout
is long in real time, so no step of a test, however slow the machine, can
reach it by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from sipguard.peer import Peer
from sipguard.rules.loader import load_rules
from sipguard.server import Server, ServerOptions
from tests.helpers import invite
from tests.integration.sipp import free_ports

pytestmark = pytest.mark.integration

# tcp_message_timeout of RULES, and the server's housekeeping period, which
# closes connections past it (server._HOUSEKEEPING_INTERVAL).
MESSAGE_TIMEOUT = 60.0
HOUSEKEEPING = 2.0
# How long a step that needs no deadline to pass may take: generous.
STEP_TIMEOUT = 10.0

RULES = f"""\
version: 1
numbering: {{country_code: "86"}}
listen: ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]
protection:
  tcp_connections_per_source: 2
  tcp_message_timeout: {MESSAGE_TIMEOUT:.0f}s
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


class Clock:
    """The running loop's clock, plus an offset the test moves forward.

    Every reader of `loop.time()` (the server, its timers, asyncio's own
    sleeps and timeouts) sees the moved clock; real time runs on under it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._real = loop.time
        self.offset = 0.0
        self._frozen_at: float | None = None

    def time(self) -> float:
        if self._frozen_at is not None:
            return self._frozen_at
        return self._real() + self.offset

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """Hold the clock still; no timer comes due meanwhile (wait with `until`)."""
        self._frozen_at = self.time()
        try:
            yield
        finally:
            self._frozen_at = None

    async def advance(self, seconds: float) -> None:
        """Move the clock `seconds` on and let the timers now due run."""
        self.offset += seconds
        await asyncio.sleep(0)
        await asyncio.sleep(0)


@pytest.fixture
async def clock() -> AsyncIterator[Clock]:
    loop = asyncio.get_running_loop()
    moved = Clock(loop)
    loop.time = moved.time  # type: ignore[method-assign]
    try:
        yield moved
    finally:
        del loop.time  # the loop's own method again


async def until(condition: Callable[[], bool], what: str, timeout: float = STEP_TIMEOUT) -> None:
    """Wait until `condition()` holds, checking as the loop runs; fail after `timeout`.

    It yields to the loop without a timer, so it works on a frozen clock too.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        await asyncio.sleep(0)


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
    await until(lambda: server.transports.tcp_connection_count == 0, "the server saw them close")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(options("z9hG4bKagain"))
    assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)).startswith(b"SIP/2.0")
    writer.close()


async def test_a_slow_sender_is_closed(
    server: Server, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server, "tcp"))
    try:
        message = options("z9hG4bKslow")
        writer.write(message[:40])  # a message begins, and goes no further
        await writer.drain()
        # Its clock runs from the moment the server took the connection.
        await until(lambda: server.transports.tcp_connection_count == 1, "the server took it")
        await clock.advance(MESSAGE_TIMEOUT + 0.1)
        # Past its deadline: closed now, or already by the server's own
        # housekeeping, which the moved clock made due, whichever ran first.
        server.transports.close_idle()
        assert await asyncio.wait_for(reader.read(), STEP_TIMEOUT) == b""
        assert "no whole message since it opened; closing" in caplog.text
        assert server.transports.tcp_connection_count == 0
    finally:
        writer.close()


async def test_a_sender_that_finishes_in_time_is_kept(server: Server, clock: Clock) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server, "tcp"))
    try:
        message = options("z9hG4bKsteady")
        writer.write(message[:40])
        await until(lambda: server.transports.tcp_connection_count == 1, "the server took it")
        await clock.advance(MESSAGE_TIMEOUT / 2)
        writer.write(message[40:])
        answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), STEP_TIMEOUT)
        assert answer.startswith(b"SIP/2.0")
        # past the timeout since the first byte, but between messages
        await clock.advance(MESSAGE_TIMEOUT / 2 + 0.1)
        assert server.transports.close_idle() == 0
        assert server.transports.tcp_connection_count == 1
    finally:
        writer.close()


async def test_a_silent_tcp_connection_is_closed_at_its_deadline(
    server: Server, clock: Clock
) -> None:
    """Connecting and saying nothing does not hold a connection for the idle
    timeout: the first message is due within tcp_message_timeout.

    The server's own housekeeping does the closing: the test moves the clock
    past the deadline and a housekeeping period, and waits for the close
    with a generous bound. The speaker connects first: the pass that closes
    the silent connection is past the speaker's deadline too, and keeps it
    only because its first message came in time.
    """
    port = port_of(server, "tcp")
    speaker_reader, speaker_writer = await asyncio.open_connection("127.0.0.1", port)
    silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        speaker_writer.write(options("z9hG4bKearly"))
        answer = await asyncio.wait_for(speaker_reader.readuntil(b"\r\n\r\n"), STEP_TIMEOUT)
        assert answer.startswith(b"SIP/2.0 403")
        await until(lambda: server.transports.tcp_connection_count == 2, "the server took both")
        await clock.advance(MESSAGE_TIMEOUT + HOUSEKEEPING + 0.1)
        assert await asyncio.wait_for(silent_reader.read(), STEP_TIMEOUT) == b""  # EOF: closed
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


async def test_unknown_udp_source_answers_are_budgeted(server: Server, clock: Clock) -> None:
    """A forged-source flood cannot be reflected: 3 answers, then silence.

    The server decides on the loop's clock, which the test holds still
    while the ten datagrams are decided, so the budget cannot refill in
    between however slowly the machine runs: exactly the burst is answered.
    """
    assert server.core is not None
    core = server.core
    with clock.frozen(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        for index in range(10):
            sock.sendto(
                options(f"z9hG4bKu{index}", transport="UDP"), ("127.0.0.1", port_of(server, "udp"))
            )
        answers: list[bytes] = []

        def decided() -> bool:
            with contextlib.suppress(BlockingIOError):
                while True:
                    answers.append(sock.recv(65535))
            return len(answers) + core.dropped_unknown >= 10

        await until(decided, "all ten datagrams decided")
    assert all(data.startswith(b"SIP/2.0 403 Forbidden") for data in answers), answers
    assert len(answers) == 3
    assert core.dropped_unknown == 7


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
