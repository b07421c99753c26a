"""The lint of routes that lead back to sipguard's own listen addresses."""

from __future__ import annotations

import pytest

from sipguard.errors import RuleFileErrors
from sipguard.rules.loader import compose_tree
from sipguard.rules.loops import listen_reached
from sipguard.rules.schema import RuleSet, parse_endpoint, validate

pytestmark = pytest.mark.unit


def endpoints(*texts: str) -> tuple:
    return tuple(parse_endpoint(text, allow_port_zero=True) for text in texts)


@pytest.mark.parametrize(
    ("route", "listen", "reached"),
    [
        # the same address, transport and port
        ("udp:127.0.0.1:5060", ["udp:127.0.0.1:5060"], "udp:127.0.0.1:5060"),
        ("tcp:[2001:db8::10]:5060", ["tcp:[2001:db8::10]:5060"], "tcp:[2001:db8::10]:5060"),
        ("udp:[::ffff:10.0.0.10]:5060", ["udp:10.0.0.10:5060"], "udp:10.0.0.10:5060"),
        # a wildcard takes every loopback address of its family
        ("udp:127.0.0.1:5060", ["udp:0.0.0.0:5060"], "udp:0.0.0.0:5060"),
        ("udp:127.0.0.2:5060", ["udp:0.0.0.0:5060"], "udp:0.0.0.0:5060"),
        ("tcp:[::1]:5060", ["tcp:[::]:5060"], "tcp:[::]:5060"),
        # ... and every address the file listens on elsewhere
        ("udp:10.0.0.10:5060", ["udp:0.0.0.0:5060", "tcp:10.0.0.10:5061"], "udp:0.0.0.0:5060"),
        # an exact match is named rather than the wildcard
        (
            "udp:127.0.0.1:5060",
            ["udp:0.0.0.0:5060", "udp:127.0.0.1:5060"],
            "udp:127.0.0.1:5060",
        ),
        # a route to the unspecified address goes to loopback
        ("udp:0.0.0.0:5060", ["udp:127.0.0.1:5060"], "udp:127.0.0.1:5060"),
        ("udp:0.0.0.0:5060", ["udp:0.0.0.0:5060"], "udp:0.0.0.0:5060"),
        ("tcp:[::]:5060", ["tcp:[::1]:5060"], "tcp:[::1]:5060"),
        # UDP on :: is dual-stack; TCP on :: is IPv6 only
        ("udp:127.0.0.1:5060", ["udp:[::]:5060"], "udp:[::]:5060"),
        ("tcp:127.0.0.1:5060", ["tcp:[::]:5060"], None),
        ("udp:[::1]:5060", ["udp:0.0.0.0:5060"], None),
        # another port, another transport, another address: no loop
        ("udp:127.0.0.1:5080", ["udp:127.0.0.1:5060"], None),
        ("tcp:127.0.0.1:5060", ["udp:127.0.0.1:5060"], None),
        ("udp:127.0.0.2:5060", ["udp:127.0.0.1:5060"], None),
        # an address this file never names as local cannot be known to be
        ("udp:10.0.0.11:5060", ["udp:0.0.0.0:5060", "tcp:10.0.0.10:5060"], None),
        # port 0 is chosen at start-up: it matches nothing
        ("udp:127.0.0.1:5060", ["udp:0.0.0.0:0", "udp:127.0.0.1:0"], None),
    ],
)
def test_listen_reached(route: str, listen: list[str], reached: str | None) -> None:
    found = listen_reached(parse_endpoint(route), endpoints(*listen))
    assert (None if found is None else str(found)) == (
        None if reached is None else str(parse_endpoint(reached, allow_port_zero=True))
    )


RULES = """\
numbering: {{country_code: "86"}}
{listen}trunks:
  - name: sh
    sources: ["10.1.0.0/24"]
    route: "{route}"
  - name: bj
    sources: ["10.2.0.0/24"]
    route: "udp:192.0.2.10:5060"
"""


def check(text: str) -> RuleSet:
    return validate(compose_tree(text, path="t.yaml"), path="t.yaml")


def warnings_of(rules: RuleSet) -> list[str]:
    return [f"{w.line}:{w.column}: {w.message}" for w in rules.warnings]


def test_a_route_to_a_listen_address_is_a_warning_at_the_route() -> None:
    rules = check(
        RULES.format(listen='listen: ["udp:10.0.0.10:5060"]\n', route="udp:10.0.0.10:5060")
    )
    assert warnings_of(rules) == [
        "6:12: trunk 'sh': route 'udp:10.0.0.10:5060' leads back to sipguard: it is "
        "sipguard's own listen address 'udp:10.0.0.10:5060' (line 2, column 10); allowed "
        "calls of this trunk would be relayed to sipguard itself, not to a next hop"
    ]
    assert str(rules.warnings[0]).startswith("t.yaml:6:12: warning: trunk 'sh': route ")
    assert rules.trunks[0].route.host == "10.0.0.10"  # the file still loads


def test_a_wildcard_listen_address_is_named_as_taking_the_route() -> None:
    rules = check(RULES.format(listen='listen: ["udp:0.0.0.0:5060"]\n', route="udp:127.0.0.1:5060"))
    assert warnings_of(rules) == [
        "6:12: trunk 'sh': route 'udp:127.0.0.1:5060' leads back to sipguard: sipguard "
        "listens on 'udp:0.0.0.0:5060' (line 2, column 10), which takes that port on every "
        "local address; allowed calls of this trunk would be relayed to sipguard itself, "
        "not to a next hop"
    ]


def test_the_default_listen_addresses_count_when_the_file_has_none() -> None:
    rules = check(RULES.format(listen="", route="tcp:127.0.0.1"))
    assert warnings_of(rules) == [
        "5:12: trunk 'sh': route 'tcp:127.0.0.1' leads back to sipguard: it is sipguard's "
        "own listen address 'tcp:127.0.0.1:5060' (the default, as the file has no listen); "
        "allowed calls of this trunk would be relayed to sipguard itself, not to a next hop"
    ]


def test_routes_elsewhere_give_no_warning() -> None:
    rules = check(RULES.format(listen='listen: ["udp:0.0.0.0:5060"]\n', route="udp:127.0.0.1:5080"))
    assert rules.warnings == ()


def test_warnings_are_kept_with_the_errors_of_a_refused_file() -> None:
    text = RULES.format(listen='listen: ["udp:127.0.0.1:5060"]\n', route="udp:127.0.0.1:5060")
    text = text.replace("name: bj", 'name: "bad name"')
    with pytest.raises(RuleFileErrors) as caught:
        check(text)
    assert [(e.line, e.column) for e in caught.value.errors] == [(7, 11)]
    assert [(w.line, w.column) for w in caught.value.warnings] == [(6, 12)]


def test_warnings_are_no_part_of_the_rules_value() -> None:
    looped = check(RULES.format(listen="", route="udp:127.0.0.1:5060"))
    assert looped.warnings
    assert looped == RuleSet(**{**_fields(looped), "warnings": ()})


def _fields(rules: RuleSet) -> dict[str, object]:
    return {name: getattr(rules, name) for name in RuleSet.__dataclass_fields__}
