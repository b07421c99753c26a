"""The outcome of evaluating one new call: a pure value.

A rejection is a value, not an exception. Every reject names a rule id from
`RULE_DEFAULTS` (the stable ids used in logs, metrics, Reason headers and
`sipguard explain`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RULE_DEFAULTS", "Verdict"]

# rule id -> (default SIP status, human explanation). DESIGN order.
RULE_DEFAULTS: dict[str, tuple[int, str]] = {
    "unknown_source": (403, "source address matches no trunk"),
    "missing_caller_id": (403, "no caller ID presented"),
    "invalid_caller_id": (403, "caller ID is not a dialable number"),
    "do_not_originate": (403, "number is never valid as a caller ID"),
    "suspended_number": (403, "caller number is suspended"),
    "home_cli_from_abroad": (403, "home-country caller ID on an international trunk"),
    "identity_mismatch": (403, "From and P-Asserted-Identity disagree"),
    "display_name_spoof": (403, "numeric display name differs from the caller number"),
    "caller_of_other_trunk": (403, "caller number is allocated to another trunk"),
    "caller_not_allocated": (403, "caller number is not allocated to this trunk"),
    "refused_callee": (403, "callee refused calls from this trunk"),
    "outside_calling_hours": (403, "outside this trunk's calling hours"),
    "identity_changed": (403, "caller identity changed within the dialog"),
    "cps_limit": (503, "trunk call rate exceeded"),
    "concurrent_limit": (503, "trunk concurrent calls exceeded"),
    "high_frequency_caller": (403, "too many calls from this caller"),
    "call_bombing": (403, "too many calls to this callee"),
    "one_ring": (403, "caller blocked for one-ring calls"),
    "ratetable_unavailable": (503, "shared rate table unreachable"),
}


# No __slots__: the engine builds verdicts with `frozen.build()`, which needs
# an instance dict and the defaults as class attributes.
@dataclass(frozen=True)
class Verdict:
    """Allow or reject, with everything the gate needs to act on it.

    Attributes:
        allowed: whether the call is relayed. In monitor mode a call whose
            rules fired is still allowed; `rule` then names what fired.
        rule: the deciding rule id, or None when every rule passed.
        code: the SIP status of a rejection (None when allowed).
        phrase: the SIP reason phrase sent with `code` (the rule file's, or
            the built-in one); None when allowed.
        reason: a short human explanation.
        trunk: the trunk the call belongs to (None for unknown sources).
        caller: the validated network number, E.164, when known.
        presentation: the From number, E.164, when known.
        anonymize: relay with the caller ID suppressed (home_cli anonymize).
        strip_display_name: relay without the (spoofed) display name.
        retry_after: seconds for a Retry-After header, if any.
        monitored: a rule fired but the trunk is in monitor mode.
        callee: the called number, for the rate table.
        emergency: the callee is an emergency number (rate rules skipped).
        noted: on a rejection, the first rule the trunk only monitors that
            fired before `rule` refused the call (None: none did). The
            caller ID failed that rule too, though it did not decide.
    """

    allowed: bool
    rule: str | None = None
    code: int | None = None
    phrase: str | None = None
    reason: str = "allowed"
    trunk: str | None = None
    caller: str | None = None
    presentation: str | None = None
    anonymize: bool = False
    strip_display_name: bool = False
    retry_after: float | None = None
    monitored: bool = False
    callee: str | None = None  # the called number, E.164 when it normalises
    emergency: bool = False  # a call to an emergency number: no rate rules
    noted: str | None = None  # a rejection: a monitored rule that fired before `rule`
