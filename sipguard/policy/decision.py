"""What the gate tells the B2BUA core about a new call: admit it, or refuse it."""

from __future__ import annotations

from dataclasses import dataclass

from sipguard.peer import Peer

__all__ = ["Allow", "Refuse", "Relay"]


# No __slots__ on either: the gate builds them with `frozen.build()`, which
# needs an instance dict and the defaults as class attributes.
@dataclass(frozen=True)
class Allow:
    """Admit a new call on `trunk` and send it to `route`.

    `from_value` replaces the From value (without tag) on the outbound leg;
    `headers` are added to the outbound INVITE; header keys (lower-case) in
    `strip` are not copied from the inbound INVITE. `note` names the rule
    that fired although the call is relayed: a rule the trunk only monitors,
    or any rule on a call to an emergency number (`emergency`).
    `anonymized`: the caller ID is a home-country number that came in on an
    international trunk with `home_cli: anonymize`, and is withheld: a
    forged caller ID from abroad, intercepted, not a validated one.
    """

    trunk: str
    route: Peer
    from_value: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    strip: frozenset[str] = frozenset()
    note: str | None = None
    caller: str | None = None  # the validated caller number, for logs
    callee: str | None = None  # the normalised called number, for logs
    rate_counted: bool = False  # the rate table counted this call: release it at its end
    warnings: tuple[str, ...] = ()  # rule ids whose warn level this call passed
    emergency: bool = False  # a call to an emergency number: no rule of sipguard's refuses it
    anonymized: bool = False  # a home-country caller ID from abroad, withheld (home_cli)


@dataclass(frozen=True)
class Refuse:
    """Refuse a new call with `status`, statelessly (RFC 3261 §8.2.7).

    `rule` is the stable rule id; `headers` (Reason, Retry-After) are added
    to the response. `warning` is the text of the `Warning: 399` the front
    end adds with its own warn-agent (None: no Warning): the rule id, or the
    explanation where the trunk's answers are `full`. `detail` is the full
    explanation, for the operator's log and audit trail only. `noted` is a
    rule the trunk only monitors that fired before `rule` refused the call.
    """

    status: int
    reason: str
    rule: str
    trunk: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    caller: str | None = None  # the normalised caller number, when readable
    callee: str | None = None  # the normalised called number, when readable
    warning: str | None = None  # what the Warning tells the caller
    detail: str = ""  # why, in full: for the operator
    noted: str | None = None  # a monitored rule that fired before `rule`


@dataclass(frozen=True, slots=True)
class Relay:
    """Relay a mid-dialog request; `note` names a rule that fired but that the
    trunk only monitors (the request goes on, the rule is reported)."""

    note: str | None = None
