"""Torture messages (RFC 4475 classes) fed from a trunk source into the core.

Each message lives in tests/data/torture/; cases.toml there gives its exact
expected outcome: relayed to the callee with the body unchanged, answered
with one response (status and a reason naming the problem), or dropped with
nothing sent. Whatever the outcome, no call or transaction state is left once
the timers have run, and the core still answers an OPTIONS.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from sipguard.events import Transmit
from sipguard.sip.message import Request
from sipguard.sip.parser import parse_message
from tests.helpers import CALLEE, CALLER, CorePair

pytestmark = pytest.mark.unit

TORTURE_DIR = Path(__file__).resolve().parent.parent / "data" / "torture"


@dataclass(frozen=True)
class TortureCase:
    name: str
    data: bytes
    outcome: str  # "relay", "respond" or "drop"
    status: int | None
    reason: tuple[str, ...]

    @property
    def declared_body(self) -> bytes:
        """The body as the sender declared it (cut at Content-Length)."""
        data = self.data.lstrip(b"\r\n")
        head, _, rest = data.partition(b"\r\n\r\n")
        found = re.search(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*(\d+)[ \t]*$", head)
        return rest[: int(found.group(1))] if found else rest

    @property
    def header_value(self) -> dict[str, str]:
        """Header values of the message, by lower-case name (last one wins)."""
        head = self.data.lstrip(b"\r\n").partition(b"\r\n\r\n")[0].decode()
        unfolded = re.sub(r"\r\n[ \t]+", " ", head)
        values: dict[str, str] = {}
        for line in unfolded.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            values[name.strip().lower()] = value.strip()
        return values


def load_data(path: Path) -> bytes:
    """A .bin file as stored; a .sip file with its LF line ends made CRLF."""
    raw = path.read_bytes()
    if path.suffix == ".bin":
        return raw
    assert b"\r" not in raw, f"{path.name}: .sip files are stored with LF line ends"
    return raw.replace(b"\n", b"\r\n")


def load_cases() -> list[TortureCase]:
    table = tomllib.loads((TORTURE_DIR / "cases.toml").read_text())["cases"]
    cases = []
    for name, spec in table.items():
        cases.append(
            TortureCase(
                name=name,
                data=load_data(TORTURE_DIR / spec["file"]),
                outcome=spec["outcome"],
                status=spec.get("status"),
                reason=tuple(spec.get("reason", ())),
            )
        )
    return cases


CASES = load_cases()


def status_line(data: bytes) -> tuple[int, str]:
    """(status, reason) of a response's bytes, without needing it to parse."""
    first = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    match = re.fullmatch(r"SIP/2\.0 (\d{3}) (.*)", first)
    assert match, f"not a status line: {first!r}"
    return int(match.group(1)), match.group(2)


def reason_mentions(reason: str, words: tuple[str, ...]) -> bool:
    return any(word.lower() in reason.lower() for word in words)


OPTIONS_PROBE = (
    b"OPTIONS sip:10.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.1.0.5:5071;branch=z9hG4bK-after-torture;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"From: <sip:probe@10.1.0.5>;tag=probe\r\n"
    b"To: <sip:10.0.0.1>\r\n"
    b"Call-ID: after-torture@10.1.0.5\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def _feed(pair: CorePair, data: bytes, *, now: float) -> list[Transmit]:
    pair.core.receive_datagram(data, CALLER, now=now)
    return pair.core.datagrams_to_send()


def test_every_torture_file_has_a_case() -> None:
    listed = {case.name for case in CASES}
    stored = {p.stem for p in TORTURE_DIR.iterdir() if p.suffix in (".sip", ".bin")}
    assert listed == stored
    assert {case.outcome for case in CASES} == {"relay", "respond", "drop"}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_torture_message_has_its_exact_outcome(case: TortureCase) -> None:
    pair = CorePair()
    sent = _feed(pair, case.data, now=0.0)
    to_caller = [t.data for t in sent if t.peer == CALLER]
    to_callee = [t.data for t in sent if t.peer == CALLEE]
    elsewhere = [t for t in sent if t.peer not in (CALLER, CALLEE)]
    assert elsewhere == []

    if case.outcome == "drop":
        assert sent == [], f"expected silence, got {[status_line(d) for d in to_caller]}"
    elif case.outcome == "respond":
        assert to_callee == []
        assert [status_line(d)[0] for d in to_caller] == [case.status]
        reason = status_line(to_caller[0])[1]
        assert reason_mentions(reason, case.reason), (
            f"reason {reason!r} mentions none of {case.reason}"
        )
    else:
        assert case.outcome == "relay"
        assert [status_line(d)[0] for d in to_caller] == [100]
        assert len(to_callee) == 1
        relayed = parse_message(to_callee[0])
        assert isinstance(relayed, Request) and relayed.method == "INVITE"
        assert relayed.body == case.declared_body
        assert relayed.headers.get("content-type") == case.header_value.get(
            "content-type", case.header_value.get("c")
        )

    pair.run_until(10_000.0)
    pair.core.datagrams_to_send()
    assert (pair.core.calls_active, pair.core.transaction_count) == (0, 0)

    answer = _feed(pair, OPTIONS_PROBE, now=10_001.0)
    assert [(t.peer, status_line(t.data)[0]) for t in answer] == [(CALLER, 200)]


def test_all_torture_messages_in_a_row_leave_nothing_behind() -> None:
    pair = CorePair()
    for index, case in enumerate(CASES):
        _feed(pair, case.data, now=float(index))
    pair.run_until(10_000.0)
    pair.core.datagrams_to_send()
    assert (pair.core.calls_active, pair.core.transaction_count) == (0, 0)
    answer = _feed(pair, OPTIONS_PROBE, now=10_001.0)
    assert [(t.peer, status_line(t.data)[0]) for t in answer] == [(CALLER, 200)]
