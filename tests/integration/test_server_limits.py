"""Concurrency limits through the real driver: a slot is held per live call
and given back when the call ends (in-process, 127.0.0.1 sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipguard.rules.loader import load_rules
from sipguard.server import Server, ServerOptions
from sipguard.sip.message import Request, Response
from sipguard.sip.parser import parse_message

pytestmark = pytest.mark.integration

RULES = """\
version: 1
numbering: {{country_code: "86"}}
listen: ["udp:127.0.0.1:0"]
trunks:
  - name: limited
    sources: ["127.0.0.1:{caller_port}"]
    route: "udp:127.0.0.1:{callee_port}"
    ranges: ["+862131771200-+862131771299"]
    limits: {{concurrent: 1}}
"""


class _Endpoint(asyncio.DatagramProtocol):
    """A UDP peer that queues what it receives; as callee it answers by itself."""

    def __init__(self, *, answer: bool) -> None:
        self.answer = answer
        self.inbox: asyncio.Queue[Request | Response] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        message = parse_message(data)
        if self.answer and isinstance(message, Request) and message.method in ("INVITE", "BYE"):
            assert self.transport is not None
            self.transport.sendto(_ok(message), addr)
        self.inbox.put_nowait(message)

    async def final(self) -> Response:
        while True:
            message = await asyncio.wait_for(self.inbox.get(), 5.0)
            if isinstance(message, Response) and message.status >= 200:
                return message


def _ok(request: Request) -> bytes:
    to = request.headers.get("to") or ""
    if request.to.tag is None:
        to += ";tag=callee"
    lines = [
        "SIP/2.0 200 OK",
        *(f"Via: {via}" for via in request.headers.get_all("via")),
        f"From: {request.headers.get('from')}",
        f"To: {to}",
        f"Call-ID: {request.call_id}",
        f"CSeq: {request.headers.get('cseq')}",
        "Contact: <sip:callee@127.0.0.1>",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _request(method: str, port: int, call: str, *, cseq: int, to_tag: str | None = None) -> bytes:
    to = "<sip:13800138000@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:13800138000@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call}{method}{cseq};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:+862131771201@127.0.0.1>;tag=caller-{call}\r\n"
        f"To: {to}\r\nCall-ID: {call}\r\nCSeq: {cseq} {method}\r\n"
        f"Contact: <sip:caller@127.0.0.1:{port}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@pytest.fixture
async def wired(tmp_path: Path) -> AsyncIterator[tuple[Server, _Endpoint, _Endpoint, int]]:
    loop = asyncio.get_running_loop()
    caller_transport, caller = await loop.create_datagram_endpoint(
        lambda: _Endpoint(answer=False), local_addr=("127.0.0.1", 0)
    )
    callee_transport, callee = await loop.create_datagram_endpoint(
        lambda: _Endpoint(answer=True), local_addr=("127.0.0.1", 0)
    )
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(
        RULES.format(
            caller_port=caller_transport.get_extra_info("sockname")[1],
            callee_port=callee_transport.get_extra_info("sockname")[1],
        )
    )
    server = Server(load_rules(rules_path), ServerOptions(rules_path=rules_path, watch_rules=False))
    await server.start()
    port = int(server.listening[0].rsplit(":", 1)[1])
    yield server, caller, callee, port
    await server.close()
    caller_transport.close()
    callee_transport.close()


async def test_a_concurrency_slot_is_held_per_call_and_given_back(wired) -> None:
    server, caller, _, port = wired
    assert caller.transport is not None
    me = caller.transport.get_extra_info("sockname")[1]
    send = lambda data: caller.transport.sendto(data, ("127.0.0.1", port))  # noqa: E731

    send(_request("INVITE", me, "one", cseq=1))
    answered = await caller.final()
    assert answered.status == 200
    tag = answered.to.tag
    send(_request("ACK", me, "one", cseq=1, to_tag=tag))
    assert server.ratetable.live_calls("limited") == 1

    send(_request("INVITE", me, "two", cseq=1))
    refused = await caller.final()
    assert refused.status == 503
    assert refused.headers.get("reason") == 'SIP;cause=503;text="concurrent_limit"'

    send(_request("BYE", me, "one", cseq=2, to_tag=tag))
    assert (await caller.final()).status == 200
    assert server.ratetable.live_calls("limited") == 0

    send(_request("INVITE", me, "three", cseq=1))
    assert (await caller.final()).status == 200
