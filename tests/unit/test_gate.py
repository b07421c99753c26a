"""The gate: INVITE in, Allow/Refuse out, with the outbound identity rewritten."""

from __future__ import annotations

import pytest

from sipguard.gate import PolicyGate, build_policy, call_view
from sipguard.peer import Peer
from sipguard.policy.decision import Allow, Refuse
from sipguard.policy.engine import CallView
from sipguard.rules.loader import parse_rules
from sipguard.sip.message import Headers, Request

pytestmark = pytest.mark.unit

RULES = """\
version: 1
numbering: {country_code: "86"}
trunks:
  - name: sh
    sources: ["10.1.0.5"]
    route: "udp:10.9.0.1:5080"
    ranges: ["+862131771200-+862131771299"]
    identity: {display_name: strip, from_must_match_pai: true}
  - name: intl
    kind: international
    sources: ["203.0.113.7"]
    route: "tcp:10.9.0.2:5060"
    ranges: ["*"]
    home_cli: anonymize
  - name: untrusted
    sources: ["10.3.0.9"]
    route: "udp:10.9.0.1:5080"
    ranges: ["+861065550000-+861065559999"]
    identity: {trusted: false, from_must_match_pai: true}
"""

SH = Peer("udp", "10.1.0.5", 5060)
INTL = Peer("udp", "203.0.113.7", 5060)
UNTRUSTED = Peer("udp", "10.3.0.9", 5060)


def gate() -> PolicyGate:
    return PolicyGate(build_policy(parse_rules(RULES, path="t.yaml")), wall_clock=lambda: 0.0)


def invite(from_: str, *extra: tuple[str, str], to: str = "sip:13800138000@10.0.0.1") -> Request:
    fields = [
        ("Via", "SIP/2.0/UDP 10.1.0.5:5060;branch=z9hG4bK1"),
        ("From", f"{from_};tag=1"),
        ("To", f"<{to}>"),
        ("Call-ID", "c1"),
        ("CSeq", "1 INVITE"),
        *extra,
    ]
    return Request("INVITE", to, Headers(fields))


def test_allowed_call_asserts_the_validated_e164_identity() -> None:
    request = invite(
        '"Sales" <sip:02131771234@10.1.0.5>',
        ("P-Asserted-Identity", "<tel:+86-21-3177-1234>"),
        ("Remote-Party-ID", "<sip:999@evil>"),
    )
    decision = gate().decide(request, SH, now=0.0)
    assert isinstance(decision, Allow)
    assert decision.trunk == "sh" and decision.route == Peer("udp", "10.9.0.1", 5080)
    assert decision.from_value == '"Sales" <sip:+862131771234@10.1.0.5;user=phone>'
    assert decision.headers == (
        (
            "P-Asserted-Identity",
            "<sip:+862131771234;verstat=TN-Validation-Passed@10.1.0.5;user=phone>",
        ),
    )
    assert {"p-asserted-identity", "remote-party-id", "p-preferred-identity"} <= decision.strip
    identity = frozenset({"p-asserted-identity", "remote-party-id", "p-preferred-identity"})
    assert decision == Allow(
        "sh",
        Peer("udp", "10.9.0.1", 5080),
        from_value='"Sales" <sip:+862131771234@10.1.0.5;user=phone>',
        headers=decision.headers,
        strip=identity | {"identity", "identity-info"},
        caller="+862131771234",
        callee="+8613800138000",
    )


def test_spoofed_display_name_is_stripped_when_the_trunk_says_so() -> None:
    decision = gate().decide(invite('"95555" <sip:+862131771234@10.1.0.5>'), SH, now=0.0)
    assert isinstance(decision, Allow)
    assert decision.from_value == "<sip:+862131771234@10.1.0.5;user=phone>"


def test_refused_call_carries_reason_and_the_rule_id_as_warning_text() -> None:
    decision = gate().decide(invite("<sip:+862131779999@10.1.0.5>"), SH, now=0.0)
    assert isinstance(decision, Refuse)
    assert (decision.status, decision.reason, decision.rule) == (
        403,
        "Forbidden",
        "caller_not_allocated",
    )
    assert decision.headers == (("Reason", 'SIP;cause=403;text="caller_not_allocated"'),)
    assert decision == Refuse(
        403,
        "Forbidden",
        "caller_not_allocated",
        trunk="sh",
        headers=decision.headers,
        caller="+862131779999",
        callee="+8613800138000",
        warning="caller_not_allocated",
        detail="caller number is not allocated to this trunk: +862131779999",
    )


def test_home_cli_anonymize_suppresses_the_caller_id() -> None:
    decision = gate().decide(invite("<sip:+862131771234@203.0.113.7>"), INTL, now=0.0)
    assert isinstance(decision, Allow)
    assert decision.from_value == '"Anonymous" <sip:anonymous@anonymous.invalid>'
    assert decision.headers == (("Privacy", "id"),)
    assert "privacy" in decision.strip and "p-asserted-identity" in decision.strip
    assert decision.caller == "anonymous" and decision.anonymized


def test_only_a_home_caller_id_from_abroad_is_marked_anonymized() -> None:
    foreign = gate().decide(invite("<sip:+4420794600000@203.0.113.7>"), INTL, now=0.0)
    assert isinstance(foreign, Allow) and not foreign.anonymized
    assert foreign.caller == "+4420794600000"
    home = gate().decide(invite("<sip:+862131771234@10.1.0.5>"), SH, now=0.0)
    assert isinstance(home, Allow) and not home.anonymized


def test_untrusted_trunk_cannot_assert_an_identity() -> None:
    # The PAI names an allocated number, but the trunk may not assert: the From
    # number (not allocated) decides.
    request = invite(
        "<sip:+862131771234@10.3.0.9>", ("P-Asserted-Identity", "<sip:+861065550001@10.3.0.9>")
    )
    decision = gate().decide(request, UNTRUSTED, now=0.0)
    assert isinstance(decision, Refuse) and decision.rule == "caller_of_other_trunk"


def test_privacy_id_keeps_the_anonymous_from_and_asserts_the_network_number() -> None:
    request = invite(
        '"Anonymous" <sip:anonymous@anonymous.invalid>',
        ("P-Asserted-Identity", "<sip:+862131771234@10.1.0.5>"),
        ("Privacy", "id"),
    )
    decision = gate().decide(request, SH, now=0.0)
    assert isinstance(decision, Allow)
    assert decision.from_value == '"Anonymous" <sip:anonymous@anonymous.invalid>'
    assert "verstat=TN-Validation-Passed" in decision.headers[0][1]
    assert "privacy" not in decision.strip


def test_call_view_reads_identity_headers() -> None:
    view = call_view(
        invite(
            '"021 3177 1234" <sip:+862131771234@h;user=phone>',
            ("P-Asserted-Identity", "<sip:+862131771234@h>, <tel:+862131771234>"),
            ("Privacy", "id;critical"),
            to="tel:+8613800138000",
        )
    )
    assert view == CallView(
        from_number="+862131771234",
        display_name="021 3177 1234",
        asserted=("+862131771234", "+862131771234"),
        privacy_id=True,
        callee="+8613800138000",
    )


def test_a_configured_reason_phrase_is_the_one_sent() -> None:
    text = RULES.replace(
        "trunks:",
        'responses:\n  caller_not_allocated: {code: 486, reason: "Busy Here"}\n'
        "suspended:\n"
        '  - {number: "+862131771250", until: "2099-01-01", reason: "regulator order 17"}\n'
        "trunks:",
    )
    configured = PolicyGate(build_policy(parse_rules(text, path="t.yaml")), wall_clock=lambda: 0.0)
    refused = configured.decide(invite("<sip:+869999000000@10.1.0.5>"), SH, now=0.0)
    assert isinstance(refused, Refuse)
    assert (refused.status, refused.reason) == (486, "Busy Here")
    assert refused.callee == "+8613800138000", "a refusal names its callee for the trail"
    suspended = configured.decide(invite("<sip:+862131771250@10.1.0.5>"), SH, now=0.0)
    assert isinstance(suspended, Refuse) and suspended.rule == "suspended_number"
    assert "regulator order 17" in suspended.detail, "the operator is told the reason"
    assert suspended.warning == "suspended_number", "the caller is not"
    default = gate().decide(invite("<sip:+869999000000@10.1.0.5>"), SH, now=0.0)
    assert isinstance(default, Refuse) and (default.status, default.reason) == (403, "Forbidden")


@pytest.mark.parametrize(
    ("code", "phrase"),
    [
        (404, "Not Found"),
        (410, "Gone"),
        (480, "Temporarily Unavailable"),
        (486, "Busy Here"),
        (600, "Busy Everywhere"),
        (603, "Decline"),
        (604, "Does Not Exist Anywhere"),
        (606, "Not Acceptable"),
        (607, "Unwanted"),
        (499, "Refused"),  # no standard phrase
    ],
)
def test_a_configured_code_without_a_phrase_goes_out_with_its_standard_phrase(
    code: int, phrase: str
) -> None:
    response = f"responses:\n  caller_not_allocated: {{code: {code}}}\n"
    text = RULES.replace("trunks:", response + "trunks:")
    refused = _gate(text).decide(invite("<sip:+869999000000@10.1.0.5>"), SH, now=0.0)
    assert isinstance(refused, Refuse)
    assert (refused.status, refused.reason) == (code, phrase)
    assert refused.headers[0] == ("Reason", f'SIP;cause={code};text="caller_not_allocated"')


def test_a_stranger_is_refused_with_the_configured_unknown_source_answer() -> None:
    stranger = Peer("udp", "192.0.2.99", 5060)
    text = RULES.replace("trunks:", "responses:\n  unknown_source: {code: 404}\ntrunks:")
    verdict, trunk = _gate(text).verdict(invite("<sip:+862131771234@192.0.2.99>"), stranger)
    assert trunk is None and verdict.rule == "unknown_source"
    assert (verdict.code, verdict.phrase) == (404, "Not Found")
    refused = _gate(text).decide(invite("<sip:+862131771234@192.0.2.99>"), stranger, now=0.0)
    assert isinstance(refused, Refuse) and (refused.status, refused.reason) == (404, "Not Found")
    default, _ = gate().verdict(invite("<sip:+862131771234@192.0.2.99>"), stranger)
    assert (default.code, default.phrase) == (403, "Forbidden")


def _gate(text: str) -> PolicyGate:
    return PolicyGate(build_policy(parse_rules(text, path="t.yaml")), wall_clock=lambda: 0.0)


def _asserted(decision: Allow) -> str:
    return dict(decision.headers)["P-Asserted-Identity"]


def test_a_monitored_forged_caller_is_relayed_but_never_asserted_as_validated() -> None:
    forged = invite("<sip:+862131779999@10.1.0.5>")  # not in sh's ranges
    for text in (
        RULES.replace("version: 1\n", "version: 1\nmode: monitor\n"),
        RULES.replace("version: 1\n", "version: 1\nmonitor_rules: [caller_not_allocated]\n"),
    ):
        decision = _gate(text).decide(forged, SH, now=0.0)
        assert isinstance(decision, Allow) and decision.note == "caller_not_allocated"
        assert "verstat=TN-Validation-Failed" in _asserted(decision)
        assert "Passed" not in _asserted(decision)
    # a genuine caller on the same monitored trunk is still vouched for
    genuine = _gate(RULES.replace("version: 1\n", "version: 1\nmode: monitor\n")).decide(
        invite("<sip:+862131771234@10.1.0.5>"), SH, now=0.0
    )
    assert isinstance(genuine, Allow) and genuine.note is None
    assert "verstat=TN-Validation-Passed" in _asserted(genuine)


EMERGENCY_RULES = RULES.replace("version: 1\n", 'version: 1\nemergency_numbers: ["110", "112"]\n')


def test_an_emergency_call_from_a_forged_caller_is_relayed_unvouched() -> None:
    decision = _gate(EMERGENCY_RULES).decide(
        invite("<sip:+862131779999@10.1.0.5>", to="sip:110@10.0.0.1"), SH, now=0.0
    )
    assert isinstance(decision, Allow) and decision.emergency
    assert decision.note == "caller_not_allocated"
    assert "verstat=TN-Validation-Failed" in _asserted(decision)


def test_an_emergency_call_without_a_caller_id_goes_as_it_came() -> None:
    decision = _gate(EMERGENCY_RULES).decide(
        invite('"Anonymous" <sip:anonymous@anonymous.invalid>', to="sip:112@10.0.0.1"), SH, now=0.0
    )
    assert isinstance(decision, Allow) and decision.emergency
    assert decision.note == "missing_caller_id"
    assert decision.from_value == '"Anonymous" <sip:anonymous@anonymous.invalid>'
    assert decision.headers == ()  # nothing asserted
    assert "p-asserted-identity" in decision.strip


def test_the_gate_knows_an_emergency_call_by_its_callee_in_any_written_form() -> None:
    g = _gate(EMERGENCY_RULES)
    for uri in ("sip:110@10.0.0.1", "sip:+86110@10.0.0.1", "tel:112"):
        assert g.is_emergency(invite("<sip:+862131771234@10.1.0.5>", to=uri)), uri
    assert not g.is_emergency(invite("<sip:+862131771234@10.1.0.5>", to="sip:13800138000@x"))
    assert not gate().is_emergency(invite("<sip:+862131771234@10.1.0.5>", to="sip:110@x"))


def test_an_emergency_call_from_no_trunk_is_still_refused() -> None:
    stranger = Peer("udp", "192.0.2.66", 5060)
    decision = _gate(EMERGENCY_RULES).decide(
        invite("<sip:+862131771234@10.1.0.5>", to="sip:110@10.0.0.1"), stranger, now=0.0
    )
    assert isinstance(decision, Refuse) and decision.rule == "unknown_source"
