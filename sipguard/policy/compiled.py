"""A RuleSet compiled for the per-call path: immutable, indexed, ready to evaluate.

`compile_policy()` runs once per (re)load. It normalises every number the
rules name, builds one RangeIndex over all trunks' allocations (so a lookup
answers "which trunks own this number" at once), and flattens each trunk's
settings into a `CompiledTrunk`. A reload builds a new `Policy` and the
driver swaps one reference; nothing here changes afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from types import MappingProxyType

from sipguard.peer import Peer
from sipguard.policy.numbers import NumberPlan
from sipguard.policy.ranges import RangeIndex
from sipguard.policy.trunks import TrunkIndex
from sipguard.policy.verdict import RULE_DEFAULTS
from sipguard.ratetable import (
    NO_LIMITS,
    OneRingLimit,
    TokenBucketLimit,
    TrunkLimits,
    WindowLimit,
)
from sipguard.rules.schema import Limits, RuleSet, Trunk, Window
from sipguard.sip.headers import CALLER_IDENTITY_HEADERS, STIR_HEADERS
from sipguard.sip.serializer import REASON_PHRASES

__all__ = ["CompiledTrunk", "Policy", "ResponseCode", "compile_policy"]


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """How a rule's rejection is answered: status, reason phrase, Retry-After."""

    code: int
    reason: str
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class CompiledTrunk:
    """One trunk's settings, flattened for evaluation."""

    index: int
    name: str
    international: bool
    route: Peer
    any_number: bool  # the trunk's ranges include "*"
    trusted: bool
    require_pai: bool
    from_must_match_pai: bool
    display_name: str  # reject | strip | ignore
    home_cli_anonymize: bool
    home_cli_exempt: RangeIndex | None
    refused_callees: frozenset[str]
    calling_tz: tzinfo | None
    calling_windows: tuple[tuple[int, int], ...]
    monitored: frozenset[str]  # rule ids only reported (all of them in monitor mode)
    responses: Mapping[str, ResponseCode]  # every rule's: the rule file's, else built in
    limits: TrunkLimits = NO_LIMITS
    full_answers: bool = False  # answers.detail full: refusals tell the trunk why
    # Header keys of the caller's INVITE never relayed on an allowed call: the
    # identity headers sipguard replaces, and unless the trunk passes them,
    # STIR/SHAKEN signatures sipguard cannot verify.
    strip: frozenset[str] = CALLER_IDENTITY_HEADERS | STIR_HEADERS


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything `evaluate()` needs, compiled from one RuleSet."""

    rules: RuleSet
    plan: NumberPlan
    home_prefix: str  # "+" + country code
    trunks: tuple[CompiledTrunk, ...]
    by_name: Mapping[str, CompiledTrunk]
    sources: TrunkIndex
    allocations: RangeIndex
    do_not_originate: RangeIndex
    suspended: Mapping[str, float]  # number -> epoch seconds the suspension lifts
    suspended_why: Mapping[str, str]  # number -> the reason the rule file gives, if any
    emergency: frozenset[str]
    screens_numbers: bool  # some number is in do_not_originate or suspended
    # The answer to a source of no trunk: the top-level responses.unknown_source,
    # else the built-in 403 (a trunk's responses cannot name it).
    unknown_source: ResponseCode

    def trunk_for(self, host: str, port: int) -> CompiledTrunk | None:
        """The trunk whose `sources` claim (host, port), or None."""
        trunk = self.sources.lookup(host, port)
        return None if trunk is None else self.by_name[trunk.name]


def compile_policy(rules: RuleSet, *, zones: Mapping[str, tzinfo]) -> Policy:
    """Compile a validated RuleSet; `zones` maps each calling_hours tz name
    to its tzinfo (loaded by the caller, since that reads the zone files)."""
    plan = NumberPlan.from_numbering(rules.numbering)
    global_responses = _responses(rules, None)
    trunks = tuple(
        _compile_trunk(index, trunk, rules, zones, global_responses)
        for index, trunk in enumerate(rules.trunks)
    )
    allocations = RangeIndex(
        (allocation, index)
        for index, trunk in enumerate(rules.trunks)
        for allocation in trunk.ranges
        if allocation != "*"
    )
    do_not_originate = RangeIndex((entry, 0) for entry in rules.do_not_originate)
    suspended = {
        item.number: datetime.combine(item.until, datetime.min.time(), UTC).timestamp()
        for item in rules.suspended
    }
    return Policy(
        rules=rules,
        plan=plan,
        home_prefix="+" + rules.numbering.country_code,
        trunks=trunks,
        by_name={trunk.name: trunk for trunk in trunks},
        sources=TrunkIndex(rules.trunks),
        allocations=allocations,
        do_not_originate=do_not_originate,
        suspended=suspended,
        suspended_why={item.number: item.reason for item in rules.suspended if item.reason},
        emergency=_emergency(rules, plan),
        screens_numbers=len(do_not_originate) > 0 or bool(suspended),
        unknown_source=global_responses.get("unknown_source") or default_response("unknown_source"),
    )


def _compile_trunk(
    index: int,
    trunk: Trunk,
    rules: RuleSet,
    zones: Mapping[str, tzinfo],
    global_responses: Mapping[str, ResponseCode],
) -> CompiledTrunk:
    identity = trunk.identity
    hours = trunk.calling_hours
    exempt_ranges = [
        (allocation, 0) for exemption in trunk.home_cli_exempt for allocation in exemption.ranges
    ]
    return CompiledTrunk(
        index=index,
        name=trunk.name,
        international=trunk.kind == "international",
        route=Peer(trunk.route.transport, trunk.route.host, trunk.route.port),
        any_number="*" in trunk.ranges,
        trusted=identity.trusted,
        require_pai=identity.require_pai,
        from_must_match_pai=identity.from_must_match_pai,
        display_name=identity.display_name,
        home_cli_anonymize=trunk.home_cli == "anonymize",
        home_cli_exempt=RangeIndex(exempt_ranges) if exempt_ranges else None,
        refused_callees=trunk.refused_callee_numbers,
        calling_tz=None if hours is None else zones[hours.tz],
        calling_windows=() if hours is None else hours.allow,
        monitored=rules.monitored_rules_of(trunk),
        responses={**_DEFAULT_RESPONSES, **global_responses, **_responses(rules, trunk)},
        limits=_limits(trunk.limits),
        full_answers=rules.answer_detail_of(trunk) == "full",
        strip=CALLER_IDENTITY_HEADERS
        | (STIR_HEADERS if identity.stir_identity == "strip" else frozenset()),
    )


def _limits(limits: Limits) -> TrunkLimits:
    """The rate table's view of a trunk's `limits` section."""
    one_ring = limits.one_ring
    cps = None
    if limits.cps is not None:
        cps = TokenBucketLimit(rate=limits.cps, burst=limits.burst or max(1, math.ceil(limits.cps)))
    if limits == Limits():
        # The one object the gate tests by identity: a trunk without limits
        # never enters the rate table.
        return NO_LIMITS
    return TrunkLimits(
        cps=cps,
        concurrent=limits.concurrent,
        per_caller=_window(limits.per_caller),
        per_callee=_window(limits.per_callee),
        one_ring=None
        if one_ring is None
        else OneRingLimit(
            max_ring=one_ring.max_ring,
            calls=one_ring.calls,
            window=one_ring.window,
            block_for=one_ring.block_for,
            warn=one_ring.warn,
        ),
    )


def _window(window: Window | None) -> WindowLimit | None:
    if window is None:
        return None
    return WindowLimit(
        calls=window.calls, window=window.window, warn=window.warn, block_for=window.block_for
    )


def _responses(rules: RuleSet, trunk: Trunk | None) -> dict[str, ResponseCode]:
    """Response overrides from the rule file (global, or one trunk's)."""
    specs = rules.responses if trunk is None else trunk.responses
    return {
        rule: ResponseCode(
            code=spec.code, reason=spec.reason or _phrase(spec.code), retry_after=spec.retry_after
        )
        for rule, spec in specs
    }


def phrase_for(code: int) -> str:
    """The reason phrase sipguard sends with `code` when the rule file names none:
    the standard one (`404 Not Found`), or `Refused` for a code that has none."""
    return _phrase(code)


# The phrase of a refusal whose code has no standard phrase (RFC 3261 §21:
# an unknown code is read as its class, x00; the phrase is for humans).
NONSTANDARD_PHRASE = "Refused"


def _phrase(code: int) -> str:
    return REASON_PHRASES.get(code, NONSTANDARD_PHRASE)


# Retry-After of the built-in 503 for concurrent calls: a slot frees when some
# call ends, which the table cannot predict; a few seconds spreads retries.
# (cps_limit computes its own: the time to the next token.)
DEFAULT_CONCURRENT_RETRY_AFTER = 5.0

# Refusals that end when something outside the call changes (a call ends, the
# shared store is back), so the table cannot say when.
_WAITING_RULES = frozenset({"concurrent_limit", "ratetable_unavailable"})

# Built once: the answer of each rule when the rule file does not set one.
_DEFAULT_RESPONSES: Mapping[str, ResponseCode] = MappingProxyType(
    {
        rule: ResponseCode(
            code=code,
            reason=_phrase(code),
            retry_after=DEFAULT_CONCURRENT_RETRY_AFTER if rule in _WAITING_RULES else None,
        )
        for rule, (code, _) in RULE_DEFAULTS.items()
    }
)


def default_response(rule: str) -> ResponseCode:
    """The built-in answer for `rule`: 403 Forbidden, or 503 for rate limits."""
    return _DEFAULT_RESPONSES[rule]


def _emergency(rules: RuleSet, plan: NumberPlan) -> frozenset[str]:
    numbers: set[str] = set()
    for text in rules.emergency_numbers:
        numbers.add(text)
        normalised = plan.normalise(text)
        if normalised is not None:
            numbers.add(normalised)
    return frozenset(numbers)
