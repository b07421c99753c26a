"""Routes that lead back to sipguard: a trunk `route` that is a `listen` address.

An allowed call is relayed to its trunk's `route`. When the route is one of
sipguard's own listening sockets, the relayed INVITE arrives again, is
relayed again, and so on until Max-Forwards runs out: one call becomes up
to 70 nested ones. This module says whether a route reaches a listen
endpoint, for `sipguard check` to warn about.

What the file alone can tell (a rule file may be checked on another
machine, so the host's interfaces are never looked at):

- Rule 1: a route reaches a listen endpoint of the same transport and port
  (port 0 is chosen at start-up and matches nothing) whose address is the
  route's address.
- Rule 2: a wildcard listen address (`0.0.0.0`, `::`) takes every local
  address of its family, and the local addresses a file names are the
  loopback networks (`127.0.0.0/8`, `::1`), the unspecified addresses, and
  every specific address the file listens on (on any transport or port:
  sipguard binds it, so it is this host's).
- Rule 3: a route to an unspecified address is a route to the loopback
  address of its family: that is where Linux sends a packet or a connection
  addressed to `0.0.0.0` or `::`.
- Rule 4: a UDP socket on `::` also takes IPv4 (Linux binds it dual-stack by
  default); a TCP listener on `::` does not (asyncio and uvloop set
  IPV6_V6ONLY on it).

Anything else (a route to another address of this host that the file never
names) cannot be known here and is not reported.

Ring 1: pure; no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from sipguard.rules.values import Endpoint

__all__ = ["is_wildcard", "listen_reached"]

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_LOOPBACK = {4: ipaddress.ip_address("127.0.0.1"), 6: ipaddress.ip_address("::1")}


def listen_reached(route: Endpoint, listen: Sequence[Endpoint]) -> Endpoint | None:
    """The listen endpoint a request sent to `route` would arrive at, or None.

    Args:
        route: a trunk's next hop.
        listen: every listen endpoint of the same rule file.

    Returns:
        The listen endpoint of the same address, if any; else a wildcard one
        that takes the route's (local) address; else None.
    """
    if route.port == 0:
        return None
    target = _destination(ipaddress.ip_address(route.host))
    same_port = [
        endpoint
        for endpoint in listen
        if endpoint.transport == route.transport and endpoint.port == route.port
    ]
    for endpoint in same_port:
        address = ipaddress.ip_address(endpoint.host)
        if not address.is_unspecified and address == target:
            return endpoint
    if not _is_local(target, listen):
        return None
    for endpoint in same_port:
        address = ipaddress.ip_address(endpoint.host)
        if address.is_unspecified and _takes(endpoint, address, target):
            return endpoint
    return None


def _destination(address: _IPAddress) -> _IPAddress:
    """Where a packet addressed to `address` goes (Rule 3)."""
    return _LOOPBACK[address.version] if address.is_unspecified else address


def _is_local(address: _IPAddress, listen: Sequence[Endpoint]) -> bool:
    """Whether the file says `address` is this host's (Rule 2)."""
    if address.is_loopback:
        return True
    return any(ipaddress.ip_address(endpoint.host) == address for endpoint in listen)


def _takes(endpoint: Endpoint, wildcard: _IPAddress, target: _IPAddress) -> bool:
    """Whether a socket bound to `wildcard` receives what is sent to `target` (Rule 4)."""
    if wildcard.version == target.version:
        return True
    return wildcard.version == 6 and endpoint.transport == "udp"


def is_wildcard(endpoint: Endpoint) -> bool:
    """Whether `endpoint` listens on every local address (`0.0.0.0`, `::`)."""
    return ipaddress.ip_address(endpoint.host).is_unspecified
