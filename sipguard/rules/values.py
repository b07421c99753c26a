"""Rule-file values: what a validated rule file means, and the small text languages inside it.

This module owns:

- the immutable values a rule file turns into: `RuleSet`, `Trunk`,
  `Endpoint`, `SourceMatch`, `Numbering`, `IdentitySettings`, `Limits`,
  `Window`, `OneRing`, `CallingHours`, `Suspension`, `Exemption`,
  `ResponseSpec`, `RateTableSettings`, `Answers`;
- the rule ids (`RULE_IDS`), in the order docs/rules.md lists them, and
  what each is about (`RULE_GROUPS`: identity, callee and time, rate
  table; `IDENTITY_RULES`, `INTERCEPTIONS`), and the refusals of
  sipguard's own that are named like rules (`SERVICE_REFUSALS`);
- the text parsers for values written as strings: endpoints
  (`parse_endpoint`), trunk sources (`parse_source`), `HOST:PORT`
  (`parse_host_port`), durations (`parse_duration`), E.164 numbers
  (`parse_number`), ranges and prefixes (`parse_allocation`), time-of-day
  windows (`parse_time_window`), SIP reason phrases
  (`parse_reason_phrase`), warn-agents (`parse_warn_agent`), Server
  header values (`parse_server_header`) and the rate table's Redis URL
  (`parse_redis_url`).

Invariants:

- Rule 1: every value is frozen and slotted; the constructors refuse the
  impossible (an unknown transport, a port out of range, a port on a network).
- Rule 2: a parser either returns a canonical value or raises `ValueError`
  whose message completes "<what> '<text>': " for the rule-file checker
  (`sipguard.rules.schema`), which adds the file position.

Ring 1: pure; no I/O, no clock.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from types import MappingProxyType
from typing import Literal, TypeAlias

from sipguard.errors import RuleFileWarning

__all__ = [
    "ANSWER_DETAILS",
    "AnswerDetail",
    "Answers",
    "BACKEND_FAILURE_POLICIES",
    "DEFAULT_INTERNATIONAL_PREFIX",
    "DEFAULT_LISTEN",
    "DEFAULT_NATIONAL_PREFIX",
    "DEFAULT_RATETABLE_MAX_KEYS",
    "DEFAULT_RATETABLE_SYNC_INTERVAL",
    "DEFAULT_RATETABLE_TIMEOUT",
    "DEFAULT_REDIS_PORT",
    "DEFAULT_SIP_PORT",
    "DISPLAY_NAME_POLICIES",
    "STIR_IDENTITY_POLICIES",
    "StirIdentityPolicy",
    "E164_MAX_DIGITS",
    "EXEMPTION_TYPES",
    "HOME_CLI_POLICIES",
    "MAX_RATETABLE_TIMEOUT",
    "MODES",
    "RATETABLE_BACKENDS",
    "RATETABLE_SYNC_INTERVALS",
    "REDIS_URL_SCHEMES",
    "RULES_VERSION",
    "IDENTITY_RULES",
    "INTERCEPTIONS",
    "MONITORABLE_RULES",
    "RULE_GROUPS",
    "RULE_IDS",
    "SERVICE_REFUSALS",
    "TRANSPORTS",
    "TRUNK_KINDS",
    "BackendFailurePolicy",
    "CallingHours",
    "DisplayNamePolicy",
    "Endpoint",
    "Exemption",
    "ExemptionType",
    "HomeCliPolicy",
    "IPNetwork",
    "IdentitySettings",
    "Interception",
    "Limits",
    "Mode",
    "Numbering",
    "OneRing",
    "RateTableBackend",
    "RuleKind",
    "PROTECTION_BOUNDS",
    "Protection",
    "RateTableSettings",
    "UNKNOWN_SOURCE_ANSWERS",
    "UnknownSourceAnswer",
    "ResponseSpec",
    "Responses",
    "RuleSet",
    "SourceMatch",
    "Suspension",
    "Transport",
    "Trunk",
    "TrunkKind",
    "Window",
    "parse_allocation",
    "parse_duration",
    "parse_endpoint",
    "parse_host_port",
    "parse_number",
    "parse_reason_phrase",
    "parse_server_header",
    "parse_warn_agent",
    "masked_url",
    "parse_redis_url",
    "parse_source",
    "parse_time_window",
]

Transport: TypeAlias = Literal["udp", "tcp"]
TrunkKind: TypeAlias = Literal["national", "international"]
Mode: TypeAlias = Literal["enforce", "monitor"]
DisplayNamePolicy: TypeAlias = Literal["reject", "strip", "ignore"]
StirIdentityPolicy: TypeAlias = Literal["strip", "pass"]
HomeCliPolicy: TypeAlias = Literal["reject", "anonymize"]
ExemptionType: TypeAlias = Literal["mobile_roaming", "bilateral"]
RateTableBackend: TypeAlias = Literal["memory", "redis"]
BackendFailurePolicy: TypeAlias = Literal["open", "closed"]
AnswerDetail: TypeAlias = Literal["rule", "full"]
RuleKind: TypeAlias = Literal["source", "identity", "callee_and_time", "rate_table"]
Interception: TypeAlias = Literal["passthrough", "forged_from_abroad", "modified_caller_id"]
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
_IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

RULES_VERSION = 1
# RFC 3261 §19.1.2: the default port of sip: URIs over UDP and TCP.
DEFAULT_SIP_PORT = 5060
# The prefixes ITU-T recommends and most numbering plans use.
DEFAULT_NATIONAL_PREFIX = "0"
DEFAULT_INTERNATIONAL_PREFIX = "00"
# ITU-T E.164: an international number has at most 15 digits.
E164_MAX_DIGITS = 15
# The rate table's bound on tracked keys per dimension (callers, callees,
# one-ring callers, cool-down blocks), the same as the rate table's own
# default: more distinct numbers than one edge sees within an hour's window.
DEFAULT_RATETABLE_MAX_KEYS = 1_000_000
# Budget for one sync round trip to Redis, in seconds: a LAN round trip is
# well under a millisecond; 50 ms leaves room for a busy server and a busy
# event loop. No call waits on it: calls are decided on the local table.
DEFAULT_RATETABLE_TIMEOUT = 0.05
# A round trip may not take longer than RFC 3261 T1 (500 ms), the time a UDP
# caller waits before resending its INVITE (§17.1.1.2): shared counters
# staler than that no longer describe the calls being decided.
MAX_RATETABLE_TIMEOUT = 0.5
# How often the instances' counters are synced through Redis, in seconds; the
# excess over a shared limit is what the other instances admit within one
# interval (docs/ratetable.md).
DEFAULT_RATETABLE_SYNC_INTERVAL = 0.05
RATETABLE_SYNC_INTERVALS = (0.005, 1.0)
# The port Redis and Valkey listen on unless configured otherwise.
DEFAULT_REDIS_PORT = 6379

# The words a rule file may use for each choice, mapped to their typed value.
TRANSPORTS: Mapping[str, Transport] = MappingProxyType({"udp": "udp", "tcp": "tcp"})
TRUNK_KINDS: Mapping[str, TrunkKind] = MappingProxyType(
    {"national": "national", "international": "international"}
)
MODES: Mapping[str, Mode] = MappingProxyType({"enforce": "enforce", "monitor": "monitor"})
DISPLAY_NAME_POLICIES: Mapping[str, DisplayNamePolicy] = MappingProxyType(
    {"reject": "reject", "strip": "strip", "ignore": "ignore"}
)
STIR_IDENTITY_POLICIES: Mapping[str, StirIdentityPolicy] = MappingProxyType(
    {"strip": "strip", "pass": "pass"}
)
HOME_CLI_POLICIES: Mapping[str, HomeCliPolicy] = MappingProxyType(
    {"reject": "reject", "anonymize": "anonymize"}
)
EXEMPTION_TYPES: Mapping[str, ExemptionType] = MappingProxyType(
    {"mobile_roaming": "mobile_roaming", "bilateral": "bilateral"}
)
RATETABLE_BACKENDS: Mapping[str, RateTableBackend] = MappingProxyType(
    {"memory": "memory", "redis": "redis"}
)
BACKEND_FAILURE_POLICIES: Mapping[str, BackendFailurePolicy] = MappingProxyType(
    {"open": "open", "closed": "closed"}
)
ANSWER_DETAILS: Mapping[str, AnswerDetail] = MappingProxyType({"rule": "rule", "full": "full"})
# URL schemes of a Redis (or Valkey) server: TCP, TCP with TLS, a Unix socket.
REDIS_URL_SCHEMES = ("redis", "rediss", "unix")

# Every rule id, in the order docs/rules.md lists them (the policy engine
# evaluates them in a different order, documented there), with its kind and,
# for the caller-ID rules a regulator counts apart, its interception figure.
# The kinds say what a refusal is about:
# - `source`: no trunk claims the sender; nothing about the call was checked;
# - `identity`: the caller ID itself (caller authentication): present,
#   dialable, allowed as a caller ID, allocated to the trunk, consistent;
# - `callee_and_time`: whom the call is to and when it is made;
# - `rate_table`: rates, concurrency and calling behaviour (the rate table).
# Only an `identity` rule that fires makes a call fail caller authentication
# (docs/operations.md#the-regulator-figures).
RULE_GROUPS: Mapping[str, tuple[RuleKind, Interception | None]] = MappingProxyType(
    {
        "unknown_source": ("source", None),
        "missing_caller_id": ("identity", None),
        "invalid_caller_id": ("identity", None),
        "caller_not_allocated": ("identity", "passthrough"),
        "caller_of_other_trunk": ("identity", "passthrough"),
        "identity_mismatch": ("identity", "modified_caller_id"),
        "display_name_spoof": ("identity", "modified_caller_id"),
        "identity_changed": ("identity", "modified_caller_id"),
        "do_not_originate": ("identity", None),
        "home_cli_from_abroad": ("identity", "forged_from_abroad"),
        "suspended_number": ("identity", None),
        "refused_callee": ("callee_and_time", None),
        "outside_calling_hours": ("callee_and_time", None),
        "cps_limit": ("rate_table", None),
        "concurrent_limit": ("rate_table", None),
        "high_frequency_caller": ("rate_table", None),
        "call_bombing": ("rate_table", None),
        "one_ring": ("rate_table", None),
        "ratetable_unavailable": ("rate_table", None),
    }
)
RULE_IDS: tuple[str, ...] = tuple(RULE_GROUPS)
# The caller-ID rules: a call one of them fired on did not pass caller
# authentication, whether the rule refused it, was only monitored, or was
# passed over for an emergency call.
IDENTITY_RULES: frozenset[str] = frozenset(
    rule for rule, (kind, _) in RULE_GROUPS.items() if kind == "identity"
)
# Identity rule -> the regulator figure its interceptions count in
# (`sipguard_<figure>_intercepted_total`).
INTERCEPTIONS: Mapping[str, Interception] = MappingProxyType(
    {rule: figure for rule, (_, figure) in RULE_GROUPS.items() if figure is not None}
)
# Refusals of sipguard's own rather than of the rule file, with their
# explanation: new calls a draining instance turns away, and calls past a
# trunk's `protection` ceiling (calls_per_trunk, transactions_per_trunk).
# They are named like rules (Reason, Warning, the audit trail, the metrics
# and the log) but are not rule ids: the rule file's `responses` and
# `monitor_rules` cannot name them, and they are decided before any rule
# runs, so the caller ID of such a call was never checked.
SERVICE_REFUSALS: Mapping[str, str] = MappingProxyType(
    {
        "draining": "this instance is draining and takes no new calls",
        "trunk_capacity": "the trunk holds as many calls or requests as protection allows",
    }
)
# The rules a trunk can run in report-only mode: all but unknown_source (a
# call of no trunk has no trunk to monitor it; it is never relayed).
MONITORABLE_RULES: frozenset[str] = frozenset(RULE_IDS) - {"unknown_source"}
# SIP final failure responses (RFC 3261 §21.4-§21.6): 4xx, 5xx and 6xx.
_RESPONSE_CODES = range(400, 700)


# --------------------------------------------------------------------------
# Values of a rule file.


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """A transport address: `udp:192.0.2.10:5060`, `tcp:[2001:db8::1]:5060`.

    `host` is the canonical text of an IP address, without brackets.
    """

    transport: Transport
    host: str
    port: int

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"unsupported transport {self.transport!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")

    def __str__(self) -> str:
        return f"{self.transport}:{_bracketed(self.host)}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceMatch:
    """Where a trunk's requests come from: a network, or one address and port.

    A port narrows a single address (a /32 or /128 network) only.
    """

    network: IPNetwork
    port: int | None = None

    def __post_init__(self) -> None:
        if self.port is None:
            return
        if self.network.prefixlen != self.network.max_prefixlen:
            raise ValueError("a port can only narrow a single address")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")

    @property
    def specificity(self) -> tuple[bool, int]:
        """Sort key: IP:port beats a bare IP beats a longer prefix."""
        return (self.port is not None, self.network.prefixlen)

    def __str__(self) -> str:
        network = self.network
        if network.prefixlen != network.max_prefixlen:
            return str(network)
        host = str(network.network_address)
        return host if self.port is None else f"{_bracketed(host)}:{self.port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Numbering:
    """How national and international dialled forms normalise to E.164."""

    country_code: str
    national_prefix: str = DEFAULT_NATIONAL_PREFIX
    international_prefix: str = DEFAULT_INTERNATIONAL_PREFIX


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentitySettings:
    """How strictly a trunk's caller identity headers are checked.

    Attributes:
        trusted: RFC 3325 trust. An untrusted trunk cannot assert identity:
            its P-Asserted-Identity is ignored for decisions and stripped, so
            requiring one (`require_pai`) is refused.
        require_pai: refuse calls without P-Asserted-Identity.
        from_must_match_pai: From and P-Asserted-Identity must agree; no
            effect on an untrusted trunk.
        display_name: what to do with a numeric display name that differs
            from the number.
        stir_identity: what to do with the caller's STIR/SHAKEN `Identity`
            headers (RFC 8224), which sipguard does not verify: `strip`
            them (sipguard's own verstat speaks for the call), or `pass`
            them on unchanged.
    """

    trusted: bool = True
    require_pai: bool = False
    from_must_match_pai: bool = True
    display_name: DisplayNamePolicy = "reject"
    stir_identity: StirIdentityPolicy = "strip"

    def __post_init__(self) -> None:
        if self.display_name not in DISPLAY_NAME_POLICIES:
            raise ValueError(f"unknown display_name policy {self.display_name!r}")
        if self.stir_identity not in STIR_IDENTITY_POLICIES:
            raise ValueError(f"unknown stir_identity policy {self.stir_identity!r}")
        if self.require_pai and not self.trusted:
            raise ValueError("an untrusted trunk cannot be required to assert identity")


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """At most `calls` calls within a sliding `window` of seconds.

    Attributes:
        calls: the block level: a call past `calls` in the window is refused.
        window: the length of the sliding window, in seconds.
        warn: the warn level: a call past `warn` (and not past `calls`) in
            the window is relayed, logged and counted; None for no warn
            level. Less than `calls`.
        block_for: seconds the number stays refused once a call went past
            `calls` (a cool-down); None: calls are refused only while the
            window already holds `calls` calls.
    """

    calls: int
    window: float
    warn: int | None = None
    block_for: float | None = None

    def __post_init__(self) -> None:
        _check_levels(self.calls, self.warn)
        _check_positive("window", self.window)
        if self.block_for is not None:
            _check_positive("block_for", self.block_for)


@dataclass(frozen=True, slots=True, kw_only=True)
class OneRing:
    """One-ring detection: calls torn down within `max_ring` seconds.

    More than `calls` such calls from one caller within `window` seconds block
    that caller for `block_for` seconds. More than `warn` such calls (when
    set, less than `calls`) are logged and counted, and the caller's calls
    still relayed.
    """

    max_ring: float
    calls: int
    window: float
    block_for: float
    warn: int | None = None

    def __post_init__(self) -> None:
        _check_levels(self.calls, self.warn)
        _check_positive("max_ring", self.max_ring)
        _check_positive("window", self.window)
        _check_positive("block_for", self.block_for)


def _check_levels(calls: int, warn: int | None) -> None:
    """Block level at least 1; a warn level at least 1 and below it."""
    if isinstance(calls, bool) or calls < 1:
        raise ValueError(f"calls {calls!r} is not a whole number of at least 1")
    if warn is not None and (isinstance(warn, bool) or not 1 <= warn < calls):
        raise ValueError(f"warn {warn!r} is not between 1 and calls - 1 ({calls - 1})")


def _check_positive(name: str, seconds: float) -> None:
    if not seconds > 0:
        raise ValueError(f"{name} {seconds!r} is not longer than zero")


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Per-trunk rate and harassment limits; `None` means unlimited."""

    cps: float | None = None
    burst: int | None = None
    concurrent: int | None = None
    per_caller: Window | None = None
    per_callee: Window | None = None
    one_ring: OneRing | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallingHours:
    """Times of day calls are allowed, as (start, end) minutes of day in `tz`.

    A window whose end is before its start runs past midnight.
    """

    tz: str
    allow: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        for start, end in self.allow:
            if not (0 <= start < 1440 and 0 <= end <= 1440 and start != end):
                raise ValueError(f"bad calling window {start}-{end}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Suspension:
    """A number refused as caller ID before `until` (a date, UTC)."""

    number: str
    until: date
    reason: str = ""

    def active_on(self, day: date) -> bool:
        """True while the suspension holds: the suspension lifts on `until`."""
        return day < self.until


@dataclass(frozen=True, slots=True, kw_only=True)
class Exemption:
    """Home-country numbers an international trunk may present after all.

    Attributes:
        type: why: `mobile_roaming` (home subscribers calling from abroad) or
            `bilateral` (an agreement with the carrier on the other side).
        ranges: canonical prefixes and ranges, as in `Trunk.ranges`; never `*`.
        note: free text for people; "" for none.
    """

    type: ExemptionType
    ranges: tuple[str, ...]
    note: str = ""

    def __post_init__(self) -> None:
        if self.type not in EXEMPTION_TYPES:
            raise ValueError(f"unknown exemption type {self.type!r}")
        if not self.ranges:
            raise ValueError("an exemption needs at least one range")
        if "*" in self.ranges:
            raise ValueError("an exemption cannot cover any number ('*')")


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponseSpec:
    """The SIP response a rule answers with, replacing its default.

    Attributes:
        code: a final failure status, 400 to 699.
        reason: the reason phrase; None for the default phrase of the code.
        retry_after: seconds for a Retry-After header (RFC 3261 §20.33);
            only with a 5xx code; None for no header.
    """

    code: int
    reason: str | None = None
    retry_after: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.code, bool) or self.code not in _RESPONSE_CODES:
            raise ValueError(f"response code {self.code!r} is not 400-699")
        if self.reason is not None and parse_reason_phrase(self.reason) != self.reason:
            raise ValueError(f"bad reason phrase {self.reason!r}")
        if self.retry_after is not None:
            if not 500 <= self.code <= 599:
                raise ValueError("retry_after goes with 5xx codes only")
            if not (self.retry_after > 0 and float(self.retry_after).is_integer()):
                raise ValueError(f"retry_after {self.retry_after!r} is not whole seconds")


Responses: TypeAlias = tuple[tuple[str, ResponseSpec], ...]


def _check_monitor_rules(rules: tuple[str, ...]) -> None:
    """Rule ids that can be monitored, each once."""
    unknown = [rule for rule in rules if rule not in MONITORABLE_RULES]
    if unknown:
        raise ValueError(f"rule id {unknown[0]!r} cannot be monitored")
    if len(set(rules)) != len(rules):
        raise ValueError("monitor_rules names a rule id twice")


def _check_responses(responses: Responses) -> None:
    """Rule ids known, each once, sorted."""
    ids = [rule for rule, _ in responses]
    unknown = [rule for rule in ids if rule not in RULE_IDS]
    if unknown:
        raise ValueError(f"unknown rule id {unknown[0]!r}")
    if ids != sorted(set(ids)):
        raise ValueError("responses must be sorted by rule id, each id once")


@dataclass(frozen=True, slots=True, kw_only=True)
class Trunk:
    """One trunk: where its calls come from, where they go, what they may claim.

    Attributes:
        name: unique among the rule set's trunks; used in logs and metrics.
        kind: `international` trunks refuse home-country caller IDs.
        sources: the addresses whose requests belong to this trunk.
        route: the next hop for allowed calls.
        ranges: validated allocation strings: `"*"` (any number), a prefix
            `"+869521"`, or an inclusive range `"+862131771200-+862131771299"`.
        identity: how caller identity headers are checked.
        limits: rate and harassment limits.
        calling_hours: when calls are allowed; None for any time.
        refused_callees: path of a file of numbers this trunk may not call,
            as written in the rule file; None for none.
        refused_callee_numbers: the E.164 numbers read from that file.
        mode: None when the trunk follows the rule set's mode.
        home_cli: on an international trunk, what happens to a home-country
            caller ID: `reject` (rule `home_cli_from_abroad`) or `anonymize`
            (relay the call with the caller ID withheld). Always `reject` on a
            national trunk.
        home_cli_exempt: home-country numbers an international trunk may
            present all the same; empty on a national trunk.
        responses: (rule id, response) pairs sorted by rule id, overriding
            the rule set's `responses` for this trunk's calls.
        answer_detail: what this trunk's refusals tell it (`answers.detail`);
            None when the trunk follows the rule set's.
        monitor_rules: rule ids this trunk only reports (a call they would
            refuse is relayed, marked as not validated); None when the trunk
            follows the rule set's `monitor_rules`.
    """

    name: str
    kind: TrunkKind = "national"
    sources: tuple[SourceMatch, ...]
    route: Endpoint
    ranges: tuple[str, ...] = ()
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    limits: Limits = field(default_factory=Limits)
    calling_hours: CallingHours | None = None
    refused_callees: str | None = None
    refused_callee_numbers: frozenset[str] = frozenset()
    mode: Mode | None = None
    home_cli: HomeCliPolicy = "reject"
    home_cli_exempt: tuple[Exemption, ...] = ()
    responses: Responses = ()
    answer_detail: AnswerDetail | None = None
    monitor_rules: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in TRUNK_KINDS:
            raise ValueError(f"unknown trunk kind {self.kind!r}")
        if self.mode is not None and self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}")
        if self.home_cli not in HOME_CLI_POLICIES:
            raise ValueError(f"unknown home_cli policy {self.home_cli!r}")
        if self.kind != "international" and (self.home_cli != "reject" or self.home_cli_exempt):
            raise ValueError("home_cli and home_cli_exempt apply to international trunks only")
        _check_responses(self.responses)
        if any(rule == "unknown_source" for rule, _ in self.responses):
            raise ValueError("a call of a known trunk is never unknown_source")
        if self.answer_detail is not None and self.answer_detail not in ANSWER_DETAILS:
            raise ValueError(f"unknown answer detail {self.answer_detail!r}")
        _check_monitor_rules(self.monitor_rules or ())

    def response_for(self, rule: str) -> ResponseSpec | None:
        """This trunk's own response for `rule`, or None."""
        return next((spec for rule_id, spec in self.responses if rule_id == rule), None)


UnknownSourceAnswer = Literal["reject", "drop"]
UNKNOWN_SOURCE_ANSWERS: Mapping[str, UnknownSourceAnswer] = MappingProxyType(
    {"reject": "reject", "drop": "drop"}
)
# (low, high) bounds of each whole-number protection limit, checked on load.
PROTECTION_BOUNDS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {
        # A datagram over the path MTU is fragmented, but 1 KiB is the least
        # a real INVITE with SDP needs; 1 MiB is far past any SIP message.
        "max_message_size": (1024, 1 << 20),
        # Five mandatory headers (RFC 3261 §8.1.1) and a few more.
        "max_header_lines": (10, 10_000),
        "max_line_length": (256, 65_535),
        "max_uri_length": (64, 65_535),
        "tcp_connections_per_source": (1, 100_000),
        "calls_per_trunk": (1, 10_000_000),
        "transactions_per_trunk": (1, 10_000_000),
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Protection:
    """Bounds on what any peer may make sipguard hold or parse (`protection:`).

    Attributes:
        max_message_size: bytes of one message, a UDP datagram or a TCP
            frame; larger is answered 513 (or dropped when unaddressable).
        max_header_lines: header lines of one message (folded lines count);
            more is answered 400.
        max_line_length: characters of one header or start line; longer is
            answered 400.
        max_uri_length: characters of the Request-URI; longer is answered 414.
        tcp_connections_per_source: open TCP connections from one address;
            more are closed at once. A trunk's connections (address and
            port match its sources) and strangers' count apart.
        tcp_idle_timeout: seconds a TCP connection may carry nothing before
            it is closed.
        tcp_message_timeout: seconds a TCP peer may take to send one whole
            message once it began (slow senders are closed), and to send
            its first whole message once its connection opened (silent
            connections are closed).
        calls_per_trunk: live calls of one trunk, whatever its `limits`;
            more are answered 503.
        transactions_per_trunk: server transactions of one trunk (requests
            being answered, and their retransmission memory); more are
            answered 503.
        unknown_source_answer: `reject` answers requests from a source of no
            trunk with one uniform 403; `drop` does not answer them at all.
        unknown_source_rate: answers per second to one unknown address over
            UDP (the excess is dropped), so sipguard cannot be made to reflect
            traffic at a forged source.
    """

    max_message_size: int = 65_535
    max_header_lines: int = 100
    max_line_length: int = 8192
    max_uri_length: int = 1024
    tcp_connections_per_source: int = 32
    tcp_idle_timeout: float = 900.0
    tcp_message_timeout: float = 10.0
    calls_per_trunk: int = 10_000
    transactions_per_trunk: int = 20_000
    unknown_source_answer: UnknownSourceAnswer = "reject"
    unknown_source_rate: float = 20.0

    def __post_init__(self) -> None:
        for name, (low, high) in PROTECTION_BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} {value!r} is not a whole number from {low} to {high}")
        for name in ("tcp_idle_timeout", "tcp_message_timeout", "unknown_source_rate"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} {value!r} is not a positive number")
        if self.unknown_source_answer not in UNKNOWN_SOURCE_ANSWERS:
            raise ValueError(f"unknown unknown_source_answer {self.unknown_source_answer!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RateTableSettings:
    """Where the rate table keeps its counters, and how it bounds them.

    Attributes:
        backend: `memory` (this process only) or `redis` (shared by every
            sipguard instance using the same server).
        url: the Redis server, as `parse_redis_url` accepts it; required with
            `redis`, None with `memory`.
        max_keys: at most this many tracked keys per dimension (callers,
            callees, one-ring callers, cool-down blocks) in the in-memory
            table.
        on_backend_failure: with `redis`, when the server cannot answer in
            time: `open` keeps deciding on local counters, `closed` refuses
            calls with 503.
        timeout: seconds one sync round trip to Redis may take, at most
            `MAX_RATETABLE_TIMEOUT`; a slower one counts as a failure.
        sync_interval: seconds between sync rounds, within
            `RATETABLE_SYNC_INTERVALS`.
    """

    backend: RateTableBackend = "memory"
    url: str | None = None
    max_keys: int = DEFAULT_RATETABLE_MAX_KEYS
    on_backend_failure: BackendFailurePolicy = "open"
    timeout: float = DEFAULT_RATETABLE_TIMEOUT
    sync_interval: float = DEFAULT_RATETABLE_SYNC_INTERVAL

    def __post_init__(self) -> None:
        if self.backend not in RATETABLE_BACKENDS:
            raise ValueError(f"unknown rate-table backend {self.backend!r}")
        if self.on_backend_failure not in BACKEND_FAILURE_POLICIES:
            raise ValueError(f"unknown on_backend_failure policy {self.on_backend_failure!r}")
        if (self.backend == "redis") != (self.url is not None):
            raise ValueError("a url goes with the redis backend, and only with it")
        if self.url is not None:
            parse_redis_url(self.url)
        if isinstance(self.max_keys, bool) or self.max_keys < 1:
            raise ValueError(f"max_keys {self.max_keys!r} is not a whole number of at least 1")
        if not 0 < self.timeout <= MAX_RATETABLE_TIMEOUT:
            raise ValueError(f"timeout {self.timeout!r} is not in (0, {MAX_RATETABLE_TIMEOUT}]")
        low, high = RATETABLE_SYNC_INTERVALS
        if not low <= self.sync_interval <= high:
            raise ValueError(f"sync_interval {self.sync_interval!r} is not in [{low}, {high}]")


@dataclass(frozen=True, slots=True, kw_only=True)
class Answers:
    """What sipguard's answers tell a calling trunk (`answers:`).

    The operator's log and audit trail always have the full explanation;
    these settings choose what goes on the wire.

    Attributes:
        detail: the text of a refusal's `Warning: 399`: `rule`, the rule id
            alone; `full`, the rule's explanation with what made it fire
            (numbers, another trunk's name, a suspension's reason). A trunk's
            own `answers.detail` overrides it for that trunk's calls.
        warn_agent: the Warning's warn-agent (RFC 3261 §20.43), a pseudonym
            or `HOST:PORT`; None for sipguard's own address on the transport
            the request came in on.
        server_header: the `Server` header of answers to OPTIONS; None for
            none (an answer does not name the software).
    """

    detail: AnswerDetail = "rule"
    warn_agent: str | None = None
    server_header: str | None = None

    def __post_init__(self) -> None:
        if self.detail not in ANSWER_DETAILS:
            raise ValueError(f"unknown answer detail {self.detail!r}")
        if self.warn_agent is not None and parse_warn_agent(self.warn_agent) != self.warn_agent:
            raise ValueError(f"warn_agent {self.warn_agent!r} is not in canonical form")
        if self.server_header is not None:
            parse_server_header(self.server_header)


DEFAULT_LISTEN: tuple[Endpoint, ...] = (
    Endpoint(transport="udp", host="127.0.0.1", port=DEFAULT_SIP_PORT),
    Endpoint(transport="tcp", host="127.0.0.1", port=DEFAULT_SIP_PORT),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleSet:
    """A whole, validated rule file. Immutable: a reload builds a new one.

    Attributes:
        version: the rule-file format version (1).
        mode: `enforce` refuses bad calls; `monitor` only logs the verdict.
        numbering: how dialled forms normalise to E.164.
        listen: where sipguard takes SIP requests.
        audit_log: path of the decision log, as written; None for none.
        metrics: `HOST:PORT` of the Prometheus endpoint; None for none.
        do_not_originate: prefixes and ranges never valid as caller ID.
        suspended: numbers refused as caller ID until a date.
        emergency_numbers: callee numbers that skip callee, time and rate rules.
        trunks: every trunk, in file order.
        path: the file the rules came from.
        responses: (rule id, response) pairs sorted by rule id, replacing
            the default response of those rules on every trunk.
        ratetable: where the rate table keeps its counters.
        protection: bounds on what peers may make sipguard parse or hold.
        warnings: what checking the file found likely wrong but not wrong
            enough to refuse it, in file order. Not part of the rules'
            value: two rule sets that differ only here are equal.
        answers: what refusals and OPTIONS answers tell a calling trunk.
        monitor_rules: rule ids every trunk only reports while the others
            enforce (a trunk may set its own list); `mode: monitor` reports
            them all.
    """

    version: int = RULES_VERSION
    mode: Mode = "enforce"
    numbering: Numbering
    listen: tuple[Endpoint, ...] = DEFAULT_LISTEN
    audit_log: str | None = None
    metrics: str | None = None
    do_not_originate: tuple[str, ...] = ()
    suspended: tuple[Suspension, ...] = ()
    emergency_numbers: tuple[str, ...] = ()
    trunks: tuple[Trunk, ...] = ()
    path: str = "<rules>"
    responses: Responses = ()
    ratetable: RateTableSettings = field(default_factory=RateTableSettings)
    protection: Protection = field(default_factory=Protection)
    warnings: tuple[RuleFileWarning, ...] = field(default=(), compare=False)
    answers: Answers = field(default_factory=Answers)
    monitor_rules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}")
        _check_responses(self.responses)
        _check_monitor_rules(self.monitor_rules)

    def trunk_named(self, name: str) -> Trunk | None:
        """The trunk called `name`, or None."""
        return next((trunk for trunk in self.trunks if trunk.name == name), None)

    def mode_of(self, trunk: Trunk) -> Mode:
        """The mode a trunk runs in: its own, else the rule set's."""
        return self.mode if trunk.mode is None else trunk.mode

    def monitored_rules_of(self, trunk: Trunk) -> frozenset[str]:
        """The rule ids a trunk only reports: every one in monitor mode, else
        its own `monitor_rules`, else the rule set's."""
        if self.mode_of(trunk) == "monitor":
            return MONITORABLE_RULES
        own = trunk.monitor_rules
        return frozenset(self.monitor_rules if own is None else own)

    def answer_detail_of(self, trunk: Trunk) -> AnswerDetail:
        """What a trunk's refusals tell it: its own `answers.detail`, else the rule set's."""
        return self.answers.detail if trunk.answer_detail is None else trunk.answer_detail

    def response_for(self, rule: str, trunk: Trunk | None = None) -> ResponseSpec | None:
        """The configured response for `rule`: the trunk's, else the rule set's.

        None means the rule's built-in response (403, or 503 for rate and
        concurrency limits). `trunk` is None for a call of no trunk.
        """
        own = trunk.response_for(rule) if trunk is not None else None
        if own is not None:
            return own
        return next((spec for rule_id, spec in self.responses if rule_id == rule), None)


# --------------------------------------------------------------------------
# Text parsers. Each raises ValueError with a message that completes
# "<what> '<text>': ".


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _parse_port(text: str, *, allow_zero: bool = False) -> int:
    if not text:
        raise ValueError("':' with no port after it")
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"port '{text}' is not a number")
    port = int(text)
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise ValueError(f"port {port} is out of range ({low}-65535)")
    return port


def _parse_ip(text: str, *, whole: str) -> _IPAddress:
    """An IP address; messages name `text` only when it is part of `whole`."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    subject = "" if text == whole else f"'{text}' is "
    if re.fullmatch(r"[A-Za-z0-9.-]+", text) and re.search(r"[A-Za-z]", text):
        raise ValueError(f"{subject}a host name; write the IP address (names are not resolved)")
    raise ValueError(f"{subject}not an IP address")


def parse_host_port(
    text: str,
    *,
    default_port: int | None = None,
    require_brackets: bool = False,
    allow_port_zero: bool = False,
) -> tuple[str, int | None]:
    """Parse `HOST[:PORT]`: `192.0.2.1:5060`, `[2001:db8::1]:5060`, `::1`.

    Args:
        text: the address; IPv6 with a port must be written in brackets.
        default_port: the port when none is written.
        require_brackets: refuse a bare IPv6 address (where `::1:5060` could
            be meant as address and port).
        allow_port_zero: accept port 0 ("any free port", for listening).

    Returns:
        The canonical IP text (no brackets) and the port.

    Raises:
        ValueError: the text is not an IP address with an optional port.
    """
    text = text.strip()
    return _host_port(
        text,
        whole=text,
        default_port=default_port,
        require_brackets=require_brackets,
        allow_port_zero=allow_port_zero,
    )


def _host_port(
    text: str,
    *,
    whole: str,
    default_port: int | None,
    require_brackets: bool,
    allow_port_zero: bool,
) -> tuple[str, int | None]:
    """`parse_host_port` of `text`, a part of `whole` (which messages refer to)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError("'[' without a closing ']'")
        if rest and not rest.startswith(":"):
            raise ValueError(f"unexpected '{rest}' after ']'")
        port_text = rest[1:] if rest else None
        if _parse_ip(host, whole=whole).version != 6:
            raise ValueError("brackets are for IPv6 addresses only")
    elif text.count(":") > 1:
        if require_brackets:
            raise ValueError("write an IPv6 address in brackets, e.g. '[2001:db8::1]:5060'")
        host, port_text = text, None
    else:
        host, sep, port_part = text.partition(":")
        port_text = port_part if sep else None
    address = _canonical(_parse_ip(host, whole=whole))
    if port_text is None:
        return str(address), default_port
    return str(address), _parse_port(port_text, allow_zero=allow_port_zero)


def _canonical(address: _IPAddress) -> _IPAddress:
    """Drop an IPv6 zone and unwrap IPv4-mapped IPv6 (`::ffff:192.0.2.1`)."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(int(address))
    return address


def parse_endpoint(text: str, *, allow_port_zero: bool = False) -> Endpoint:
    """Parse `TRANSPORT:HOST[:PORT]`, e.g. `udp:127.0.0.1:5080`, `tcp:[::1]:5060`.

    The port defaults to 5060. IPv6 addresses must be in brackets.

    Raises:
        ValueError: no or an unsupported transport, or a bad address or port.
    """
    text = text.strip()
    transport, sep, rest = text.partition(":")
    if not sep or not re.fullmatch(r"[A-Za-z]+", transport):
        raise ValueError(_missing_transport(text))
    transport_name = TRANSPORTS.get(transport.lower())
    if transport_name is None:
        raise ValueError(f"unsupported transport '{transport}'; use 'udp' or 'tcp'")
    host, port = _host_port(
        rest,
        whole=text,
        default_port=DEFAULT_SIP_PORT,
        require_brackets=True,
        allow_port_zero=allow_port_zero,
    )
    return Endpoint(transport=transport_name, host=host, port=port or 0)


def _missing_transport(text: str) -> str:
    try:
        parse_host_port(text)
    except ValueError:
        return "expected TRANSPORT:ADDRESS[:PORT], e.g. 'udp:192.0.2.10:5060'"
    return f"missing transport; write 'udp:{text}' or 'tcp:{text}'"


def parse_source(text: str) -> SourceMatch:
    """Parse a trunk source: `10.1.0.0/24`, `127.0.0.1:5071`, `127.0.0.1`, `[::1]:5071`.

    Raises:
        ValueError: not an address, `address:port` or CIDR network.
    """
    text = text.strip()
    if "/" not in text:
        host, port = parse_host_port(text)
        return SourceMatch(network=ipaddress.ip_network(host), port=port)
    address_text, _, prefix_text = text.partition("/")
    if address_text.startswith("[") and address_text.endswith("]"):
        address_text = address_text[1:-1]
    if ":" in prefix_text:
        raise ValueError("a network cannot carry a port; use one address for IP:port")
    address = _parse_ip(address_text, whole=text)
    if not prefix_text.isascii() or not prefix_text.isdigit():
        raise ValueError(f"prefix length '{prefix_text}' is not a number")
    prefix = int(prefix_text)
    if prefix > address.max_prefixlen:
        raise ValueError(
            f"prefix length {prefix} is too long for IPv{address.version} "
            f"(at most {address.max_prefixlen})"
        )
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    if network.network_address != address:
        raise ValueError(f"host bits are set; did you mean '{network}'?")
    return SourceMatch(network=network)


# `ms` before `m`, so that "5ms" is five milliseconds, not five minutes and a
# stray "s".
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|[smhd])")
# Seconds per unit; `ms` divides, so that "1500ms" is exactly 1.5.
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """Parse a duration such as `5ms`, `3s`, `30m`, `1h`, `1h30m`, `60d` into seconds.

    Raises:
        ValueError: no unit, an unknown unit, or a zero duration.
    """
    compact = text.strip()
    parts = _DURATION_PART.findall(compact)
    if not parts or "".join(number + unit for number, unit in parts) != compact:
        raise ValueError(
            "a duration is a number and a unit (ms, s, m, h, d), e.g. '30m' or '1h30m'"
        )
    seconds = sum(
        float(number) / 1000.0 if unit == "ms" else float(number) * _DURATION_UNITS[unit]
        for number, unit in parts
    )
    if seconds <= 0:
        raise ValueError("a duration must be longer than zero")
    return seconds


def parse_number(text: str) -> str:
    """Check an E.164 number or prefix (`+862131771200`) and return it stripped.

    Raises:
        ValueError: no leading '+', other characters than digits, a leading 0
            country code, or more than 15 digits.
    """
    text = text.strip()
    if not text.startswith("+"):
        raise ValueError("not in E.164 form: write '+', the country code and the number")
    digits = text[1:]
    if not digits:
        raise ValueError("'+' needs digits after it")
    if not digits.isascii() or not digits.isdigit():
        raise ValueError("only digits may follow '+'")
    if digits[0] == "0":
        raise ValueError("country codes never start with 0")
    if len(digits) > E164_MAX_DIGITS:
        raise ValueError(f"{len(digits)} digits; E.164 numbers have at most {E164_MAX_DIGITS}")
    return text


def parse_allocation(text: str, *, allow_any: bool = True) -> str:
    """Check a range, prefix or `*` and return its canonical text.

    Forms: `*` (any number), a prefix `+869521`, or an inclusive range
    `+862131771200-+862131771299` whose ends have the same number of digits.

    Raises:
        ValueError: a malformed number, unequal range ends, start > end, or
            `*` where `allow_any` is false.
    """
    text = text.strip()
    if text == "*":
        if not allow_any:
            raise ValueError("'*' (any number) is not allowed here")
        return text
    if "-" not in text:
        return parse_number(text)
    parts = [part.strip() for part in text.split("-")]
    if len(parts) != 2:
        raise ValueError("a range is START-END, e.g. '+862131771200-+862131771299'")
    start = _range_end(parts[0], "start")
    end = _range_end(parts[1], "end")
    if len(start) != len(end):
        raise ValueError(
            f"range ends differ in length ({len(start) - 1} and {len(end) - 1} digits); "
            "give both ends the same number of digits"
        )
    if start > end:
        raise ValueError("range start is greater than its end")
    return f"{start}-{end}"


def _range_end(text: str, which: str) -> str:
    try:
        return parse_number(text)
    except ValueError as exc:
        raise ValueError(f"range {which} '{text}': {exc}") from None


_TIME_WINDOW = re.compile(r"([0-9]{1,2}):([0-9]{2})\s*-\s*([0-9]{1,2}):([0-9]{2})")


def parse_time_window(text: str) -> tuple[int, int]:
    """Parse `HH:MM-HH:MM` into (start, end) minutes of day; `24:00` may end a window.

    Raises:
        ValueError: not two times, a time that is not a time of day, or an
            empty window.
    """
    match = _TIME_WINDOW.fullmatch(text.strip())
    if match is None:
        raise ValueError("expected HH:MM-HH:MM, e.g. '09:00-12:00'")
    start_h, start_m, end_h, end_m = (int(group) for group in match.groups())
    if start_h > 23 or start_m > 59:
        raise ValueError(f"{match.group(1)}:{match.group(2)} is not a time of day")
    if end_m > 59 or end_h > 24 or (end_h == 24 and end_m != 0):
        raise ValueError(f"{match.group(3)}:{match.group(4)} is not a time of day")
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if start == end:
        raise ValueError("the window is empty; write '00:00-24:00' for the whole day")
    return start, end


# RFC 3261 §25.1: Reason-Phrase = *(reserved / unreserved / escaped /
# UTF8-NONASCII / UTF8-CONT / SP / HTAB): text, but no control characters.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def parse_reason_phrase(text: str) -> str:
    """Check a SIP reason phrase (`Decline`, `Too Many Calls`) and return it stripped.

    Raises:
        ValueError: an empty phrase, or a control character (a line break
            would end the status line early).
    """
    text = text.strip()
    if not text:
        raise ValueError("a reason phrase needs some text")
    match = _CONTROL.search(text)
    if match is not None:
        raise ValueError(f"control character {match.group()!r} is not allowed in a reason phrase")
    return text


# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" /
# "+" / "`" / "'" / "~").
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")


def parse_warn_agent(text: str) -> str:
    """Check a Warning's warn-agent and return it in canonical form.

    RFC 3261 §20.43: warn-agent = hostport / pseudonym. A pseudonym is a
    token (`edge1`, `sbc.example.net`); an address is `IP:PORT`, an IPv6
    address in brackets (`[2001:db8::1]:5060`).

    Raises:
        ValueError: neither a token nor an IP address with a port.
    """
    text = text.strip()
    if _TOKEN.fullmatch(text):
        return text
    try:
        host, port = parse_host_port(text, require_brackets=True)
    except ValueError:
        raise ValueError(
            "expected a name of letters, digits and -.!%*_+`'~ (such as 'edge1'), "
            "or IP:PORT (such as '203.0.113.5:5060')"
        ) from None
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


def parse_server_header(text: str) -> str:
    """Check a Server header value (RFC 3261 §20.35: `edge/2.1 (lab)`) and return it stripped.

    Raises:
        ValueError: an empty value, or a control character.
    """
    text = text.strip()
    if not text:
        raise ValueError("a Server header needs some text, such as 'edge/2.1'")
    match = _CONTROL.search(text)
    if match is not None:
        raise ValueError(f"control character {match.group()!r} is not allowed in a header")
    return text


# A DNS host name (RFC 1123 §2.1): dot-separated labels of letters, digits
# and inner hyphens, each at most 63 characters; a final dot is allowed.
_HOST_NAME = re.compile(
    r"(?=.{1,254}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)
_REDIS_URL_SHAPE = (
    "expected redis://HOST:PORT[/DB], rediss://HOST:PORT[/DB] or unix:///PATH[?db=DB], "
    "e.g. 'redis://127.0.0.1:6379/0'"
)


_CREDENTIALS = re.compile(r"(://[^:@/]*):[^@/]*@")


def masked_url(url: str) -> str:
    """A URL fit for a message or a log: any password replaced by `***`."""
    return _CREDENTIALS.sub(r"\1:***@", url, count=1)


def parse_redis_url(text: str) -> str:
    """Check the URL of a Redis (or Valkey) server and return it stripped.

    Forms, each with optional `[USER]:PASSWORD@` credentials before the host
    or path:

    - `redis://HOST:PORT[/DB]` (TCP) and `rediss://HOST:PORT[/DB]` (TLS):
      HOST an IP address (IPv6 in brackets) or a host name, resolved when
      connecting and never per call; the port is required; DB a database
      number, default 0;
    - `unix:///PATH[?db=DB]`: a Unix socket at an absolute path.

    Raises:
        ValueError: another scheme, no host or port, a bad port or database
            number, or query options other than `db` on a Unix socket.
    """
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        raise ValueError(_REDIS_URL_SHAPE)
    scheme = scheme.lower()
    canonical = f"{scheme}://{rest}"
    if scheme not in REDIS_URL_SCHEMES:
        raise ValueError(
            f"unsupported scheme '{scheme}://'; use redis://, rediss:// (TLS) or unix://"
        )
    if "#" in rest:
        raise ValueError("a URL fragment ('#...') has no meaning here")
    rest, has_query, query = rest.partition("?")
    _, _, location = rest.rpartition("@")
    if scheme == "unix":
        _check_socket_path(location, query if has_query else None)
        return canonical
    if has_query:
        raise ValueError("query options ('?...') are not taken; the rate table sets its own")
    address, _, database = location.partition("/")
    _check_redis_address(scheme, address)
    if database:
        _check_database(database)
    return canonical


def _check_redis_address(scheme: str, address: str) -> None:
    if address.count(":") > 1 and not address.startswith("["):
        raise ValueError(
            f"write an IPv6 address in brackets, e.g. '{scheme}://[2001:db8::1]:{DEFAULT_REDIS_PORT}'"
        )
    if not address or address.startswith(":"):
        raise ValueError(f"no host; write e.g. '{scheme}://127.0.0.1:{DEFAULT_REDIS_PORT}/0'")
    if address.startswith("["):
        host, port = _host_port(
            address,
            whole=address,
            default_port=None,
            require_brackets=True,
            allow_port_zero=False,
        )
        shown = _bracketed(host)
    else:
        name, has_port, port_text = address.partition(":")
        if not _is_ip(name) and not _is_host_name(name):
            raise ValueError(f"'{name}' is not an IP address or host name")
        port = _parse_port(port_text) if has_port else None
        shown = name
    if port is None:
        raise ValueError(f"add a port, e.g. '{scheme}://{shown}:{DEFAULT_REDIS_PORT}'")


def _is_host_name(text: str) -> bool:
    """RFC 1123 §2.1 syntax; an all-digit last label would read as an IPv4 address."""
    if _HOST_NAME.fullmatch(text) is None:
        return False
    return not text.rstrip(".").rsplit(".", 1)[-1].isdigit()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_socket_path(path: str, query: str | None) -> None:
    if not path.startswith("/"):
        raise ValueError(
            "unix:// takes an absolute socket path and no host, e.g. 'unix:///run/redis/redis.sock'"
        )
    if path.endswith("/"):
        raise ValueError(f"'{path}' is a directory, not a socket path")
    if query is None:
        return
    name, has_value, value = query.partition("=")
    if name != "db" or not has_value:
        raise ValueError("the only query option of unix:// is the database, e.g. '?db=0'")
    _check_database(value)


def _check_database(text: str) -> None:
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"database '{text}' is not a number")
