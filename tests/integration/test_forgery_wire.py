"""Forged answers, stolen dialogs, reflection, poisoning, bad Contacts and loops,
on real UDP sockets against an in-process server.

The caller is a socket on 127.0.0.2 (the trunk's source), the callee one on
127.0.0.3 (the trunk's route); attackers send from other ports of those
hosts and from 127.0.0.4. Nothing here waits for something not to happen:
each check that a message was not sent is made after a later message from
the same exchange has arrived (loopback UDP delivers a sender's datagrams
at once and in order), so the outcome never depends on timing.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sipguard.rules.loader import load_rules
from sipguard.server import Server, ServerOptions
from sipguard.sip.message import Request, Response
from sipguard.sip.parser import parse_message

pytestmark = pytest.mark.integration

CALLER_HOST, CALLEE_HOST, STRANGER_HOST = "127.0.0.2", "127.0.0.3", "127.0.0.4"
RULES = """\
version: 1
numbering: {{country_code: "86"}}
listen: ["udp:127.0.0.1:0"]
protection:
  unknown_source_rate: 2
trunks:
  - name: caller-trunk
    sources: ["{caller_host}:{caller_port}"]
    route: "{route}"
    ranges: ["*"]
"""
LOOP_TRUNK = """\
  - name: own-host
    sources: ["127.0.0.1"]
    route: "{route}"
    ranges: ["*"]
"""


class Endpoint:
    """A blocking UDP socket on one loopback address, read without blocking the loop."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(5.0)
        self.host = host
        self.port: int = self.sock.getsockname()[1]

    def send(self, data: bytes, port: int) -> None:
        self.sock.sendto(data, ("127.0.0.1", port))

    async def receive(self) -> Request | Response:
        return parse_message(await self.receive_bytes())

    async def receive_bytes(self) -> bytes:
        return await asyncio.get_running_loop().run_in_executor(None, self.sock.recv, 65535)

    def pending(self) -> list[bytes]:
        """What has arrived and is not read yet (loopback delivery is immediate)."""
        out: list[bytes] = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.sock.recv(65535))
        except BlockingIOError:
            return out
        finally:
            self.sock.settimeout(5.0)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def endpoints() -> Iterator[dict[str, Endpoint]]:
    made = {
        "caller": Endpoint(CALLER_HOST),
        "callee": Endpoint(CALLEE_HOST),
        "callee_other_port": Endpoint(CALLEE_HOST),
        "caller_other_port": Endpoint(CALLER_HOST),
        "stranger": Endpoint(STRANGER_HOST),
    }
    yield made
    for endpoint in made.values():
        endpoint.close()


@pytest.fixture
async def server(tmp_path: Path, endpoints: dict[str, Endpoint]) -> AsyncIterator[Server]:
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(
        RULES.format(
            caller_host=CALLER_HOST,
            caller_port=endpoints["caller"].port,
            route=f"udp:{CALLEE_HOST}:{endpoints['callee'].port}",
        )
    )
    running = Server(
        load_rules(rules_path), ServerOptions(rules_path=rules_path, watch_rules=False)
    )
    await running.start()
    yield running
    await running.close()


def udp_port(server: Server) -> int:
    return next(int(a.rsplit(":", 1)[1]) for a in server.listening if a.startswith("udp"))


def invite(sender: Endpoint, *, branch: str = "z9hG4bKwire1", contact: str | None = None) -> bytes:
    contact = contact or f"<sip:caller@{sender.host}:{sender.port}>"
    body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\n"
    return (
        f"INVITE sip:13800138000@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {CALLER_HOST}:{sender.port};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:+862131771234@{CALLER_HOST}>;tag=caller-tag\r\n"
        f"To: <sip:13800138000@127.0.0.1>\r\n"
        f"Call-ID: wire-{branch}\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Contact: {contact}\r\n"
        f"Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def answer(request: Request, status: int, reason: str, *, body: bytes = b"", tag: str) -> bytes:
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += [f"Via: {via}" for via in request.headers.get_all("via")]
    lines.append(f"From: {request.headers.get('from')}")
    to = request.headers.get("to") or ""
    lines.append(to if request.to.tag else f"{to};tag={tag}")
    lines[-1] = "To: " + lines[-1]
    lines.append(f"Call-ID: {request.call_id}")
    lines.append(f"CSeq: {request.headers.get('cseq')}")
    lines.append(f"Contact: <sip:callee@{CALLEE_HOST}>")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def in_dialog(method: str, ok: Response, sender: Endpoint, *, cseq: int, branch: str) -> bytes:
    return (
        f"{method} sip:sipguard@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {sender.host}:{sender.port};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: {ok.headers.get('from')}\r\n"
        f"To: {ok.headers.get('to')}\r\n"
        f"Call-ID: {ok.call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def options(sender: Endpoint) -> bytes:
    return (
        f"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {sender.host}:{sender.port};branch=z9hG4bKprobe;rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:probe@{sender.host}>;tag=p\r\n"
        f"To: <sip:probe@127.0.0.1>\r\nCall-ID: probe\r\nCSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


async def expect(endpoint: Endpoint, status: int | str) -> Request | Response:
    message = await endpoint.receive()
    got = message.status if isinstance(message, Response) else message.method
    assert got == status, message
    return message


async def ringing_call(server: Server, ends: dict[str, Endpoint]) -> Request:
    """A call from the caller ringing at the callee; returns the outbound INVITE."""
    port = udp_port(server)
    ends["caller"].send(invite(ends["caller"]), port)
    await expect(ends["caller"], 100)
    b_invite = await expect(ends["callee"], "INVITE")
    assert isinstance(b_invite, Request)
    ends["callee"].send(answer(b_invite, 180, "Ringing", tag="callee-tag"), port)
    await expect(ends["caller"], 180)
    return b_invite


async def test_a_forged_200_from_a_third_port_is_not_relayed_and_the_real_one_is(
    server: Server, endpoints: dict[str, Endpoint]
) -> None:
    port = udp_port(server)
    b_invite = await ringing_call(server, endpoints)
    forged = answer(b_invite, 200, "OK", body=b"v=0\r\nc=IN IP4 203.0.113.66\r\n", tag="evil")

    endpoints["callee_other_port"].send(forged, port)
    endpoints["stranger"].send(forged, port)
    endpoints["callee"].send(
        answer(b_invite, 200, "OK", body=b"v=0\r\nreal\r\n", tag="callee-tag"), port
    )

    ok = await expect(endpoints["caller"], 200)
    assert ok.body == b"v=0\r\nreal\r\n"
    assert endpoints["caller"].pending() == []
    assert server.core is not None and server.core.foreign_responses == 2


async def test_a_bye_from_another_port_does_not_end_the_call(
    server: Server, endpoints: dict[str, Endpoint]
) -> None:
    port = udp_port(server)
    b_invite = await ringing_call(server, endpoints)
    endpoints["callee"].send(answer(b_invite, 200, "OK", tag="callee-tag"), port)
    ok = await expect(endpoints["caller"], 200)
    assert isinstance(ok, Response)
    endpoints["caller"].send(
        in_dialog("ACK", ok, endpoints["caller"], cseq=1, branch="z9hG4bKa"), port
    )
    await expect(endpoints["callee"], "ACK")

    intruder = endpoints["caller_other_port"]
    intruder.send(in_dialog("BYE", ok, intruder, cseq=2, branch="z9hG4bKforged"), port)

    refused = await expect(intruder, 403)  # a stranger's answer: the dialog is not confirmed
    assert b"unknown_source" in str(refused).encode()
    assert endpoints["callee"].pending() == []  # the BYE was not relayed
    assert server.core is not None and server.core.calls_active == 1

    endpoints["caller"].send(
        in_dialog("BYE", ok, endpoints["caller"], cseq=2, branch="z9hG4bKb"), port
    )
    await expect(endpoints["callee"], "BYE")
    await expect(endpoints["caller"], 200)
    assert server.core.calls_active == 0


async def test_a_primed_reflection_stays_within_the_budget_in_answers_and_bytes(
    server: Server, endpoints: dict[str, Endpoint]
) -> None:
    port = udp_port(server)
    stranger = endpoints["stranger"]
    padding = "".join(
        "Via: "
        + ", ".join(
            f"SIP/2.0/UDP 198.51.100.{n}:5060;branch=z9hG4bKpad{line}x{n}" for n in range(40)
        )
        + "\r\n"
        for line in range(4)
    )
    trigger = invite(stranger, branch="z9hG4bKprime")
    primer = trigger.replace(b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\n" + padding.encode())
    assert len(primer) > 10 * len(trigger)
    triggers = 50

    started = time.monotonic()
    stranger.send(primer, port)
    for _ in range(triggers):
        stranger.send(trigger, port)
    # The trunk's health check is handled after every datagram sent before it.
    endpoints["caller"].send(options(endpoints["caller"]), port)
    await expect(endpoints["caller"], 200)
    elapsed = time.monotonic() - started

    answers = stranger.pending()
    budget = 2 + math.ceil(2 * elapsed)  # burst 2, 2 answers a second
    assert 1 <= len(answers) <= budget
    assert sum(len(a) for a in answers) <= len(answers) * (len(trigger) + 400)
    assert all(a.startswith(b"SIP/2.0 403") for a in answers)
    assert server.core is not None
    assert server.core.dropped_unknown >= 1 + triggers - budget


async def test_a_poisoned_via_does_not_change_the_trunks_answer(
    server: Server, endpoints: dict[str, Endpoint]
) -> None:
    port = udp_port(server)
    # The stranger sends the trunk's next INVITE, Via and branch included, first.
    endpoints["stranger"].send(invite(endpoints["caller"]), port)
    await expect(endpoints["stranger"], 403)

    endpoints["caller"].send(invite(endpoints["caller"]), port)

    await expect(endpoints["caller"], 100)
    await expect(endpoints["callee"], "INVITE")


async def test_an_invite_whose_contact_has_a_space_is_refused_400(
    server: Server, endpoints: dict[str, Endpoint]
) -> None:
    caller = endpoints["caller"]
    caller.send(
        invite(caller, contact=f"<sip:call er@{CALLER_HOST}:{caller.port}>"), udp_port(server)
    )

    await expect(caller, 400)
    assert server.core is not None and server.core.calls_active == 0
    assert endpoints["callee"].pending() == []


async def test_a_routing_loop_ends_at_one_hop(
    server: Server, endpoints: dict[str, Endpoint], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = udp_port(server)
    own = f"udp:127.0.0.1:{port}"
    # The caller's trunk routes to sipguard itself, and sipguard's own host is
    # a trunk that routes to sipguard again.
    server.options.rules_path.write_text(
        RULES.format(caller_host=CALLER_HOST, caller_port=endpoints["caller"].port, route=own)
        + LOOP_TRUNK.format(route=own)
    )
    assert server.reload() is True
    assert server.core is not None
    gate = server.core.gate
    decisions: list[str] = []
    real_decide = gate.decide

    def counting_decide(request, peer, *, now):  # type: ignore[no-untyped-def]
        decisions.append(request.call_id)
        return real_decide(request, peer, now=now)

    monkeypatch.setattr(gate, "decide", counting_decide)

    endpoints["caller"].send(invite(endpoints["caller"]), port)

    await expect(endpoints["caller"], 100)
    await expect(endpoints["caller"], 482)
    assert len(decisions) == 1
    assert server.core.calls_active == 0
