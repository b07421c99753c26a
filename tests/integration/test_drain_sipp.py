"""SIGTERM drains: live calls finish, new calls go elsewhere, the process exits 0.

Real processes on 127.0.0.1: SIPp callers from two source ports of one
trunk -> ``sipguard run`` -> a SIPp UAS.

- Calls up at SIGTERM finish normally (the caller's BYE after its hold is
  relayed and answered), while new calls and OPTIONS health checks from the
  trunk get 503 + Retry-After; sipguard then exits 0 by itself with
  ``active_calls=0``, well before its drain timeout.
- Calls still up at the drain deadline are hung up (BYE to both sides,
  which both answer), and sipguard exits 0 with nothing left.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.sipp import (
    HOST,
    Sipguard,
    SippServer,
    free_ports,
    limits_rules_text,
    options_ping,
    shutdown_summary,
    sipp_available,
    start_sipguard,
    start_uac,
    start_uas,
    wait_for_log,
)

pytestmark = [pytest.mark.integration, pytest.mark.sipp]


@dataclass
class DrainPath:
    sipguard: Sipguard
    uas: SippServer
    caller_port: int
    probe_port: int
    workdir: Path


@pytest.fixture
def drain_path(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DrainPath]:
    if not sipp_available():
        pytest.fail("SIPp is not on PATH: install it (Debian package sip-tester; `make setup`)")
    drain_timeout: float = request.param
    listen, other, uas_port, caller_port, probe_port = free_ports(5)
    uas = start_uas("uas.xml", port=uas_port, transport="udp", workdir=tmp_path / "uas")
    with contextlib.ExitStack() as stack:
        stack.callback(uas.stop, timeout=2.0)
        rules = tmp_path / "rules.yaml"
        audit = tmp_path / "audit" / "decisions.jsonl"
        rules.write_text(
            limits_rules_text(
                listen_port=listen,
                trunk_ports=[caller_port, probe_port],
                other_trunk_port=other,
                uas_port=uas_port,
            )
            + f'audit_log: "{audit}"\n',
            encoding="utf-8",
        )
        guard = start_sipguard(
            rules,
            port=listen,
            workdir=tmp_path / "sipguard",
            extra_args=["--drain-timeout", str(drain_timeout)],
        )
        stack.callback(guard.stop)
        yield DrainPath(guard, uas, caller_port, probe_port, tmp_path)


def invite_status(path: DrainPath) -> int | None:
    """Send one INVITE from the trunk's probe port; the first final status.

    A 503 must name its cause, as a rule's refusal does (Reason, RFC 3326).
    """
    port = path.probe_port
    request = (
        f"INVITE sip:+8613900139000@{HOST}:{path.sipguard.port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {HOST}:{port};branch=z9hG4bK-drain;rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:+862131771234@{HOST}:{port}>;tag=drain\r\n"
        f"To: <sip:+8613900139000@{HOST}:{path.sipguard.port}>\r\n"
        "Call-ID: drain-probe\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:probe@{HOST}:{port}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, port))
        sock.settimeout(3.0)
        sock.sendto(request, (HOST, path.sipguard.port))
        while True:
            data = sock.recv(65535)
            status = int(data.split(b" ", 2)[1])
            if status == 503:
                assert b'\r\nReason: SIP;cause=503;text="draining"\r\n' in data, data
            if status >= 200:
                return status


def audit_records(path: DrainPath) -> list[dict[str, object]]:
    lines = (path.workdir / "audit" / "decisions.jsonl").read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines]


def wait_exit(guard: Sipguard, timeout: float) -> int | None:
    try:
        return guard.process.wait(timeout=timeout)
    except Exception:
        return None


@pytest.mark.parametrize("drain_path", [20.0], indirect=True)
def test_live_calls_finish_and_new_calls_get_503(drain_path: DrainPath) -> None:
    path = drain_path
    caller = start_uac(
        "uac_hold_then_bye.xml",
        target_port=path.sipguard.port,
        local_port=path.caller_port,
        transport="udp",
        calls=3,
        rate=10,
        workdir=path.workdir / "caller",
        extra_args=["-d", "3000", "-l", "3"],
    )
    try:
        # The three calls are admitted (each is then held 3 s after its answer).
        assert wait_for_log(path.sipguard, "allow   trunk=", count=3), path.sipguard.describe()
        assert options_ping(path.sipguard.port, source_port=path.probe_port) == 200
        path.sipguard.process.send_signal(signal.SIGTERM)
        assert wait_for_log(path.sipguard, "draining: 3 live call(s)"), path.sipguard.describe()
        assert options_ping(path.sipguard.port, source_port=path.probe_port) == 503
        assert invite_status(path) == 503
        run = caller.wait()
    finally:
        caller.stop()
    assert run.returncode == 0 and run.stats.successful_calls == 3, path.sipguard.describe()
    assert run.stats.failed_calls == 0
    started = time.monotonic()
    status = wait_exit(path.sipguard, 10.0)
    assert status == 0, path.sipguard.describe()
    assert time.monotonic() - started < 5.0, "it stopped once the calls ended, not at 20 s"
    summary = shutdown_summary(path.sipguard)
    assert summary is not None and summary["active_calls"] == 0, path.sipguard.describe()
    assert "drain deadline" not in path.sipguard.stderr
    uas = path.uas.stop()
    assert uas.stats.received("BYE") == 3 and uas.stats.successful_calls == 3
    # Nothing decided is lost: the trail was written and fsynced before exit.
    records = audit_records(path)
    decisions = [r for r in records if r["event"] == "decision"]
    ends = [r for r in records if r["event"] == "end"]
    allowed = [r for r in decisions if r["verdict"] == "allow"]
    assert len(allowed) == 3, records
    # The INVITE refused while draining is a decision too, naming the drain.
    (drained,) = [r for r in decisions if r["verdict"] != "allow"]
    assert (drained["verdict"], drained["rule"], drained["code"], drained["call_id"]) == (
        "reject",
        "draining",
        503,
        "drain-probe",
    ), drained
    assert sorted(r["call_id"] for r in ends) == sorted(r["call_id"] for r in allowed)
    assert all(r["ended_by"] == "caller" and r["duration"] >= 3.0 for r in ends), ends
    # The caller held each call 3 s after its answer: that is its talk time.
    for end in ends:
        assert end["answered"] and 2.99 <= end["talk_time"] < end["duration"], end
        assert abs(end["answer_after"] + end["talk_time"] - end["duration"]) <= 0.002, end
    assert "audit log" in path.sipguard.stderr and "written=7 dropped=0" in path.sipguard.stderr
    assert "reject  503 draining trunk=" in path.sipguard.stderr


@pytest.mark.parametrize("drain_path", [1.0], indirect=True)
def test_calls_still_up_at_the_deadline_are_hung_up(drain_path: DrainPath) -> None:
    path = drain_path
    # uac_callee_hangup.xml waits for the far end's BYE: here sipguard's.
    caller = start_uac(
        "uac_callee_hangup.xml",
        target_port=path.sipguard.port,
        local_port=path.caller_port,
        transport="udp",
        calls=2,
        rate=10,
        workdir=path.workdir / "caller",
        extra_args=["-l", "2"],
        timeout=30,
    )
    try:
        # Both calls are admitted before the drain starts.
        assert wait_for_log(path.sipguard, "allow   trunk=", count=2), path.sipguard.describe()
        path.sipguard.process.send_signal(signal.SIGTERM)
        status = wait_exit(path.sipguard, 10.0)
        run = caller.wait()
    finally:
        caller.stop()
    assert status == 0, path.sipguard.describe()
    assert "drain deadline reached: hung up 2 call(s)" in path.sipguard.stderr
    summary = shutdown_summary(path.sipguard)
    assert summary is not None and summary["active_calls"] == 0
    assert run.stats.successful_calls == 2, path.sipguard.describe()
    uas = path.uas.stop()
    assert uas.stats.received("BYE") == 2, "both sides were hung up"
    ends = [r for r in audit_records(path) if r["event"] == "end"]
    assert [r["ended_by"] for r in ends] == ["shutdown", "shutdown"]
