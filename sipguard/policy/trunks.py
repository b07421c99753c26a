"""Trunk lookup by source address: which trunk sent this request?

This module owns `TrunkIndex`, built once per rule set from its trunks'
`sources`, and queried for every incoming request ("whoever connects is
responsible": the trunk a request came from answers for it).

Invariants:

- Rule 1: the most specific source wins. An `IP:port` source beats a bare
  IP, which beats a network with a longer prefix, which beats a shorter one.
- Rule 2: a source (network and port) belongs to at most one trunk; an
  index with a conflict cannot be built. `validate()` reports conflicts with
  their file position before an index is ever built.

Contract with callers: `lookup(host, port)` takes the peer address as the
socket reports it. The common case (an exact `IP:port` or single-IP source)
is one or two dict hits on the host text, with no `ipaddress` object built.
Only a miss parses the address (normalising IPv6 spellings, zones and
IPv4-mapped addresses) and scans the networks, longest prefix first, with
one dict probe per distinct prefix length.

Ring 1: pure; the index is immutable after construction.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from sipguard.rules.values import SourceMatch, Trunk

__all__ = ["TrunkIndex", "route_peers"]

# (host text, port or None for any port) -> trunk
_ExactTable = dict[tuple[str, int | None], Trunk]
# (bits to shift an address right, {network bits: trunk}), longest prefix first
_PrefixTables = tuple[tuple[int, dict[int, Trunk]], ...]


class TrunkIndex:
    """Maps a request's source address to the trunk it belongs to."""

    __slots__ = ("_exact", "_exact_versions", "_v4", "_v6", "_trunks", "_route_peers")

    def __init__(self, trunks: Sequence[Trunk]) -> None:
        """Index the sources of `trunks`.

        Raises:
            ValueError: two trunks claim the same source.
        """
        self._trunks = tuple(trunks)
        self._exact: _ExactTable = {}
        by_prefix: dict[tuple[int, int], dict[int, Trunk]] = {}
        owners: dict[tuple[object, int | None], Trunk] = {}
        for trunk in self._trunks:
            for source in trunk.sources:
                _claim(owners, source, trunk)
                self._add(source, trunk, by_prefix)
        self._exact_versions = frozenset(
            source.network.version
            for trunk in self._trunks
            for source in trunk.sources
            if source.network.prefixlen == source.network.max_prefixlen
        )
        self._v4 = _prefix_tables(by_prefix, version=4)
        self._v6 = _prefix_tables(by_prefix, version=6)
        self._route_peers = route_peers(self._trunks)

    def _add(
        self, source: SourceMatch, trunk: Trunk, by_prefix: dict[tuple[int, int], dict[int, Trunk]]
    ) -> None:
        network = source.network
        if network.prefixlen == network.max_prefixlen:
            self._exact[(str(network.network_address), source.port)] = trunk
            return
        shift = network.max_prefixlen - network.prefixlen
        table = by_prefix.setdefault((network.version, network.prefixlen), {})
        table[int(network.network_address) >> shift] = trunk

    @property
    def trunks(self) -> tuple[Trunk, ...]:
        """The indexed trunks, in rule-file order."""
        return self._trunks

    @property
    def route_peers(self) -> frozenset[tuple[str, int]]:
        """(host, port) of every trunk's route: the next hops."""
        return self._route_peers

    def lookup(self, host: str, port: int) -> Trunk | None:
        """The trunk whose most specific source matches `host`:`port`, or None.

        Args:
            host: the peer IP as text; IPv6 in any spelling, with or without
                brackets or a zone. Text that is not an IP matches nothing.
            port: the peer port.
        """
        exact = self._exact
        trunk = exact.get((host, port))
        if trunk is None:
            trunk = exact.get((host, None))
        if trunk is not None:
            return trunk
        return self._lookup_slow(host, port)

    def is_route_peer(self, host: str, port: int) -> bool:
        """True when `host`:`port` is the route (next hop) of some trunk."""
        if (host, port) in self._route_peers:
            return True
        address = _address(host)
        return address is not None and (str(address), port) in self._route_peers

    def _lookup_slow(self, host: str, port: int) -> Trunk | None:
        value = _dotted_quad(host)
        if value is not None:
            # Canonical IPv4 text: the exact entries were probed already.
            return _scan(self._v4, value)
        address = _address(host)
        if address is None:
            return None
        # Retry the exact entries under the canonical spelling, if any could match.
        canonical = str(address) if address.version in self._exact_versions else host
        if canonical != host:
            trunk = self._exact.get((canonical, port))
            if trunk is None:
                trunk = self._exact.get((canonical, None))
            if trunk is not None:
                return trunk
        return _scan(self._v4 if address.version == 4 else self._v6, int(address))


def route_peers(trunks: Iterable[Trunk]) -> frozenset[tuple[str, int]]:
    """(host, port) of the routes of `trunks`."""
    return frozenset((trunk.route.host, trunk.route.port) for trunk in trunks)


def _claim(
    owners: dict[tuple[object, int | None], Trunk], source: SourceMatch, trunk: Trunk
) -> None:
    key = (source.network, source.port)
    owner = owners.setdefault(key, trunk)
    if owner is not trunk:
        raise ValueError(f"source {source} is claimed by trunks '{owner.name}' and '{trunk.name}'")


def _prefix_tables(
    by_prefix: dict[tuple[int, int], dict[int, Trunk]], *, version: int
) -> _PrefixTables:
    bits = 32 if version == 4 else 128
    lengths = sorted((length for v, length in by_prefix if v == version), reverse=True)
    return tuple((bits - length, by_prefix[(version, length)]) for length in lengths)


def _scan(tables: _PrefixTables, value: int) -> Trunk | None:
    """The trunk of the longest prefix containing the address `value`."""
    for shift, table in tables:
        trunk = table.get(value >> shift)
        if trunk is not None:
            return trunk
    return None


def _dotted_quad(host: str) -> int | None:
    """The value of canonical IPv4 text (`10.1.0.77`), else None.

    A faster path than `ipaddress` for the common network-match case; text
    with leading zeros or anything unusual is left to `ipaddress`.
    """
    parts = host.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for part in parts:
        if not (part.isascii() and part.isdigit()) or len(part) > 3:
            return None
        if part[0] == "0" and len(part) > 1:
            return None
        octet = int(part)
        if octet > 255:
            return None
        value = value << 8 | octet
    return value


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The canonical address of `host`: no brackets, no zone, IPv4 unwrapped."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        address = ipaddress.IPv6Address(host) if ":" in host else ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.scope_id is not None:
            return ipaddress.IPv6Address(int(address))
    return address
