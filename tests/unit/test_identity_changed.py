"""identity_changed is a policy rule like the others: responses, monitoring, E.164.

Calls run through the real core with the real gate (a rule file, no stub):
the caller's re-INVITE presents another identity than the INVITE did.
"""

from __future__ import annotations

import pytest

from sipguard.events import CallRefused, InDialogMonitored
from sipguard.gate import build_policy
from sipguard.policy.engine import evaluate_identity_change
from sipguard.rules.loader import parse_rules
from sipguard.sip.message import Request, Response
from tests.helpers import (
    CALLEE,
    CALLER,
    CorePair,
    in_dialog,
    invite,
    policy_pair,
    response_to,
    statuses,
)

pytestmark = pytest.mark.unit

RULES = """\
version: 1
numbering: {country_code: "86", national_prefix: "0"}
trunks:
  - name: sh
    sources: ["10.1.0.5:5071"]
    route: "udp:10.9.0.1:5080"
    ranges: ["+862131771200-+862131771299"]
"""


def _answered(pair: CorePair) -> Response:
    pair.send(invite(), CALLER, now=0.0)
    (b_invite,) = pair.take_callee()
    assert isinstance(b_invite, Request)
    pair.send(response_to(b_invite, 200, "OK"), CALLEE, now=0.1)
    ok = [m for m in pair.take_caller() if isinstance(m, Response) and m.status == 200][0]
    ack = in_dialog(
        "ACK",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=1,
        branch="z9hG4bKack",
        sender=CALLER,
    )
    pair.send(ack, CALLER, now=0.2)
    pair.take_callee()
    return ok


def _reinvite(ok: Response, asserted: str, *, cseq: int = 2) -> bytes:
    return in_dialog(
        "INVITE",
        target="sip:sipguard@10.0.0.1:5060",
        from_value=ok.headers.get("from") or "",
        to_value=ok.headers.get("to") or "",
        call_id=ok.call_id,
        cseq=cseq,
        branch=f"z9hG4bKre{cseq}",
        sender=CALLER,
    ).replace(
        b"Max-Forwards: 70\r\n", f"Max-Forwards: 70\r\nP-Asserted-Identity: {asserted}\r\n".encode()
    )


def test_identity_changed_goes_out_with_its_configured_response() -> None:
    pair = policy_pair(RULES + "    responses: {identity_changed: {code: 488}}\n")
    ok = _answered(pair)

    pair.send(_reinvite(ok, "<sip:+8695555@10.1.0.5>"), CALLER, now=1.0)

    finals = [m for m in pair.take_caller() if isinstance(m, Response) and m.status >= 200]
    assert [m.status for m in finals] == [488]
    assert finals[0].headers.get("reason") == 'SIP;cause=488;text="identity_changed"'
    assert pair.take_callee() == []
    refused = [e for e in pair.events if isinstance(e, CallRefused)]
    assert [(e.rule, e.status) for e in refused] == [("identity_changed", 488)]
    assert "+8695555" in refused[0].detail


def test_a_monitored_identity_change_is_relayed_and_reported() -> None:
    pair = policy_pair(
        RULES.replace("version: 1\n", "version: 1\nmonitor_rules: [identity_changed]\n")
    )
    ok = _answered(pair)

    pair.send(_reinvite(ok, "<sip:+8695555@10.1.0.5>"), CALLER, now=1.0)

    assert statuses(pair.take_callee()) == ["INVITE"]
    noted = [e for e in pair.events if isinstance(e, InDialogMonitored)]
    assert [(e.rule, e.trunk) for e in noted] == [("identity_changed", "sh")]
    assert not [e for e in pair.events if isinstance(e, CallRefused)]


def test_the_same_number_written_another_way_is_no_change() -> None:
    pair = policy_pair(RULES)
    ok = _answered(pair)

    pair.send(_reinvite(ok, "<sip:02131771234@10.1.0.5>"), CALLER, now=1.0)

    assert statuses(pair.take_callee()) == ["INVITE"]
    assert not [e for e in pair.events if isinstance(e, CallRefused)]


def test_the_rule_compares_numbers_in_e164() -> None:
    policy = build_policy(parse_rules(RULES, path="t.yaml"))
    trunk = policy.trunks[0]
    initial = ("+862131771234", ("+862131771234",))
    assert evaluate_identity_change(policy, trunk, initial, ("02131771234", ())).allowed
    changed = evaluate_identity_change(policy, trunk, initial, ("+862131771234", ("95555",)))
    assert not changed.allowed and changed.rule == "identity_changed"
    moved = evaluate_identity_change(policy, trunk, initial, ("+862131771299", ()))
    assert moved.rule == "identity_changed" and "From +862131771299" in moved.reason
