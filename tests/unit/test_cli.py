"""The command line: check and explain (run is covered by the integration tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sipguard.cli import main

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = str(ROOT / "rules" / "example.yaml")


def test_check_clean_files_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in (ROOT / "rules").glob("*.yaml"))
    assert len(files) >= 3
    assert main(["check", *files]) == 0
    out = capsys.readouterr().out
    assert out.count(": ok") == len(files)
    assert "warning" not in out  # the shipped examples lint clean


LOOPING = """\
version: 1
numbering: {country_code: "86"}
listen: ["udp:0.0.0.0:5060"]
trunks:
  - name: x
    sources: ["10.1.0.0/24"]
    route: "udp:127.0.0.1:5060"
"""


def test_check_warns_at_the_route_and_still_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    looping = tmp_path / "looping.yaml"
    looping.write_text(LOOPING)
    assert main(["check", str(looping)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{looping}:7:12: warning: trunk 'x': route 'udp:127.0.0.1:5060' ")
    assert "leads back to sipguard" in lines[0]
    assert lines[1:] == [f"{looping}: ok (1 warning)"]


def test_check_prints_the_warnings_of_a_failing_file_after_its_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(LOOPING + "    sorces: []\n")
    assert main(["check", str(bad)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 1)[0] for line in lines] == [f"{bad}:8:5:", f"{bad}:7:12:"]
    assert lines[1].startswith(f"{bad}:7:12: warning: ")


def test_check_reports_file_line_col_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        'version: 1\nnumbering: {country_code: "86"}\ntrunks:\n  - name: x\n    sorces: []\n'
    )
    assert main(["check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}:5:5: " in out and "did you mean 'sources'" in out


@pytest.mark.parametrize(
    ("source", "caller", "verdict", "rule", "code"),
    [
        ("127.0.0.1:5071", "sip:+862131771234@127.0.0.1", "allow", None, None),
        ("127.0.0.1:5071", "sip:+862131779999@127.0.0.1", "reject", "caller_not_allocated", 403),
        ("127.0.0.1:5999", "sip:+862131771234@127.0.0.1", "reject", "unknown_source", 403),
        ("127.0.0.1:5071", "sip:4008001234@127.0.0.1", "reject", "do_not_originate", 403),
    ],
)
def test_explain_json(
    capsys: pytest.CaptureFixture[str],
    source: str,
    caller: str,
    verdict: str,
    rule: str | None,
    code: int | None,
) -> None:
    argv = ["explain", "--rules", EXAMPLE, "--source", source, "--from", caller]
    assert main([*argv, "--to", "sip:13800138001@127.0.0.1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"verdict", "code", "rule", "trunk", "caller", "reason"}
    assert (result["verdict"], result["rule"], result["code"]) == (verdict, rule, code)


def test_explain_text_names_the_rule(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explain", "--rules", EXAMPLE, "--source", "127.0.0.1:5071"]
    argv += ["--from", "sip:+862131779999@127.0.0.1", "--to", "sip:13800138001@127.0.0.1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "verdict: reject 403 (caller_not_allocated)" in out and "trunk:   sh-callcenter" in out


def test_explain_refuses_unusable_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["explain", "--rules", EXAMPLE, "--source", "127.0.0.1:5071"]
    assert main([*argv, "--from", "<unterminated", "--to", "sip:1@x"]) == 2
    assert "sipguard explain:" in capsys.readouterr().err
