"""`sipguard trace`: records of a number or Call-ID across rotated, gzipped files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sipguard.audit import AuditLog, AuditSettings
from sipguard.cli import main
from sipguard.events import CallEnded, CallRefused, CallStarted
from sipguard.peer import Peer
from sipguard.trace import TraceQuery, audit_files, format_record, read_records, trace
from tests.helpers import CALLER

pytestmark = pytest.mark.unit

START = 1_795_000_000.0


def allowed(call_id: str, caller: str, callee: str) -> CallStarted:
    return CallStarted("sh-callcenter", CALLER, call_id, f"b-{call_id}", caller, callee, 1.0)


def refused(call_id: str, caller: str, callee: str) -> CallRefused:
    return CallRefused(
        "sh-callcenter",
        Peer("udp", "10.1.0.5", 5071),
        call_id,
        403,
        "caller_not_allocated",
        "Forbidden",
        1.0,
        caller=caller,
        callee=callee,
    )


def ended(call_id: str, caller: str) -> CallEnded:
    return CallEnded(
        "sh-callcenter", call_id, f"b-{call_id}", 200, "caller", True, 1.0, 31.0, caller
    )


@pytest.fixture
def trail(tmp_path: Path) -> Path:
    """Six records, written one by one into a trail that rotates after each two."""
    path = tmp_path / "logs" / "decisions.jsonl"
    clock = [START]
    audit = AuditLog(AuditSettings(path, max_bytes=700), wall_clock=lambda: clock[0])
    audit.start()
    events = [
        allowed("call-1", "+862131771234", "+8613800138000"),
        refused("call-2", "+869521000001", "+8613800138000"),
        allowed("call-3", "+862131779999", "+8613911112222"),
        ended("call-1", "+862131771234"),
        refused("call-4", "+862131771234", "+8613911112222"),
        ended("call-3", "+862131779999"),
    ]
    for event in events:
        clock[0] += 60.0
        audit.add(event)
        audit.flush()
    audit.close()
    assert len(list(path.parent.glob("decisions.jsonl.*.gz"))) >= 2, "the trail rotated"
    return path


def ids(records: list[dict[str, object]]) -> list[tuple[object, object]]:
    return [(r["call_id"], r["event"]) for r in records]


def test_a_number_in_any_form_finds_its_calls_and_their_ends(trail: Path) -> None:
    records = list(read_records(audit_files(trail)))
    expected = [
        ("call-1", "decision"),
        ("call-1", "end"),
        ("call-4", "decision"),
    ]
    for form in ("+862131771234", "0086 21 3177 1234", "021-3177-1234", "862131771234"):
        assert ids(trace(records, TraceQuery((form,)))) == expected, form


def test_a_callee_number_finds_the_calls_to_it(trail: Path) -> None:
    records = list(read_records(audit_files(trail)))
    found = trace(records, TraceQuery(("13911112222",)))
    assert ids(found) == [("call-3", "decision"), ("call-4", "decision"), ("call-3", "end")]


def test_a_call_id_finds_its_decision_and_end_in_time_order(trail: Path) -> None:
    records = list(read_records(audit_files(trail)))
    found = trace(records, TraceQuery(("call-3",)))
    assert ids(found) == [("call-3", "decision"), ("call-3", "end")]
    stamps = [str(r["ts"]) for r in found]
    assert stamps == sorted(stamps)
    assert ids(trace(records, TraceQuery(("b-call-3",)))) == ids(found), "outbound Call-ID too"


def test_a_short_number_does_not_match_by_its_tail(trail: Path) -> None:
    records = list(read_records(audit_files(trail)))
    assert trace(records, TraceQuery(("1234",))) == []


def test_the_command_prints_a_timeline_and_exits_by_what_it_found(
    trail: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trace", "--audit-log", str(trail), "021 3177 1234"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert "decision  allow" in lines[0] and "call-id=call-1" in lines[0]
    assert "end       status=200 by=caller duration=30.0s" in lines[1]
    assert "reject caller_not_allocated 403" in lines[2]
    assert main(["trace", "--audit-log", str(trail), "--json", "call-2"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["rule"] == "caller_not_allocated"
    assert main(["trace", "--audit-log", str(trail), "+449999999999"]) == 1
    assert "no record of +449999999999 in" in capsys.readouterr().out


def test_the_command_finds_the_trail_from_the_rule_file(
    trail: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        f'version: 1\nnumbering: {{country_code: "86"}}\naudit_log: "{trail}"\ntrunks: []\n',
        encoding="utf-8",
    )
    assert main(["trace", "--rules", str(rules), "call-4"]) == 0
    assert "call-id=call-4" in capsys.readouterr().out
    missing = tmp_path / "none.jsonl"
    assert main(["trace", "--audit-log", str(missing), "call-4"]) == 2


def test_a_caller_id_withheld_as_forged_from_abroad_says_so_in_the_timeline() -> None:
    record = {
        "ts": "2026-11-18T11:07:10.000Z",
        "event": "decision",
        "verdict": "allow",
        "rule": None,
        "code": None,
        "caller": "anonymous",
        "callee": "+8613800138000",
        "trunk": "intl-gateway",
        "anonymized": True,
    }
    assert "allow anonymized" in format_record(record)
    assert "anonymized" not in format_record({**record, "anonymized": None})


def test_an_answered_calls_end_shows_its_talk_time() -> None:
    record = {
        "ts": "2026-11-18T11:08:10.000Z",
        "event": "end",
        "status": 200,
        "ended_by": "caller",
        "duration": 32.5,
        "answer_after": 2.5,
        "talk_time": 30.0,
        "trunk": "sh-callcenter",
        "call_id": "call-1",
    }
    line = format_record(record)
    assert "duration=32.5s answer_after=2.5s talk=30.0s  trunk=sh-callcenter" in line
    unanswered = {**record, "talk_time": None, "answer_after": None, "ringing_for": 0.8}
    assert "talk=" not in format_record(unanswered) and "rang=0.8s" in format_record(unanswered)
