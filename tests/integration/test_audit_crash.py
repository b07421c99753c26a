"""A call answered is a call recorded, even when the process is killed.

A real ``python -m sipguard run`` with an audit trail carries calls at
about 50 calls/s from a Python caller (every other call with a caller ID
the trunk does not own, refused 403 ``caller_not_allocated``) to a Python
callee that answers 200. The caller notes every final answer it gets. Right
after a 403 arrives (the moment its record is newest), sipguard is killed
with SIGKILL, mid-load, and the trail must hold the decision of every call
the caller got a final answer for.

The kill may land at any moment: sipguard writes a turn's records before
it sends that turn's datagrams, so an answer the caller holds implies its
record is in the kernel, which a SIGKILL does not take away. The assertion
depends on that order alone, not on timing.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import pytest

from tests.integration.sipp import HOST, free_ports, options_ping

pytestmark = pytest.mark.integration

RULES = """\
version: 1
numbering: {{country_code: "86"}}
listen: ["udp:{host}:{listen_port}"]
audit_log: "{audit}"
trunks:
  - name: crash-trunk
    sources: ["{host}:{caller_port}"]
    route: "udp:{host}:{callee_port}"
    ranges: ["+862131771200-+862131771299"]
"""

OWNED_CALLER = "+862131771234"  # in the trunk's range: allowed, relayed, 200
FOREIGN_CALLER = "+869521000001"  # not the trunk's: 403 caller_not_allocated
CALLS_PER_SECOND = 50
# Final answers to wait for before the kill (about 3 s of load), then the
# kill follows the next 403.
ANSWERS_BEFORE_KILL = 150
READY_TIMEOUT = 15.0
LOAD_TIMEOUT = 30.0

STATUS_LINE = re.compile(rb"^SIP/2\.0 (\d{3}) ")
START_LINE = re.compile(rb"^([A-Z]+) (\S+) SIP/2\.0\r\n")


def header(data: bytes, name: str) -> str | None:
    """The first value of header `name` in `data` (full names only: ours)."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def invite(index: int, *, caller_port: int, listen_port: int) -> bytes:
    number = OWNED_CALLER if index % 2 == 0 else FOREIGN_CALLER
    return (
        f"INVITE sip:13800138000@{HOST}:{listen_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{caller_port};branch=z9hG4bKcrash{index};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:{number}@{HOST}>;tag=caller{index}\r\n"
        f"To: <sip:13800138000@{HOST}>\r\n"
        f"Call-ID: crash-{index}@{HOST}\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@{HOST}:{caller_port}>\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


def ack_for(answer: bytes, index: int, *, status: int, caller_port: int) -> bytes:
    """The ACK of a final answer: in-dialog for a 2xx, same branch otherwise (§17.1.1.3)."""
    to = header(answer, "To") or ""
    contact = header(answer, "Contact") or ""
    target = contact.strip("<>").split(">", 1)[0] if status < 300 else f"sip:13800138000@{HOST}"
    branch = f"z9hG4bKack{index}" if status < 300 else f"z9hG4bKcrash{index}"
    number = OWNED_CALLER if index % 2 == 0 else FOREIGN_CALLER
    return (
        f"ACK {target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{caller_port};branch={branch};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:{number}@{HOST}>;tag=caller{index}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: crash-{index}@{HOST}\r\n"
        f"CSeq: 1 ACK\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


@dataclass
class Caller(asyncio.DatagramProtocol):
    """Notes every final answer by Call-ID; kills sipguard when told to."""

    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    answers: dict[str, int] = field(default_factory=dict)
    killed: asyncio.Event = field(default_factory=asyncio.Event)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.killed.is_set():
            return
        status_line = STATUS_LINE.match(data)
        call_id = header(data, "Call-ID")
        if status_line is None or call_id is None:
            return
        status = int(status_line.group(1))
        if status < 200 or call_id in self.answers:
            return
        self.answers[call_id] = status
        index = int(call_id.split("-", 1)[1].split("@", 1)[0])
        assert self.transport is not None
        self.transport.sendto(ack_for(data, index, status=status, caller_port=self.port), addr)
        if status == 403 and len(self.answers) >= ANSWERS_BEFORE_KILL:
            assert self.process is not None
            self.process.send_signal(signal.SIGKILL)  # at once, mid-load
            self.killed.set()


class Callee(asyncio.DatagramProtocol):
    """Answers every INVITE 200 (with a tag and a Contact) and every BYE 200."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        start = START_LINE.match(data)
        if start is None or start.group(1) not in (b"INVITE", b"BYE"):
            return
        head = data.split(b"\r\n\r\n", 1)[0].decode()
        lines = ["SIP/2.0 200 OK"]
        for line in head.split("\r\n")[1:]:
            name = line.partition(":")[0].strip().lower()
            if name in ("via", "from", "call-id", "cseq"):
                lines.append(line)
            elif name == "to":
                lines.append(line if ";tag=" in line else f"{line};tag=callee")
        port = self.transport.get_extra_info("sockname")[1]
        lines += [f"Contact: <sip:callee@{HOST}:{port}>", "Content-Length: 0"]
        self.transport.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)


def records_of(path: Path) -> list[dict[str, object]]:
    """Every line of the trail; a torn line fails the test (one write per turn)."""
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


async def test_every_answered_call_is_in_the_trail_after_sigkill(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    caller_transport, caller = await loop.create_datagram_endpoint(Caller, local_addr=(HOST, 0))
    callee_transport, _ = await loop.create_datagram_endpoint(Callee, local_addr=(HOST, 0))
    caller.port = caller_transport.get_extra_info("sockname")[1]
    (listen_port,) = free_ports(1)
    audit = tmp_path / "logs" / "decisions.jsonl"
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        RULES.format(
            host=HOST,
            listen_port=listen_port,
            audit=audit,
            caller_port=caller.port,
            callee_port=callee_transport.get_extra_info("sockname")[1],
        )
    )
    stderr_path = tmp_path / "sipguard.stderr"
    with open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "sipguard", "run", "--rules", str(rules)],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    caller.process = process
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while options_ping(listen_port, timeout=0.2) is None:
            assert process.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, "sipguard did not start\n" + stderr_path.read_text()

        sent = 0
        started = loop.time()
        while not caller.killed.is_set():
            assert loop.time() - started < LOAD_TIMEOUT, (
                f"{len(caller.answers)} answers in {LOAD_TIMEOUT:.0f} s\n" + stderr_path.read_text()
            )
            caller_transport.sendto(
                invite(sent, caller_port=caller.port, listen_port=listen_port),
                (HOST, listen_port),
            )
            sent += 1
            # Pace by the clock, not by the answers: the load goes on
            # whatever sipguard is doing when the kill lands.
            await asyncio.sleep(max(0.0, started + sent / CALLS_PER_SECOND - loop.time()))
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        caller_transport.close()
        callee_transport.close()

    answered = caller.answers
    statuses = sorted(set(answered.values()))
    assert statuses == [200, 403], f"both kinds of answer: {statuses}"
    decisions = {
        record["call_id"]: record for record in records_of(audit) if record["event"] == "decision"
    }
    missing = sorted(call_id for call_id in answered if call_id not in decisions)
    assert not missing, (
        f"{len(missing)} of {len(answered)} answered calls have no record: {missing[:10]}"
    )
    for call_id, status in answered.items():
        record = decisions[call_id]
        if status == 200:
            assert record["verdict"] == "allow", record
        else:
            assert (record["verdict"], record["code"], record["rule"]) == (
                "reject",
                403,
                "caller_not_allocated",
            ), record
