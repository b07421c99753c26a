"""`sipguard trace`: every audit record of a number or a Call-ID, as a timeline.

The trail is the live file and its rotated, gzipped siblings
(`<name>.<UTC time>.gz`, see `sipguard.audit`); they are read oldest first,
so the records come out in time order. A query is a Call-ID (inbound or
outbound) or a number in any written form (`+86 21 3177 1234`,
`02131771234` matches `+862131771234` by its trailing digits). A number
finds the decisions in which it is the caller or the callee (or appears in
From or P-Asserted-Identity), and then every record of those calls,
their ends included.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

__all__ = ["TraceQuery", "audit_files", "format_record", "read_records", "trace"]

Record = dict[str, object]

# A number query matches a recorded number ending with at least this many of
# its digits (national forms against E.164); shorter queries must match whole.
_MIN_SUFFIX_DIGITS = 7


def audit_files(path: Path) -> list[Path]:
    """The trail's files, oldest first: rotated ones by their stamp, then the live one."""
    rotated = sorted(path.parent.glob(f"{path.name}.*.gz"))
    return [*rotated, *([path] if path.exists() else [])]


def read_records(files: Iterable[Path]) -> Iterator[tuple[Path, int, Record]]:
    """Every record of `files`, with its file and line; unreadable lines are skipped."""
    for path in files:
        opener: TextIO
        if path.suffix == ".gz":
            opener = gzip.open(path, "rt", encoding="utf-8")
        else:
            opener = open(path, encoding="utf-8")  # noqa: SIM115
        with opener as lines:
            for number, line in enumerate(lines, 1):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield path, number, record


@dataclass(frozen=True, slots=True)
class TraceQuery:
    """What to look for: Call-IDs as written, numbers by their digits."""

    texts: tuple[str, ...]

    def digits(self) -> list[str]:
        found = []
        for text in self.texts:
            digits = "".join(char for char in text if char.isdigit())
            if digits and all(char.isdigit() or char in "+-(). " for char in text):
                found.append(digits.lstrip("0") or digits)
        return found

    def matches_number(self, record: Record) -> bool:
        wanted = self.digits()
        if not wanted:
            return False
        for key in ("caller", "callee"):
            value = record.get(key)
            if isinstance(value, str) and _same_number(value, wanted):
                return True
        long_enough = [digits for digits in wanted if len(digits) >= _MIN_SUFFIX_DIGITS]
        for key in ("from", "pai"):
            value = record.get(key)
            if isinstance(value, str) and any(d in _digits(value) for d in long_enough):
                return True
        return False

    def matches_call(self, record: Record) -> bool:
        ids = set(self.texts)
        return record.get("call_id") in ids or record.get("out_call_id") in ids


def trace(records: Iterable[tuple[Path, int, Record]], query: TraceQuery) -> list[Record]:
    """The records of `query`'s numbers and calls, in trail order."""
    kept: list[Record] = []
    calls: set[object] = set()
    pending: list[Record] = []
    for _, _, record in records:
        if query.matches_call(record) or query.matches_number(record):
            calls.add(record.get("call_id"))
            kept.append(record)
        elif record.get("call_id") in calls:
            kept.append(record)
        elif record.get("event") == "end":
            pending.append(record)  # an end written before its decision was seen (rare)
    kept += [record for record in pending if record.get("call_id") in calls]
    return kept


def format_record(record: Record) -> str:
    """One readable timeline line."""
    ts = str(record.get("ts", "?"))
    call = f"call-id={record.get('call_id')}"
    if record.get("event") == "end":
        ringing = record.get("ringing_for")
        rang = f" rang={ringing}s" if ringing is not None else ""
        talk = record.get("talk_time")
        if talk is not None:
            rang += f" answer_after={record.get('answer_after')}s talk={talk}s"
        return (
            f"{ts}  end       status={record.get('status')} by={record.get('ended_by')} "
            f"duration={record.get('duration')}s{rang}  trunk={record.get('trunk')}  {call}"
        )
    verdict = str(record.get("verdict", "?"))
    outcome = verdict if record.get("rule") is None else f"{verdict} {record.get('rule')}"
    if record.get("code") is not None:
        outcome += f" {record.get('code')}"
    if record.get("anonymized"):
        outcome += " anonymized"
    caller = record.get("caller") or record.get("from") or "?"
    callee = record.get("callee") or "?"
    return (
        f"{ts}  decision  {outcome:<34} {caller} -> {callee}  trunk={record.get('trunk') or '-'}  "
        f"source={record.get('source')}  {call}"
    )


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def _same_number(value: str, wanted: list[str]) -> bool:
    digits = _digits(value)
    for query in wanted:
        if digits == query:
            return True
        if len(query) >= _MIN_SUFFIX_DIGITS and digits.endswith(query):
            return True
    return False
