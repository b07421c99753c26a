"""`sipguard explain` against the live server: the same calls, the same outcome.

Each case goes through `sipguard explain --json` (in process) and, as a real
UDP INVITE, through a running server on 127.0.0.1 whose route is a socket
acting as the callee. The two must agree on the verdict, the status line,
the rule (the `Reason` text, or the audit record of a relayed call), the
`Reason` and `Warning` values, and for a relayed call on the identity it
leaves with: the From, P-Asserted-Identity and Privacy of the INVITE that
reaches the callee.

Every case also states what it expects, so the two cannot agree on a
mistake. The rule file sets `answers.warn_agent`: the server listens on port
0, which explain cannot know, and the agent is otherwise that address.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sipguard.cli import main
from sipguard.rules.loader import load_rules
from sipguard.server import Server, ServerOptions
from sipguard.sip.builders import build_response
from sipguard.sip.message import Request, Response
from sipguard.sip.parser import parse_message
from sipguard.sip.serializer import to_bytes
from sipguard.sip.uri import parse_name_addr

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
TRUNKS = ("sh", "bj", "intl", "abroad")
RULES = """\
version: 1
numbering: {{country_code: "86"}}
listen: ["udp:127.0.0.1:0"]
audit_log: "{audit_log}"
emergency_numbers: ["110"]
do_not_originate: ["+86400"]
suspended:
  - {{number: "+862131771260", until: "2099-01-01", reason: "regulator order 7"}}
answers: {{warn_agent: edge1.example.net}}
responses:
  unknown_source: {{code: 404}}
trunks:
  - name: sh
    sources: ["127.0.0.1:{sh}"]
    route: "udp:127.0.0.1:{callee}"
    ranges: ["+862131771200-+862131771299"]
    identity: {{display_name: strip}}
    answers: {{detail: full}}
    responses:
      caller_not_allocated: {{code: 404}}
  - name: bj
    sources: ["127.0.0.1:{bj}"]
    route: "udp:127.0.0.1:{callee}"
    ranges: ["+861058001000-+861058001999"]
    monitor_rules: [caller_of_other_trunk]
    responses:
      identity_mismatch: {{code: 603, reason: "Caller ID Modified"}}
  - name: intl
    kind: international
    home_cli: anonymize
    sources: ["127.0.0.1:{intl}"]
    route: "udp:127.0.0.1:{callee}"
    ranges: ["*"]
  - name: abroad
    kind: international
    sources: ["127.0.0.1:{abroad}"]
    route: "udp:127.0.0.1:{callee}"
    ranges: ["*"]
"""
# The longest wait for one answer: generous, never reached when it works.
WAIT = 5.0


@dataclass(frozen=True)
class Case:
    """One call and the outcome it must get from both."""

    name: str
    trunk: str | None  # None: a source of no trunk
    from_: str
    expected: tuple[str, int | None, str | None]  # verdict, code, rule
    pai: str | None = None
    privacy: str | None = None
    callee: str = "13900139000"


CASES = [
    Case("allowed", "sh", '"Sales" <sip:+862131771234@127.0.0.1>', ("allow", None, None)),
    Case(
        "withheld, asserted",
        "sh",
        "<sip:anonymous@anonymous.invalid>",
        ("allow", None, None),
        pai="<sip:+862131771250@127.0.0.1>",
        privacy="id",
    ),
    Case(
        "missing caller ID",
        "sh",
        "<sip:anonymous@anonymous.invalid>",
        ("reject", 403, "missing_caller_id"),
    ),
    Case("not a number", "sh", "<sip:abc@127.0.0.1>", ("reject", 403, "invalid_caller_id")),
    Case("service number", "sh", "<sip:4008100000@127.0.0.1>", ("reject", 403, "do_not_originate")),
    Case("suspended", "sh", "<sip:+862131771260@127.0.0.1>", ("reject", 403, "suspended_number")),
    Case(
        "home number from abroad",
        "abroad",
        "<sip:+862131771234@127.0.0.1>",
        ("reject", 403, "home_cli_from_abroad"),
    ),
    Case(
        "modified caller ID, configured 603",
        "bj",
        "<sip:+861058001234@127.0.0.1>",
        ("reject", 603, "identity_mismatch"),
        pai="<sip:+861058001250@127.0.0.1>",
    ),
    Case(
        "numeric display name",
        "bj",
        '"13912345678" <sip:+861058001234@127.0.0.1>',
        ("reject", 403, "display_name_spoof"),
    ),
    Case(
        "numeric display name, stripped",
        "sh",
        '"13912345678" <sip:+862131771234@127.0.0.1>',
        ("allow", None, None),
    ),
    Case(
        "pass-through, full answers",
        "sh",
        "<sip:+861058001234@127.0.0.1>",
        ("reject", 403, "caller_of_other_trunk"),
    ),
    Case(
        "not allocated, configured 404",
        "sh",
        "<sip:+862131779999@127.0.0.1>",
        ("reject", 404, "caller_not_allocated"),
    ),
    Case(
        "monitored pass-through",
        "bj",
        "<sip:+862131771234@127.0.0.1>",
        ("allow", None, "caller_of_other_trunk"),
    ),
    Case(
        "home number anonymized",
        "intl",
        '"Home" <sip:+862131771234@127.0.0.1>',
        ("allow", None, None),
    ),
    Case("foreign number", "intl", "<sip:+442079460000@127.0.0.1>", ("allow", None, None)),
    Case(
        "emergency call, forged caller",
        "sh",
        "<sip:+862131779999@127.0.0.1>",
        ("allow", None, "caller_not_allocated"),
        callee="110",
    ),
    Case(
        "emergency call, no caller ID",
        "sh",
        "<sip:anonymous@anonymous.invalid>",
        ("allow", None, "missing_caller_id"),
        callee="110",
    ),
    Case(
        "unknown source", None, "<sip:+862131771234@127.0.0.1>", ("reject", 404, "unknown_source")
    ),
]


class _Endpoint(asyncio.DatagramProtocol):
    """A UDP socket that keeps what it receives; as the callee, it answers
    every INVITE 486 so that no call stays up."""

    def __init__(self, *, callee: bool = False) -> None:
        self.callee = callee
        self.messages: list[Request | Response] = []
        self.arrived = asyncio.Event()
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        message = parse_message(data)
        self.messages.append(message)
        self.arrived.set()
        if self.callee and isinstance(message, Request) and message.method == "INVITE":
            assert self.transport is not None
            self.transport.sendto(to_bytes(build_response(message, 486, to_tag="busy")), addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])


async def _open(*, callee: bool = False) -> _Endpoint:
    loop = asyncio.get_running_loop()
    transport, endpoint = await loop.create_datagram_endpoint(
        lambda: _Endpoint(callee=callee), local_addr=(HOST, 0)
    )
    endpoint.transport = transport
    return endpoint


@dataclass
class _Path:
    server: Server
    callee: _Endpoint
    trunks: dict[str | None, _Endpoint]
    rules_path: Path
    audit_path: Path

    @property
    def port(self) -> int:
        return next(int(a.rsplit(":", 1)[1]) for a in self.server.listening if a.startswith("udp"))


@pytest.fixture
async def path(tmp_path: Path) -> AsyncIterator[_Path]:
    callee = await _open(callee=True)
    trunks: dict[str | None, _Endpoint] = {name: await _open() for name in TRUNKS}
    trunks[None] = await _open()  # a source of no trunk
    rules_path = tmp_path / "rules.yaml"
    audit_path = tmp_path / "decisions.jsonl"
    ports = {name: trunks[name].port for name in TRUNKS}
    rules_path.write_text(RULES.format(callee=callee.port, audit_log=audit_path, **ports))
    server = Server(load_rules(rules_path), ServerOptions(rules_path=rules_path, watch_rules=False))
    await server.start()
    yield _Path(server, callee, trunks, rules_path, audit_path)
    await server.close()
    for endpoint in (callee, *trunks.values()):
        assert endpoint.transport is not None
        endpoint.transport.close()


def _explain(path: _Path, case: Case, capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    port = path.trunks[case.trunk].port
    argv = ["explain", "--rules", str(path.rules_path), "--source", f"{HOST}:{port}"]
    argv += ["--from", case.from_, "--to", f"sip:{case.callee}@{HOST}", "--json"]
    if case.pai is not None:
        argv += ["--pai", case.pai]
    if case.privacy is not None:
        argv += ["--privacy", case.privacy]
    assert main(argv) == 0
    result: dict[str, object] = json.loads(capsys.readouterr().out)
    return result


def _invite(index: int, case: Case, port: int) -> bytes:
    extra = ""
    if case.pai is not None:
        extra += f"P-Asserted-Identity: {case.pai}\r\n"
    if case.privacy is not None:
        extra += f"Privacy: {case.privacy}\r\n"
    return (
        f"INVITE sip:{case.callee}@{HOST} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bKdiff{index};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: {case.from_};tag=f{index}\r\n"
        f"To: <sip:{case.callee}@{HOST}>\r\n"
        f"Call-ID: diff-{index}\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@{HOST}:{port}>\r\n"
        f"X-Case: {index}\r\n"
        f"{extra}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


@dataclass(frozen=True)
class _Outcome:
    """What the wire showed: the callee's INVITE, or sipguard's final answer."""

    relayed: Request | None = None
    answer: Response | None = None


async def _outcome(path: _Path, index: int, trunk: _Endpoint) -> _Outcome:
    """The first of: the INVITE of case `index` reaching the callee, or a
    final answer to it from sipguard (bounded by WAIT)."""

    def found() -> _Outcome | None:
        for message in path.callee.messages:
            if isinstance(message, Request) and message.headers.get("x-case") == str(index):
                return _Outcome(relayed=message)
        for message in trunk.messages:
            if (
                isinstance(message, Response)
                and message.call_id == f"diff-{index}"
                and message.status >= 200
            ):
                return _Outcome(answer=message)
        return None

    async with asyncio.timeout(WAIT):
        while (outcome := found()) is None:
            arrivals = [path.callee.arrived, trunk.arrived]
            for event in arrivals:
                event.clear()
            waits = [asyncio.create_task(event.wait()) for event in arrivals]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for wait in waits:
                    wait.cancel()
    return outcome


def _audit(path: _Path, call_id: str) -> dict[str, object]:
    """The decision record of `call_id` (written before its datagrams left)."""
    lines = path.audit_path.read_text("utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    (record,) = [r for r in records if r["event"] == "decision" and r["call_id"] == call_id]
    return record


def _without_tag(value: str) -> str:
    name_addr = parse_name_addr(value)
    return str(name_addr.with_params(tuple(p for p in name_addr.params if p[0] != "tag")))


async def test_explain_says_what_the_server_does(
    path: _Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert len(CASES) >= 12
    for index, case in enumerate(CASES):
        told = _explain(path, case, capsys)
        trunk = path.trunks[case.trunk]
        assert trunk.transport is not None
        trunk.transport.sendto(_invite(index, case, trunk.port), (HOST, path.port))
        seen = await _outcome(path, index, trunk)
        where = (case.name, told)

        assert (told["verdict"], told["code"], told["rule"]) == case.expected, where
        if seen.relayed is not None:
            relayed = seen.relayed
            assert told["verdict"] == "allow", where
            assert _audit(path, f"diff-{index}")["rule"] == told["rule"], where
            assert told["from"] == _without_tag(relayed.headers.get("from") or ""), where
            pai = ", ".join(relayed.headers.get_all("p-asserted-identity")) or None
            assert told["pai"] == pai, where
            assert told["privacy"] == relayed.headers.get("privacy"), where
            verstat = re.search(r";verstat=([^;@>]+)", pai or "")
            assert told["verstat"] == (verstat.group(1) if verstat else None), where
        else:
            answer = seen.answer
            assert answer is not None
            assert told["verdict"] == "reject", (where, answer)
            assert (told["code"], told["phrase"]) == (answer.status, answer.reason), where
            assert told["reason_header"] == answer.headers.get("reason"), where
            assert told["warning"] == answer.headers.get("warning"), where
            reason = re.search(r'text="([^"]*)"', answer.headers.get("reason") or "")
            assert reason is not None and told["rule"] == reason.group(1), where
            record = _audit(path, f"diff-{index}")
            assert (record["rule"], record["reason"]) == (told["rule"], told["reason"]), where
    assert path.server.internal_errors == 0
