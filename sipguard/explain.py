"""`sipguard explain`: what the live server would do with one call, without a network.

Builds the INVITE a trunk would send and hands it to the same gate the server
uses (`PolicyGate.decide`, without a rate table). What the gate decides is
reported as the server would act on it:

- a refusal: the status line (the rule file's `responses`, with the standard
  reason phrase unless the file sets one), the `Reason` and `Retry-After`
  headers, and the `Warning` the trunk is told (`answers.detail`, signed by
  `answers.warn_agent` or sipguard's first listen address on the transport);
- an allowed call: where it goes, and the identity it leaves with (From,
  P-Asserted-Identity with its verstat, Privacy), and what was done to it
  (`actions`: anonymized, display name stripped, a monitored rule, an
  emergency call relayed although a rule fired).

What explain cannot know it says: the rate table (a trunk's `limits`) is not
consulted offline, and a stranger's answer is subject to the per-address
answer budget.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

from sipguard.dialog import name_addr_with_tag
from sipguard.errors import SipParseError
from sipguard.gate import PolicyGate, build_policy
from sipguard.peer import Peer
from sipguard.policy.compiled import CompiledTrunk
from sipguard.policy.decision import Allow, Refuse
from sipguard.policy.verdict import Verdict
from sipguard.ratetable import NO_LIMITS
from sipguard.rules.schema import RuleSet
from sipguard.rules.values import parse_host_port
from sipguard.sip.builders import end_to_end_headers
from sipguard.sip.message import Headers, Request
from sipguard.sip.serializer import hostport, warning_value
from sipguard.sip.uri import parse_name_addr

__all__ = ["ACTIONS", "Explanation", "explain_call"]

# What sipguard does to an allowed call besides asserting the validated
# number, as explain names it (the JSON `actions`), with the text line.
ACTIONS: dict[str, str] = {
    "anonymize": "the caller ID is withheld (home_cli: anonymize)",
    "strip_display_name": "the display name is removed (identity.display_name: strip)",
    "monitor": "a monitored rule fired: relayed, not asserted as validated",
    "emergency_bypass": "a call to an emergency number: relayed although a rule fired",
}

_VERSTAT = re.compile(r";verstat=([^;@>]+)")


@dataclass(frozen=True, slots=True)
class Explanation:
    """What the live server would do with the call (see the CLI reference).

    The first six attributes are explain's original output and keep their
    meaning; the rest say how the call is answered or relayed.

    Attributes:
        verdict: "allow" (relayed) or "reject".
        code: the status of a refusal; None when allowed.
        rule: the rule that refused the call, or that fired although the call
            is relayed (monitored, or an emergency call); None when none fired.
        trunk: the trunk the source belongs to.
        caller: the validated network number, E.164.
        reason: the explanation, for the operator.
        callee: the called number, E.164 when it normalises.
        phrase: the reason phrase of a refusal's status line.
        actions: keys of ACTIONS, in that order: what is done to an allowed call.
        monitored: a rule fired that the trunk only monitors.
        emergency: the callee is one of `emergency_numbers`.
        route: the next hop of an allowed call, `transport:host:port`.
        from_: the From of the relayed INVITE (without its tag).
        pai: its P-Asserted-Identity, None when it carries none.
        privacy: its Privacy, None when it carries none.
        verstat: the verstat asserted in `pai`.
        reason_header: a refusal's `Reason` value (RFC 3326), if it is answered.
        warning: a refusal's `Warning` value (RFC 3261 §20.43), if answered.
        retry_after: a refusal's `Retry-After` seconds, if answered.
        answered: False when a refusal gets no answer at all (a stranger under
            `protection.unknown_source_answer: drop`).
        rate_rules_unchecked: the live server would consult the rate table
            next (the trunk has `limits`), which explain does not see.
    """

    verdict: str  # "allow" | "reject"
    code: int | None
    rule: str | None
    trunk: str | None
    caller: str | None
    reason: str
    callee: str | None = None
    phrase: str | None = None
    actions: tuple[str, ...] = ()
    monitored: bool = False
    emergency: bool = False
    route: str | None = None
    from_: str | None = None
    pai: str | None = None
    privacy: str | None = None
    verstat: str | None = None
    reason_header: str | None = None
    warning: str | None = None
    retry_after: int | None = None
    answered: bool = True
    rate_rules_unchecked: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "verdict": self.verdict,
                "code": self.code,
                "rule": self.rule,
                "trunk": self.trunk,
                "caller": self.caller,
                "reason": self.reason,
                "callee": self.callee,
                "phrase": self.phrase,
                "actions": list(self.actions),
                "monitored": self.monitored,
                "emergency": self.emergency,
                "route": self.route,
                "from": self.from_,
                "pai": self.pai,
                "privacy": self.privacy,
                "verstat": self.verstat,
                "reason_header": self.reason_header,
                "warning": self.warning,
                "retry_after": self.retry_after,
                "answered": self.answered,
                "rate_rules_unchecked": self.rate_rules_unchecked,
            }
        )

    def to_text(self) -> str:
        status = f"{self.verdict} {self.code}" if self.code else self.verdict
        lines = [
            f"verdict: {status}" + (f" ({self.rule})" if self.rule else ""),
            f"trunk:   {self.trunk or '-'}",
            f"caller:  {self.caller or '-'}",
            f"reason:  {self.reason}",
        ]
        callee = self.callee or "-"
        if self.emergency:
            callee += " (an emergency number: no rule of sipguard's refuses the call)"
        lines.append(f"callee:  {callee}")
        if self.verdict == "reject":
            lines.extend(self._answer_lines())
        else:
            lines.extend(_block("actions:", [f"{a}: {ACTIONS[a]}" for a in self.actions]))
            relayed = [f"INVITE to {self.route}", f"From: {self.from_}"]
            if self.pai is not None:
                relayed.append(f"P-Asserted-Identity: {self.pai}")
            if self.privacy is not None:
                relayed.append(f"Privacy: {self.privacy}")
            lines.extend(_block("relay:", relayed))
        if self.rate_rules_unchecked:
            note = [
                "not checked: explain does not see the rate table; the live",
                "server applies this trunk's limits (cps_limit ... one_ring) next",
            ]
            lines.extend(_block("limits:", note))
        return "\n".join(lines)

    def _answer_lines(self) -> list[str]:
        if not self.answered:
            return ["answer:  none (protection.unknown_source_answer: drop)"]
        answer = [f"SIP/2.0 {self.code} {self.phrase}"]
        if self.reason_header is not None:
            answer.append(f"Reason: {self.reason_header}")
        if self.retry_after is not None:
            answer.append(f"Retry-After: {self.retry_after}")
        if self.warning is not None:
            answer.append(f"Warning: {self.warning}")
        return _block("answer:", answer)


def _block(label: str, items: list[str]) -> list[str]:
    """`label` and the first item on one line, the others aligned under it."""
    return [f"{label if i == 0 else '':<9}{item}" for i, item in enumerate(items)]


def explain_call(
    rules: RuleSet,
    *,
    source: str,
    transport: str = "udp",
    from_: str,
    pai: list[str] | None = None,
    privacy: str | None = None,
    to: str,
    at: str | None = None,
) -> Explanation:
    """What the live server would do with the call; raise ValueError for
    arguments that are not usable."""
    host, port_or_none = parse_host_port(source, default_port=5060)
    port = port_or_none or 5060
    wall_time = datetime.fromisoformat(at).timestamp() if at else datetime.now().timestamp()
    gate = PolicyGate(build_policy(rules), wall_clock=lambda: wall_time)
    request = _invite(host, port, from_=from_, pai=pai or [], privacy=privacy, to=to)
    peer = Peer(transport, host, port)
    verdict, trunk = gate.verdict(request, peer)
    # The server's own decision, less the rate table (now is only its clock).
    decision = gate.decide(request, peer, now=0.0)
    if isinstance(decision, Refuse):
        return _refused(rules, verdict, decision, transport)
    return _relayed(request, verdict, decision, trunk)


def _refused(rules: RuleSet, verdict: Verdict, decision: Refuse, transport: str) -> Explanation:
    # A stranger under `unknown_source_answer: drop` is told nothing at all.
    answered = verdict.trunk is not None or rules.protection.unknown_source_answer != "drop"
    headers = dict(decision.headers) if answered else {}
    warning = None
    if answered and decision.warning is not None:
        warning = warning_value(_warn_agent(rules, transport), decision.warning)
    retry_after = headers.get("Retry-After")
    return Explanation(
        "reject",
        decision.status,
        decision.rule,
        decision.trunk,
        verdict.caller,
        verdict.reason,
        callee=verdict.callee,
        phrase=decision.reason,
        emergency=verdict.emergency,
        reason_header=headers.get("Reason"),
        warning=warning,
        retry_after=None if retry_after is None else int(retry_after),
        answered=answered,
    )


def _relayed(
    request: Request, verdict: Verdict, decision: Allow, trunk: CompiledTrunk | None
) -> Explanation:
    if verdict.monitored:
        reason = f"monitored: would reject, {verdict.reason}"
    elif verdict.emergency and verdict.rule is not None:
        reason = f"emergency call: relayed although {verdict.reason}"
    else:
        reason = "every rule passed"
    # The relayed INVITE's identity, as the core builds it (b2bua `_start_call`).
    sent_from = request.from_
    if decision.from_value is not None:
        sent_from = parse_name_addr(decision.from_value)
    outbound = [*end_to_end_headers(request.headers, decision.strip), *decision.headers]
    asserted = [value for name, value in outbound if name.lower() == "p-asserted-identity"]
    privacy = [value for name, value in outbound if name.lower() == "privacy"]
    pai = ", ".join(asserted) or None
    verstat = _VERSTAT.search(pai) if pai else None
    route = decision.route
    return Explanation(
        "allow",
        None,
        verdict.rule,
        verdict.trunk,
        verdict.caller,
        reason,
        callee=verdict.callee,
        actions=_actions(verdict),
        monitored=verdict.monitored,
        emergency=verdict.emergency,
        route=f"{route.transport}:{hostport(route.host, route.port)}",
        from_=name_addr_with_tag(sent_from, None),
        pai=pai,
        privacy=", ".join(privacy) or None,
        verstat=verstat.group(1) if verstat else None,
        # PolicyGate.decide consults the rate table next, unless the call is
        # to an emergency number.
        rate_rules_unchecked=(
            trunk is not None and not verdict.emergency and trunk.limits != NO_LIMITS
        ),
    )


def _actions(verdict: Verdict) -> tuple[str, ...]:
    found = {
        "anonymize": verdict.anonymize,
        "strip_display_name": verdict.strip_display_name and not verdict.anonymize,
        "monitor": verdict.monitored,
        "emergency_bypass": verdict.emergency and verdict.rule is not None,
    }
    return tuple(action for action in ACTIONS if found[action])


def _warn_agent(rules: RuleSet, transport: str) -> str:
    """Who signs the Warning: `answers.warn_agent`, else the address the server
    advertises on `transport` (its first listen endpoint there, else its first)."""
    agent = rules.answers.warn_agent
    if agent is not None:
        return agent
    listen = rules.listen
    local = next((e for e in listen if e.transport == transport), listen[0])
    return hostport(local.host, local.port)


def _invite(
    host: str, port: int, *, from_: str, pai: list[str], privacy: str | None, to: str
) -> Request:
    try:
        caller = parse_name_addr(from_)
        callee = parse_name_addr(to)
        asserted = [str(parse_name_addr(value)) for value in pai]
    except SipParseError as exc:
        raise ValueError(str(exc)) from None
    fields = [
        ("Via", f"SIP/2.0/UDP {host}:{port};branch=z9hG4bKexplain"),
        ("Max-Forwards", "70"),
        ("From", f"{caller};tag=explain"),
        ("To", str(callee.with_params(()))),
        ("Call-ID", "explain"),
        ("CSeq", "1 INVITE"),
        *(("P-Asserted-Identity", value) for value in asserted),
    ]
    if privacy:
        fields.append(("Privacy", privacy))
    return Request("INVITE", str(callee.uri), Headers(fields))
