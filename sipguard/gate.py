"""The call gate: from a SIP INVITE to a policy verdict and back (adapter).

The B2BUA core asks the gate about every dialog-creating INVITE. The gate
finds the trunk by source address, reads the identity headers into a
`CallView`, asks the pure policy engine, and turns the `Verdict` into the
core's `Allow` (with the outbound identity rewritten to the validated E.164
number) or `Refuse` (with a Reason header naming the rule, the text of the
Warning the trunk may see, and the full explanation for the operator).

It reads the wall clock through an injected function, for calling hours and
suspension expiry; everything else it does is pure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from zoneinfo import ZoneInfo

from sipguard.errors import SipParseError
from sipguard.peer import Peer
from sipguard.policy.compiled import (
    CompiledTrunk,
    Policy,
    compile_policy,
    default_response,
    phrase_for,
)
from sipguard.policy.decision import Allow, Refuse, Relay
from sipguard.policy.engine import (
    CallView,
    IdentityNumbers,
    evaluate,
    evaluate_identity_change,
)
from sipguard.policy.frozen import build
from sipguard.policy.numbers import is_anonymous, number_of_uri
from sipguard.policy.verdict import RULE_DEFAULTS, Verdict
from sipguard.ratetable import NO_LIMITS, Admission, RateTable
from sipguard.rules.schema import RuleSet
from sipguard.sip.message import Request
from sipguard.sip.serializer import reason_value
from sipguard.sip.uri import NameAddr, SipUri, parse_name_addr

__all__ = ["PolicyGate", "build_policy", "call_view", "callee_of"]

ANONYMOUS_FROM = '"Anonymous" <sip:anonymous@anonymous.invalid>'
# Identity headers from the caller are never copied to the outbound leg: the
# gate asserts the validated identity itself (RFC 3325 §5: strip untrusted);
# each trunk's `strip` set (CALLER_IDENTITY_HEADERS, and STIR/SHAKEN Identity
# unless the trunk passes it). An anonymised call also loses Privacy, which
# the gate sets itself.
_PRIVACY = frozenset({"privacy"})
VERSTAT_PASSED = "TN-Validation-Passed"
# A call relayed although a rule fired (monitored, or to an emergency number):
# sipguard never vouches for it downstream (3GPP TS 24.229 verstat).
VERSTAT_FAILED = "TN-Validation-Failed"
# Privacy values that withhold the caller's identity (RFC 3323 §4.2, RFC 3325).
PRIVACY_ID = frozenset({"id", "user", "header"})


def build_policy(rules: RuleSet) -> Policy:
    """Compile `rules`, loading the time zones its calling hours name."""
    zones = {
        trunk.calling_hours.tz: ZoneInfo(trunk.calling_hours.tz)
        for trunk in rules.trunks
        if trunk.calling_hours is not None
    }
    return compile_policy(rules, zones=zones)


def callee_of(request: Request) -> str | None:
    """The called number as written: the Request-URI's, else the To URI's.

    Raises:
        SipParseError: the Request-URI or To is malformed.
    """
    callee = number_of_uri(request.request_uri)
    return number_of_uri(request.to.uri) if callee is None else callee


def call_view(request: Request) -> CallView:
    """Read the identity-related parts of an INVITE (RFC 3261, 3323, 3325)."""
    from_ = request.from_
    asserted = _asserted(request)
    privacy_id = _privacy_id(request.headers.get_all("privacy"))
    callee = callee_of(request)
    return build(
        CallView,
        {
            "from_number": number_of_uri(from_.uri),
            "from_anonymous": is_anonymous(from_.uri),
            "display_name": from_.display_name,
            "asserted": asserted,
            "privacy_id": privacy_id,
            "callee": callee,
        },
    )


def _privacy_id(values: list[str]) -> bool:
    """Whether the Privacy values withhold the identity (one of PRIVACY_ID)."""
    for value in values:
        for token in value.split(";"):
            if token.strip().lower() in PRIVACY_ID:
                return True
    return False


def _asserted(request: Request) -> tuple[str | None, ...]:
    values = request.headers.get_all("p-asserted-identity")
    if not values:
        values = request.headers.get_all("remote-party-id")
    return tuple([number_of_uri(parse_name_addr(value).uri) for value in values[:2]])


class PolicyGate:
    """The `Gate` the B2BUA core uses, backed by a compiled `Policy`."""

    def __init__(
        self,
        policy: Policy,
        *,
        ratetable: RateTable | None = None,
        wall_clock: Callable[[], float] = time.time,
        decision_timer: Callable[[float], None] | None = None,
    ) -> None:
        self.policy = policy
        self.ratetable = ratetable
        self._wall_clock = wall_clock
        # Told how long each decision took (seconds), e.g. a latency histogram.
        self._decision_timer = decision_timer
        # The next hops, exactly: only a trunk's source or its route (host and
        # port) gets a real answer to an out-of-dialog OPTIONS.
        self._routes = frozenset((trunk.route.host, trunk.route.port) for trunk in policy.trunks)

    def verdict(self, request: Request, peer: Peer) -> tuple[Verdict, CompiledTrunk | None]:
        """The policy verdict for a new call from `peer` (also used by explain)."""
        policy = self.policy
        trunk = policy.trunk_for(peer.host, peer.port)
        try:
            view = call_view(request)
        except SipParseError:
            view = CallView(from_number="", callee=None)  # unreadable identity
        verdict = evaluate(policy, trunk, view, wall_time=self._wall_clock())
        if trunk is None:
            # A stranger gets the rule file's unknown_source answer, as the
            # core sends it before any gate is asked (b2bua `_refuse_unknown`).
            answer = policy.unknown_source
            verdict = replace(verdict, code=answer.code, phrase=answer.reason)
        return verdict, trunk

    def decide(self, request: Request, peer: Peer, *, now: float) -> Allow | Refuse:
        timer = self._decision_timer
        if timer is None:
            return self._decide(request, peer, now)
        start = time.perf_counter()
        decision = self._decide(request, peer, now)
        timer(time.perf_counter() - start)
        return decision

    def _decide(self, request: Request, peer: Peer, now: float) -> Allow | Refuse:
        verdict, trunk = self.verdict(request, peer)
        if not verdict.allowed or trunk is None:
            return _refuse(verdict, trunk)
        table = self.ratetable
        if table is None or verdict.emergency or trunk.limits is NO_LIMITS:
            return _allow(request, trunk, verdict)
        admission = table.admit(
            trunk.limits,
            trunk=trunk.name,
            caller=verdict.caller or "",
            callee=verdict.callee or "",
            now=now,
        )
        if admission.allowed:
            return _allow(request, trunk, verdict, admission)
        if admission.rule in trunk.monitored:
            noted = verdict.rule or admission.rule  # the first rule that would have refused
            return _allow(request, trunk, replace(verdict, rule=noted, monitored=True))
        return _refuse(_rate_verdict(trunk, verdict, admission), trunk)

    def is_known(self, peer: Peer) -> bool:
        if (peer.host, peer.port) in self._routes:
            return True
        return self.policy.trunk_for(peer.host, peer.port) is not None

    def trunk_of(self, peer: Peer) -> str | None:
        trunk = self.policy.trunk_for(peer.host, peer.port)
        return None if trunk is None else trunk.name

    def decide_in_dialog(
        self, trunk: str, initial: IdentityNumbers, current: IdentityNumbers
    ) -> Relay | Refuse:
        compiled = self.policy.by_name.get(trunk)
        if compiled is None:
            return Relay()  # the trunk left the rules on a reload: its calls finish as they are
        verdict = evaluate_identity_change(self.policy, compiled, initial, current)
        if verdict.allowed:
            return Relay(verdict.rule)
        return _refuse(verdict, compiled)

    def is_emergency(self, request: Request) -> bool:
        emergency = self.policy.emergency
        if not emergency:
            return False
        try:
            raw = callee_of(request)
        except SipParseError:
            return False
        return raw is not None and (
            raw in emergency or self.policy.plan.normalise(raw) in emergency
        )


def _refuse(verdict: Verdict, trunk: CompiledTrunk | None) -> Refuse:
    """The refusal of `verdict`: Reason (RFC 3326) names the rule; the Warning
    text is the rule id, or on a trunk with full answers the explanation
    (which may name another trunk, a suspension's reason, what the request
    said). The explanation always goes to the operator, as `detail`."""
    rule = verdict.rule or "unknown_source"
    code = verdict.code or 403
    headers: tuple[tuple[str, str], ...] = (("Reason", reason_value(code, rule)),)
    if verdict.retry_after is not None:
        headers += (("Retry-After", str(int(verdict.retry_after))),)
    return build(
        Refuse,
        {
            "status": code,
            "reason": verdict.phrase or phrase_for(code),
            "rule": rule,
            "trunk": verdict.trunk,
            "headers": headers,
            "caller": verdict.caller,
            "callee": verdict.callee,
            "warning": verdict.reason if trunk is not None and trunk.full_answers else rule,
            "detail": verdict.reason,
            "noted": verdict.noted,
        },
    )


def _rate_verdict(trunk: CompiledTrunk, verdict: Verdict, admission: Admission) -> Verdict:
    """A rate-table refusal as a verdict: the rule's response, with Retry-After."""
    rule = admission.rule or "cps_limit"
    response = trunk.responses.get(rule) or default_response(rule)
    retry_after = response.retry_after
    if retry_after is None and admission.retry_after is not None and response.code == 503:
        retry_after = float(max(1, math.ceil(admission.retry_after)))  # RFC 3261 §20.33
    return replace(
        verdict,
        allowed=False,
        rule=rule,
        code=response.code,
        phrase=response.reason,
        reason=RULE_DEFAULTS[rule][1],
        retry_after=retry_after,
        noted=verdict.rule,  # a rule the trunk monitors that fired before the rate table
    )


def _allow(
    request: Request, trunk: CompiledTrunk, verdict: Verdict, admission: Admission | None = None
) -> Allow:
    """Relay with the validated identity asserted (RFC 3325, 3GPP verstat)."""
    counted = admission is not None
    warnings = () if admission is None else admission.warnings
    from_ = request.from_
    if verdict.emergency and verdict.caller is None:
        # An emergency call with no usable caller ID goes as it came: the
        # emergency service sees what the caller sent, and nothing asserted.
        return build(
            Allow,
            {
                "trunk": trunk.name,
                "route": trunk.route,
                "from_value": str(from_.with_params(_without_tag(from_))),
                "strip": trunk.strip,
                "note": verdict.rule,
                "callee": verdict.callee,
                "emergency": True,
            },
        )
    if verdict.anonymize or verdict.caller is None:
        return build(
            Allow,
            {
                "trunk": trunk.name,
                "route": trunk.route,
                "from_value": ANONYMOUS_FROM,
                "headers": (("Privacy", "id"),),
                "strip": trunk.strip | _PRIVACY,
                "note": verdict.rule,
                "caller": "anonymous",
                "callee": verdict.callee,
                "rate_counted": counted,
                "warnings": warnings,
                "emergency": verdict.emergency,
                "anonymized": verdict.anonymize,
            },
        )
    host = from_.uri.host if isinstance(from_.uri, SipUri) else trunk.route.host
    presented = verdict.presentation
    if presented is None:  # anonymous From with an asserted identity: keep From as is
        from_value = str(from_.with_params(_without_tag(from_)))
    else:
        display = None if verdict.strip_display_name else from_.display_name
        from_value = _phone_name_addr(presented, host, display)
    verstat = VERSTAT_PASSED if verdict.rule is None else VERSTAT_FAILED
    asserted = f"<sip:{verdict.caller};verstat={verstat}@{host};user=phone>"
    return build(
        Allow,
        {
            "trunk": trunk.name,
            "route": trunk.route,
            "from_value": from_value,
            "headers": (("P-Asserted-Identity", asserted),),
            "strip": trunk.strip,
            "note": verdict.rule,
            "caller": verdict.caller,
            "callee": verdict.callee,
            "rate_counted": counted,
            "warnings": warnings,
            "emergency": verdict.emergency,
        },
    )


def _phone_name_addr(number: str, host: str, display: str | None) -> str:
    """`str(NameAddr(SipUri("sip", number, host, params=(("user", "phone"),)), display))`,
    formatted without building the two values (it is on every allowed call)."""
    uri = f"<sip:{number}@{host};user=phone>"
    if display is None:
        return uri
    escaped = display.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}" {uri}'


def _without_tag(value: NameAddr) -> tuple[tuple[str, str | None], ...]:
    return tuple((key, val) for key, val in value.params if key != "tag")
