"""Trunk lookup by source address: precedence, address spellings, route peers."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from sipguard.policy.trunks import TrunkIndex, route_peers
from sipguard.rules.loader import load_rules
from sipguard.rules.schema import Trunk, parse_endpoint, parse_source

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "rules" / "example.yaml"


def trunk(name: str, *sources: str, route: str = "udp:127.0.0.1:5080") -> Trunk:
    return Trunk(
        name=name,
        sources=tuple(parse_source(source) for source in sources),
        route=parse_endpoint(route),
    )


@pytest.fixture
def index() -> TrunkIndex:
    return TrunkIndex(
        [
            trunk("wide", "10.0.0.0/8"),
            trunk("site", "10.1.0.0/16"),
            trunk("rack", "10.1.2.0/24"),
            trunk("host", "10.1.2.3"),
            trunk("port", "10.1.2.3:5071"),
            trunk("v6-net", "2001:db8::/32", route="udp:[2001:db8::ff]:5060"),
            trunk("v6-host", "[2001:db8::1]:5060", "::1"),
        ]
    )


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("10.1.2.3", 5071, "port"),  # IP:port beats a bare IP
        ("10.1.2.3", 5060, "host"),  # a bare IP beats any network
        ("10.1.2.4", 5071, "rack"),  # a /24 beats a /16
        ("10.1.3.1", 5060, "site"),  # a /16 beats a /8
        ("10.200.0.1", 5060, "wide"),
        ("11.0.0.1", 5060, None),
        ("2001:db8::1", 5060, "v6-host"),
        ("2001:db8::1", 5061, "v6-net"),
        ("2001:db8:ffff::1", 5060, "v6-net"),
        ("2001:db9::1", 5060, None),
        ("::1", 40000, "v6-host"),
    ],
)
def test_most_specific_source_wins(
    index: TrunkIndex, host: str, port: int, expected: str | None
) -> None:
    found = index.lookup(host, port)
    assert (found.name if found else None) == expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("2001:DB8::1", "v6-host"),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", "v6-host"),
        ("[2001:db8::1]", "v6-host"),
        ("2001:db8::1%eth0", "v6-host"),
        ("::ffff:10.1.2.3", "host"),
        ("[::ffff:10.9.9.9]", "wide"),
        ("0:0:0:0:0:0:0:1", "v6-host"),
    ],
)
def test_address_spellings_are_normalised(index: TrunkIndex, host: str, expected: str) -> None:
    found = index.lookup(host, 5060)
    assert found is not None and found.name == expected


@pytest.mark.parametrize("host", ["", "sbc.example.net", "10.1.2", "[", "10.1.2.3%eth0"])
def test_text_that_is_not_an_address_matches_nothing(index: TrunkIndex, host: str) -> None:
    assert index.lookup(host, 5060) is None


def test_exact_hits_build_no_address_objects(
    index: TrunkIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(text: str) -> None:
        raise AssertionError(f"parsed {text!r} on the fast path")

    monkeypatch.setattr(ipaddress, "ip_address", refuse)
    port_hit, host_hit = index.lookup("10.1.2.3", 5071), index.lookup("10.1.2.3", 5060)
    assert port_hit is not None and port_hit.name == "port"
    assert host_hit is not None and host_hit.name == "host"


def test_a_source_claimed_twice_cannot_be_indexed() -> None:
    with pytest.raises(ValueError, match="claimed by trunks 'a' and 'b'"):
        TrunkIndex([trunk("a", "10.0.0.0/8"), trunk("b", "10.0.0.0/8")])
    with pytest.raises(ValueError):
        TrunkIndex([trunk("a", "192.0.2.1"), trunk("b", "192.0.2.1/32")])


def test_same_address_with_different_ports_is_no_conflict() -> None:
    index = TrunkIndex([trunk("a", "127.0.0.1:5071"), trunk("b", "127.0.0.1:5072")])
    assert [index.lookup("127.0.0.1", port) for port in (5071, 5072, 5073)] == [
        index.trunks[0],
        index.trunks[1],
        None,
    ]


def test_route_peers(index: TrunkIndex) -> None:
    assert index.route_peers == {("127.0.0.1", 5080), ("2001:db8::ff", 5060)}
    assert route_peers(index.trunks) == index.route_peers
    assert index.is_route_peer("127.0.0.1", 5080)
    assert index.is_route_peer("[2001:DB8::FF]", 5060)
    assert index.is_route_peer("::ffff:127.0.0.1", 5080)
    assert not index.is_route_peer("127.0.0.1", 5081)
    assert not index.is_route_peer("not-an-address", 5080)


def test_empty_index_matches_nothing() -> None:
    index = TrunkIndex([])
    assert index.lookup("10.0.0.1", 5060) is None
    assert index.route_peers == frozenset()


def test_example_rules() -> None:
    rules = load_rules(EXAMPLE)
    index = TrunkIndex(rules.trunks)
    assert index.trunks == rules.trunks

    def name(host: str, port: int) -> str | None:
        found = index.lookup(host, port)
        return found.name if found else None

    assert name("127.0.0.1", 5071) == "sh-callcenter"
    assert name("127.0.0.1", 5072) is None
    assert name("10.1.0.77", 5060) == "sh-callcenter"
    assert name("203.0.113.9", 5060) == "intl-gateway"
    assert index.route_peers == {("127.0.0.1", 5080)}
