"""Every rule id of the caller-ID policy, on its allow and its reject side."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from sipguard.gate import build_policy
from sipguard.policy.compiled import Policy
from sipguard.policy.engine import CallView, evaluate
from sipguard.policy.verdict import RULE_DEFAULTS, Verdict
from sipguard.rules.loader import parse_rules

pytestmark = pytest.mark.unit

BASE = """\
version: 1
numbering: {country_code: "86", national_prefix: "0", international_prefix: "00"}
do_not_originate: ["+86400", "+86110"]
suspended:
  - {number: "+862131771250", until: "2030-01-01", reason: "regulator order"}
emergency_numbers: ["110", "119", "120"]
trunks:
  - name: sh
    sources: ["10.1.0.0/24"]
    route: "udp:10.9.0.1:5080"
    ranges: ["+862131771200-+862131771299", "+869521"]
    identity: {from_must_match_pai: true, display_name: reject}
    calling_hours: {tz: Asia/Shanghai, allow: ["09:00-12:00", "14:00-20:00"]}
  - name: bj
    sources: ["10.2.0.0/24"]
    route: "udp:10.9.0.1:5080"
    ranges: ["+861065550000-+861065559999"]
    identity: {from_must_match_pai: false, display_name: strip}
  - name: intl
    kind: international
    sources: ["203.0.113.0/24"]
    route: "udp:10.9.0.1:5080"
    ranges: ["*"]
"""

# 10:00 in Shanghai (UTC+8) on a weekday, inside the calling hours.
OPEN = datetime(2026, 11, 23, 2, 0, tzinfo=UTC).timestamp()
# 22:00 in Shanghai: outside.
CLOSED = datetime(2026, 11, 23, 14, 0, tzinfo=UTC).timestamp()


def policy(text: str = BASE) -> Policy:
    return build_policy(parse_rules(text, path="test.yaml"))


def decide(
    trunk: str | None,
    *,
    from_number: str | None = "+862131771234",
    asserted: tuple[str | None, ...] = (),
    callee: str | None = "13800138000",
    display_name: str | None = None,
    anonymous: bool = False,
    privacy_id: bool = False,
    wall_time: float = OPEN,
    rules: Policy | None = None,
) -> Verdict:
    compiled = rules or policy()
    view = CallView(
        from_number=from_number,
        from_anonymous=anonymous,
        display_name=display_name,
        asserted=asserted,
        privacy_id=privacy_id,
        callee=callee,
    )
    found = None if trunk is None else compiled.by_name[trunk]
    return evaluate(compiled, found, view, wall_time=wall_time)


def test_a_valid_call_passes_with_the_validated_numbers() -> None:
    verdict = decide("sh", from_number="021-31771234", asserted=("+862131771234",))
    assert verdict.allowed and verdict.rule is None
    assert verdict.caller == "+862131771234" and verdict.presentation == "+862131771234"


def test_unknown_source() -> None:
    verdict = decide(None)
    assert (verdict.allowed, verdict.rule, verdict.code) == (False, "unknown_source", 403)


@pytest.mark.parametrize(
    ("from_number", "anonymous", "privacy_id", "asserted", "rule"),
    [
        (None, False, False, (), "missing_caller_id"),
        ("anonymous", True, False, (), "missing_caller_id"),
        ("anonymous", True, True, (), "missing_caller_id"),
        ("bob", False, False, (), "invalid_caller_id"),
        ("+8621317712345678901", False, False, (), "invalid_caller_id"),
        ("+862131771234", False, False, ("not-a-number",), "invalid_caller_id"),
    ],
)
def test_caller_must_be_present_and_dialable(
    from_number: str | None, anonymous: bool, privacy_id: bool, asserted: tuple[str, ...], rule: str
) -> None:
    verdict = decide(
        "sh", from_number=from_number, anonymous=anonymous, privacy_id=privacy_id, asserted=asserted
    )
    assert (verdict.allowed, verdict.rule) == (False, rule)


def test_anonymous_from_with_privacy_and_an_asserted_identity_passes() -> None:
    verdict = decide(
        "sh", from_number="anonymous", anonymous=True, privacy_id=True, asserted=("+862131771234",)
    )
    assert verdict.allowed and verdict.caller == "+862131771234" and verdict.presentation is None


def test_do_not_originate() -> None:
    assert decide("intl", from_number="4008001234").rule == "do_not_originate"
    assert decide("sh", from_number="+862131771234").allowed


def test_suspended_number_until_its_date() -> None:
    assert decide("sh", from_number="+862131771250").rule == "suspended_number"
    later = datetime(2030, 1, 2, tzinfo=UTC).timestamp()
    assert decide("sh", from_number="+862131771250", wall_time=later, callee="110").allowed


def test_home_cli_from_abroad() -> None:
    assert decide("intl", from_number="+862131771234").rule == "home_cli_from_abroad"
    assert decide("intl", from_number="+14155550100").allowed


def test_identity_mismatch() -> None:
    verdict = decide("sh", from_number="+862131771234", asserted=("+862131771235",))
    assert verdict.rule == "identity_mismatch"
    assert decide("sh", from_number="+862131771234", asserted=("+862131771234",)).allowed
    two = decide("bj", from_number="+861065550001", asserted=("+861065550001", "+861065550002"))
    assert two.rule == "identity_mismatch"


def test_display_name_spoof_rejects_or_strips() -> None:
    spoof = decide("sh", display_name="95555")
    assert spoof.rule == "display_name_spoof"
    assert decide("sh", display_name="021 3177 1234").allowed
    assert decide("sh", display_name="Shanghai Sales").allowed
    # A number written in full-width digits, or with text around it, is a number.
    for shown in ("９５５５５", "Bank 95555", "95555 客服", "工商银行 ９５５８８"):
        assert decide("sh", display_name=shown).rule == "display_name_spoof", shown
    assert decide("sh", display_name="Sales ０２１ ３１７７ １２３４").allowed  # the caller's own
    stripped = decide("bj", from_number="+861065550001", display_name="95555")
    assert stripped.allowed and stripped.strip_display_name


def test_caller_of_other_trunk_and_not_allocated() -> None:
    other = decide("sh", from_number="+861065550001")
    assert other.rule == "caller_of_other_trunk" and "'bj'" in other.reason
    assert decide("sh", from_number="+862131779999").rule == "caller_not_allocated"
    assert decide("sh", from_number="+869521000001").allowed


def test_presentation_number_is_checked_too() -> None:
    verdict = decide("bj", from_number="+862131771234", asserted=("+861065550001",))
    assert verdict.rule == "caller_of_other_trunk"


def test_outside_calling_hours_but_never_for_emergency_calls() -> None:
    assert decide("sh", wall_time=CLOSED).rule == "outside_calling_hours"
    assert decide("sh", wall_time=CLOSED, callee="110").allowed
    assert decide("bj", from_number="+861065550001", wall_time=CLOSED).allowed  # no hours


def test_monitor_mode_relays_but_names_the_rule() -> None:
    text = BASE.replace("version: 1\n", "version: 1\nmode: monitor\n")
    verdict = decide("sh", from_number="+862131779999", rules=policy(text))
    assert verdict.allowed and verdict.monitored and verdict.rule == "caller_not_allocated"


def test_every_reject_names_a_known_rule() -> None:
    for number in ("+862131779999", "+861065550001", "bob", "4008001234", None):
        verdict = decide("sh", from_number=number)
        assert not verdict.allowed
        assert verdict.rule in RULE_DEFAULTS and verdict.code == 403


def test_refused_callee_but_not_for_other_trunks(tmp_path) -> None:
    (tmp_path / "refused.txt").write_text("# asked not to be called\n+8613800138000\n")
    text = BASE.replace(
        "    identity: {from_must_match_pai: true, display_name: reject}\n",
        "    identity: {from_must_match_pai: true, display_name: reject}\n"
        "    refused_callees: refused.txt\n",
    )
    compiled = build_policy(parse_rules(text, path=str(tmp_path / "t.yaml"), directory=tmp_path))
    assert decide("sh", callee="13800138000", rules=compiled).rule == "refused_callee"
    assert decide("sh", callee="+8613800138001", rules=compiled).allowed
    other = decide("bj", from_number="+861065550001", callee="13800138000", rules=compiled)
    assert other.allowed


def test_home_cli_exemption_and_anonymize(tmp_path) -> None:
    text = BASE.replace(
        '    ranges: ["*"]\n',
        '    ranges: ["*"]\n'
        "    home_cli: anonymize\n"
        '    home_cli_exempt: [{type: mobile_roaming, ranges: ["+86138"]}]\n',
    )
    compiled = policy(text)
    roaming = decide("intl", from_number="+8613800138000", rules=compiled)
    assert roaming.allowed and not roaming.anonymize
    forged = decide("intl", from_number="+862131771234", rules=compiled)
    assert forged.allowed and forged.anonymize


def test_a_monitored_rule_does_not_undo_the_anonymisation_of_a_home_caller_id() -> None:
    """A forged home caller ID from abroad stays withheld when a rule the trunk
    only monitors fires after home_cli decided to anonymise it."""
    text = BASE.replace(
        '    ranges: ["*"]\n', '    ranges: ["*"]\n    home_cli: anonymize\n'
    ).replace("version: 1\n", "version: 1\nmonitor_rules: [display_name_spoof]\n")
    verdict = decide("intl", from_number="+862131771234", display_name="95555", rules=policy(text))
    assert verdict.allowed and verdict.rule == "display_name_spoof" and verdict.anonymize


def test_response_code_can_be_configured_per_rule() -> None:
    text = BASE.replace(
        "trunks:\n", 'responses:\n  caller_not_allocated: {code: 603, reason: "Decline"}\ntrunks:\n'
    )
    verdict = decide("sh", from_number="+862131779999", rules=policy(text))
    assert (verdict.rule, verdict.code) == ("caller_not_allocated", 603)


def test_untrusted_trunk_ignores_asserted_identity() -> None:
    text = BASE.replace(
        "    identity: {from_must_match_pai: false, display_name: strip}\n",
        "    identity: {trusted: false, from_must_match_pai: false, display_name: strip}\n",
    )
    verdict = decide(
        "bj", from_number="+861065550001", asserted=("+862131771234",), rules=policy(text)
    )
    assert verdict.allowed and verdict.caller == "+861065550001"


# --- whole verdicts -----------------------------------------------------------------------------


def test_an_allowed_verdict_in_full_to_an_emergency_number() -> None:
    verdict = decide("sh", from_number="021-31771234", asserted=("+862131771234",), callee="0110")
    assert verdict == Verdict(
        allowed=True,
        trunk="sh",
        caller="+862131771234",
        presentation="+862131771234",
        callee="+86110",
        emergency=True,
    )


def test_a_refusal_in_full_names_the_normalised_callee() -> None:
    verdict = decide("sh", from_number="+862131779999", callee="021 6123 4567")
    assert verdict == Verdict(
        allowed=False,
        rule="caller_not_allocated",
        code=403,
        phrase="Forbidden",
        reason="caller number is not allocated to this trunk: +862131779999",
        trunk="sh",
        caller="+862131779999",
        presentation="+862131779999",
        callee="+862161234567",
    )
    unreadable = decide("sh", from_number="+862131779999", callee="alice")
    assert unreadable.callee == "alice"
    assert decide("sh", from_number="+862131779999", callee="").callee is None


def test_a_monitored_verdict_in_full() -> None:
    text = BASE.replace("version: 1\n", "version: 1\nmode: monitor\n")
    verdict = decide("sh", from_number="+862131779999", rules=policy(text))
    assert verdict == Verdict(
        allowed=True,
        rule="caller_not_allocated",
        reason="caller number is not allocated to this trunk: +862131779999",
        trunk="sh",
        caller="+862131779999",
        presentation="+862131779999",
        monitored=True,
        callee="+8613800138000",
    )


def test_an_unknown_source_in_full() -> None:
    assert decide(None) == Verdict(
        allowed=False,
        rule="unknown_source",
        code=403,
        phrase="Forbidden",
        reason="source address matches no trunk",
        callee="+8613800138000",
    )


def test_a_configured_response_in_full() -> None:
    text = BASE.replace(
        "trunks:\n", "responses:\n  missing_caller_id: {code: 503, retry_after: 30s}\ntrunks:\n"
    )
    verdict = decide("sh", from_number=None, rules=policy(text))
    assert (verdict.code, verdict.phrase, verdict.retry_after) == (503, "Service Unavailable", 30)


def test_number_rules_are_skipped_only_when_the_rule_file_has_none() -> None:
    assert policy().screens_numbers
    bare = BASE.replace('do_not_originate: ["+86400", "+86110"]\n', "")
    assert policy(bare).screens_numbers  # the suspension is left
    assert decide("sh", from_number="+862131771250", rules=policy(bare)).rule == "suspended_number"
    suspension = '  - {number: "+862131771250", until: "2030-01-01", reason: "regulator order"}\n'
    bare = bare.replace("suspended:\n" + suspension, "")
    assert not policy(bare).screens_numbers
    assert decide("sh", from_number="+862131771250", rules=policy(bare)).allowed


# -- monitoring one rule while the others enforce ------------------------------------


def test_a_monitored_rule_is_noted_and_the_enforced_ones_still_decide() -> None:
    text = BASE.replace("version: 1\n", "version: 1\nmonitor_rules: [display_name_spoof]\n")
    rules = policy(text)

    noted = decide("sh", display_name="95555", rules=rules)
    assert noted.allowed and noted.rule == "display_name_spoof" and noted.monitored

    # the display name is only reported; the pass-through behind it is still refused
    refused = decide("sh", from_number="+862131779999", display_name="95555", rules=rules)
    assert not refused.allowed and refused.rule == "caller_not_allocated"


def test_a_refusal_names_the_monitored_rule_that_fired_before_it() -> None:
    """The caller ID failed a monitored rule even when a later rule refused the
    call: the pass rate must not count it as authenticated."""
    text = BASE.replace("version: 1\n", "version: 1\nmonitor_rules: [caller_not_allocated]\n")
    rules = policy(text)
    refused = decide("sh", from_number="+862131779999", wall_time=CLOSED, rules=rules)
    assert (refused.allowed, refused.rule, refused.noted) == (
        False,
        "outside_calling_hours",
        "caller_not_allocated",
    )
    assert decide("sh", wall_time=CLOSED, rules=rules).noted is None


def test_a_trunk_can_monitor_its_own_rules() -> None:
    text = BASE.replace(
        "    identity: {from_must_match_pai: true, display_name: reject}\n",
        "    identity: {from_must_match_pai: true, display_name: reject}\n"
        "    monitor_rules: [caller_not_allocated, outside_calling_hours]\n",
    )
    rules = policy(text)
    relayed = decide("sh", from_number="+862131779999", wall_time=CLOSED, rules=rules)
    assert relayed.allowed and relayed.monitored and relayed.rule == "caller_not_allocated"
    # other rules and other trunks still enforce
    assert decide("sh", display_name="95555", rules=rules).rule == "display_name_spoof"
    assert not decide("sh", display_name="95555", rules=rules).allowed
    assert not decide("bj", from_number="+862131771234", rules=rules).allowed


# -- emergency calls are never refused by sipguard's own rules ----------------------------


@pytest.mark.parametrize(
    ("case", "kwargs", "rule"),
    [
        ("pass-through", {"from_number": "+862131779999"}, "caller_not_allocated"),
        ("other trunk's number", {"from_number": "+861065550001"}, "caller_of_other_trunk"),
        ("anonymous, no Privacy", {"from_number": None, "anonymous": True}, "missing_caller_id"),
        ("no caller at all", {"from_number": None}, "missing_caller_id"),
        ("undialable", {"from_number": "abc"}, "invalid_caller_id"),
        ("do not originate", {"from_number": "+8640012345678"}, "do_not_originate"),
        ("suspended", {"from_number": "+862131771250"}, "suspended_number"),
        ("display name", {"display_name": "95555"}, "display_name_spoof"),
        ("modified", {"asserted": ("+862131771299",), "from_number": "+862131771298"}, None),
        ("outside hours", {"wall_time": CLOSED}, None),
    ],
)
def test_a_call_to_an_emergency_number_passes_every_caller_id_rule(
    case: str, kwargs: dict[str, object], rule: str | None
) -> None:
    for callee in ("110", "120", "+86110"):
        verdict = decide("sh", callee=callee, **kwargs)  # type: ignore[arg-type]
        assert verdict.allowed and verdict.emergency, (case, callee, verdict)
        assert not verdict.monitored
        if rule is not None:
            assert verdict.rule == rule, (case, verdict)


def test_a_home_caller_id_from_abroad_still_reaches_the_emergency_service() -> None:
    verdict = decide("intl", from_number="+862131771234", callee="110")
    assert verdict.allowed and verdict.emergency and verdict.rule == "home_cli_from_abroad"


def test_an_unknown_source_is_refused_even_to_an_emergency_number() -> None:
    verdict = decide(None, callee="110")
    assert not verdict.allowed and verdict.rule == "unknown_source"
