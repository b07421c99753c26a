"""The rule-file schema: value parsers, value invariants, and validate() over a located tree."""

from __future__ import annotations

import dataclasses
import ipaddress
from datetime import date

import pytest

from sipguard.errors import RuleFileError, RuleFileErrors
from sipguard.rules import values
from sipguard.rules.loader import compose_tree
from sipguard.rules.schema import (
    DEFAULT_LISTEN,
    RULE_IDS,
    CallingHours,
    Endpoint,
    Exemption,
    IdentitySettings,
    Limits,
    Located,
    LocatedMapping,
    LocatedScalar,
    LocatedSequence,
    Numbering,
    OneRing,
    RateTableSettings,
    ReferencedFile,
    ResponseSpec,
    RuleSet,
    SourceMatch,
    Suspension,
    Trunk,
    Window,
    parse_allocation,
    parse_duration,
    parse_endpoint,
    parse_host_port,
    parse_number,
    parse_reason_phrase,
    parse_redis_url,
    parse_source,
    parse_time_window,
    referenced_files,
    validate,
)

pytestmark = pytest.mark.unit

ZONES = frozenset({"UTC", "Asia/Shanghai", "Europe/Berlin"})

MINIMAL = """\
numbering: {country_code: "86"}
trunks:
  - name: sh-callcenter
    sources: ["10.1.0.0/24"]
    route: "udp:127.0.0.1:5080"
"""


def check(text: str) -> RuleSet:
    return validate(compose_tree(text, path="t.yaml"), path="t.yaml", known_timezones=ZONES)


def problems(text: str) -> list[str]:
    with pytest.raises(RuleFileErrors) as caught:
        check(text)
    return [f"{error.line}:{error.column}: {error.message}" for error in caught.value.errors]


# -- value parsers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp:127.0.0.1:5080", Endpoint(transport="udp", host="127.0.0.1", port=5080)),
        ("tcp:[::1]:5060", Endpoint(transport="tcp", host="::1", port=5060)),
        ("udp:127.0.0.1", Endpoint(transport="udp", host="127.0.0.1", port=5060)),
        ("udp:[2001:DB8:0::1]", Endpoint(transport="udp", host="2001:db8::1", port=5060)),
        (" UDP:192.0.2.1:5070 ", Endpoint(transport="udp", host="192.0.2.1", port=5070)),
    ],
)
def test_parse_endpoint(text: str, expected: Endpoint) -> None:
    assert parse_endpoint(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls:127.0.0.1:5061", "unsupported transport 'tls'; use 'udp' or 'tcp'"),
        ("127.0.0.1:5060", "missing transport; write 'udp:127.0.0.1:5060' or 'tcp:127.0.0.1:5060'"),
        ("5080", "expected TRANSPORT:ADDRESS[:PORT], e.g. 'udp:192.0.2.10:5060'"),
        ("udp:::1:5060", "write an IPv6 address in brackets, e.g. '[2001:db8::1]:5060'"),
        ("udp:127.0.0.1:0", "port 0 is out of range (1-65535)"),
        ("udp:127.0.0.1:65536", "port 65536 is out of range (1-65535)"),
        ("udp:127.0.0.1:50x", "port '50x' is not a number"),
        (
            "udp:sbc.example.net",
            "'sbc.example.net' is a host name; write the IP address (names are not resolved)",
        ),
        ("udp:[::1", "'[' without a closing ']'"),
        ("udp:[10.0.0.1]:5060", "brackets are for IPv6 addresses only"),
    ],
)
def test_parse_endpoint_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_endpoint(text)
    assert str(caught.value) == message


def test_parse_endpoint_port_zero_only_when_allowed() -> None:
    assert parse_endpoint("udp:127.0.0.1:0", allow_port_zero=True).port == 0


def test_endpoint_str_round_trips() -> None:
    for text in ("udp:127.0.0.1:5080", "tcp:[::1]:5060"):
        assert str(parse_endpoint(text)) == text


@pytest.mark.parametrize(
    ("text", "network", "port"),
    [
        ("10.1.0.0/24", "10.1.0.0/24", None),
        ("127.0.0.1:5071", "127.0.0.1/32", 5071),
        ("127.0.0.1", "127.0.0.1/32", None),
        ("[::1]:5071", "::1/128", 5071),
        ("::1", "::1/128", None),
        ("[2001:db8::]/32", "2001:db8::/32", None),
        ("::ffff:192.0.2.7", "192.0.2.7/32", None),
        ("0.0.0.0/0", "0.0.0.0/0", None),
    ],
)
def test_parse_source(text: str, network: str, port: int | None) -> None:
    assert parse_source(text) == SourceMatch(network=ipaddress.ip_network(network), port=port)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.1.0.5/24", "host bits are set; did you mean '10.1.0.0/24'?"),
        ("10.1.0.0/33", "prefix length 33 is too long for IPv4 (at most 32)"),
        ("10.1.0.0/x", "prefix length 'x' is not a number"),
        ("10.0.0.0/8:5060", "a network cannot carry a port; use one address for IP:port"),
        ("300.1.1.1", "not an IP address"),
        ("127.0.0.1:", "':' with no port after it"),
        ("127.0.0.1:0", "port 0 is out of range (1-65535)"),
        ("sbc.example.net", "a host name; write the IP address (names are not resolved)"),
    ],
)
def test_parse_source_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_source(text)
    assert str(caught.value) == message


def test_source_str_and_specificity() -> None:
    assert str(parse_source("[::1]:5071")) == "[::1]:5071"
    assert str(parse_source("10.1.0.0/24")) == "10.1.0.0/24"
    ranks = [
        parse_source(t).specificity
        for t in ("10.0.0.0/8", "10.1.0.0/24", "10.1.0.1", "10.1.0.1:5060")
    ]
    assert ranks == sorted(ranks)


def test_parse_host_port() -> None:
    assert parse_host_port("192.0.2.1:9060") == ("192.0.2.1", 9060)
    assert parse_host_port("[::1]:9060") == ("::1", 9060)
    assert parse_host_port("192.0.2.1", default_port=5060) == ("192.0.2.1", 5060)
    assert parse_host_port("fe80::1%eth0") == ("fe80::1", None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("3s", 3.0),
        ("30m", 1800.0),
        ("1h", 3600.0),
        ("24h", 86400.0),
        ("60d", 5184000.0),
        ("1h30m", 5400.0),
        ("0.5s", 0.5),
        ("5ms", 0.005),
        ("1500ms", 1.5),
        ("3000ms", 3.0),
        ("1s500ms", 1.5),
        ("1m5s", 65.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["30", "m", "1w", "1 h", "-1s", "", "1h 30m", "5 ms", "5MS", "5msec", "5mss"]
)
def test_parse_duration_needs_number_and_unit(text: str) -> None:
    with pytest.raises(ValueError, match="a duration is a number and a unit"):
        parse_duration(text)


def test_parse_duration_refuses_zero() -> None:
    for text in ("0s", "0ms", "0.0h"):
        with pytest.raises(ValueError, match="longer than zero"):
            parse_duration(text)


def test_parse_duration_names_every_unit() -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration("30")
    assert str(caught.value) == (
        "a duration is a number and a unit (ms, s, m, h, d), e.g. '30m' or '1h30m'"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (" redis://127.0.0.1:6379 ", "redis://127.0.0.1:6379"),
        ("REDIS://10.0.0.40:6379/", "redis://10.0.0.40:6379/"),
        ("redis://[2001:db8::40]:6379/15", "redis://[2001:db8::40]:6379/15"),
        ("rediss://cache.example.net:6380/1", "rediss://cache.example.net:6380/1"),
        ("redis://:s3cret@10.0.0.40:6379/0", "redis://:s3cret@10.0.0.40:6379/0"),
        (
            "rediss://sipguard:s3cret@cache.example.net.:6380",
            "rediss://sipguard:s3cret@cache.example.net.:6380",
        ),
        ("unix:///run/redis/redis.sock", "unix:///run/redis/redis.sock"),
        ("unix:///run/redis/redis.sock?db=2", "unix:///run/redis/redis.sock?db=2"),
        ("unix://:s3cret@/run/redis/redis.sock", "unix://:s3cret@/run/redis/redis.sock"),
    ],
)
def test_parse_redis_url(text: str, expected: str) -> None:
    assert parse_redis_url(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "127.0.0.1:6379",
            "expected redis://HOST:PORT[/DB], rediss://HOST:PORT[/DB] or unix:///PATH[?db=DB], "
            "e.g. 'redis://127.0.0.1:6379/0'",
        ),
        (
            "http://127.0.0.1:6379",
            "unsupported scheme 'http://'; use redis://, rediss:// (TLS) or unix://",
        ),
        (
            "redis+sentinel://127.0.0.1:26379",
            "unsupported scheme 'redis+sentinel://'; use redis://, rediss:// (TLS) or unix://",
        ),
        ("redis://", "no host; write e.g. 'redis://127.0.0.1:6379/0'"),
        ("redis://:6379/0", "no host; write e.g. 'redis://127.0.0.1:6379/0'"),
        ("redis://127.0.0.1", "add a port, e.g. 'redis://127.0.0.1:6379'"),
        ("rediss://cache.example.net/0", "add a port, e.g. 'rediss://cache.example.net:6379'"),
        ("redis://[::1]", "add a port, e.g. 'redis://[::1]:6379'"),
        (
            "redis://::1:6379",
            "write an IPv6 address in brackets, e.g. 'redis://[2001:db8::1]:6379'",
        ),
        ("redis://[10.0.0.40]:6379", "brackets are for IPv6 addresses only"),
        ("redis://10.0.0.40:0", "port 0 is out of range (1-65535)"),
        ("redis://10.0.0.40:65536", "port 65536 is out of range (1-65535)"),
        ("redis://10.0.0.40:63x9", "port '63x9' is not a number"),
        ("redis://300.0.0.40:6379", "'300.0.0.40' is not an IP address or host name"),
        ("redis://redis_main:6379", "'redis_main' is not an IP address or host name"),
        ("redis://10.0.0.40:6379/x", "database 'x' is not a number"),
        ("redis://10.0.0.40:6379/0/1", "database '0/1' is not a number"),
        (
            "redis://10.0.0.40:6379/0?socket_timeout=1",
            "query options ('?...') are not taken; the rate table sets its own",
        ),
        ("redis://10.0.0.40:6379/0#main", "a URL fragment ('#...') has no meaning here"),
        (
            "unix://run/redis.sock",
            "unix:// takes an absolute socket path and no host, e.g. 'unix:///run/redis/redis.sock'",
        ),
        ("unix:///run/redis/", "'/run/redis/' is a directory, not a socket path"),
        (
            "unix:///run/redis.sock?timeout=1",
            "the only query option of unix:// is the database, e.g. '?db=0'",
        ),
        ("unix:///run/redis.sock?db=one", "database 'one' is not a number"),
    ],
)
def test_parse_redis_url_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_redis_url(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*", "*"),
        ("+869521", "+869521"),
        (" +869521 ", "+869521"),
        ("+862131771200-+862131771299", "+862131771200-+862131771299"),
        ("+862131771200 - +862131771299", "+862131771200-+862131771299"),
        ("+862131771200-+862131771200", "+862131771200-+862131771200"),
        ("+123456789012345", "+123456789012345"),
    ],
)
def test_parse_allocation(text: str, expected: str) -> None:
    assert parse_allocation(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("02131771200", "not in E.164 form: write '+', the country code and the number"),
        ("+", "'+' needs digits after it"),
        ("+86 21", "only digits may follow '+'"),
        ("+0123", "country codes never start with 0"),
        ("+1234567890123456", "16 digits; E.164 numbers have at most 15"),
        ("+862131771299-+862131771200", "range start is greater than its end"),
        (
            "+8621-+86211",
            "range ends differ in length (4 and 5 digits); "
            "give both ends the same number of digits",
        ),
        ("+86-21-3177", "a range is START-END, e.g. '+862131771200-+862131771299'"),
        (
            "+862131771200-862131771299",
            "range end '862131771299': not in E.164 form: "
            "write '+', the country code and the number",
        ),
    ],
)
def test_parse_allocation_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_allocation(text)
    assert str(caught.value) == message


def test_any_number_only_where_allowed() -> None:
    with pytest.raises(ValueError, match="not allowed here"):
        parse_allocation("*", allow_any=False)


def test_parse_number_is_an_e164_check() -> None:
    assert parse_number("+869521345678") == "+869521345678"
    with pytest.raises(ValueError):
        parse_number("+8621-+8622")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("09:00-12:00", (540, 720)),
        ("9:30 - 17:45", (570, 1065)),
        ("00:00-24:00", (0, 1440)),
        ("22:00-06:00", (1320, 360)),
        ("22:00-00:00", (1320, 0)),
    ],
)
def test_parse_time_window(text: str, expected: tuple[int, int]) -> None:
    assert parse_time_window(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("9-12", "expected HH:MM-HH:MM, e.g. '09:00-12:00'"),
        ("24:00-25:00", "24:00 is not a time of day"),
        ("09:00-24:30", "24:30 is not a time of day"),
        ("09:60-10:00", "09:60 is not a time of day"),
        ("12:00-12:00", "the window is empty; write '00:00-24:00' for the whole day"),
    ],
)
def test_parse_time_window_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_time_window(text)
    assert str(caught.value) == message


# -- value invariants ---------------------------------------------------------


def test_values_are_frozen_and_slotted() -> None:
    endpoint = parse_endpoint("udp:127.0.0.1:5080")
    with pytest.raises(dataclasses.FrozenInstanceError):
        endpoint.port = 1  # type: ignore[misc]
    assert not hasattr(endpoint, "__dict__")


def test_constructors_refuse_impossible_values() -> None:
    with pytest.raises(ValueError):
        Endpoint(transport="tls", host="127.0.0.1", port=5061)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Endpoint(transport="udp", host="127.0.0.1", port=70000)
    with pytest.raises(ValueError):
        SourceMatch(network=ipaddress.ip_network("10.0.0.0/8"), port=5060)
    with pytest.raises(ValueError):
        IdentitySettings(display_name="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CallingHours(tz="UTC", allow=((600, 600),))
    route = parse_endpoint("udp:127.0.0.1:5080")
    with pytest.raises(ValueError):
        Trunk(name="a", kind="foreign", sources=(), route=route)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        RuleSet(mode="shadow", numbering=Numbering(country_code="86"))  # type: ignore[arg-type]


def test_suspension_lifts_on_its_date() -> None:
    suspension = Suspension(number="+869521345678", until=date(2027, 5, 1))
    assert suspension.active_on(date(2027, 4, 30))
    assert not suspension.active_on(date(2027, 5, 1))


def test_rule_file_errors_str_is_one_error_a_line() -> None:
    errors = RuleFileErrors(
        [
            RuleFileError("first", path="r.yaml", line=1, column=2),
            RuleFileError("second", path="r.yaml", line=3, column=4),
        ]
    )
    assert str(errors) == "r.yaml:1:2: first\nr.yaml:3:4: second"
    assert len(errors.errors) == 2


# -- validate() ---------------------------------------------------------------


def scalar(value: str | int | bool | None, line: int, column: int = 1) -> LocatedScalar:
    return LocatedScalar(
        value=value, text="" if value is None else str(value), line=line, column=column
    )


def mapping(line: int, *entries: tuple[str, Located]) -> LocatedMapping:
    return LocatedMapping(
        entries=tuple((scalar(key, line, 1), value) for key, value in entries), line=line, column=1
    )


def test_validate_needs_no_yaml() -> None:
    tree = mapping(
        1,
        ("numbering", mapping(1, ("country_code", scalar("44", 1)))),
        (
            "trunks",
            LocatedSequence(
                items=(
                    mapping(
                        2,
                        ("name", scalar("london", 2)),
                        ("sources", scalar("192.0.2.0/24", 3)),
                        ("route", scalar("tcp:192.0.2.254", 4)),
                        ("ranges", scalar("+4420", 5)),
                    ),
                ),
                line=2,
                column=1,
            ),
        ),
    )
    rules = validate(tree, path="memory")
    assert rules.numbering == Numbering(
        country_code="44", national_prefix="0", international_prefix="00"
    )
    assert rules.trunks[0].route == Endpoint(transport="tcp", host="192.0.2.254", port=5060)
    assert rules.trunks[0].ranges == ("+4420",)
    assert rules.path == "memory"


def test_validate_reports_positions_of_hand_built_nodes() -> None:
    tree = mapping(7, ("numbering", mapping(8, ("country_code", scalar("0", 9, 5)))))
    with pytest.raises(RuleFileErrors) as caught:
        validate(tree, path="memory")
    assert [str(error) for error in caught.value.errors] == [
        "memory:9:5: numbering.country_code must not start with 0, got '0'"
    ]


def test_defaults() -> None:
    rules = check(MINIMAL)
    assert rules.version == 1
    assert rules.mode == "enforce"
    assert rules.listen == DEFAULT_LISTEN
    assert rules.audit_log is None and rules.metrics is None
    assert rules.do_not_originate == () and rules.suspended == () and rules.emergency_numbers == ()
    trunk = rules.trunks[0]
    assert trunk.kind == "national"
    assert trunk.ranges == ()
    assert trunk.identity == IdentitySettings(
        require_pai=False, from_must_match_pai=True, display_name="reject"
    )
    assert trunk.limits == Limits()
    assert trunk.calling_hours is None and trunk.refused_callees is None and trunk.mode is None
    assert trunk.refused_callee_numbers == frozenset()
    assert trunk.identity.trusted is True
    assert (trunk.home_cli, trunk.home_cli_exempt, trunk.responses) == ("reject", (), ())
    assert rules.responses == ()
    assert rules.mode_of(trunk) == "enforce"
    assert rules.ratetable == RateTableSettings(
        backend="memory", url=None, max_keys=1_000_000, on_backend_failure="open", timeout=0.05
    )


def test_empty_optional_values_mean_the_default() -> None:
    rules = check(MINIMAL + "    identity:\n    limits:\n    ranges:\nmode:\nlisten:\nratetable:\n")
    assert rules.trunks[0].limits == Limits()
    assert rules.listen == DEFAULT_LISTEN
    assert rules.ratetable == RateTableSettings()
    empty = check(
        "ratetable: {backend: , max_keys: , on_backend_failure: , timeout: }\n"
        + MINIMAL
        + "    limits:\n"
        "      per_caller: {calls: 30, window: 30m, warn: , block_for: }\n"
        "      one_ring: {max_ring: 3s, calls: 10, window: 1h, block_for: 24h, warn: }\n"
    )
    assert empty.ratetable == RateTableSettings()
    assert empty.trunks[0].limits.per_caller == Window(calls=30, window=1800.0)
    assert empty.trunks[0].limits.one_ring == OneRing(
        max_ring=3.0, calls=10, window=3600.0, block_for=86400.0
    )


# -- warn levels, cool-downs, the rate table --------------------------------------


def test_warn_levels_and_cool_downs_are_read() -> None:
    limits = (
        check(
            MINIMAL + "    limits:\n"
            "      per_caller: {calls: 30, window: 30m, warn: 20, block_for: 2h}\n"
            "      per_callee: {calls: 5, window: 1h, block_for: 60d}\n"
            "      one_ring: {max_ring: 500ms, calls: 10, window: 1h, block_for: 24h, warn: 9}\n"
        )
        .trunks[0]
        .limits
    )
    assert limits.per_caller == Window(calls=30, window=1800.0, warn=20, block_for=7200.0)
    assert limits.per_callee == Window(calls=5, window=3600.0, block_for=5184000.0)
    assert limits.one_ring == OneRing(
        max_ring=0.5, calls=10, window=3600.0, block_for=86400.0, warn=9
    )


def test_warn_level_must_be_below_the_block_level() -> None:
    text = MINIMAL + "    limits: {per_callee: {calls: 1, window: 1h, warn: 1}}\n"
    assert problems(text) == [
        "6:55: trunk 'sh-callcenter': limits.per_callee.warn must be less than "
        "limits.per_callee.calls (1), got 1; a warn level at or past the block level never warns"
    ]


def test_warn_level_is_not_compared_with_a_bad_block_level() -> None:
    text = MINIMAL + "    limits: {per_caller: {calls: 0, window: 1h, warn: 5}}\n"
    assert problems(text) == [
        "6:34: trunk 'sh-callcenter': limits.per_caller.calls must be a whole number of "
        "at least 1, got 0"
    ]


def test_windows_refuse_impossible_values() -> None:
    for arguments in (
        {"calls": 0, "window": 60.0},
        {"calls": True, "window": 60.0},
        {"calls": 5, "window": 0.0},
        {"calls": 5, "window": 60.0, "warn": 5},
        {"calls": 5, "window": 60.0, "warn": 0},
        {"calls": 5, "window": 60.0, "block_for": 0.0},
        {"calls": 5, "window": float("nan")},
    ):
        with pytest.raises(ValueError):
            Window(**arguments)  # type: ignore[arg-type]
    for arguments in (
        {"max_ring": 3.0, "calls": 10, "window": 3600.0, "block_for": 60.0, "warn": 10},
        {"max_ring": 0.0, "calls": 10, "window": 3600.0, "block_for": 60.0},
        {"max_ring": 3.0, "calls": 10, "window": 3600.0, "block_for": 0.0},
    ):
        with pytest.raises(ValueError):
            OneRing(**arguments)  # type: ignore[arg-type]
    assert Window(calls=2, window=1.0, warn=1).warn == 1


def test_redis_rate_table() -> None:
    rules = check(
        "ratetable:\n"
        "  backend: redis\n"
        "  url: 'rediss://:s3cret@cache.example.net:6380/1'\n"
        "  max_keys: 250_000\n"
        "  on_backend_failure: closed\n"
        "  timeout: 2ms\n" + MINIMAL
    )
    assert rules.ratetable == RateTableSettings(
        backend="redis",
        url="rediss://:s3cret@cache.example.net:6380/1",
        max_keys=250_000,
        on_backend_failure="closed",
        timeout=0.002,
    )
    assert check(
        "ratetable: {backend: redis, url: 'unix:///run/redis.sock'}\n" + MINIMAL
    ).ratetable == (RateTableSettings(backend="redis", url="unix:///run/redis.sock"))


def test_memory_rate_table_takes_the_redis_only_settings() -> None:
    rules = check("ratetable: {on_backend_failure: closed, timeout: 500ms}\n" + MINIMAL)
    assert rules.ratetable == RateTableSettings(on_backend_failure="closed", timeout=0.5)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ratetable: memory\n", "1:12: ratetable must be a mapping of keys, got 'memory'"),
        (
            "ratetable: {backend: redis, url: 'redis://user:pa:ss@10.0.0.40'}\n",
            "1:34: ratetable.url 'redis://user:***@10.0.0.40': add a port, "
            "e.g. 'redis://10.0.0.40:6379'",
        ),
        (
            "ratetable: {backend: redis, url: }\n",
            "1:33: ratetable.url needs a value (backend redis needs the server, "
            'e.g. url: "redis://127.0.0.1:6379/0")',
        ),
        (
            "ratetable: {backend: Valkey, url: 'redis://10.0.0.40:6379'}\n",
            "1:22: ratetable.backend must be 'memory' or 'redis', got 'Valkey'; it speaks the "
            "Redis protocol, so write 'backend: redis'",
        ),
        (
            "ratetable: {backend: memory, url: 'redis://10.0.0.40:6379'}\n",
            "1:30: ratetable.url needs 'backend: redis'; the memory backend keeps its counters "
            "in this process, so add 'backend: redis' or remove url",
        ),
        (
            "ratetable: {timeout: 501ms}\n",
            "1:22: ratetable.timeout '501ms' is too long: at most 500ms, since shared "
            "counters staler than a UDP caller's INVITE retransmission (T1 = 500ms, "
            "RFC 3261 §17.1.1.2) no longer describe the calls being decided",
        ),
        (
            "ratetable: {sync_interval: 2s}\n",
            "1:28: ratetable.sync_interval '2s' must be between 5ms and 1s: shorter loads "
            "Redis for nothing, longer lets the instances admit more past a shared limit",
        ),
        (
            "ratetable: {max_keys: -5}\n",
            "1:23: ratetable.max_keys must be a whole number of at least 1, got -5",
        ),
    ],
)
def test_rate_table_errors(text: str, message: str) -> None:
    assert problems(text + MINIMAL) == [message]


def test_rate_table_settings_refuse_impossible_values() -> None:
    for arguments in (
        {"backend": "valkey"},
        {"backend": "redis"},
        {"url": "redis://10.0.0.40:6379"},
        {"backend": "redis", "url": "http://10.0.0.40:6379"},
        {"max_keys": 0},
        {"max_keys": True},
        {"on_backend_failure": "ignore"},
        {"timeout": 0.0},
        {"timeout": 0.6},
    ):
        with pytest.raises(ValueError):
            RateTableSettings(**arguments)  # type: ignore[arg-type]


def test_rate_table_keys_elsewhere_say_where_they_belong() -> None:
    assert problems("url: 'redis://10.0.0.40:6379'\n" + MINIMAL + "    max_keys: 10\n") == [
        "1:1: unknown key 'url'; put it under 'ratetable'",
        "7:5: trunk 'sh-callcenter': unknown key 'max_keys'; it belongs under the top-level "
        "'ratetable'",
    ]


def test_trunk_mode_overrides_the_rule_set() -> None:
    rules = check("mode: monitor\n" + MINIMAL + "    mode: enforce\n")
    assert rules.mode == "monitor"
    assert rules.mode_of(rules.trunks[0]) == "enforce"
    assert rules.trunk_named("sh-callcenter") is rules.trunks[0]
    assert rules.trunk_named("nope") is None


def test_burst_defaults_to_cps_rounded_up() -> None:
    assert check(MINIMAL + "    limits: {cps: 2.5}\n").trunks[0].limits.burst == 3
    assert check(MINIMAL + "    limits: {cps: 0.2}\n").trunks[0].limits.burst == 1


def test_single_strings_stand_for_one_item_lists() -> None:
    rules = check(
        "listen: 'udp:127.0.0.1:5060'\n"
        + MINIMAL.replace('["10.1.0.0/24"]', "10.1.0.0/24")
        + "    ranges: '*'\n"
    )
    assert len(rules.listen) == 1
    assert len(rules.trunks[0].sources) == 1
    assert rules.trunks[0].ranges == ("*",)


def test_overlapping_networks_of_different_trunks_are_allowed() -> None:
    rules = check(
        MINIMAL + "  - name: wide\n"
        "    sources: ['10.0.0.0/8', '10.1.0.1:5060']\n"
        "    route: 'udp:127.0.0.1:5080'\n"
    )
    assert len(rules.trunks) == 2


def test_calling_hours_time_zone_is_checked_against_known_zones() -> None:
    text = MINIMAL + "    calling_hours: {tz: %s, allow: ['09:00-18:00']}\n"
    assert check(text % "Asia/Shanghai").trunks[0].calling_hours == CallingHours(
        tz="Asia/Shanghai", allow=((540, 1080),)
    )
    assert problems(text % "Asia/Shangai") == [
        "6:25: trunk 'sh-callcenter': calling_hours.tz 'Asia/Shangai' is not a known time zone; "
        "did you mean 'Asia/Shanghai'?"
    ]
    assert problems(text % "Mars/Olympus") == [
        "6:25: trunk 'sh-callcenter': calling_hours.tz 'Mars/Olympus' is not a known time zone "
        "(use an IANA name such as 'Asia/Shanghai')"
    ]


def test_without_known_zones_only_the_shape_is_checked() -> None:
    text = MINIMAL + "    calling_hours: {tz: Mars/Olympus, allow: ['09:00-18:00']}\n"
    rules = validate(compose_tree(text), path="t.yaml")
    assert rules.trunks[0].calling_hours is not None


def test_missing_numbering_is_reported_at_the_top() -> None:
    assert problems("trunks: []\n") == [
        "1:1: missing required key 'numbering' (e.g. numbering: {country_code: \"86\"})"
    ]


def test_national_forms_get_an_e164_suggestion() -> None:
    text = "numbering: {country_code: '44', national_prefix: '0', international_prefix: '00'}\n"
    assert problems(text + "do_not_originate: ['0900123', '0033123456', '12345']\n") == [
        "2:20: do_not_originate entry '0900123': not in E.164 form: write '+', the country code "
        "and the number; did you mean '+44900123'?",
        "2:31: do_not_originate entry '0033123456': not in E.164 form: write '+', the country code "
        "and the number; did you mean '+33123456'?",
        "2:45: do_not_originate entry '12345': not in E.164 form: write '+', the country code "
        "and the number",
    ]


def test_keys_must_be_plain_names() -> None:
    assert problems(MINIMAL + "? [a, b]\n: 1\n") == ["6:3: keys are plain names, got a list"]


def test_unknown_key_without_a_near_miss_lists_the_keys() -> None:
    assert problems("numbering: {country_code: '86', zone: x}\n") == [
        "1:33: unknown key 'zone' in numbering; expected one of: country_code, national_prefix, "
        "international_prefix"
    ]


def test_errors_are_sorted_by_position() -> None:
    found = problems("trunks: [{name: a}]\nmode: bad\nnumbering: {country_code: x}\n")
    positions = [tuple(int(part) for part in line.split(":")[:2]) for line in found]
    assert positions == sorted(positions)
    assert len(found) == 4


# -- rule ids, responses, trust, home CLI ---------------------------------------


def test_rule_ids_are_the_documented_nineteen_in_order() -> None:
    from sipguard.policy.verdict import RULE_DEFAULTS

    # The rule file's ids and the policy's defaults name the same rules.
    assert sorted(RULE_IDS) == sorted(RULE_DEFAULTS)
    assert len(RULE_IDS) == len(set(RULE_IDS)) == 19
    assert RULE_IDS[0] == "unknown_source" and RULE_IDS[-1] == "ratetable_unavailable"
    assert RULE_IDS.index("do_not_originate") < RULE_IDS.index("home_cli_from_abroad")


def test_sipguards_own_refusals_are_no_rule_the_rule_file_can_name() -> None:
    assert set(values.SERVICE_REFUSALS) == {"draining", "trunk_capacity"}
    assert set(values.SERVICE_REFUSALS).isdisjoint(RULE_IDS)
    found = problems(
        "responses:\n  draining: {code: 480}\nmonitor_rules: [trunk_capacity]\n" + MINIMAL
    )
    assert found == [
        "2:3: 'draining' in responses is no rule of the rule file: sipguard's own 503 "
        "(with Reason and Retry-After) cannot be changed or monitored",
        "3:17: 'trunk_capacity' in monitor_rules is no rule of the rule file: sipguard's own "
        "503 (with Reason and Retry-After) cannot be changed or monitored",
    ]


def test_every_rule_id_is_in_the_rule_file_reference() -> None:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "rules.md").read_text("utf-8")
    assert [rule for rule in RULE_IDS if f"`{rule}`" not in text] == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Decline", "Decline"), ("  Too Many Calls ", "Too Many Calls"), ("Abgelehnt\tbitte", None)],
)
def test_parse_reason_phrase(text: str, expected: str | None) -> None:
    assert parse_reason_phrase(text) == (expected or text.strip())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "a reason phrase needs some text"),
        ("  ", "a reason phrase needs some text"),
        ("Go\r\nVia: evil", "control character '\\r' is not allowed in a reason phrase"),
        ("Bell\x07", "control character '\\x07' is not allowed in a reason phrase"),
    ],
)
def test_parse_reason_phrase_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_reason_phrase(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "arguments",
    [
        {"code": 399},
        {"code": 700},
        {"code": True},
        {"code": 603, "retry_after": 5.0},
        {"code": 503, "retry_after": 1.5},
        {"code": 503, "retry_after": 0.0},
        {"code": 403, "reason": ""},
        {"code": 403, "reason": " Forbidden"},
        {"code": 403, "reason": "a\nb"},
    ],
)
def test_response_spec_refuses_impossible_values(arguments: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ResponseSpec(**arguments)  # type: ignore[arg-type]


def test_exemption_and_identity_refuse_impossible_values() -> None:
    with pytest.raises(ValueError):
        Exemption(type="roaming", ranges=("+86139",))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Exemption(type="bilateral", ranges=())
    with pytest.raises(ValueError):
        Exemption(type="bilateral", ranges=("*",))
    with pytest.raises(ValueError):
        IdentitySettings(trusted=False, require_pai=True)
    assert IdentitySettings(trusted=False).from_must_match_pai is True


def test_trunk_refuses_home_cli_settings_unless_international() -> None:
    route = parse_endpoint("udp:127.0.0.1:5080")
    exemption = Exemption(type="mobile_roaming", ranges=("+86139",))
    with pytest.raises(ValueError):
        Trunk(name="a", sources=(), route=route, home_cli="anonymize")
    with pytest.raises(ValueError):
        Trunk(name="a", sources=(), route=route, home_cli_exempt=(exemption,))
    with pytest.raises(ValueError):
        Trunk(name="a", kind="international", sources=(), route=route, home_cli="drop")  # type: ignore[arg-type]
    trunk = Trunk(
        name="a", kind="international", sources=(), route=route, home_cli_exempt=(exemption,)
    )
    assert trunk.home_cli == "reject"


def test_responses_must_be_known_sorted_and_unique() -> None:
    route = parse_endpoint("udp:127.0.0.1:5080")
    spec = ResponseSpec(code=603)
    numbering = Numbering(country_code="86")
    for bad in (
        (("spoofing", spec),),
        (("one_ring", spec), ("cps_limit", spec)),
        (("cps_limit", spec), ("cps_limit", spec)),
    ):
        with pytest.raises(ValueError):
            RuleSet(numbering=numbering, responses=bad)
        with pytest.raises(ValueError):
            Trunk(name="a", sources=(), route=route, responses=bad)
    with pytest.raises(ValueError):
        Trunk(name="a", sources=(), route=route, responses=(("unknown_source", spec),))
    assert RuleSet(numbering=numbering, responses=(("unknown_source", spec),)).responses


def test_response_for_prefers_the_trunk() -> None:
    rules = check(
        "responses:\n"
        "  one_ring: {code: 603, reason: Decline}\n"
        "  cps_limit: {code: 503, retry_after: 5s}\n"
        "  unknown_source: {code: 404}\n" + MINIMAL + "    responses:\n"
        "      cps_limit: {code: 480, reason: Try Later}\n"
    )
    trunk = rules.trunks[0]
    assert [rule for rule, _ in rules.responses] == ["cps_limit", "one_ring", "unknown_source"]
    assert rules.response_for("cps_limit", trunk) == ResponseSpec(code=480, reason="Try Later")
    assert rules.response_for("cps_limit") == ResponseSpec(code=503, retry_after=5.0)
    assert rules.response_for("one_ring", trunk) == ResponseSpec(code=603, reason="Decline")
    assert rules.response_for("unknown_source") == ResponseSpec(code=404)
    assert rules.response_for("call_bombing", trunk) is None
    assert trunk.response_for("one_ring") is None


@pytest.mark.parametrize("rule", ["cps_limit", "concurrent_limit"])
def test_rate_rules_responses_override_code_and_retry_after(rule: str) -> None:
    rules = check(
        f"responses:\n  {rule}: {{code: 503, reason: Rate Limited, retry_after: 10s}}\n"
        + MINIMAL
        + f"    responses:\n      {rule}: {{code: 486, reason: Busy Here}}\n"
        "  - name: bj-callcenter\n"
        "    sources: ['10.2.0.0/24']\n"
        "    route: 'udp:127.0.0.1:5080'\n"
        f"    responses: {{{rule}: {{code: 500, retry_after: 1m}}}}\n"
        "  - name: gz-callcenter\n"
        "    sources: ['10.3.0.0/24']\n"
        "    route: 'udp:127.0.0.1:5080'\n"
    )
    sh, bj, gz = rules.trunks
    assert rules.response_for(rule, sh) == ResponseSpec(code=486, reason="Busy Here")
    assert rules.response_for(rule, bj) == ResponseSpec(code=500, retry_after=60.0)
    assert rules.response_for(rule, gz) == ResponseSpec(
        code=503, reason="Rate Limited", retry_after=10.0
    )
    assert check(MINIMAL).response_for(rule, check(MINIMAL).trunks[0]) is None


def test_empty_responses_mean_none() -> None:
    assert check("responses:\n" + MINIMAL).responses == ()
    assert check("responses: {}\n" + MINIMAL).responses == ()


def test_untrusted_trunk() -> None:
    trunk = check(MINIMAL + "    identity: {trusted: false, from_must_match_pai: false}\n").trunks[
        0
    ]
    assert trunk.identity == IdentitySettings(
        trusted=False, require_pai=False, from_must_match_pai=False, display_name="reject"
    )


def test_trust_contradiction_is_reported_once_at_require_pai() -> None:
    assert problems(MINIMAL + "    identity: {require_pai: true, trusted: false}\n") == [
        "6:29: trunk 'sh-callcenter': identity.require_pai: true contradicts identity.trusted: "
        "false (line 6): an untrusted trunk cannot assert identity, its P-Asserted-Identity is "
        "ignored"
    ]


INTERNATIONAL = """\
numbering: {country_code: "44"}
trunks:
  - name: intl
    kind: international
    sources: ["203.0.113.0/24"]
    route: "udp:127.0.0.1:5080"
    ranges: ["*"]
"""


def test_home_cli_settings_of_an_international_trunk() -> None:
    trunk = check(
        INTERNATIONAL + "    home_cli: anonymize\n"
        "    home_cli_exempt:\n"
        "      - {type: mobile_roaming, ranges: ['+447700900000-+447700900999']}\n"
        "      - {type: bilateral, ranges: ['+441481', '+441534'], note: Crown Dependencies}\n"
    ).trunks[0]
    assert trunk.home_cli == "anonymize"
    assert trunk.home_cli_exempt == (
        Exemption(type="mobile_roaming", ranges=("+447700900000-+447700900999",), note=""),
        Exemption(type="bilateral", ranges=("+441481", "+441534"), note="Crown Dependencies"),
    )
    assert check(INTERNATIONAL).trunks[0].home_cli == "reject"


def test_home_cli_on_a_national_trunk_is_an_error_at_the_key() -> None:
    assert problems(MINIMAL + "    kind: national\n    home_cli: reject\n") == [
        "7:5: trunk 'sh-callcenter': home_cli applies to international trunks only; "
        "add 'kind: international' or remove it"
    ]
    assert check(MINIMAL + "    home_cli:\n    home_cli_exempt:\n").trunks[0].home_cli == "reject"


def test_exemption_ranges_must_be_home_country_numbers() -> None:
    text = INTERNATIONAL + "    home_cli_exempt: [{type: bilateral, ranges: ['+4', '+44-+45']}]\n"
    assert problems(text) == [
        "8:50: trunk 'intl': home_cli_exempt.ranges entry '+4' is not a home-country number "
        "(country code 44); only home-country numbers need an exemption",
        "8:56: trunk 'intl': home_cli_exempt.ranges entry '+44-+45' is not a home-country number "
        "(country code 44); only home-country numbers need an exemption",
    ]


# -- referenced files -----------------------------------------------------------

REFUSED = MINIMAL + "    refused_callees: refused.txt\n"


def test_referenced_files_are_the_refused_callees_paths_once_each() -> None:
    text = (
        REFUSED + "  - name: b\n    sources: 10.2.0.0/24\n    route: 'udp:127.0.0.1:5080'\n"
        "    refused_callees: ' refused.txt '\n"
        "  - {name: c, refused_callees: 2024}\n"
        "  - {name: d, refused_callees: [x]}\n"
        "  - {name: e, refused_callees: ''}\n"
        "  - not a trunk\n"
    )
    assert referenced_files(compose_tree(text)) == ("refused.txt", "2024")
    assert referenced_files(compose_tree("- a\n")) == ()
    assert referenced_files(compose_tree("trunks: {a: 1}\n")) == ()


def validate_with(text: str, files: dict[str, ReferencedFile]) -> RuleSet:
    return validate(compose_tree(text, path="t.yaml"), path="t.yaml", files=files)


def problems_with(text: str, files: dict[str, ReferencedFile]) -> list[str]:
    with pytest.raises(RuleFileErrors) as caught:
        validate_with(text, files)
    return [str(error) for error in caught.value.errors]


def test_refused_callees_numbers_come_from_the_given_text() -> None:
    files = {"refused.txt": ReferencedFile(path="rules/refused.txt", text="+8613800138000\n")}
    trunk = validate_with(REFUSED, files).trunks[0]
    assert trunk.refused_callees == "refused.txt"
    assert trunk.refused_callee_numbers == frozenset({"+8613800138000"})


def test_without_files_refused_callees_are_not_read() -> None:
    trunk = check(REFUSED).trunks[0]
    assert trunk.refused_callees == "refused.txt"
    assert trunk.refused_callee_numbers == frozenset()


def test_refused_callees_file_problems() -> None:
    assert problems_with(REFUSED, {}) == [
        "t.yaml:6:5: trunk 'sh-callcenter': refused_callees 'refused.txt': the file was not read"
    ]
    missing = ReferencedFile(path="refused.txt", problem="Permission denied")
    assert problems_with(REFUSED, {"refused.txt": missing}) == [
        "t.yaml:6:5: trunk 'sh-callcenter': refused_callees 'refused.txt': cannot read the file: "
        "Permission denied"
    ]
    undecodable = ReferencedFile(path="r/refused.txt", problem="not UTF-8", line=3, column=4)
    assert problems_with(REFUSED, {"refused.txt": undecodable}) == [
        "r/refused.txt:3:4: cannot use this refused-callees file: not UTF-8"
    ]


def test_refused_callees_numbers_are_checked_in_their_own_file() -> None:
    text = "# comment\n\n  +86 21\n+862131770000\n 0213177 # national\r\n+862131770000\n"
    files = {"refused.txt": ReferencedFile(path="r/refused.txt", text=text)}
    assert problems_with(REFUSED, files) == [
        "r/refused.txt:3:3: refused callee '+86 21': only digits may follow '+'",
        "r/refused.txt:5:2: refused callee '0213177': not in E.164 form: write '+', the country "
        "code and the number; did you mean '+86213177'?",
        "r/refused.txt:6:1: refused callee '+862131770000' is listed twice (first at line 4)",
    ]


# -- allocation lints -----------------------------------------------------------


def test_do_not_originate_lint_ignores_partial_overlap_and_any_number() -> None:
    rules = check(
        "do_not_originate: ['+86400', '+869521000000-+869521009999']\n"
        + MINIMAL
        + "    ranges: ['*', '+8640', '+869521', '+869521009999-+869521010000']\n"
    )
    assert rules.trunks[0].ranges == ("*", "+8640", "+869521", "+869521009999-+869521010000")


def test_overlap_lint_allows_any_number_and_one_trunk_overlapping_itself() -> None:
    second = "  - name: intl\n    sources: 10.2.0.0/24\n    route: 'udp:127.0.0.1:5080'\n"
    rules = check(
        MINIMAL
        + "    ranges: ['*', '+869521', '+8695210000-+8695219999']\n"
        + second
        + "    ranges: ['*', '+8610']\n"
    )
    assert [trunk.ranges[0] for trunk in rules.trunks] == ["*", "*"]


def test_overlap_lint_reports_the_later_allocation_naming_the_earlier() -> None:
    second = "  - name: bj\n    sources: 10.2.0.0/24\n    route: 'udp:127.0.0.1:5080'\n"
    text = MINIMAL + "    ranges: ['+869521']\n" + second + "    ranges: ['+8695210001']\n"
    assert problems(text) == [
        "10:14: trunk 'bj': ranges entry '+8695210001' overlaps '+869521' of trunk "
        "'sh-callcenter' (line 6, column 14); allocate each number to one trunk"
    ]


# -- answers: what a calling trunk is told ---------------------------------------


def test_answers_default_to_the_rule_id_the_host_and_no_server_header() -> None:
    rules = check(MINIMAL)
    assert rules.answers == values.Answers(detail="rule", warn_agent=None, server_header=None)
    assert rules.trunks[0].answer_detail is None
    assert rules.answer_detail_of(rules.trunks[0]) == "rule"


def test_answers_are_read_and_a_trunk_overrides_the_detail() -> None:
    rules = check(
        "answers: {detail: full, warn_agent: edge1.example.net, server_header: 'edge/2.1'}\n"
        + MINIMAL
        + "    answers: {detail: rule}\n"
        + "  - name: bj\n    sources: ['10.2.0.0/24']\n    route: 'udp:127.0.0.1:5080'\n"
    )
    assert rules.answers == values.Answers(
        detail="full", warn_agent="edge1.example.net", server_header="edge/2.1"
    )
    sh, bj = rules.trunks
    assert (sh.answer_detail, bj.answer_detail) == ("rule", None)
    assert (rules.answer_detail_of(sh), rules.answer_detail_of(bj)) == ("rule", "full")


def test_empty_answers_mean_the_defaults() -> None:
    rules = check("answers:\n" + MINIMAL + "    answers: {detail: }\n")
    assert rules.answers == values.Answers()
    assert rules.trunks[0].answer_detail is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("edge1", "edge1"),
        (" sbc.example.net ", "sbc.example.net"),
        ("gw-1_a.b!%*+`'~", "gw-1_a.b!%*+`'~"),
        ("203.0.113.5:5060", "203.0.113.5:5060"),
        ("[2001:db8::1]:5060", "[2001:db8::1]:5060"),
        ("[2001:DB8::1]", "[2001:db8::1]"),
    ],
)
def test_parse_warn_agent(text: str, expected: str) -> None:
    assert values.parse_warn_agent(text) == expected


@pytest.mark.parametrize("text", ["", "edge 1", 'a"b', "sip:edge", "2001:db8::1", "a\nb", "中"])
def test_parse_warn_agent_refuses_what_is_no_token_or_address(text: str) -> None:
    with pytest.raises(ValueError, match="expected a name of letters, digits"):
        values.parse_warn_agent(text)


def test_answers_refuse_impossible_values() -> None:
    for arguments in (
        {"detail": "verbose"},
        {"warn_agent": "edge 1"},
        {"warn_agent": " edge1"},
        {"server_header": "a\r\nb"},
        {"server_header": ""},
    ):
        with pytest.raises(ValueError):
            values.Answers(**arguments)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="answer detail"):
        Trunk(
            name="t",
            sources=(parse_source("10.0.0.1"),),
            route=parse_endpoint("udp:10.0.0.2"),
            answer_detail="all",  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "answers: {detail: verbose}\n" + MINIMAL,
            "1:19: answers.detail must be 'rule' or 'full', got 'verbose'",
        ),
        (
            "answers: {detail: ful}\n" + MINIMAL,
            "1:19: answers.detail must be 'rule' or 'full', got 'ful'; did you mean 'full'?",
        ),
        (
            "answers: {warn_agent: 'edge 1'}\n" + MINIMAL,
            "1:23: answers.warn_agent 'edge 1': expected a name of letters, digits and "
            "-.!%*_+`'~ (such as 'edge1'), or IP:PORT (such as '203.0.113.5:5060')",
        ),
        (
            'answers: {server_header: "edge\\r\\n2"}\n' + MINIMAL,
            "1:26: answers.server_header 'edge\r\n2': control character '\\r' is not allowed "
            "in a header",
        ),
        (
            "answers: full\n" + MINIMAL,
            "1:10: answers must be a mapping of keys, got 'full'",
        ),
        (
            "answers: {details: full}\n" + MINIMAL,
            "1:11: unknown key 'details' in answers; did you mean 'detail'?",
        ),
        (
            MINIMAL + "    answers: {detail: all}\n",
            "6:23: trunk 'sh-callcenter': answers.detail must be 'rule' or 'full', got 'all'",
        ),
        (
            MINIMAL + "    answers: {warn_agent: edge1}\n",
            "6:15: trunk 'sh-callcenter': answers.warn_agent cannot be set on a trunk: it "
            "names this gateway in every answer; set it in the top-level answers",
        ),
        (
            "detail: full\n" + MINIMAL,
            "1:1: unknown key 'detail'; put it under 'answers'",
        ),
        (
            MINIMAL + "    detail: full\n",
            "6:5: trunk 'sh-callcenter': unknown key 'detail'; it belongs under 'answers' "
            "(at the top level, or detail in a trunk's)",
        ),
    ],
)
def test_answers_errors_carry_their_position(text: str, message: str) -> None:
    assert problems(text) == [message]
