"""Caller-ID rules end to end: SIPp callers -> ``sipguard run`` -> SIPp callee.

sipguard runs a rule file with real allocations (`policy_rules_text` in
sipp.py): trunk ``sh-callcenter`` (two source ports) owns
+862131771200-+862131771299 and +869521, trunk ``bj-callcenter`` owns
+861058001000-+861058001999, +86400 and +86110 may never originate, and
``sh-callcenter`` requires From = P-Asserted-Identity and refuses numeric
display names that differ from the number. Every call comes from
``sh-callcenter``.

- Genuine callers (valid_callers.csv) must be answered, and the callee
  (uas_check_identity.xml) must see the validated identity: From and
  P-Asserted-Identity rewritten to the E.164 number the caller expects, with
  ``verstat=TN-Validation-Passed``; anything else fails the call there.
- Forged callers (spoofed_callers.csv) must each get exactly one 403 whose
  Reason names the rule that caught them (uac_spoofed.xml checks it), and
  the callee must see nothing.
- Mixed traffic (mixed_callers.csv: 90 % genuine, 10 % forged, the
  expected outcome per line) from both source ports at once: each call
  gets its own outcome.

The injection files are checked against ``sipguard explain`` first, so a
wrong expectation in them shows up as such and not as a server failure.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sipguard.cli import main as sipguard_main
from tests.integration.sipp import (
    HOST,
    MIXED_CALLERS_CSV,
    SH_TRUNK,
    SPOOFED_CALLERS_CSV,
    VALID_CALLERS_CSV,
    PolicyPath,
    SippRun,
    free_ports,
    log_count,
    policy_rules_text,
    run_uac,
    start_uas,
)

pytestmark = [pytest.mark.integration, pytest.mark.sipp]

StartPolicyPath = Callable[..., PolicyPath]

# The rules a SIPp caller can trigger with its From, P-Asserted-Identity and
# display name alone, in the policy's evaluation order.
SPOOF_RULES = [
    "invalid_caller_id",
    "do_not_originate",
    "identity_mismatch",
    "display_name_spoof",
    "caller_of_other_trunk",
    "caller_not_allocated",
]


@dataclass(frozen=True)
class Caller:
    """One line of an injection file (see sipp_scenarios/README.md)."""

    from_user: str
    pai_user: str
    callee: str
    display_name: str
    expected: str  # the E.164 number the callee must see, or a rule id

    @property
    def allowed(self) -> bool:
        return self.expected.startswith("+")

    def csv_line(self) -> str:
        return ";".join(
            (self.from_user, self.pai_user, self.callee, self.display_name, self.expected)
        )


def read_callers(path: Path) -> list[Caller]:
    """The call lines of a SIPp injection file (no SEQUENTIAL, no comments)."""
    callers = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#") or line.strip() == "SEQUENTIAL":
            continue
        callers.append(Caller(*line.split(";")))
    return callers


def write_callers(path: Path, callers: Iterable[Caller]) -> Path:
    """Write an injection file with `callers`, in order."""
    path.write_text(
        "SEQUENTIAL\n" + "".join(caller.csv_line() + "\n" for caller in callers),
        encoding="utf-8",
    )
    return path


def outcomes(callers: list[Caller], calls: int) -> Counter[str]:
    """How many of `calls` sequential calls end in each outcome.

    The key is ``"allow"`` or the rule id; SIPp reuses the lines from the top
    when the calls outnumber them.
    """
    return Counter(
        "allow" if callers[i % len(callers)].allowed else callers[i % len(callers)].expected
        for i in range(calls)
    )


def explain(
    rules: Path, caller: Caller, *, source: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, object]:
    """``sipguard explain --json`` for `caller`, as a dict."""
    from_ = f"sip:{caller.from_user}@{HOST}"
    if caller.display_name:
        from_ = f"{caller.display_name} <{from_}>"
    status = sipguard_main(
        [
            "explain",
            "--rules",
            str(rules),
            "--source",
            source,
            "--from",
            from_,
            "--pai",
            f"sip:{caller.pai_user}@{HOST}",
            "--to",
            f"sip:{caller.callee}@{HOST}",
            "--json",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0, out
    return json.loads(out)


def assert_path_clean(path: PolicyPath, *runs: SippRun) -> None:
    """sipguard stops cleanly and leaves no call or dialog behind."""
    assert path.sipguard.stop() == 0, path.explain(*runs)
    assert "active_calls=0 dialogs=0" in path.sipguard.stderr, path.explain(*runs)


def assert_refused_cleanly(run: SippRun, path: PolicyPath, calls: int) -> None:
    """Every call of a uac_spoofed.xml run got one 403 naming the expected rule."""
    assert run.returncode == 0, path.explain(run)
    assert run.stats.created_calls == calls, path.explain(run)
    assert run.stats.successful_calls == calls, path.explain(run)
    assert run.stats.failed_calls == 0, path.explain(run)
    # exactly one 403 per call: no retransmission, nothing for a finished call
    assert run.stats.received("403") == calls, path.explain(run)
    refusals = [m for m in run.stats.messages if m.kind == "received" and m.name == "403"]
    assert sum(m.retransmissions for m in refusals) == 0, path.explain(run)
    assert run.stats.unexpected == 0, path.explain(run)
    assert run.stats.counter("DeadCallMsgs") == 0, path.explain(run)
    assert run.stats.counter("OutOfCallMsgs") == 0, path.explain(run)


# --------------------------------------------------------------------------
# The test data, offline


def test_injection_files_agree_with_explain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every line of the injection files gets the verdict it expects from explain."""
    trunk_port, other_port = 5071, 5075
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        policy_rules_text(
            listen_port=5060,
            trunk_ports=[trunk_port, 5073],
            other_trunk_port=other_port,
            uas_port=5080,
        ),
        encoding="utf-8",
    )
    seen_rules = set()
    for csv_file in (VALID_CALLERS_CSV, SPOOFED_CALLERS_CSV, MIXED_CALLERS_CSV):
        callers = read_callers(csv_file)
        assert callers, csv_file
        for caller in callers:
            result = explain(rules, caller, source=f"{HOST}:{trunk_port}", capsys=capsys)
            assert result["trunk"] == SH_TRUNK, (csv_file.name, caller, result)
            if caller.allowed:
                assert result["verdict"] == "allow", (csv_file.name, caller, result)
                assert result["caller"] == caller.expected, (csv_file.name, caller, result)
            else:
                assert result["verdict"] == "reject", (csv_file.name, caller, result)
                assert result["code"] == 403, (csv_file.name, caller, result)
                assert result["rule"] == caller.expected, (csv_file.name, caller, result)
                seen_rules.add(caller.expected)
    assert seen_rules == set(SPOOF_RULES)
    # 90 % genuine, 10 % forged, every rule once
    mixed = outcomes(read_callers(MIXED_CALLERS_CSV), len(read_callers(MIXED_CALLERS_CSV)))
    assert mixed == Counter({"allow": 54, **dict.fromkeys(SPOOF_RULES, 1)})


def test_identity_check_fails_calls_without_validated_identity(tmp_path: Path) -> None:
    """uas_check_identity.xml fails a call whose identity sipguard did not assert.

    The caller talks to the callee directly (no sipguard): its From has no
    ``user=phone`` and its P-Asserted-Identity no ``verstat``, so every call
    must fail on both sides, quickly (the callee answers 500).
    """
    calls = 5
    uas_port, uac_port = free_ports(2)
    uas = start_uas(
        "uas_check_identity.xml", port=uas_port, transport="udp", workdir=tmp_path / "uas"
    )
    try:
        run = run_uac(
            "uac_policy.xml",
            target_port=uas_port,
            local_port=uac_port,
            transport="udp",
            calls=calls,
            rate=10,
            workdir=tmp_path / "uac",
            injection=VALID_CALLERS_CSV,
            timeout=20,
        )
    finally:
        uas_run = uas.stop()
    detail = f"{run.describe()}\n\n{uas_run.describe()}"
    assert run.stats.failed_calls == calls, detail
    assert run.stats.successful_calls == 0, detail
    assert uas_run.stats.received("INVITE") == calls, detail
    assert uas_run.stats.sent("500") == calls, detail
    assert uas_run.stats.sent("200") == 0, detail
    assert uas_run.stats.failed_calls == calls, detail
    assert "identity check failed" in (tmp_path / "uas" / "errors.log").read_text(), detail


# --------------------------------------------------------------------------
# Genuine callers


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_valid_callers_reach_callee_with_validated_identity(
    start_policy_path: StartPolicyPath, transport: str
) -> None:
    calls = 50  # every line of valid_callers.csv five times
    path = start_policy_path(transport=transport)

    run = path.run("uac_policy.xml", calls=calls, rate=50, injection=VALID_CALLERS_CSV)

    assert run.returncode == 0, path.explain(run)
    assert run.stats.successful_calls == calls, path.explain(run)
    assert run.stats.failed_calls == 0, path.explain(run)
    assert run.stats.received("403") == 0, path.explain(run)
    # 200 for the INVITE and for the BYE
    assert run.stats.received("200") == 2 * calls, path.explain(run)
    uas = path.uas.stop()
    # the callee saw every call, each with the identity the caller expected
    assert uas.stats.received("INVITE") == calls, path.explain(run)
    assert uas.stats.sent("500") == 0, path.explain(run)
    assert uas.stats.successful_calls == calls, path.explain(run)
    assert uas.stats.failed_calls == 0, path.explain(run)
    assert log_count(path.sipguard, f"allow   trunk={SH_TRUNK} ") == calls, path.explain(run)
    assert log_count(path.sipguard, "reject ") == 0, path.explain(run)
    assert_path_clean(path, run)


# --------------------------------------------------------------------------
# Forged callers


@pytest.mark.parametrize("rule", SPOOF_RULES)
def test_spoofed_caller_is_refused_with_rule(
    start_policy_path: StartPolicyPath, tmp_path: Path, rule: str
) -> None:
    callers = [c for c in read_callers(SPOOFED_CALLERS_CSV) if c.expected == rule]
    assert callers, f"no line for {rule} in {SPOOFED_CALLERS_CSV.name}"
    injection = write_callers(tmp_path / f"{rule}.csv", callers)
    calls = 4 * len(callers)
    path = start_policy_path(transport="udp")

    run = path.run("uac_spoofed.xml", calls=calls, rate=20, injection=injection)

    assert_refused_cleanly(run, path, calls)
    uas = path.uas.stop()
    assert uas.stats.received("INVITE") == 0, path.explain(run)
    assert uas.stats.created_calls == 0, path.explain(run)
    # one verdict per call, all by this rule
    assert log_count(path.sipguard, f"reject  403 {rule} trunk={SH_TRUNK} ") == calls, path.explain(
        run
    )
    assert log_count(path.sipguard, "reject ") == calls, path.explain(run)
    assert log_count(path.sipguard, "allow ") == 0, path.explain(run)
    assert_path_clean(path, run)


def test_spoofed_callers_are_refused_over_tcp(start_policy_path: StartPolicyPath) -> None:
    """Every forged caller of spoofed_callers.csv in one run, over TCP."""
    callers = read_callers(SPOOFED_CALLERS_CSV)
    calls = 2 * len(callers)
    path = start_policy_path(transport="tcp")

    run = path.run("uac_spoofed.xml", calls=calls, rate=40, injection=SPOOFED_CALLERS_CSV)

    assert_refused_cleanly(run, path, calls)
    uas = path.uas.stop()
    assert uas.stats.received("INVITE") == 0, path.explain(run)
    for rule, count in outcomes(callers, calls).items():
        assert log_count(path.sipguard, f"reject  403 {rule} ") == count, path.explain(run)
    assert log_count(path.sipguard, "allow ") == 0, path.explain(run)
    assert_path_clean(path, run)


# --------------------------------------------------------------------------
# Mixed traffic


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_mixed_traffic_from_two_ports(start_policy_path: StartPolicyPath, transport: str) -> None:
    """90 % genuine and 10 % forged callers, from both source ports of the trunk at once."""
    calls = 120  # each caller twice through mixed_callers.csv
    expected = outcomes(read_callers(MIXED_CALLERS_CSV), calls)
    refused = calls - expected["allow"]
    path = start_policy_path(transport=transport)
    assert len(path.trunk_ports) == 2

    clients = [
        path.start(
            "uac_policy.xml",
            calls=calls,
            rate=40,
            injection=MIXED_CALLERS_CSV,
            local_port=port,
        )
        for port in path.trunk_ports
    ]
    runs = [client.wait() for client in clients]

    for run in runs:
        assert run.returncode == 0, path.explain(*runs)
        assert run.stats.successful_calls == calls, path.explain(*runs)
        assert run.stats.failed_calls == 0, path.explain(*runs)
        assert run.stats.received("403") == refused, path.explain(*runs)
        assert run.stats.received("200") == 2 * expected["allow"], path.explain(*runs)
        assert run.stats.unexpected == 0, path.explain(*runs)
    uas = path.uas.stop()
    assert uas.stats.received("INVITE") == 2 * expected["allow"], path.explain(*runs)
    assert uas.stats.successful_calls == 2 * expected["allow"], path.explain(*runs)
    assert uas.stats.failed_calls == 0, path.explain(*runs)
    guard = path.sipguard
    assert log_count(guard, f"allow   trunk={SH_TRUNK} ") == 2 * expected["allow"], path.explain(
        *runs
    )
    for rule in SPOOF_RULES:
        assert log_count(guard, f"reject  403 {rule} ") == 2 * expected[rule], path.explain(*runs)
    for port in path.trunk_ports:
        assert log_count(guard, f"source={HOST}:{port} ") == refused, path.explain(*runs)
    assert_path_clean(path, *runs)
