"""The audit trail: records, a writer that loses nothing, rotation, bounded queue."""

from __future__ import annotations

import dataclasses
import gzip
import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipguard.audit import AuditLog, AuditSettings, _timestamp, record_of
from sipguard.b2bua import CallEnded, CallRefused, CallStarted
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


def test_a_refusal_names_its_rule_and_code() -> None:
    record = record_of(refused(), WALL)
    assert (record["verdict"], record["rule"], record["code"]) == (
        "reject",
        "caller_not_allocated",
        403,
    )
    assert record["source"] == "tcp:10.1.0.5:5071" and record["out_call_id"] is None
    assert record["caller"] == "+869521000000"


def test_a_refusal_keeps_its_full_reason_whatever_the_caller_was_told() -> None:
    record = record_of(refused(), WALL)
    assert record["reason"] == "caller number is not allocated to this trunk: +869521000000"
    unexplained = dataclasses.replace(refused(), detail="")
    assert record_of(unexplained, WALL)["reason"] is None


def test_a_call_end_has_duration_and_who_hung_up() -> None:
    record = record_of(ended(), WALL)
    assert record["event"] == "end" and record["ended_by"] == "callee"
    assert record["duration"] == 62.5 and record["status"] == 200 and record["answered"] is True
    assert "ringing_for" not in record


def test_the_writer_loses_nothing_under_load(tmp_path: Path) -> None:
    """Two threads submit 30,000 events each while the writer writes."""
    audit = AuditLog(AuditSettings(tmp_path / "decisions.jsonl", flush_every=0.01))
    audit.start()

    def flood(prefix: str) -> None:
        for index in range(30_000):
            audit.submit(started(f"{prefix}-{index}"))

    threads = [threading.Thread(target=flood, args=(name,)) for name in ("x", "y")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    audit.close()
    records = lines_of(tmp_path / "decisions.jsonl")
    assert len(records) == 60_000
    assert {record["call_id"] for record in records} == {
        f"{prefix}-{index}" for prefix in ("x", "y") for index in range(30_000)
    }
    assert audit.stats.written == 60_000 and audit.stats.dropped == 0


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    audit = AuditLog(AuditSettings(tmp_path / "decisions.jsonl", queue_limit=10))
    for index in range(15):
        audit.submit(started(f"c-{index}"))  # the writer is not running yet
    assert audit.stats.dropped == 5 and audit.stats.queued == 10
    audit.start()
    audit.close()
    assert [r["call_id"] for r in lines_of(tmp_path / "decisions.jsonl")] == [
        f"c-{index}" for index in range(10)
    ]


def test_rotation_by_size_gzips_and_keeps_every_record(tmp_path: Path) -> None:
    path = tmp_path / "decisions.jsonl"
    audit = AuditLog(AuditSettings(path, max_bytes=4000, flush_every=0.01, keep=1000))
    audit.start()
    for index in range(200):
        audit.submit(started(f"c-{index}"))
        if index % 10 == 9:
            audit._wake.set()  # write in small batches, as live traffic would
            while audit.stats.written < index + 1:
                time.sleep(0.001)
    audit.close()
    rotated = sorted(tmp_path.glob("decisions.jsonl.*.gz"))
    assert len(rotated) >= 3 and audit.stats.rotations == len(rotated)
    assert [r["call_id"] for r in lines_of(path)] == [f"c-{index}" for index in range(200)]
    assert all(p.stat().st_size > 0 for p in rotated)


def test_rotation_by_age_and_pruning(tmp_path: Path) -> None:
    clock = [WALL]
    path = tmp_path / "decisions.jsonl"
    audit = AuditLog(
        AuditSettings(path, rotate_every=3600.0, keep=2, flush_every=0.01),
        wall_clock=lambda: clock[0],
    )
    audit.start()
    for hour in range(5):
        clock[0] = WALL + hour * 3600.0 + hour  # distinct rotation stamps
        audit.submit(ended(f"h-{hour}"))
        audit._wake.set()
        while audit.stats.written < hour + 1:  # written (and rotated) at this hour
            time.sleep(0.001)
    audit.close()
    assert len(list(tmp_path.glob("decisions.jsonl.*.gz"))) == 2, "only `keep` rotated files"
    assert [r["call_id"] for r in lines_of(path)] == ["h-2", "h-3", "h-4"]


def test_an_unwritable_file_is_counted_not_raised(tmp_path: Path) -> None:
    audit = AuditLog(AuditSettings(tmp_path / "decisions.jsonl"))
    audit.start()
    audit._file.close()  # as if the disk went away
    audit.submit(started())
    audit.close()
    assert audit.stats.write_errors >= 1 and audit.stats.written == 0


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_timestamps_are_the_iso_form_of_the_wall_clock(wall: float) -> None:
    expected = datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")
    assert _timestamp(wall) == expected.replace("+00:00", "Z")
