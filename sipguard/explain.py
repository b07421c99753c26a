"""`sipguard explain`: the verdict for one call, without a network.

Builds the INVITE a trunk would send, runs it through the same gate and
policy the server uses, and reports the deciding rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sipguard.errors import SipParseError
from sipguard.gate import PolicyGate, build_policy
from sipguard.peer import Peer
from sipguard.rules.schema import RuleSet
from sipguard.rules.values import parse_host_port
from sipguard.sip.message import Headers, Request
from sipguard.sip.uri import parse_name_addr

__all__ = ["Explanation", "explain_call"]


@dataclass(frozen=True, slots=True)
class Explanation:
    """The verdict as `explain` prints it (see the CLI reference)."""

    verdict: str  # "allow" | "reject"
    code: int | None
    rule: str | None
    trunk: str | None
    caller: str | None
    reason: str

    def to_json(self) -> str:
        return json.dumps(
            {
                "verdict": self.verdict,
                "code": self.code,
                "rule": self.rule,
                "trunk": self.trunk,
                "caller": self.caller,
                "reason": self.reason,
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
        return "\n".join(lines)


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
    """Evaluate the call; raise ValueError for arguments that are not usable."""
    host, port_or_none = parse_host_port(source, default_port=5060)
    port = port_or_none or 5060
    wall_time = datetime.fromisoformat(at).timestamp() if at else datetime.now().timestamp()
    gate = PolicyGate(build_policy(rules), wall_clock=lambda: wall_time)
    request = _invite(host, port, from_=from_, pai=pai or [], privacy=privacy, to=to)
    verdict, _ = gate.verdict(request, Peer(transport, host, port))
    if verdict.allowed:
        reason = (
            f"monitor mode: would reject, {verdict.reason}"
            if verdict.monitored
            else "every rule passed"
        )
        return Explanation("allow", None, verdict.rule, verdict.trunk, verdict.caller, reason)
    return Explanation(
        "reject", verdict.code, verdict.rule, verdict.trunk, verdict.caller, verdict.reason
    )


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
