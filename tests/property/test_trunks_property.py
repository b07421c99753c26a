"""TrunkIndex.lookup agrees with a brute-force scan over every source of every trunk."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipguard.policy.trunks import TrunkIndex
from sipguard.rules.schema import SourceMatch, Trunk, parse_endpoint

pytestmark = pytest.mark.property

ROUTE = parse_endpoint("udp:127.0.0.1:5080")
PORTS = st.sampled_from([5060, 5061, 5071])

# Small address spaces, so generated sources overlap and queries hit them.
V4_BASE = int(ipaddress.IPv4Address("10.0.0.0"))
V6_BASE = int(ipaddress.IPv6Address("2001:db8::"))


@st.composite
def sources(draw: st.DrawFn) -> SourceMatch:
    if draw(st.booleans()):
        offset, bits, prefix = draw(st.integers(0, 255)), 32, draw(st.integers(20, 32))
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(
            V4_BASE + offset
        )
    else:
        offset, bits, prefix = draw(st.integers(0, 255)), 128, draw(st.integers(116, 128))
        address = ipaddress.IPv6Address(V6_BASE + offset)
    network = ipaddress.ip_network(f"{address}/{prefix}", strict=False)
    port = draw(st.one_of(st.none(), PORTS)) if prefix == bits else None
    return SourceMatch(network=network, port=port)


@st.composite
def trunk_sets(draw: st.DrawFn) -> list[Trunk]:
    """Up to six trunks; a source already claimed by an earlier trunk is dropped."""
    claimed: set[tuple[object, int | None]] = set()
    trunks = []
    for number in range(draw(st.integers(0, 6))):
        own = []
        for source in draw(st.lists(sources(), max_size=6)):
            key = (source.network, source.port)
            if key not in claimed:
                claimed.add(key)
                own.append(source)
        trunks.append(Trunk(name=f"t{number}", sources=tuple(own), route=ROUTE))
    return trunks


addresses = st.one_of(
    st.integers(0, 300).map(lambda offset: ipaddress.IPv4Address(V4_BASE + offset)),
    st.integers(0, 300).map(lambda offset: ipaddress.IPv6Address(V6_BASE + offset)),
)


def brute_force(
    trunks: list[Trunk], address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> Trunk | None:
    matches = [
        (source.specificity, trunk)
        for trunk in trunks
        for source in trunk.sources
        if address in source.network and source.port in (None, port)
    ]
    return max(matches, key=lambda match: match[0])[1] if matches else None


@given(trunk_sets(), addresses, PORTS)
def test_lookup_agrees_with_brute_force(
    trunks: list[Trunk], address: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int
) -> None:
    assert TrunkIndex(trunks).lookup(str(address), port) is brute_force(trunks, address, port)


@given(trunk_sets(), addresses.filter(lambda a: a.version == 6), PORTS)
def test_ipv6_spelling_does_not_matter(
    trunks: list[Trunk], address: ipaddress.IPv6Address, port: int
) -> None:
    index = TrunkIndex(trunks)
    expected = index.lookup(str(address), port)
    assert index.lookup(address.exploded, port) is expected
    assert index.lookup(f"[{address}]", port) is expected
    assert index.lookup(str(address).upper(), port) is expected


@given(trunk_sets(), addresses.filter(lambda a: a.version == 4), PORTS)
def test_ipv4_mapped_ipv6_is_the_ipv4_address(
    trunks: list[Trunk], address: ipaddress.IPv4Address, port: int
) -> None:
    index = TrunkIndex(trunks)
    assert index.lookup(f"::ffff:{address}", port) is index.lookup(str(address), port)
