"""Real SIP scanners against ``sipguard run``: a source of no trunk learns nothing.

A ``sipguard run`` process listens on 127.0.0.1 (UDP and TCP). Its only trunk
is 127.0.0.1:TRUNK_PORT and routes to a plain UDP socket of the test (the
"route sink"), so anything sipguard ever forwarded would be seen there. The
scanners send from other ports, so they are sources of no trunk.

The scanners are SIPVicious OSS (PyPI ``sipvicious``, a test extra):

- ``sipvicious_svmap`` finds SIP devices: it sends OPTIONS (or the methods of
  ``-m``) and lists whoever answers, with the User-Agent/Server it saw;
- ``sipvicious_svwar`` enumerates extensions: it first asks for a random
  extension to learn the answer meaning "no such user", then asks for each
  candidate and reports those whose answer differs. It speaks UDP only, and
  binds its local port on every address (it ignores ``-b``); it sends to
  127.0.0.1 only.

What svwar makes of sipguard's one uniform ``403 unknown_source``: without
``--force`` it gives up at once ("authentication request for an unknown
extension"); with ``--force`` it takes the 403 as its baseline, gets the very
same 403 for the first candidate, has no way to classify it and stops ("We got
an unknown response"). Either way it reports "found nothing". Because svwar
stops that early, `Probe` (an svwar-like scanner of this file) then asks every
method for every extension of the same range, over UDP and TCP, and checks
that all answers are alike, crafted and malformed requests included (an
INVITE with Max-Forwards 0 or an unknown Require, a broken CSeq, an
over-long Request-URI get the same 403, or nothing in drop mode).

Three sipguard processes, one per module-scoped fixture:

- `rejecting`: ``unknown_source_answer: reject`` with an answer budget large
  enough that every probe is answered (the uniformity checks need answers);
- `dropping`: ``unknown_source_answer: drop``;
- `budgeted`: reject, ``unknown_source_rate: 5``.

After each scan the test checks that the route sink received nothing, that
sipguard still runs and that it still answers the trunk's OPTIONS with 200.
Everything listens and sends on 127.0.0.1 (and other 127.0.0.0/8 addresses).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.buckets import Decision, bucket_bounds
from tests.integration.sipp import (
    HOST,
    PortTaken,
    Sipguard,
    free_ports,
    options_ping,
    sipguard_command,
    with_fresh_ports,
)

pytestmark = [pytest.mark.integration]

EXTENSIONS = range(100, 201)  # svwar -e 100-200
DICTIONARY = ("admin", "alice", "bob", "operator", "reception", "1000")
SVWAR_METHODS = ("REGISTER", "INVITE", "OPTIONS")
UNKNOWN_SOURCE_REASON = 'SIP;cause=403;text="unknown_source"'
BUDGET_RATE = 5  # unknown_source_rate of `budgeted` (its burst is the same)
# Headers a response copies from its request (RFC 3261 §8.2.6.2): their
# values differ per request and say nothing about sipguard.
ECHOED = frozenset({"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"})


# --------------------------------------------------------------------------
# sipguard with a route sink


# The caller ID of the marker calls `Guarded.forwarded` places from the trunk;
# no scanner here presents it.
MARKER_CALLER = "+862100000000"


@dataclass
class Guarded:
    """A running sipguard, its trunk's source port and its route sink."""

    guard: Sipguard
    port: int
    trunk_port: int
    sink: socket.socket
    audit: Path
    markers: int = 0

    def forwarded(self) -> list[bytes]:
        """Everything sipguard sent to the trunk's route since the last call, but marker calls.

        A negative check must not wait for a while and hope: it ends with a
        marker call from the trunk, which sipguard relays to the route. The
        requests of the test reached sipguard before the marker (they were
        answered, or logged, or simply sent earlier to the same UDP socket);
        sipguard handles datagrams in the order they come and sends
        everything to the route from one socket, and loopback UDP keeps one
        sender's order. So whatever sipguard forwarded because of them is in
        the sink before the marker INVITE. The sink answers it 486, which
        sipguard ACKs; the marker's own datagrams, and late ones of earlier
        markers (an INVITE retransmitted before the 486 came), are not
        counted.
        """
        self.markers += 1
        callee = f"+8613900{self.markers:06d}"
        call_id = f"marker-{self.markers}-{secrets.token_hex(4)}"
        received: list[bytes] = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as trunk:
            trunk.bind((HOST, self.trunk_port))
            trunk.settimeout(MARKER_TIMEOUT)
            trunk.sendto(
                marker_invite(self.port, self.trunk_port, call_id, callee), (HOST, self.port)
            )
            self.sink.settimeout(MARKER_TIMEOUT)
            try:
                while True:
                    data, sipguard = self.sink.recvfrom(65535)
                    if data.startswith(f"INVITE sip:{callee}@".encode()):
                        break
                    received.append(data)
                # The call ends: 486 from the route, sipguard's ACK to it, and
                # the caller's ACK of the relayed 486.
                self.sink.sendto(busy_here(data), sipguard)
                while not (data.startswith(b"ACK ") and f"sip:{callee}@".encode() in data):
                    data = self.sink.recv(65535)
                answer = b""
                while not answer.startswith(b"SIP/2.0 486 "):
                    answer = trunk.recv(65535)
                trunk.sendto(ack_of(answer, self.port, self.trunk_port), (HOST, self.port))
            except TimeoutError:
                raise AssertionError(
                    f"the marker call from the trunk did not go through\n{self.guard.describe()}"
                ) from None
            finally:
                self.sink.settimeout(None)
        return [data for data in received if f"sip:{MARKER_CALLER}@".encode() not in data]

    def decisions(self, call_ids: Sequence[str]) -> list[dict[str, object]]:
        """The audit trail's decision records of `call_ids`, in trail order."""
        wanted = set(call_ids)
        lines = self.audit.read_text("utf-8").splitlines() if self.audit.exists() else []
        records = [json.loads(line) for line in lines]
        return [r for r in records if r["event"] == "decision" and r["call_id"] in wanted]

    def assert_intact(self, context: str = "") -> None:
        """Nothing was forwarded; sipguard runs and serves its trunk."""
        forwarded = self.forwarded()
        assert forwarded == [], f"forwarded to the route: {forwarded[:3]}\n{context}"
        assert self.guard.process.poll() is None, f"{context}\n{self.guard.describe()}"
        status = options_ping(self.port, source_port=self.trunk_port, timeout=2.0)
        assert status == 200, f"trunk OPTIONS got {status}\n{context}\n{self.guard.describe()}"


# How long a marker call's every step may take (all on loopback).
MARKER_TIMEOUT = 10.0


def marker_invite(port: int, trunk_port: int, call_id: str, callee: str) -> bytes:
    """The trunk's INVITE of a marker call (see `Guarded.forwarded`)."""
    return (
        f"INVITE sip:{callee}@{HOST}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{trunk_port};branch=z9hG4bK{call_id};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{MARKER_CALLER}@{HOST}>;tag={call_id}\r\n"
        f"To: <sip:{callee}@{HOST}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        f"Contact: <sip:marker@{HOST}:{trunk_port}>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def _header_lines(data: bytes) -> list[str]:
    return data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")


def busy_here(invite: bytes) -> bytes:
    """The route's 486 to a relayed INVITE (RFC 3261 §8.2.6.2: copied headers, a To tag)."""
    lines = ["SIP/2.0 486 Busy Here"]
    for line in _header_lines(invite)[1:]:
        name = line.partition(":")[0].strip().lower()
        if name in ("via", "from", "call-id", "cseq"):
            lines.append(line)
        elif name == "to":
            lines.append(f"{line};tag=route")
    return ("\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n").encode()


def ack_of(answer: bytes, port: int, trunk_port: int) -> bytes:
    """The trunk's ACK of a failure answer (RFC 3261 §17.1.1.3: its INVITE's branch)."""
    headers = {}
    for line in _header_lines(answer)[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), value.strip())
    callee = headers["to"].split("sip:", 1)[1].split("@", 1)[0]
    return (
        f"ACK sip:{callee}@{HOST}:{port} SIP/2.0\r\n"
        f"Via: {headers['via']}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: {headers['from']}\r\n"
        f"To: {headers['to']}\r\n"
        f"Call-ID: {headers['call-id']}\r\n"
        "CSeq: 1 ACK\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def rules_text(
    *,
    port: int,
    trunk_port: int,
    route_port: int,
    protection: Mapping[str, object],
    audit: Path,
) -> str:
    lines = [
        "version: 1",
        "mode: enforce",
        f'audit_log: "{audit}"',
        "numbering:",
        '  country_code: "86"',
        f'listen: ["udp:{HOST}:{port}", "tcp:{HOST}:{port}"]',
        "protection:",
        *(f"  {key}: {value}" for key, value in protection.items()),
        "trunks:",
        "  - name: test-trunk",
        f'    sources: ["{HOST}:{trunk_port}"]',
        f'    route: "udp:{HOST}:{route_port}"',
        '    ranges: ["*"]',
    ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def guarded(workdir: Path, protection: Mapping[str, object]) -> Iterator[Guarded]:
    """Start ``sipguard run``; ready once the trunk's OPTIONS gets 200.

    (`sipp.start_sipguard` waits for an answer to an unknown source, which
    drop mode never gives.) The route sink takes everything sipguard
    forwarded before the first test: nothing, or the first check fails.
    """
    with contextlib.ExitStack() as stack:

        def start_on(ports: list[int]) -> Guarded:
            port, trunk_port, route_port = ports
            with contextlib.ExitStack() as started:  # undone if the start fails
                sink = started.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                try:
                    sink.bind((HOST, route_port))
                except OSError as exc:
                    raise PortTaken(f"route sink {HOST}:{route_port}: {exc}") from exc
                audit = workdir / "audit" / "decisions.jsonl"
                guard = start_guard(
                    workdir,
                    port=port,
                    trunk_port=trunk_port,
                    route_port=route_port,
                    protection=protection,
                    audit=audit,
                )
                started.callback(guard.stop)
                stack.push(started.pop_all())
            return Guarded(guard, port, trunk_port, sink, audit)

        yield with_fresh_ports(3, start_on)


def start_guard(
    workdir: Path,
    *,
    port: int,
    trunk_port: int,
    route_port: int,
    protection: Mapping[str, object],
    audit: Path,
) -> Sipguard:
    """Start ``sipguard run`` and wait until the trunk's OPTIONS gets 200.

    Raises:
        PortTaken: sipguard could not listen on `port`.
    """
    rules = workdir / "rules.yaml"
    rules.write_text(
        rules_text(
            port=port,
            trunk_port=trunk_port,
            route_port=route_port,
            protection=protection,
            audit=audit,
        ),
        encoding="utf-8",
    )
    stdout_path, stderr_path = workdir / "sipguard.stdout", workdir / "sipguard.stderr"
    with open(stdout_path, "wb") as stdout, open(stderr_path, "wb") as stderr:
        process = subprocess.Popen(
            [*sipguard_command(), "run", "--rules", str(rules)],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    guard = Sipguard(process, rules, port, stdout_path, stderr_path)
    deadline = time.monotonic() + 15.0
    while options_ping(port, source_port=trunk_port, timeout=0.2) != 200:
        if process.poll() is not None and "address already in use" in guard.stderr:
            raise PortTaken(f"sipguard could not listen\n{guard.describe()}")
        if process.poll() is not None or time.monotonic() > deadline:
            guard.stop()
            raise RuntimeError(f"sipguard did not become ready\n{guard.describe()}")
        time.sleep(0.05)
    return guard


@pytest.fixture(scope="module")
def rejecting(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    protection = {"unknown_source_answer": "reject", "unknown_source_rate": 5000}
    with guarded(tmp_path_factory.mktemp("reject"), protection) as running:
        yield running


@pytest.fixture(scope="module")
def dropping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    with guarded(tmp_path_factory.mktemp("drop"), {"unknown_source_answer": "drop"}) as running:
        yield running


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    protection = {"unknown_source_answer": "reject", "unknown_source_rate": BUDGET_RATE}
    with guarded(tmp_path_factory.mktemp("budget"), protection) as running:
        yield running


# --------------------------------------------------------------------------
# SIPVicious


@dataclass(frozen=True)
class Scan:
    """One finished scanner run."""

    command: list[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.command)}\n(exit status {self.returncode}, {self.elapsed:.1f} s)\n"
            f"--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-3000:]}"
        )


# The scanner's own entry point, with every log record (debug too) stamped
# with the time it was made: the tool's basicConfig then changes nothing.
_TIMESTAMPED = (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.DEBUG,"
    " format='%(created).6f %(levelname)s:%(name)s:%(message)s')\n"
    "from sipvicious.{tool} import main\n"
    "sys.argv[0] = 'sipvicious_{tool}'\n"
    "sys.exit(main())\n"
)


def scan(
    tool: str, *args: str, workdir: Path, timeout: float = 30.0, timestamps: bool = False
) -> Scan:
    """Run ``sipvicious_<tool> ARGS`` to completion in `workdir`.

    `timestamps`: run it through its entry point with a log format that
    starts every record (debug included) with its time, ``time.time()``.
    """
    name = f"sipvicious_{tool}"
    script = Path(sys.executable).parent / name
    executable = str(script) if script.is_file() else shutil.which(name)
    if executable is None:
        pytest.fail(f"{name} is not installed: install the test extras (pip install -e '.[test]')")
    command = [executable, *args]
    if timestamps:
        command = [sys.executable, "-c", _TIMESTAMPED.format(tool=tool), *args]
    started = time.monotonic()
    done = subprocess.run(
        command,
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Scan(command, done.returncode, done.stdout, done.stderr, time.monotonic() - started)


def svmap_answers(result: Scan, port: int) -> list[str]:
    """The User-Agent of every answer svmap logged (``-v``) from 127.0.0.1:`port`."""
    target = re.escape(f"{HOST}:{port}")
    return re.findall(rf"{target}\t->\t{target}\t->\t(.*)", result.stderr)


def svwar_found_nothing(result: Scan) -> None:
    """svwar's verdict: no extension, no table, not its "found" exit status 40."""
    context = result.describe()
    assert "WARNING:root:found nothing" in result.stderr, context
    assert "exists" not in result.output, context
    assert "Extension" not in result.stdout, context
    assert result.returncode != 40, context


# --------------------------------------------------------------------------
# An svwar-like probe of our own


@dataclass(frozen=True)
class Answer:
    """A SIP response, as a scanner compares them."""

    status_line: str
    headers: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, data: bytes) -> Answer:
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
        headers = []
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        return cls(head[0], tuple(headers))

    def get(self, name: str) -> str | None:
        return next((value for key, value in self.headers if key == name), None)

    @property
    def fingerprint(self) -> tuple[object, ...]:
        """Everything but the values copied from the request."""
        return (
            self.status_line,
            tuple((name, "" if name in ECHOED else value) for name, value in self.headers),
        )


@dataclass(frozen=True)
class Request:
    call_id: str
    method: str
    data: bytes
    in_dialog: bool = False


class Probe:
    """Sends SIP requests from one socket and collects the answers by Call-ID.

    It works like svwar: one request per method and extension, each answer
    kept for comparison. UDP or TCP; `source` is the local IP address.
    """

    def __init__(self, port: int, transport: str, *, source: str = HOST) -> None:
        self.port = port
        self.transport = transport
        kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
        self.sock = socket.socket(socket.AF_INET, kind)
        self.sock.bind((source, 0))
        if transport == "tcp":
            self.sock.settimeout(5.0)
            self.sock.connect((HOST, port))
        self.local = self.sock.getsockname()
        self._buffer = b""

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(
        self,
        method: str,
        user: str,
        *,
        to_tag: str | None = None,
        max_forwards: int = 70,
        cseq: str | None = None,
        uri: str | None = None,
        extra: Sequence[str] = (),
    ) -> Request:
        call_id = secrets.token_hex(8)
        host, port = self.local
        to_tag_param = f";tag={to_tag}" if to_tag else ""
        lines = [
            f"{method} {uri or f'sip:{user}@{HOST}:{self.port}'} SIP/2.0",
            f"Via: SIP/2.0/{self.transport.upper()} {host}:{port};branch=z9hG4bK{call_id};rport",
            f"Max-Forwards: {max_forwards}",
            f'From: "{user}" <sip:{user}@{HOST}>;tag={call_id[:8]}',
            f"To: <sip:{user}@{HOST}>{to_tag_param}",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq or f'1 {method}'}",
            f"Contact: <sip:{user}@{host}:{port}>",
            *extra,
            "Content-Length: 0",
        ]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode()
        return Request(call_id, method, data, in_dialog=to_tag is not None)

    def ask(
        self, requests: Sequence[Request], *, window: int = 50, wait: float = 2.0
    ) -> dict[str, Answer]:
        """Send `requests`, `window` at a time; the answers by Call-ID.

        Each window is done when every request of it was answered, or after
        `wait` seconds of waiting.
        """
        answers: dict[str, Answer] = {}
        for start in range(0, len(requests), window):
            chunk = requests[start : start + window]
            for request in chunk:
                self.send(request.data)
            pending = {request.call_id for request in chunk}
            deadline = time.monotonic() + wait
            while pending and (remaining := deadline - time.monotonic()) > 0:
                for answer in self.receive(remaining):
                    call_id = answer.get("call-id") or ""
                    pending.discard(call_id)
                    answers.setdefault(call_id, answer)
        return answers

    def receive(self, timeout: float) -> list[Answer]:
        """The answers that arrive within `timeout` seconds (at least one read)."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            if self.transport == "udp":
                return [Answer.parse(self.sock.recv(65535))]
            data = self.sock.recv(65535)
        except (TimeoutError, ConnectionRefusedError):
            return []
        if not data:
            raise AssertionError("sipguard closed the TCP connection")
        self._buffer += data
        messages = []
        while b"\r\n\r\n" in self._buffer:
            head, rest = self._buffer.split(b"\r\n\r\n", 1)
            match = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
            length = int(match.group(1)) if match else 0
            if len(rest) < length:
                break
            messages.append(Answer.parse(head))
            self._buffer = rest[length:]
        return messages

    def pending(self) -> list[Answer]:
        """The answers that have arrived already, without waiting for more."""
        answers: list[Answer] = []
        while received := self.receive(0.0):
            answers += received
        return answers

    def send(self, data: bytes) -> None:
        if self.transport == "udp":
            self.sock.sendto(data, (HOST, self.port))
        else:
            self.sock.sendall(data)


def scanner_requests(probe: Probe, users: Sequence[str]) -> list[Request]:
    """What a scanner asks: each method for each user, new and in-dialog, and CANCEL."""
    requests = []
    for user in users:
        for method in ("REGISTER", "INVITE", "OPTIONS", "SUBSCRIBE", "MESSAGE", "FOO"):
            requests.append(probe.request(method, user))
        for method in ("INVITE", "BYE", "INFO"):  # in-dialog: the To has a tag
            requests.append(probe.request(method, user, to_tag=secrets.token_hex(4)))
        requests.append(probe.request("CANCEL", user))
    return requests


def crafted_invite(probe: Probe, variant: str) -> Request:
    """An INVITE that trips a check other than the source's, or a malformed request."""
    if variant == "max_forwards_0":
        return probe.request("INVITE", "100", max_forwards=0)
    if variant == "require":
        return probe.request("INVITE", "100", extra=["Require: x-scan"])
    if variant == "bad_cseq":
        return probe.request("INVITE", "100", cseq="abc INVITE")
    if variant == "long_uri":
        return probe.request("INVITE", "100", uri=f"sip:{'1' * 2000}@{HOST}")
    raise ValueError(variant)


ALL_USERS = [*(str(number) for number in EXTENSIONS), *DICTIONARY]

# --------------------------------------------------------------------------
# reject mode


def test_svmap_sees_a_sip_device_but_no_user_agent(rejecting: Guarded, tmp_path: Path) -> None:
    (local_port,) = free_ports(1)
    result = scan(
        "svmap",
        "-v",
        "-b",
        HOST,
        "-P",
        str(local_port),
        "-p",
        str(rejecting.port),
        "-m",
        "OPTIONS,INVITE,REGISTER",
        HOST,
        workdir=tmp_path,
    )

    # One answer per method (the 403), none with a User-Agent or Server to fingerprint.
    assert svmap_answers(result, rejecting.port) == ["unknown"] * 3, result.describe()
    assert re.search(rf"\|\s*{HOST}:{rejecting.port}\s*\|\s*unknown\s*\|", result.stdout), (
        result.describe()
    )
    rejecting.assert_intact(result.describe())


@pytest.mark.parametrize("method", SVWAR_METHODS)
def test_svwar_finds_no_extension(rejecting: Guarded, tmp_path: Path, method: str) -> None:
    (local_port,) = free_ports(1)
    dictionary = tmp_path / "dictionary.txt"
    dictionary.write_text("\n".join(DICTIONARY) + "\n", encoding="utf-8")
    target = f"udp://{HOST}:{rejecting.port}"
    base = ["-x", HOST, "-P", str(local_port), "-m", method]

    # Without --force svwar takes the 403 for a random extension as "every
    # extension needs authentication" and stops.
    plain = scan("svwar", *base, "-e", "100-200", target, workdir=tmp_path)
    svwar_found_nothing(plain)
    assert "replied with an authentication request for an unknown extension" in plain.stderr, (
        plain.describe()
    )

    # With --force it compares candidates with that 403; the first candidate
    # gets the very same answer, which svwar cannot use.
    for candidates, first in ((["-e", "100-200"], "100"), (["-d", str(dictionary)], "admin")):
        forced = scan("svwar", *base, "-vvv", "--force", *candidates, target, workdir=tmp_path)
        svwar_found_nothing(forced)
        assert "Bad user = ('SIP/2.0 403 Forbidden'" in forced.stderr, forced.describe()
        assert f"sending request for {first}" in forced.stderr, forced.describe()
        assert "We got an unknown response" in forced.stderr, forced.describe()
        response = re.search(r"Response: '(.*)'", forced.stderr)
        assert response is not None, forced.describe()
        assert response.group(1).startswith("SIP/2.0 403 Forbidden"), forced.describe()
        assert f'To: "{first}"' in response.group(1), forced.describe()
        assert 'text="unknown_source"' in response.group(1), forced.describe()

    if method == "INVITE":
        # Refused INVITEs of unknown sources are audited, one record each;
        # the log sums them up instead of a line each.
        source = f"udp:{HOST}:{local_port}"
        records = [
            json.loads(line)
            for line in rejecting.audit.read_text("utf-8").splitlines()
            if f'"source":"{source}"' in line
        ]
        assert records, rejecting.guard.describe()
        assert {(r["verdict"], r["rule"], r["code"]) for r in records} == {
            ("reject", "unknown_source", 403)
        }
        assert len({r["call_id"] for r in records}) == len(records), "no record twice"
        assert f"source={HOST}:{local_port}" not in rejecting.guard.stderr
    rejecting.assert_intact(f"svwar -m {method}")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_every_method_and_extension_gets_the_same_answer(
    rejecting: Guarded, transport: str
) -> None:
    with Probe(rejecting.port, transport) as probe:
        requests = scanner_requests(probe, ALL_USERS)
        answers = probe.ask(requests)

    unanswered = [r.method for r in requests if r.call_id not in answers]
    assert unanswered == [], f"{len(unanswered)} unanswered, e.g. {unanswered[:5]}"
    fingerprints = Counter(answer.fingerprint for answer in answers.values())
    assert len(fingerprints) == 1, fingerprints.most_common(5)
    sample = next(iter(answers.values()))
    assert sample.status_line == "SIP/2.0 403 Forbidden", sample
    assert sample.get("reason") == UNKNOWN_SOURCE_REASON, sample
    assert sample.get("server") is None and sample.get("user-agent") is None, sample
    for request in requests:  # each answer is to its own request
        assert answers[request.call_id].get("cseq") == f"1 {request.method}"
    rejecting.assert_intact(f"{len(requests)} requests over {transport}")


@pytest.mark.parametrize(
    "variant",
    [
        "max_forwards_0",
        "require",
    ],
)
def test_a_crafted_invite_gets_the_same_answer(rejecting: Guarded, variant: str) -> None:
    with Probe(rejecting.port, "udp") as probe:
        plain, crafted = probe.request("INVITE", "100"), crafted_invite(probe, variant)
        answers = probe.ask([plain, crafted])

    assert answers[plain.call_id].get("reason") == UNKNOWN_SOURCE_REASON
    assert crafted.call_id in answers
    assert answers[crafted.call_id].fingerprint == answers[plain.call_id].fingerprint, answers
    rejecting.assert_intact(variant)


# --------------------------------------------------------------------------
# drop mode


def test_svmap_finds_nothing_in_drop_mode(dropping: Guarded, tmp_path: Path) -> None:
    (local_port,) = free_ports(1)
    result = scan(
        "svmap",
        "-v",
        "-b",
        HOST,
        "-P",
        str(local_port),
        "-p",
        str(dropping.port),
        "-m",
        "OPTIONS,INVITE,REGISTER",
        HOST,
        workdir=tmp_path,
    )

    assert "WARNING:root:found nothing" in result.stderr, result.describe()
    assert svmap_answers(result, dropping.port) == [], result.describe()
    assert f"{HOST}:{dropping.port}" not in result.stdout, result.describe()
    dropping.assert_intact(result.describe())


def test_svwar_gets_no_answer_in_drop_mode(dropping: Guarded, tmp_path: Path) -> None:
    (local_port,) = free_ports(1)
    result = scan(
        "svwar",
        "-x",
        HOST,
        "-P",
        str(local_port),
        "-vvv",
        "--force",
        "-e",
        "100-200",
        f"udp://{HOST}:{dropping.port}",
        workdir=tmp_path,
    )

    svwar_found_nothing(result)
    # Its first request (a random extension) times out: it never gets to scan.
    assert "ERROR:TakeASip:socket error: timed out" in result.stderr, result.describe()
    assert "sending request for" not in result.stderr, result.describe()
    assert result.returncode == 30, result.describe()
    dropping.assert_intact(result.describe())


def ask_unanswered(guarded: Guarded, probe: Probe, requests: Sequence[Request]) -> list[Answer]:
    """Send `requests` and a plain INVITE last; what came back once sipguard handled them all.

    Drop mode answers nothing, so there is no answer to wait for; but it
    audits every INVITE it drops. sipguard takes one source's requests in
    order, and a turn's records reach the trail before its datagrams leave:
    once the last INVITE's record is in the trail, every answer to the
    requests before it has been sent, and loopback delivers it at once.
    """
    last = probe.request("INVITE", "100")
    for request in [*requests, last]:
        probe.send(request.data)
    deadline = time.monotonic() + MARKER_TIMEOUT
    while not guarded.decisions([last.call_id]):
        assert time.monotonic() < deadline, guarded.guard.describe()
        time.sleep(0.02)
    return probe.pending()


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_drop_mode_answers_nothing(dropping: Guarded, transport: str) -> None:
    with Probe(dropping.port, transport) as probe:
        requests = scanner_requests(probe, ["100", "101", "admin"])
        answers = ask_unanswered(dropping, probe, requests)

    assert answers == [], [answer.status_line for answer in answers]
    # Dropped INVITEs are still audited, as dropped, one record each; the
    # log sums them up instead of a line each.
    invites = [r.call_id for r in requests if r.method == "INVITE" and not r.in_dialog]
    records = dropping.decisions(invites)
    assert sorted(r["call_id"] for r in records) == sorted(invites), dropping.guard.describe()
    assert {(r["verdict"], r["rule"], r["code"]) for r in records} == {
        ("drop", "unknown_source", None)
    }
    for call_id in invites:
        assert f"call-id={call_id}" not in dropping.guard.stderr, dropping.guard.describe()
    dropping.assert_intact(f"{len(requests)} requests over {transport}")


@pytest.mark.parametrize(
    "variant",
    [
        "max_forwards_0",
        "require",
        "bad_cseq",
        "long_uri",
    ],
)
def test_drop_mode_answers_no_crafted_request(dropping: Guarded, variant: str) -> None:
    with Probe(dropping.port, "udp") as probe:
        requests = [crafted_invite(probe, variant) for _ in range(3)]
        answers = ask_unanswered(dropping, probe, requests)

    assert answers == [], [answer.status_line for answer in answers]
    dropping.assert_intact(variant)


# --------------------------------------------------------------------------
# the answer budget of an unknown UDP address


def svmap_timeline(result: Scan) -> list[Decision]:
    """svmap's requests from its timestamped debug log (``scan(timestamps=True)``).

    "sending packet" is logged just before a request goes out, "got data"
    just after an answer came in; the next line holds the message, whose
    branch pairs them. An answer svmap reads in its final drain, once it
    has sent everything, is logged without "got data": it stays unpaired
    (`svmap_answer_times` has it).
    """
    lines = result.stderr.splitlines()
    sent: dict[str, float] = {}
    answered: dict[str, float] = {}
    for line, following in zip(lines, lines[1:], strict=False):
        stamp, _, text = line.partition(" ")
        branch = re.search(r"branch=(z9hG4bK[-\w]+)", following)
        if branch is None:
            continue
        if text.startswith("DEBUG:DrinkOrSip:sending packet to"):
            sent[branch.group(1)] = float(stamp)
        elif text.startswith("DEBUG:DrinkOrSip:got data from"):
            answered.setdefault(branch.group(1), float(stamp))
    order = sorted(sent, key=sent.__getitem__)
    return [Decision(sent[branch], answered.get(branch), branch in answered) for branch in order]


def svmap_answer_times(result: Scan, port: int) -> list[float]:
    """When svmap logged each answer from 127.0.0.1:`port` (just after it came)."""
    target = re.escape(f"{HOST}:{port}")
    return [
        float(stamp)
        for stamp in re.findall(rf"(?m)^(\d+\.\d+) \S+{target}\t->\t{target}\t->\t", result.stderr)
    ]


def test_a_scanner_flood_gets_the_answer_budget(budgeted: Guarded, tmp_path: Path) -> None:
    """svmap asks the same target 60 times, one request every ~40 ms (25/s)."""
    (local_port,) = free_ports(1)
    requests = 60
    result = scan(
        "svmap",
        "-v",
        "-b",
        HOST,
        "-P",
        str(local_port),
        "-p",
        str(budgeted.port),
        "-t",
        "0.04",
        *[HOST] * requests,
        workdir=tmp_path,
        timestamps=True,
    )

    answers = svmap_answers(result, budgeted.port)
    answered_at = svmap_answer_times(result, budgeted.port)
    timeline = svmap_timeline(result)
    paired = [index for index, decision in enumerate(timeline) if decision.admitted]
    assert len(timeline) == requests and paired, result.describe()
    assert set(answers) == {"unknown"} and len(answered_at) == len(answers), result.describe()
    assert len(answers) >= len(paired), result.describe()
    # svmap waits 40 ms with nothing to read before each request: it sends
    # for over 2 s, long enough for the rate to show after the burst.
    sending = timeline[-1].sent - timeline[0].sent
    assert sending > 1.5, result.describe()
    # Answers come in the order of the requests: up to the last one paired,
    # which requests were answered is known; later ones may have unpaired
    # answers, which only the upper bound takes in.
    least, _ = bucket_bounds(timeline[: paired[-1] + 1], burst=BUDGET_RATE, rate=BUDGET_RATE)
    _, most = bucket_bounds(
        timeline, burst=BUDGET_RATE, rate=BUDGET_RATE, answers_until=max(answered_at)
    )
    assert least <= len(answers) <= most, (
        f"{len(answers)} answers to requests sent over {sending:.2f} s, "
        f"expected {least} to {most}\n{result.describe()}"
    )
    assert len(answers) < requests / 2, result.describe()
    budgeted.assert_intact(result.describe())


def test_invites_past_the_budget_are_audited_as_dropped_once_each(budgeted: Guarded) -> None:
    """A burst of INVITEs, each sent three times (UDP retransmissions): the
    ones answered are recorded as refused, the rest as dropped, each INVITE
    once whatever became of its copies."""
    with Probe(budgeted.port, "udp", source="127.0.0.6") as probe:
        invites = [probe.request("INVITE", str(user)) for user in range(100, 120)]
        for _ in range(3):
            for request in invites:
                probe.send(request.data)
        answered: set[str] = set()
        while late := probe.receive(0.5):
            answered |= {answer.get("call-id") or "" for answer in late}

    records = budgeted.decisions([request.call_id for request in invites])
    assert sorted(r["call_id"] for r in records) == sorted(r.call_id for r in invites)
    refused = {str(r["call_id"]) for r in records if r["verdict"] == "reject"}
    dropped = {str(r["call_id"]) for r in records if r["verdict"] == "drop"}
    assert refused and dropped, records
    assert refused <= answered, "an INVITE recorded as refused got its 403"
    assert all(r["code"] is None for r in records if r["verdict"] == "drop")
    budgeted.assert_intact()


def test_a_burst_gets_the_burst_then_the_rate(budgeted: Guarded) -> None:
    """50 OPTIONS at once: 5 answers; then 20 a second for 2 s: 5 answers a second.

    Each request's time of sending and of its answer are kept, and the
    expected counts come from them (`bucket_bounds`). A request from
    another unknown address, answered, marks the moment every request sent
    before it was decided: sipguard reads one socket in order.
    """
    asked: dict[str, list[float | None]] = {}  # Call-ID: [sent, answered]

    def collect(answers: list[Answer]) -> None:
        now = time.monotonic()
        for answer in answers:
            times = asked.get(answer.get("call-id") or "")
            if times is not None and times[1] is None:
                times[1] = now
            statuses.add((answer.status_line, answer.get("reason")))

    def send(probe: Probe) -> None:
        request = probe.request("OPTIONS", "100")
        asked[request.call_id] = [time.monotonic(), None]
        probe.send(request.data)

    def marker(other: Probe) -> None:
        """The other address's request is answered: every request before it is decided."""
        request = other.request("OPTIONS", "100")
        assert request.call_id in other.ask([request], wait=MARKER_TIMEOUT)

    def timeline() -> list[Decision]:
        return [
            Decision(sent, answered, answered is not None)  # type: ignore[arg-type]
            for sent, answered in asked.values()
        ]

    statuses: set[tuple[str, str | None]] = set()
    with (
        Probe(budgeted.port, "udp", source="127.0.0.4") as probe,
        Probe(budgeted.port, "udp", source="127.0.0.5") as other,
    ):
        for _ in range(50):
            send(probe)
        collect(probe.receive(0.0))
        # The budget is per address: another unknown address is answered.
        marker(other)
        collect(probe.pending())
        burst = sum(answered is not None for _, answered in asked.values())
        burst_least, burst_most = bucket_bounds(timeline(), burst=BUDGET_RATE, rate=BUDGET_RATE)
        # And so is the trunk.
        assert options_ping(budgeted.port, source_port=budgeted.trunk_port, timeout=2.0) == 200

        first_sent = min(sent for sent, _ in asked.values() if sent is not None)
        while time.monotonic() - first_sent < 2.5:
            send(probe)
            collect(probe.receive(0.05))
        marker(other)
        collect(probe.pending())

    assert burst_least <= burst <= burst_most, (
        f"{burst} answers to a burst of 50, expected {burst_least} to {burst_most}"
    )
    answers = sum(answered is not None for _, answered in asked.values())
    least, most = bucket_bounds(timeline(), burst=BUDGET_RATE, rate=BUDGET_RATE)
    sending = max(sent for sent, _ in asked.values() if sent is not None) - first_sent
    assert least <= answers <= most, (
        f"{answers} answers to {len(asked)} requests sent over {sending:.2f} s, "
        f"expected {least} to {most}"
    )
    assert statuses == {("SIP/2.0 403 Forbidden", UNKNOWN_SOURCE_REASON)}
    budgeted.assert_intact()
