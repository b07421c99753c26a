"""Caller-ID policy: one pure, synchronous decision per new call.

`evaluate(policy, trunk, call, wall_time=...)` returns a `Verdict`. It never
performs I/O or reads a clock; `wall_time` (epoch seconds) comes in for the
calling-hours and suspension rules.

Evaluation order (the first rule that fires decides):
1. source: `unknown_source`
2. caller present and dialable: `missing_caller_id`, `invalid_caller_id`
3. number-wide rules: `do_not_originate`, `suspended_number`
4. trunk kind: `home_cli_from_abroad`
5. identity consistency: `identity_mismatch`, `display_name_spoof`
6. allocation: `caller_of_other_trunk`, `caller_not_allocated`
7. callee and time: `refused_callee`, `outside_calling_hours`
   (skipped for calls to emergency numbers)
The rate table's rules come after these and are applied by the caller.

Numbers checked: the *network* number (P-Asserted-Identity on a trusted
trunk, else the From number) and the *presentation* number (From) when it is
present and not anonymous. Both must pass rules 3 to 6.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sipguard.policy.compiled import CompiledTrunk, Policy, default_response
from sipguard.policy.frozen import build
from sipguard.policy.numbers import NumberPlan, numbers_in_display_name
from sipguard.policy.verdict import RULE_DEFAULTS, Verdict
from sipguard.rules.values import MONITORABLE_RULES

__all__ = ["CallView", "IdentityNumbers", "evaluate", "evaluate_identity_change"]


# No __slots__: the gate builds views with `frozen.build()`, as the engine
# builds verdicts.
@dataclass(frozen=True)
class CallView:
    """What the policy needs from a dialog-creating INVITE, as plain text.

    Attributes:
        from_number: the number text of the From URI (None: no user part).
        from_anonymous: From is an anonymous URI (RFC 3323).
        display_name: From's display name, if any.
        asserted: number texts of the P-Asserted-Identity values (or of
            Remote-Party-ID when there is no PAI), in order; None for a value
            that carries no number.
        privacy_id: the caller asked for identity privacy (Privacy: id).
        callee: the number text of the Request-URI (or To) user part.
    """

    from_number: str | None
    from_anonymous: bool = False
    display_name: str | None = None
    asserted: tuple[str | None, ...] = ()
    privacy_id: bool = False
    callee: str | None = None


# Not frozen: a frozen __init__ costs a call per field, and this private value
# is never changed.
# Every rule is noted, none refuses: a call to an emergency number.
_PASS_ALL = MONITORABLE_RULES


@dataclass(slots=True)
class _Fired:
    """A rule that fired, with what made it fire (for the reason text)."""

    rule: str
    detail: str | None = None


def evaluate(
    policy: Policy, trunk: CompiledTrunk | None, call: CallView, *, wall_time: float
) -> Verdict:
    """Decide one new call. Pure: same inputs, same verdict.

    The first rule that fires and is enforced refuses the call. A rule the
    trunk only monitors (`monitor_rules`, `mode: monitor`), and every rule on
    a call to an emergency number, is noted instead and the evaluation goes
    on; the call is then allowed with the first noted rule as its `rule`.
    """
    raw = call.callee
    callee = policy.plan.normalise(raw) if raw else None
    shown = callee or raw or None  # the callee for the trail: E.164, else as written
    if trunk is None:
        return _outcome(trunk, _Fired("unknown_source"), None, None, shown, False)
    emergency = raw in policy.emergency or callee in policy.emergency
    passing = _PASS_ALL if emergency else trunk.monitored
    identified = _identify(policy.plan, trunk, call)
    if isinstance(identified, _Fired):  # no number to check any further
        return _outcome(trunk, identified, None, None, shown, emergency)
    presentation, network, asserted_disagree = identified
    if presentation is None or presentation == network:
        numbers: tuple[str, ...] = (network,)
    else:
        numbers = (network, presentation)
    noted: list[_Fired] = []
    refused: _Fired | None = None
    if policy.screens_numbers:
        refused = _number_rules(policy, numbers, wall_time, passing, noted)
    anonymize = False
    if not refused and trunk.international:
        home = _home_cli(policy, trunk, numbers)
        if isinstance(home, _Fired):
            refused = _enforced(home, passing, noted)
        else:
            anonymize = home
    if not refused and asserted_disagree:
        fired = _Fired("identity_mismatch", "P-Asserted-Identity values disagree")
        refused = _enforced(fired, passing, noted)
    strip = False
    if not refused:
        consistency = _consistency(policy, trunk, call, network, presentation, passing, noted)
        if isinstance(consistency, _Fired):
            refused = consistency
        else:
            strip = consistency
    if not refused and not anonymize and not trunk.any_number:
        for number in numbers:
            refused = _enforced(_allocation(policy, trunk, number), passing, noted)
            if refused:
                break
    if not refused and not emergency and (trunk.refused_callees or trunk.calling_tz is not None):
        refused = _enforced(_callee_and_time(trunk, callee, wall_time), passing, noted)
    if refused:
        first = noted[0].rule if noted else None
        return _outcome(trunk, refused, network, presentation, shown, emergency, noted=first)
    if noted:
        return _outcome(
            trunk, noted[0], network, presentation, shown, emergency, anonymize=anonymize
        )
    return build(
        Verdict,
        {
            "allowed": True,
            "trunk": trunk.name,
            "caller": network,
            "presentation": presentation,
            "anonymize": anonymize,
            "strip_display_name": strip,
            "callee": shown,
            "emergency": emergency,
        },
    )


# The identity a request presents: its From number and its asserted numbers,
# as written (`number_of_uri` of each); None where a header holds no number.
IdentityNumbers = tuple[str | None, tuple[str | None, ...]]


def evaluate_identity_change(
    policy: Policy, trunk: CompiledTrunk, initial: IdentityNumbers, current: IdentityNumbers
) -> Verdict:
    """Decide a mid-dialog request (re-INVITE, UPDATE) of the caller: rule
    `identity_changed` fires when its From number, or one of its asserted
    numbers, is not one the dialog was set up with (compared in E.164, so a
    number written another way is the same number). The rule honours the
    trunk's `responses` and monitoring like every other rule."""
    normalise = policy.plan.normalise

    def e164(number: str | None) -> str | None:
        return None if number is None else normalise(number) or number

    initial_from, initial_asserted = initial
    from_now, asserted_now = current
    known_from = e164(initial_from)
    known = {e164(number) for number in initial_asserted} or {known_from}
    changed = None
    if e164(from_now) != known_from:
        changed = f"From {from_now or '-'}, was {initial_from or '-'}"
    else:
        moved = [number for number in asserted_now if e164(number) not in known]
        if moved:
            changed = f"asserted {moved[0] or '-'}"
    if changed is None:
        return build(Verdict, {"allowed": True, "trunk": trunk.name, "caller": known_from})
    fired = _Fired("identity_changed", changed)
    return _outcome(trunk, fired, known_from, None, None, False)


def _enforced(fired: _Fired | None, passing: frozenset[str], noted: list[_Fired]) -> _Fired | None:
    """`fired` if it refuses the call; None if nothing fired or the rule only
    reports (then it is noted)."""
    if fired is None or fired.rule not in passing:
        return fired
    noted.append(fired)
    return None


def _identify(
    plan: NumberPlan, trunk: CompiledTrunk, call: CallView
) -> tuple[str | None, str, bool] | _Fired:
    """Rule group 2: the presentation and network numbers, and whether the
    asserted numbers disagree."""
    presentation: str | None = None
    from_number = call.from_number
    if from_number is not None and not call.from_anonymous:
        presentation = plan.normalise(from_number)
        if presentation is None:
            return _Fired("invalid_caller_id", f"From '{from_number[:32]}'")
    asserted: str | None = None  # the first asserted number
    disagree = False
    if trunk.trusted:
        previous = None
        for text in call.asserted:
            if text is None or text == previous:
                continue  # a repeat (sip: and tel: forms of one number) changes nothing
            previous = text
            number = plan.normalise(text)
            if number is None:
                return _Fired("invalid_caller_id", f"P-Asserted-Identity '{text[:32]}'")
            if asserted is None:
                asserted = number
            elif number != asserted:
                disagree = True
        if trunk.require_pai and asserted is None:
            return _Fired("missing_caller_id", "P-Asserted-Identity is required")
    network = presentation if asserted is None else asserted
    if network is None:
        return _Fired("missing_caller_id")
    if call.from_anonymous and not call.privacy_id and asserted is None:
        return _Fired("missing_caller_id", "anonymous From without Privacy")
    return presentation, network, disagree


def _number_rules(
    policy: Policy,
    numbers: tuple[str, ...],
    wall_time: float,
    passing: frozenset[str],
    noted: list[_Fired],
) -> _Fired | None:
    """Rule group 3: numbers that may never, or not now, be a caller ID."""
    for number in numbers:
        if policy.do_not_originate.owners_e164(number):
            fired = _enforced(_Fired("do_not_originate", number), passing, noted)
            if fired is not None:
                return fired
        lifts = policy.suspended.get(number)
        if lifts is not None and wall_time < lifts:
            why = policy.suspended_why.get(number)
            detail = f"{number} ({why})" if why else number
            fired = _enforced(_Fired("suspended_number", detail), passing, noted)
            if fired is not None:
                return fired
    return None


def _home_cli(policy: Policy, trunk: CompiledTrunk, numbers: tuple[str, ...]) -> bool | _Fired:
    """Rule group 4: home-country numbers on an international trunk.

    Returns True to relay anonymized (home_cli: anonymize), False to go on.
    """
    for number in numbers:
        if not number.startswith(policy.home_prefix):
            continue
        exempt = trunk.home_cli_exempt
        if exempt is not None and exempt.owners_e164(number):
            continue
        if trunk.home_cli_anonymize:
            return True
        return _Fired("home_cli_from_abroad", number)
    return False


def _consistency(
    policy: Policy,
    trunk: CompiledTrunk,
    call: CallView,
    network: str,
    presentation: str | None,
    passing: frozenset[str],
    noted: list[_Fired],
) -> bool | _Fired:
    """Rule group 5; returns whether to strip the display name."""
    if trunk.from_must_match_pai and presentation is not None and presentation != network:
        fired = _Fired("identity_mismatch", f"From {presentation}, asserted {network}")
        if _enforced(fired, passing, noted) is not None:
            return fired
    if trunk.display_name == "ignore" or call.display_name is None:
        return False
    for digits in numbers_in_display_name(call.display_name):
        if policy.plan.normalise(digits) in (network, presentation):
            continue
        if trunk.display_name == "strip":
            return True
        fired = _Fired("display_name_spoof", f"display name '{call.display_name[:32]}'")
        return _enforced(fired, passing, noted) or False
    return False


def _allocation(policy: Policy, trunk: CompiledTrunk, number: str) -> _Fired | None:
    """Rule group 6: the number must be allocated to this trunk (unless its
    ranges include "*", which the caller checks first)."""
    owners = policy.allocations.owners_e164(number)
    if trunk.index in owners:
        return None
    if owners:
        other = policy.trunks[owners[0]].name
        return _Fired("caller_of_other_trunk", f"{number} belongs to trunk '{other}'")
    return _Fired("caller_not_allocated", number)


def _callee_and_time(trunk: CompiledTrunk, callee: str | None, wall_time: float) -> _Fired | None:
    """Rule group 7."""
    if callee is not None and callee in trunk.refused_callees:
        return _Fired("refused_callee", callee)
    if trunk.calling_tz is None:
        return None
    local = datetime.fromtimestamp(wall_time, trunk.calling_tz)
    minute = local.hour * 60 + local.minute
    for start, end in trunk.calling_windows:
        inside = start <= minute < end if start < end else minute >= start or minute < end
        if inside:
            return None
    return _Fired("outside_calling_hours", f"{local:%H:%M} {trunk.calling_tz}")


def _outcome(
    trunk: CompiledTrunk | None,
    fired: _Fired,
    network: str | None,
    presentation: str | None,
    callee: str | None,
    emergency: bool,
    *,
    noted: str | None = None,
    anonymize: bool = False,
) -> Verdict:
    """A fired rule: a rejection; or, for a rule the trunk only monitors and
    for a call to an emergency number, an allow that names the rule (the call
    is relayed, never asserted as validated).

    Either way the verdict names the callee, for the trail. A rejection
    names the monitored rule that fired before it (`noted`); an allow keeps
    the home-country anonymisation decided before the rule fired, so a
    monitored rule never lets a forged home caller ID through as such.
    """
    rule = fired.rule
    text = RULE_DEFAULTS[rule][1]
    reason = text if fired.detail is None else f"{text}: {fired.detail}"
    if trunk is not None and (emergency or rule in trunk.monitored):
        return build(
            Verdict,
            {
                "allowed": True,
                "rule": rule,
                "reason": reason,
                "trunk": trunk.name,
                "caller": network,
                "presentation": presentation,
                "monitored": not emergency,
                "callee": callee,
                "emergency": emergency,
                "anonymize": anonymize,
            },
        )
    response = default_response(rule) if trunk is None else trunk.responses[rule]
    return build(
        Verdict,
        {
            "allowed": False,
            "rule": rule,
            "code": response.code,
            "phrase": response.reason,
            "reason": reason,
            "trunk": None if trunk is None else trunk.name,
            "caller": network,
            "presentation": presentation,
            "retry_after": response.retry_after,
            "callee": callee,
            "noted": noted,
        },
    )
