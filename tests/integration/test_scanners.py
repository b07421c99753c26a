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

from tests.integration.sipp import HOST, Sipguard, free_ports, options_ping, sipguard_command

pytestmark = [pytest.mark.integration]

EXTENSIONS = range(100, 201)  # svwar -e 100-200
DICTIONARY = ("admin", "alice", "bob", "operator", "reception", "1000")
SVWAR_METHODS = ("REGISTER", "INVITE", "OPTIONS")
UNKNOWN_SOURCE_REASON = 'SIP;cause=403;text="unknown_source"'
BUDGET_RATE = 5  # unknown_source_rate of `budgeted` (its burst is the same)
# Headers a response copies from its request (RFC 3261 §8.2.6.2): their
# values differ per request and say nothing about sipguard.
ECHOED = frozenset({"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"})
# svmap's final drain: it reads until its socket has been quiet for 3 s.
SVMAP_DRAIN = 3.0


# --------------------------------------------------------------------------
# sipguard with a route sink


@dataclass
class Guarded:
    """A running sipguard, its trunk's source port and its route sink."""

    guard: Sipguard
    port: int
    trunk_port: int
    sink: socket.socket
    audit: Path

    def forwarded(self) -> list[bytes]:
        """Every datagram sipguard sent to the trunk's route so far."""
        received = []
        with contextlib.suppress(BlockingIOError):
            while True:
                received.append(self.sink.recv(65535))
        return received

    def decisions(self, call_ids: Sequence[str]) -> list[dict[str, object]]:
        """The audit trail's decision records of `call_ids`, in trail order."""
        wanted = set(call_ids)
        lines = self.audit.read_text("utf-8").splitlines() if self.audit.exists() else []
        records = [json.loads(line) for line in lines]
        return [r for r in records if r["event"] == "decision" and r["call_id"] in wanted]

    def assert_intact(self, context: str = "") -> None:
        """Nothing was forwarded; sipguard runs and serves its trunk."""
        time.sleep(0.1)  # let a forwarded datagram, if any, arrive
        forwarded = self.forwarded()
        assert forwarded == [], f"forwarded to the route: {forwarded[:3]}\n{context}"
        assert self.guard.process.poll() is None, f"{context}\n{self.guard.describe()}"
        status = options_ping(self.port, source_port=self.trunk_port, timeout=2.0)
        assert status == 200, f"trunk OPTIONS got {status}\n{context}\n{self.guard.describe()}"


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
    drop mode never gives.)
    """
    port, trunk_port, route_port = free_ports(3)
    rules = workdir / "rules.yaml"
    audit = workdir / "audit" / "decisions.jsonl"
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
    with contextlib.ExitStack() as stack:
        sink = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        sink.bind((HOST, route_port))
        sink.setblocking(False)
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
        stack.callback(guard.stop)
        deadline = time.monotonic() + 15.0
        while options_ping(port, source_port=trunk_port, timeout=0.2) != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sipguard did not become ready\n{guard.describe()}")
            time.sleep(0.05)
        yield Guarded(guard, port, trunk_port, sink, audit)


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


def scan(tool: str, *args: str, workdir: Path, timeout: float = 30.0) -> Scan:
    """Run ``sipvicious_<tool> ARGS`` to completion in `workdir`."""
    name = f"sipvicious_{tool}"
    script = Path(sys.executable).parent / name
    executable = str(script) if script.is_file() else shutil.which(name)
    if executable is None:
        pytest.fail(f"{name} is not installed: install the test extras (pip install -e '.[test]')")
    command = [executable, *args]
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


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_drop_mode_answers_nothing(dropping: Guarded, transport: str) -> None:
    with Probe(dropping.port, transport) as probe:
        requests = scanner_requests(probe, ["100", "101", "admin"])
        answers = probe.ask(requests, wait=1.0)

    assert answers == {}
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
        answers = probe.ask(requests, wait=0.5)

    assert answers == {}, [answer.status_line for answer in answers.values()]
    dropping.assert_intact(variant)


# --------------------------------------------------------------------------
# the answer budget of an unknown UDP address


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
    )

    answers = svmap_answers(result, budgeted.port)
    # svmap sends for at most its run time less its final 3 s of listening,
    # and for at least that less a second of start-up.
    sending = result.elapsed - SVMAP_DRAIN
    assert sending > 1.5, result.describe()
    assert set(answers) == {"unknown"}, result.describe()
    # The burst, then BUDGET_RATE a second for as long as svmap sends.
    least = BUDGET_RATE + BUDGET_RATE * (sending - 1.0) - 1
    most = BUDGET_RATE + BUDGET_RATE * sending + 1
    assert least <= len(answers) <= most, (
        f"{len(answers)} answers in {sending:.1f} s, expected {least:.1f} to {most:.1f}\n"
        f"{result.describe()}"
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
    """50 OPTIONS at once: 5 answers; then 20 a second for 2 s: 5 answers a second."""
    answers: list[Answer] = []
    with Probe(budgeted.port, "udp", source="127.0.0.4") as probe:
        first_sent = time.monotonic()
        for _ in range(50):
            probe.send(probe.request("OPTIONS", "100").data)
        deadline = time.monotonic() + 0.3
        while (remaining := deadline - time.monotonic()) > 0:
            answers += probe.receive(remaining)
        burst = len(answers)

        # The budget is per address: another unknown address, and the trunk, are answered.
        with Probe(budgeted.port, "udp", source="127.0.0.5") as other:
            request = other.request("OPTIONS", "100")
            assert request.call_id in other.ask([request], wait=1.0)
        assert options_ping(budgeted.port, source_port=budgeted.trunk_port, timeout=1.0) == 200

        last_sent = time.monotonic()
        while time.monotonic() - first_sent < 2.5:
            last_sent = time.monotonic()
            probe.send(probe.request("OPTIONS", "100").data)
            answers += probe.receive(0.05)
        while late := probe.receive(0.3):
            answers += late

    assert BUDGET_RATE <= burst <= BUDGET_RATE + 1, f"{burst} answers to a burst of 50"
    window = last_sent - first_sent
    expected = BUDGET_RATE + BUDGET_RATE * window
    assert expected - 2 <= len(answers) <= expected + 1, (
        f"{len(answers)} answers in {window:.2f} s, expected about {expected:.1f}"
    )
    assert {answer.status_line for answer in answers} == {"SIP/2.0 403 Forbidden"}
    assert {answer.get("reason") for answer in answers} == {UNKNOWN_SOURCE_REASON}
    budgeted.assert_intact()
