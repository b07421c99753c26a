"""`sipguard run --check-config` and `--log-format json`."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from sipguard.cli import _JsonFormatter, main

pytestmark = pytest.mark.unit


def rules_file(tmp_path: Path, *, udp_port: int, extra: str = "") -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(
        'version: 1\nnumbering: {country_code: "86"}\n'
        f'listen: ["udp:127.0.0.1:{udp_port}"]\n'
        f"{extra}trunks: []\n",
        encoding="utf-8",
    )
    return path


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_all_checks_pass_on_a_machine_that_can_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    audit = tmp_path / "logs" / "decisions.jsonl"
    extra = f'audit_log: "{audit}"\nmetrics: "127.0.0.1:{free_port(socket.SOCK_STREAM)}"\n'
    path = rules_file(tmp_path, udp_port=free_port(), extra=extra)
    assert main(["run", "--rules", str(path), "--check-config"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["ok"] * 4, lines
    assert audit.parent.is_dir(), "the audit directory is made ready"


def test_a_taken_port_an_unwritable_trail_and_a_dead_redis_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("x")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        extra = (
            f'audit_log: "{blocker}/decisions.jsonl"\n'
            f'ratetable: {{backend: redis, url: "redis://127.0.0.1:{free_port(socket.SOCK_STREAM)}/0"}}\n'
        )
        path = rules_file(tmp_path, udp_port=port, extra=extra)
        assert main(["run", "--rules", str(path), "--check-config"]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 3, out
    assert f"listen udp:127.0.0.1:{port}: Address already in use" in failed[0]
    assert "audit_log" in failed[1] and "cannot create" in failed[1]
    assert "ratetable redis" in failed[2]


def test_a_bad_rule_file_fails_before_any_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("version: 1\nmode: shadow\n", encoding="utf-8")
    assert main(["run", "--rules", str(path), "--check-config"]) == 1
    assert "rules.yaml:2:7: mode must be" in capsys.readouterr().err


def test_json_log_lines_are_one_object_each() -> None:
    record = logging.LogRecord(
        "sipguard", logging.WARNING, __file__, 1, "tcp %s: closing", ("x",), None
    )
    entry = json.loads(_JsonFormatter().format(record))
    assert entry["level"] == "warning" and entry["message"] == "tcp x: closing"
    assert entry["ts"].endswith("+00:00")


def test_check_is_coloured_on_a_terminal_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmode: shadow\n", encoding="utf-8")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert main(["check", str(bad)]) == 1
    plain = capsys.readouterr().out
    assert "\x1b[" not in plain and f"{bad}:2:7: mode must be" in plain
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    assert main(["check", str(bad)]) == 1
    coloured = capsys.readouterr().out
    assert "\x1b[" in coloured and "mode must be" in coloured


def test_the_start_up_summary_names_each_trunk_and_where_records_go() -> None:
    from sipguard.rules.loader import load_rules
    from sipguard.server import startup_summary

    root = Path(__file__).resolve().parents[2]
    lines = startup_summary(load_rules(root / "rules" / "example.yaml"))
    assert lines[0].startswith("  trunk sh-callcenter: national, mode enforce, 2 source(s)")
    assert "limits cps=50.0 concurrent=300 per_caller per_callee one_ring" in lines[0]
    assert lines[1].startswith("  trunk intl-gateway: international") and "limits none" in lines[1]
    assert lines[-1] == (
        "  audit_log logs/decisions.jsonl; metrics 127.0.0.1:9060; ratetable memory"
    )


def test_a_redis_password_never_reaches_the_output(tmp_path: Path) -> None:
    from sipguard.preflight import preflight
    from sipguard.rules.loader import load_rules

    url = "redis://sg:s3cret@127.0.0.1:6379/0"
    path = rules_file(
        tmp_path, udp_port=free_port(), extra=f'ratetable: {{backend: redis, url: "{url}"}}\n'
    )
    checks = preflight(load_rules(path), redis_ping=lambda _: "refused")
    line = checks[-1].line()
    assert line.startswith("FAIL ratetable redis redis://sg:***@127.0.0.1:6379/0"), line
    assert "s3cret" not in line
