"""The audit trail: records, one write per tick, rotation, failures counted."""

from __future__ import annotations

import dataclasses
import errno
import gzip
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipguard.audit import AuditLog, AuditSettings, _timestamp, record_of
from sipguard.events import CallEnded, CallRefused, CallStarted
from sipguard.peer import Peer
from sipguard.sip.message import Request
from sipguard.sip.parser import parse_message
from tests.helpers import CALLER, invite

pytestmark = pytest.mark.unit

WALL = 1_795_000_000.25  # 2026-11-18T...Z


def request() -> Request:
    message = parse_message(
        invite(extra="P-Asserted-Identity: <sip:+862131771234@10.1.0.5;user=phone>\r\n")
    )
    assert isinstance(message, Request)
    return message


def started(call_id: str = "a-1") -> CallStarted:
    return CallStarted(
        "sh-callcenter",
        CALLER,
        call_id,
        "b-1",
        "+862131771234",
        "+8613800138000",
        10.0,
        warnings=("high_frequency_caller",),
        request=request(),
    )


def refused() -> CallRefused:
    return CallRefused(
        "sh-callcenter",
        Peer("tcp", "10.1.0.5", 5071),
        "a-2",
        403,
        "caller_not_allocated",
        "Forbidden",
        11.0,
        caller="+869521000000",
        callee="+8613800138000",
        request=request(),
        detail="caller number is not allocated to this trunk: +869521000000",
    )


def ended(call_id: str = "a-1") -> CallEnded:
    return CallEnded(
        "sh-callcenter",
        call_id,
        "b-1",
        200,
        "callee",
        True,
        10.0,
        72.5,
        caller="+862131771234",
    )


def lines_of(path: Path) -> list[dict[str, object]]:
    """Every record in the live file and its rotated .gz files, oldest file first."""
    records: list[dict[str, object]] = []
    for rotated in sorted(path.parent.glob(f"{path.name}.*.gz")):
        with gzip.open(rotated, "rt", encoding="utf-8") as packed:
            records += [json.loads(line) for line in packed]
    if path.exists():
        records += [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    return records


def test_a_decision_to_allow_names_both_calls_and_both_identities() -> None:
    record = record_of(started(), WALL)
    assert record == {
        "ts": "2026-11-18T11:06:40.250Z",
        "event": "decision",
        "trunk": "sh-callcenter",
        "source": "udp:10.1.0.5:5071",
        "verdict": "allow",
        "rule": None,
        "code": None,
        "call_id": "a-1",
        "out_call_id": "b-1",
        "from": "<sip:+862131771234@10.1.0.5>;tag=caller-tag",
        "pai": "<sip:+862131771234@10.1.0.5;user=phone>",
        "caller": "+862131771234",
        "callee": "+8613800138000",
        "warnings": ["high_frequency_caller"],
    }


def test_an_emergency_bypass_is_marked_and_names_the_rule_it_passed() -> None:
    record = record_of(
        dataclasses.replace(started(), monitor_rule="caller_not_allocated", emergency=True), WALL
    )
    assert (record["verdict"], record["rule"], record["emergency"]) == (
        "allow",
        "caller_not_allocated",
        True,
    )
    assert "emergency" not in record_of(started(), WALL)
    monitored = record_of(dataclasses.replace(started(), monitor_rule="one_ring"), WALL)
    assert (monitored["verdict"], monitored["rule"]) == ("monitor", "one_ring")


def test_a_home_caller_id_from_abroad_relayed_withheld_is_marked_anonymized() -> None:
    record = record_of(dataclasses.replace(started(), caller="anonymous", anonymized=True), WALL)
    assert (record["verdict"], record["rule"], record["caller"]) == ("allow", None, "anonymous")
    assert record["anonymized"] is True
    assert "anonymized" not in record_of(started(), WALL)


def test_a_refusal_names_its_rule_and_code() -> None:
    record = record_of(refused(), WALL)
    assert (record["verdict"], record["rule"], record["code"]) == (
        "reject",
        "caller_not_allocated",
        403,
    )
    assert record["source"] == "tcp:10.1.0.5:5071" and record["out_call_id"] is None
    assert record["caller"] == "+869521000000"


def test_a_strangers_invite_dropped_unanswered_is_recorded_as_dropped() -> None:
    stranger = dataclasses.replace(
        refused(),
        trunk=None,
        status=None,
        rule="unknown_source",
        reason="",
        caller=None,
        callee=None,
        detail="source address matches no trunk; dropped unanswered: unknown_source_answer: drop",
    )
    record = record_of(stranger, WALL)
    assert (record["verdict"], record["rule"], record["code"], record["trunk"]) == (
        "drop",
        "unknown_source",
        None,
        None,
    )
    assert record["reason"].endswith("dropped unanswered: unknown_source_answer: drop")


def test_a_drains_503_is_a_decision_in_the_trail() -> None:
    drained = dataclasses.replace(
        refused(),
        status=503,
        rule="draining",
        reason="Service Unavailable",
        caller=None,
        callee=None,
        detail="this instance is draining and takes no new calls",
    )
    record = record_of(drained, WALL)
    assert (record["verdict"], record["rule"], record["code"], record["trunk"]) == (
        "reject",
        "draining",
        503,
        "sh-callcenter",
    )
    assert record["reason"] == "this instance is draining and takes no new calls"


def test_a_refusal_keeps_its_full_reason_whatever_the_caller_was_told() -> None:
    record = record_of(refused(), WALL)
    assert record["reason"] == "caller number is not allocated to this trunk: +869521000000"
    unexplained = dataclasses.replace(refused(), detail="")
    assert record_of(unexplained, WALL)["reason"] is None


def test_a_refusal_names_the_monitored_rule_that_fired_before_it() -> None:
    assert "monitored" not in record_of(refused(), WALL)
    record = record_of(
        dataclasses.replace(refused(), rule="cps_limit", status=503, noted="display_name_spoof"),
        WALL,
    )
    assert (record["rule"], record["monitored"]) == ("cps_limit", "display_name_spoof")


def test_an_answered_call_end_has_its_answer_time_and_talk_time() -> None:
    """INVITE at 10.0, 2xx relayed at 12.5, end at 72.5: the record is written
    at the end (WALL), so the answer was 60 s before it."""
    record = record_of(dataclasses.replace(ended(), answered_at=12.5), WALL)
    assert record["duration"] == 62.5
    assert record["answer_after"] == 2.5
    assert record["talk_time"] == 60.0
    assert record["answered_at"] == "2026-11-18T11:05:40.250Z"
    assert record["ts"] == "2026-11-18T11:06:40.250Z"
    unanswered = record_of(dataclasses.replace(ended(), answered=False, ringing_for=3.0), WALL)
    assert unanswered["ringing_for"] == 3.0
    assert not {"answered_at", "answer_after", "talk_time"} & set(unanswered)


def test_a_call_end_has_duration_and_who_hung_up() -> None:
    record = record_of(ended(), WALL)
    assert record["event"] == "end" and record["ended_by"] == "callee"
    assert record["duration"] == 62.5 and record["status"] == 200 and record["answered"] is True
    assert "ringing_for" not in record


def test_every_tick_is_written_in_order(tmp_path: Path) -> None:
    """60,000 records in ticks of 1 to 50 records each."""
    audit = AuditLog(AuditSettings(tmp_path / "decisions.jsonl"))
    audit.start()
    expected = []
    for tick in range(2400):
        for index in range(tick % 50 + 1):
            expected.append(f"t{tick}-{index}")
            audit.add(started(expected[-1]))
        audit.flush()
        if len(expected) >= 60_000:
            break
    audit.close()
    records = lines_of(tmp_path / "decisions.jsonl")
    assert [record["call_id"] for record in records] == expected
    assert audit.stats.written == len(expected) and audit.stats.dropped == 0


def test_a_flushed_tick_is_in_the_file_at_once_in_one_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a crash of the process cannot lose: flush hands the records to the
    kernel itself, no thread, no fsync, no close needed to read them back."""
    path = tmp_path / "decisions.jsonl"
    audit = AuditLog(AuditSettings(path, fsync_every=3600.0))
    audit.start()
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr("sipguard.audit.os.write", counting_write)
    for name in ("a", "b", "c"):
        audit.add(started(name))
    assert path.read_bytes() == b"" and audit.stats.pending == 3, "add does no I/O"
    audit.flush()
    assert len(writes) == 1, "one write per tick"
    assert [record["call_id"] for record in lines_of(path)] == ["a", "b", "c"]
    assert audit.stats.pending == 0 and audit.stats.written == 3
    audit.flush()
    assert len(writes) == 1, "a tick without records writes nothing"
    audit.close()


def test_a_short_write_is_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "decisions.jsonl"
    audit = AuditLog(AuditSettings(path))
    audit.start()
    real_write = os.write
    monkeypatch.setattr(
        "sipguard.audit.os.write", lambda fd, data: real_write(fd, bytes(data[:100]))
    )
    audit.add(started("long-1"))
    audit.add(started("long-2"))
    audit.flush()
    monkeypatch.undo()
    audit.close()
    assert [record["call_id"] for record in lines_of(path)] == ["long-1", "long-2"]


def test_rotation_by_size_gzips_and_keeps_every_record(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    audit = AuditLog(AuditSettings(path, max_bytes=4000, keep=1000))
    audit.start()
    for index in range(200):
        audit.add(started(f"c-{index}"))
        if index % 10 == 9:
            audit.flush()  # ticks of ten records
    audit.close()
    rotated = sorted(tmp_path.glob("decisions.jsonl.*.gz"))
    assert len(rotated) >= 3 and audit.stats.rotations == len(rotated)
    assert [r["call_id"] for r in lines_of(path)] == [f"c-{index}" for index in range(200)]
    assert all(p.stat().st_size > 0 for p in rotated)
    assert not list(tmp_path.glob("*.part")), "no half-written archive is left"


def test_rotation_by_age_and_pruning(tmp_path: Path) -> None:
    clock = [WALL]
    path = tmp_path / "decisions.jsonl"
    audit = AuditLog(AuditSettings(path, rotate_every=3600.0, keep=2), wall_clock=lambda: clock[0])
    audit.start()
    for hour in range(5):
        clock[0] = WALL + hour * 3600.0 + hour  # distinct rotation stamps
        audit.add(ended(f"h-{hour}"))
        audit.flush()  # written (and rotated) at this hour
    audit.close()
    assert len(list(tmp_path.glob("decisions.jsonl.*.gz"))) == 2, "only `keep` rotated files"
    assert [r["call_id"] for r in lines_of(path)] == ["h-2", "h-3", "h-4"]


def test_a_rotated_file_a_crash_left_uncompressed_is_compressed_at_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "decisions.jsonl"
    left = tmp_path / "decisions.jsonl.20261118T110640250000Z"
    left.write_text(json.dumps(record_of(started("before-crash"), WALL)) + "\n")
    (tmp_path / "decisions.jsonl.20261118T110640250000Z.gz.part").write_bytes(b"\x1f\x8b")
    (tmp_path / "decisions.jsonl.notes").write_text("not ours")
    audit = AuditLog(AuditSettings(path))
    audit.start()
    audit.add(started("after-restart"))
    audit.flush()
    audit.close()
    assert [r["call_id"] for r in lines_of(path)] == ["before-crash", "after-restart"]
    assert not left.exists() and not list(tmp_path.glob("*.part"))
    assert (tmp_path / "decisions.jsonl.notes").exists(), "other files are left alone"


def test_a_failed_write_is_counted_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "decisions.jsonl"
    audit = AuditLog(AuditSettings(path))
    audit.start()

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("sipguard.audit.os.write", full)
    audit.add(started("lost-1"))
    audit.add(started("lost-2"))
    audit.flush()
    assert audit.stats.write_errors == 1 and audit.stats.dropped == 2
    monkeypatch.undo()  # the disk has room again: the next tick is written
    audit.add(started("kept"))
    audit.flush()
    audit.close()
    assert [r["call_id"] for r in lines_of(path)] == ["kept"]
    assert audit.stats.written == 1


def test_a_failed_rotation_keeps_writing_the_live_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "decisions.jsonl"
    audit = AuditLog(AuditSettings(path, max_bytes=100))
    audit.start()

    def refuse(self: Path, target: Path) -> Path:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(Path, "rename", refuse)
    for index in range(3):
        audit.add(started(f"r-{index}"))
        audit.flush()
    monkeypatch.undo()
    audit.close()
    assert [r["call_id"] for r in lines_of(path)] == ["r-0", "r-1", "r-2"]
    assert audit.stats.rotations == 0 and audit.stats.write_errors == 1, "retried later"


def test_records_added_after_close_are_counted_as_dropped(tmp_path: Path) -> None:
    audit = AuditLog(AuditSettings(tmp_path / "decisions.jsonl"))
    audit.start()
    audit.close()
    audit.add(started("late"))
    audit.flush()
    assert audit.stats.dropped == 1 and audit.stats.written == 0


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_timestamps_are_the_iso_form_of_the_wall_clock(wall: float) -> None:
    expected = datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")
    assert _timestamp(wall) == expected.replace("+00:00", "Z")
