"""What a running server answers a trunk: real UDP on 127.0.0.1, in process.

- Hostile identity headers (percent-escaped CR, LF and NUL, quotes,
  backslashes, non-ASCII text) get exactly one answer each, which
  sipguard's own parser reads, and never an internal error, retransmissions
  included, whether the trunk's answers are `full` or `rule`.
- By default a refusal names neither another customer's trunk nor the
  software; the log and the audit trail have the full explanation.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipguard.rules.loader import load_rules
from sipguard.server import Server, ServerOptions
from sipguard.sip.message import Response
from sipguard.sip.parser import parse_message
from sipguard.sip.uri import split_list

pytestmark = pytest.mark.integration

RULES = """\
version: 1
numbering: {{country_code: "86"}}
listen: ["udp:127.0.0.1:0"]
audit_log: "{audit_log}"
trunks:
  - name: sh
    sources: ["127.0.0.1:{trunk_port}"]
    route: "udp:127.0.0.1:{callee_port}"
    ranges: ["+862131771200-+862131771299"]
    answers: {{detail: {detail}}}
  - name: bj
    sources: ["127.0.0.2"]
    route: "udp:127.0.0.1:{callee_port}"
    ranges: ["+861058001000-+861058001999"]
"""
# How long the answers to one round may take to come: generous, since the
# round ends on a marker (`_answers`), not on a quiet spell.
ROUND_TIMEOUT = 10.0


class _Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.put_nowait(data)


async def _open() -> tuple[asyncio.DatagramTransport, _Socket]:
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(_Socket, local_addr=("127.0.0.1", 0))


@pytest.fixture
async def trunk() -> AsyncIterator[tuple[asyncio.DatagramTransport, _Socket]]:
    transport, protocol = await _open()
    yield transport, protocol
    transport.close()


@pytest.fixture
def detail() -> str:
    """The sh trunk's answers.detail (tests parametrize it)."""
    return "full"


@pytest.fixture
async def server(
    tmp_path: Path, trunk: tuple[asyncio.DatagramTransport, _Socket], detail: str
) -> AsyncIterator[Server]:
    callee, _ = await _open()  # takes the relayed INVITEs and never answers
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(
        RULES.format(
            trunk_port=trunk[0].get_extra_info("sockname")[1],
            callee_port=callee.get_extra_info("sockname")[1],
            detail=detail,
            audit_log=tmp_path / "decisions.jsonl",
        )
    )
    running = Server(
        load_rules(rules_path), ServerOptions(rules_path=rules_path, watch_rules=False)
    )
    await running.start()
    yield running
    await running.close()
    callee.close()


def _port(server: Server) -> int:
    return next(int(a.rsplit(":", 1)[1]) for a in server.listening if a.startswith("udp"))


def _invite(
    index: int,
    trunk_port: int,
    *,
    uri: str = "sip:13800138000@127.0.0.1",
    from_: str = "<sip:+862131771234@127.0.0.1>",
    to: str = "<sip:13800138000@127.0.0.1>",
    extra: str = "",
) -> bytes:
    return (
        f"INVITE {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{trunk_port};branch=z9hG4bKwire{index};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: {from_};tag=t{index}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: wire-{index}\r\n"
        f"CSeq: 1 INVITE\r\n"
        f"Contact: <sip:caller@127.0.0.1:{trunk_port}>\r\n"
        f"{extra}"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


PAYLOADS = ["%0A", "%0D", "%00", "2131%0D%0AX-Injected:%201", "%22%5C", '"', "\\", "中文"]
PLACES = {
    "from-user": lambda p: {"from_": f"<sip:{p}@127.0.0.1>"},
    "from-display": lambda p: {"from_": f'"{p}" <sip:+862131771234@127.0.0.1>'},
    "pai": lambda p: {"extra": f"P-Asserted-Identity: <sip:{p}@127.0.0.1>\r\n"},
    "ppi": lambda p: {"extra": f"P-Preferred-Identity: <sip:{p}@127.0.0.1>\r\n"},
    "rpid": lambda p: {"extra": f"Remote-Party-ID: <sip:{p}@127.0.0.1>;party=calling\r\n"},
    "to": lambda p: {"uri": "sip:127.0.0.1", "to": f"<sip:{p}@127.0.0.1>"},
    "request-uri": lambda p: {"uri": f"sip:{p}@127.0.0.1"},
}


def _display(payload: str) -> str:
    return payload.replace("\\", "\\\\").replace('"', '\\"')


def _options(index: int, trunk_port: int) -> bytes:
    return (
        f"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{trunk_port};branch=z9hG4bKmark{index};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=m{index}\r\n"
        f"To: <sip:127.0.0.1>\r\n"
        f"Call-ID: marker-{index}\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


async def _answers(
    server: Server, transport: asyncio.DatagramTransport, protocol: _Socket, index: int
) -> dict[str, list[bytes]]:
    """Every datagram that answers what the trunk sent before, by Call-ID.

    The round ends on a marker, not on a quiet spell that a slow machine
    could stretch: an OPTIONS sent last from the same socket. The server
    reads one socket in order and sends from one, and loopback keeps one
    sender's order, so its 200 comes after every answer to what went before
    it, a second answer included.
    """
    transport.sendto(
        _options(index, transport.get_extra_info("sockname")[1]), ("127.0.0.1", _port(server))
    )
    found: dict[str, list[bytes]] = defaultdict(list)
    while True:
        data = await asyncio.wait_for(protocol.received.get(), ROUND_TIMEOUT)
        message = parse_message(data)
        if message.call_id == f"marker-{index}":
            assert isinstance(message, Response) and message.status == 200, data
            return found
        found[message.call_id].append(data)


@pytest.mark.parametrize("detail", ["full", "rule"])
async def test_hostile_identity_headers_get_one_clean_answer_each(
    server: Server, trunk: tuple[asyncio.DatagramTransport, _Socket]
) -> None:
    """Guards against a decoded CR, LF or NUL from an identity header reaching
    the 403: the server logged an internal error and the caller got no
    answer (each retransmission again), or a raw NUL went out."""
    transport, protocol = trunk
    trunk_port = transport.get_extra_info("sockname")[1]
    sent: dict[str, bytes] = {}
    for place, build in PLACES.items():
        for payload in PAYLOADS:
            parts = build(_display(payload) if place == "from-display" else payload)
            data = _invite(len(sent), trunk_port, **parts)
            sent[f"wire-{len(sent)}"] = data
    for round_ in range(2):  # the second round: retransmissions
        for data in sent.values():
            transport.sendto(data, ("127.0.0.1", _port(server)))
        answers = await _answers(server, transport, protocol, round_)
        assert set(answers) == set(sent), set(sent) - set(answers)
        for call_id, datagrams in answers.items():
            assert len(datagrams) == 1, (call_id, datagrams)
            (data,) = datagrams
            head = data.partition(b"\r\n\r\n")[0]
            assert b"\x00" not in head and head.count(b"\n") == head.count(b"\r\n")
            answer = parse_message(data)
            assert isinstance(answer, Response) and answer.status in (100, 403), data
            for value in answer.headers.get_all("warning"):
                (warning,) = split_list(value)
                assert warning.isprintable(), warning
    assert server.internal_errors == 0


@pytest.mark.parametrize("detail", ["rule"])
async def test_a_refusal_tells_the_trunk_the_rule_and_the_operator_everything(
    server: Server,
    trunk: tuple[asyncio.DatagramTransport, _Socket],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Guards against a pass-through's 403 naming another customer's trunk
    or the software (`Warning: 399 sipguard ...`), and against the operator
    losing the explanation when the caller no longer gets it."""
    transport, protocol = trunk
    trunk_port = transport.get_extra_info("sockname")[1]
    caplog.set_level(logging.INFO, logger="sipguard")
    data = _invite(1, trunk_port, from_="<sip:+861058001234@127.0.0.1>")
    transport.sendto(data, ("127.0.0.1", _port(server)))
    answer = await asyncio.wait_for(protocol.received.get(), 5.0)
    message = parse_message(answer)
    assert isinstance(message, Response) and message.status == 403
    assert message.headers.get("warning") == (
        f'399 127.0.0.1:{_port(server)} "caller_of_other_trunk"'
    )
    assert b"bj" not in answer and b"sipguard" not in answer.lower()
    why = "caller number is allocated to another trunk: +861058001234 belongs to trunk 'bj'"
    assert any(why in record.getMessage() for record in caplog.records), caplog.text
    assert server.audit is not None
    server.audit.close()
    lines = (tmp_path / "decisions.jsonl").read_text("utf-8").splitlines()
    (record,) = [json.loads(line) for line in lines]
    assert (record["rule"], record["reason"]) == ("caller_of_other_trunk", why)


@pytest.mark.parametrize("detail", ["rule"])
async def test_options_name_no_software_and_a_reload_changes_what_a_trunk_is_told(
    server: Server,
    trunk: tuple[asyncio.DatagramTransport, _Socket],
    caplog: pytest.LogCaptureFixture,
) -> None:
    transport, protocol = trunk
    trunk_port = transport.get_extra_info("sockname")[1]
    options = _invite(2, trunk_port).replace(b"INVITE", b"OPTIONS")
    transport.sendto(options, ("127.0.0.1", _port(server)))
    answer = await asyncio.wait_for(protocol.received.get(), 5.0)
    message = parse_message(answer)
    assert isinstance(message, Response) and message.status == 200
    assert message.headers.get("server") is None and b"sipguard" not in answer.lower()

    rules_path = server.options.rules_path
    text = rules_path.read_text().replace("detail: rule", "detail: full")
    rules_path.write_text("answers: {warn_agent: edge1}\n" + text)
    assert server.reload() is True
    assert "take effect at the next restart" in caplog.text
    transport.sendto(
        _invite(3, trunk_port, from_="<sip:+861058001234@127.0.0.1>"),
        ("127.0.0.1", _port(server)),
    )
    message = parse_message(await asyncio.wait_for(protocol.received.get(), 5.0))
    assert message.headers.get("warning") == (
        f'399 127.0.0.1:{_port(server)} "caller number is allocated to another trunk: '
        "+861058001234 belongs to trunk 'bj'\""
    ), "detail follows the reload; the warn-agent waits for a restart"


@pytest.mark.parametrize("detail", ["rule"])
async def test_a_configured_code_goes_out_with_its_standard_phrase(
    server: Server, trunk: tuple[asyncio.DatagramTransport, _Socket]
) -> None:
    """Guards against `SIP/2.0 404 Refused`: a code set in `responses` without
    a `reason` is sent with the phrase RFC 3261 §21 gives it."""
    transport, protocol = trunk
    trunk_port = transport.get_extra_info("sockname")[1]
    rules_path = server.options.rules_path
    rules_path.write_text(
        "responses:\n  caller_of_other_trunk: {code: 404}\n" + rules_path.read_text()
    )
    assert server.reload() is True
    data = _invite(4, trunk_port, from_="<sip:+861058001234@127.0.0.1>")
    transport.sendto(data, ("127.0.0.1", _port(server)))
    answer = await asyncio.wait_for(protocol.received.get(), 5.0)
    assert answer.startswith(b"SIP/2.0 404 Not Found\r\n"), answer
    message = parse_message(answer)
    assert message.headers.get("reason") == 'SIP;cause=404;text="caller_of_other_trunk"'
