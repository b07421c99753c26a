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


# The keys of `explain --json`, in order: the first six are the original
# object and keep their meaning (docs/policy.md lists them all).
EXPLAIN_KEYS = [
    "verdict",
    "code",
    "rule",
    "trunk",
    "caller",
    "reason",
    "callee",
    "phrase",
    "actions",
    "monitored",
    "emergency",
    "route",
    "from",
    "pai",
    "privacy",
    "verstat",
    "reason_header",
    "warning",
    "retry_after",
    "answered",
    "rate_rules_unchecked",
]


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
    assert list(result) == EXPLAIN_KEYS
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


TRUNKS = """\
version: 1
numbering: {country_code: "86"}
listen: ["tcp:10.0.0.1:5070", "udp:10.0.0.1:5060"]
emergency_numbers: ["110"]
responses:
  unknown_source: {code: 404}
trunks:
  - name: sh
    sources: ["10.1.0.5"]
    route: "udp:10.9.0.1:5080"
    ranges: ["+862131771200-+862131771299"]
    identity: {display_name: strip}
    limits: {cps: 5}
    responses:
      caller_not_allocated: {code: 480, reason: "Caller ID Not Allocated"}
  - name: bj
    sources: ["10.2.0.5"]
    route: "tcp:[2001:db8::9]:5060"
    ranges: ["+861058001000-+861058001999"]
    mode: monitor
    answers: {detail: full}
  - name: intl
    kind: international
    home_cli: anonymize
    sources: ["203.0.113.7"]
    route: "udp:10.9.0.1:5080"
    ranges: ["*"]
"""


def _explain(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    rules: str = TRUNKS,
    json_out: bool = True,
) -> dict[str, object] | str:
    path = tmp_path / "rules.yaml"
    path.write_text(rules)
    assert main(["explain", "--rules", str(path), *args, *(["--json"] if json_out else [])]) == 0
    out = capsys.readouterr().out
    return json.loads(out) if json_out else out


def test_explain_tells_the_configured_answer_with_its_headers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--source", "10.1.0.5", "--from", "sip:+862131779999@10.1.0.5", "--to", "sip:139@x"]
    result = _explain(tmp_path, capsys, *args)
    assert result == {
        **result,
        "verdict": "reject",
        "code": 480,
        "phrase": "Caller ID Not Allocated",
        "rule": "caller_not_allocated",
        "reason_header": 'SIP;cause=480;text="caller_not_allocated"',
        "warning": '399 10.0.0.1:5060 "caller_not_allocated"',  # the udp listen address
        "retry_after": None,
        "answered": True,
        "from": None,
        "rate_rules_unchecked": False,  # refused before the rate table
    }
    text = _explain(tmp_path, capsys, *args, "--transport", "tcp", json_out=False)
    assert text.splitlines()[-3:] == [
        "answer:  SIP/2.0 480 Caller ID Not Allocated",
        '         Reason: SIP;cause=480;text="caller_not_allocated"',
        '         Warning: 399 10.0.0.1:5070 "caller_not_allocated"',  # signed on tcp
    ]


def test_explain_tells_a_stranger_the_configured_unknown_source_answer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--source", "192.0.2.1", "--from", "sip:+862131771234@x", "--to", "sip:139@x"]
    result = _explain(tmp_path, capsys, *args)
    assert (result["code"], result["phrase"], result["rule"]) == (
        404,
        "Not Found",
        "unknown_source",
    )
    assert result["reason_header"] == 'SIP;cause=404;text="unknown_source"'
    dropped = TRUNKS.replace("trunks:", "protection: {unknown_source_answer: drop}\ntrunks:")
    result = _explain(tmp_path, capsys, *args, rules=dropped)
    assert (result["verdict"], result["answered"]) == ("reject", False)
    assert (result["reason_header"], result["warning"]) == (None, None), "nothing is sent"
    text = _explain(tmp_path, capsys, *args, rules=dropped, json_out=False)
    assert "answer:  none (protection.unknown_source_answer: drop)" in text


def test_explain_full_answers_tell_the_explanation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monitored = TRUNKS.replace("    mode: monitor\n", "")
    args = ["--source", "10.2.0.5", "--from", "sip:+862131771234@x", "--to", "sip:139@x"]
    result = _explain(tmp_path, capsys, *args, rules=monitored)
    assert result["rule"] == "caller_of_other_trunk"
    assert result["warning"] == (
        '399 10.0.0.1:5060 "caller number is allocated to another trunk: '
        "+862131771234 belongs to trunk 'sh'\""
    )


def test_explain_shows_the_identity_a_relayed_call_leaves_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--source", "10.1.0.5", "--from", '"Sales" <sip:02131771234@10.1.0.5>']
    result = _explain(tmp_path, capsys, *args, "--to", "sip:13800138000@x")
    assert result == {
        **result,
        "verdict": "allow",
        "code": None,
        "phrase": None,
        "callee": "+8613800138000",
        "actions": [],
        "route": "udp:10.9.0.1:5080",
        "from": '"Sales" <sip:+862131771234@10.1.0.5;user=phone>',
        "pai": "<sip:+862131771234;verstat=TN-Validation-Passed@10.1.0.5;user=phone>",
        "privacy": None,
        "verstat": "TN-Validation-Passed",
        "warning": None,
        "rate_rules_unchecked": True,  # sh has limits
    }
    text = _explain(tmp_path, capsys, *args, "--to", "sip:13800138000@x", json_out=False)
    assert text.splitlines()[4:] == [
        "callee:  +8613800138000",
        "relay:   INVITE to udp:10.9.0.1:5080",
        '         From: "Sales" <sip:+862131771234@10.1.0.5;user=phone>',
        "         P-Asserted-Identity: "
        "<sip:+862131771234;verstat=TN-Validation-Passed@10.1.0.5;user=phone>",
        "limits:  not checked: explain does not see the rate table; the live",
        "         server applies this trunk's limits (cps_limit ... one_ring) next",
    ]


SPOOF = '"13912345678" <sip:+862131771234@x>'
FORGED = "sip:+862131779999@x"


@pytest.mark.parametrize(
    ("source", "from_", "to", "actions", "rule"),
    [
        ("203.0.113.7", "sip:+862131771234@x", "sip:139@x", ["anonymize"], None),
        (
            "10.1.0.5",
            '"13912345678" <sip:+862131771234@x>',
            "sip:139@x",
            ["strip_display_name"],
            None,
        ),
        ("10.2.0.5", "sip:+862131771234@x", "sip:139@x", ["monitor"], "caller_of_other_trunk"),
        (
            "10.1.0.5",
            "sip:+862131779999@x",
            "sip:110@x",
            ["emergency_bypass"],
            "caller_not_allocated",
        ),
        ("10.1.0.5", "sip:+862131771234@x", "sip:110@x", [], None),
    ],
)
def test_explain_names_what_is_done_to_a_relayed_call(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    source: str,
    from_: str,
    to: str,
    actions: list[str],
    rule: str | None,
) -> None:
    result = _explain(tmp_path, capsys, "--source", source, "--from", from_, "--to", to)
    assert (result["verdict"], result["actions"], result["rule"]) == ("allow", actions, rule)
    assert result["monitored"] is ("monitor" in actions)
    assert result["emergency"] is to.startswith("sip:110")
    if "anonymize" in actions:
        assert result["from"] == '"Anonymous" <sip:anonymous@anonymous.invalid>'
        assert (result["pai"], result["privacy"], result["verstat"]) == (None, "id", None)
    elif "strip_display_name" in actions:
        assert result["from"] == "<sip:+862131771234@x;user=phone>"
    elif rule is not None:  # monitored or bypassed: relayed, never vouched for
        assert result["verstat"] == "TN-Validation-Failed"
    if result["emergency"]:
        assert result["rate_rules_unchecked"] is False, "emergency calls skip the rate table"


def test_explain_text_names_the_actions_and_the_emergency_callee(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--source", "10.1.0.5", "--from", "sip:+862131779999@x", "--to", "sip:110@x"]
    lines = _explain(tmp_path, capsys, *args, json_out=False).splitlines()
    assert lines[:6] == [
        "verdict: allow (caller_not_allocated)",
        "trunk:   sh",
        "caller:  +862131779999",
        "reason:  emergency call: relayed although caller number is not allocated to this "
        "trunk: +862131779999",
        "callee:  +86110 (an emergency number: no rule of sipguard's refuses the call)",
        "actions: emergency_bypass: a call to an emergency number: relayed although a rule fired",
    ]
