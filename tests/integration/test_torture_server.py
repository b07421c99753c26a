"""Torture messages over real UDP to an in-process server on 127.0.0.1.

Every file of tests/data/torture/ is sent from a trunk source; the answer
must be the one cases.toml gives (the same as in the core's unit test), or
silence for the dropped ones, and the server must still answer OPTIONS.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipguard.rules.loader import load_rules
from sipguard.server import Server, ServerOptions
from sipguard.sip.message import Request
from sipguard.sip.parser import parse_message
from tests.unit.test_torture import CASES, OPTIONS_PROBE, TortureCase, reason_mentions, status_line

pytestmark = pytest.mark.integration

RULES = """\
version: 1
numbering: {{country_code: "86"}}
listen: ["udp:127.0.0.1:0"]
trunks:
  - name: torture-trunk
    sources: ["127.0.0.1:{trunk_port}"]
    route: "udp:127.0.0.1:{callee_port}"
    ranges: ["*"]
"""

SILENCE = 0.3  # seconds to wait before calling a case dropped


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.put_nowait(data)


Socket = tuple[asyncio.DatagramTransport, _Endpoint]


async def _endpoint() -> Socket:
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(_Endpoint, local_addr=("127.0.0.1", 0))


@pytest.fixture
async def sockets() -> AsyncIterator[tuple[Socket, Socket]]:
    caller, callee = await _endpoint(), await _endpoint()
    yield caller, callee
    caller[0].close()
    callee[0].close()


@pytest.fixture
async def server(tmp_path: Path, sockets: tuple[Socket, Socket]) -> AsyncIterator[Server]:
    caller, callee = sockets
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(
        RULES.format(
            trunk_port=caller[0].get_extra_info("sockname")[1],
            callee_port=callee[0].get_extra_info("sockname")[1],
        )
    )
    running = Server(
        load_rules(rules_path), ServerOptions(rules_path=rules_path, watch_rules=False)
    )
    await running.start()
    yield running
    await running.close()


def _udp_port(server: Server) -> int:
    return next(int(a.rsplit(":", 1)[1]) for a in server.listening if a.startswith("udp"))


async def _next(socket: Socket, timeout: float) -> bytes | None:
    try:
        return await asyncio.wait_for(socket[1].received.get(), timeout)
    except TimeoutError:
        return None


async def _still_answers_options(caller: Socket, port: int) -> None:
    """The next datagram to the caller is the probe's 200 and nothing else."""
    caller[0].sendto(OPTIONS_PROBE, ("127.0.0.1", port))
    answer = await _next(caller, 5.0)
    assert answer is not None, "no answer to OPTIONS"
    assert status_line(answer)[0] == 200
    assert b"branch=z9hG4bK-after-torture" in answer


async def _relayed_invite(callee: Socket, body: bytes) -> Request | None:
    """The INVITE the callee got with `body` (retransmissions included)."""
    deadline = asyncio.get_running_loop().time() + 5.0
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        data = await _next(callee, left)
        if data is None:
            return None
        message = parse_message(data)
        if isinstance(message, Request) and message.method == "INVITE" and message.body == body:
            return message
    return None


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_torture_message_over_udp(
    case: TortureCase, server: Server, sockets: tuple[Socket, Socket]
) -> None:
    caller, callee = sockets
    port = _udp_port(server)
    caller[0].sendto(case.data, ("127.0.0.1", port))

    if case.outcome == "drop":
        answer = await _next(caller, SILENCE)
        assert answer is None, f"expected silence, got {status_line(answer)}"
    elif case.outcome == "respond":
        answer = await _next(caller, 5.0)
        assert answer is not None, f"expected {case.status}, got silence"
        status, reason = status_line(answer)
        assert status == case.status, f"expected {case.status}, got {status} {reason}"
        assert reason_mentions(reason, case.reason), (
            f"reason {reason!r} mentions none of {case.reason}"
        )
    else:
        assert case.outcome == "relay"
        answer = await _next(caller, 5.0)
        assert answer is not None and status_line(answer)[0] == 100
        relayed = await _relayed_invite(callee, case.declared_body)
        assert relayed is not None, "the callee got no INVITE with the sent body"

    await _still_answers_options(caller, port)
    assert callee[1].received.empty() or case.outcome == "relay"
