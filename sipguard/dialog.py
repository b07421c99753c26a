"""One leg of a call: the dialog state of RFC 3261 §12, and requests built from it.

A B2BUA is a UAS on the inbound leg (A) and a UAC on the outbound leg (B).
Each `Leg` holds what its dialog needs to build a request toward the far end:
Call-ID, local and remote tags and URIs, our CSeq counter, the far end's
CSeq high-water mark, remote target and route set.

Rule 1: requests for a leg are always sent to the leg's `peer`, the address
the dialog was set up with (the trunk's signalling source, or the trunk's
configured route), never to an address named inside a message. Contact and
Record-Route values only shape the Request-URI and Route headers. This is
what keeps a caller from steering sipguard's traffic elsewhere.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, replace

from sipguard.sip.message import Headers, Request
from sipguard.sip.uri import NameAddr, SipUri, parse_name_addr
from sipguard.transaction import Peer

__all__ = ["IdFactory", "Leg", "LocalAddress", "name_addr_with_tag", "request_target"]

# RFC 3261 §8.1.1.7: branch IDs of RFC 3261 transactions start with this.
BRANCH_COOKIE = "z9hG4bK"


class IdFactory:
    """Tags, branches and Call-IDs from an injected random source.

    The driver seeds `rng` from the OS; tests seed it with a constant.
    64 random bits per identifier (RFC 3261 §19.3 asks for at least 32 in
    tags, and global uniqueness for Call-IDs).
    """

    def __init__(self, rng: random.Random) -> None:
        self._bits = rng.getrandbits

    def tag(self) -> str:
        return f"{self._bits(64):016x}"

    def branch(self) -> str:
        return f"{BRANCH_COOKIE}{self._bits(64):016x}"

    def call_id(self) -> str:
        return f"{self._bits(128):032x}"


@dataclass(frozen=True, slots=True)
class LocalAddress:
    """The address sipguard advertises in Via and Contact on one transport."""

    transport: str
    host: str
    port: int

    def via(self, branch: str) -> str:
        # RFC 3581 §3: ask for rport so responses come back to our source port.
        return f"SIP/2.0/{self.transport.upper()} {self.host}:{self.port};branch={branch};rport"

    def contact(self) -> str:
        return f"<sip:sipguard@{self.host}:{self.port};transport={self.transport}>"


def name_addr_with_tag(value: NameAddr, tag: str | None) -> str:
    """Render a From/To value with its tag replaced by `tag` (or removed)."""
    params = tuple((key, val) for key, val in value.params if key != "tag")
    if tag is not None:
        params += (("tag", tag),)
    return str(value.with_params(params))


class Leg:
    """Dialog state of one leg (RFC 3261 §12.1)."""

    __slots__ = (
        "call_id",
        "local_tag",
        "remote_tag",
        "local_uri",
        "remote_uri",
        "local_cseq",
        "remote_cseq",
        "remote_target",
        "route_set",
        "peer",
        "local",
    )

    def __init__(
        self,
        *,
        call_id: str,
        local_tag: str,
        local_uri: NameAddr,
        remote_uri: NameAddr,
        remote_tag: str | None,
        remote_target: str,
        peer: Peer,
        local: LocalAddress,
        local_cseq: int = 0,
        remote_cseq: int | None = None,
        route_set: tuple[str, ...] = (),
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_uri = local_uri
        self.remote_uri = remote_uri
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq
        self.remote_target = remote_target
        self.route_set = route_set
        self.peer = peer
        self.local = local

    def next_cseq(self) -> int:
        """Our next CSeq number on this leg (§12.2.1.1: strictly increasing)."""
        self.local_cseq += 1
        return self.local_cseq

    def accepts_cseq(self, seq: int) -> bool:
        """RFC 3261 §12.2.2: a lower CSeq than the last one is out of order."""
        if self.remote_cseq is not None and seq <= self.remote_cseq:
            return False
        self.remote_cseq = seq
        return True

    def build_request(
        self,
        method: str,
        *,
        cseq: int,
        branch: str,
        max_forwards: int = 70,
        extra: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        with_contact: bool = False,
    ) -> Request:
        """An in-dialog request (§12.2.1.1) through the dialog's route set.

        The request still goes to the leg's `peer` (Rule 1): the route set
        shapes only its Request-URI and Route headers.
        """
        uri, routes = request_target(self.route_set, self.remote_target)
        fields: list[tuple[str, str]] = [("Via", self.local.via(branch))]
        fields.extend(("Route", route) for route in routes)
        fields += [
            ("Max-Forwards", str(max_forwards)),
            ("From", name_addr_with_tag(self.local_uri, self.local_tag)),
            ("To", name_addr_with_tag(self.remote_uri, self.remote_tag)),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
        ]
        if with_contact:
            fields.append(("Contact", self.local.contact()))
        fields.extend(extra)
        return Request(method, uri, Headers(fields), body)


def request_target(route_set: tuple[str, ...], remote_target: str) -> tuple[str, tuple[str, ...]]:
    """The Request-URI and Route values of an in-dialog request (§12.2.1.1).

    With an empty route set, or a first route that carries `lr` (a loose
    router, RFC 3261's kind), the Request-URI is the remote target and the
    Route header lists the route set as it is. A first route without `lr`
    is a strict router (RFC 2543), which routes on the Request-URI: "the
    UAC MUST place the first URI from the route set into the Request-URI,
    stripping any parameters that are not allowed in a Request-URI", the
    rest of the route set goes into Route, and the remote target last.

    Args:
        route_set: Route values as written, first hop first; each parsed
            when the dialog learnt it (a broken one never gets here).
        remote_target: the far end's Contact URI.
    """
    if not route_set:
        return remote_target, ()
    route = parse_name_addr(route_set[0])
    first = route.uri
    # A value written without angle brackets (not RFC 3261's form, seen in
    # the wild) parses `;lr` as a header parameter: still a loose router.
    if (
        not isinstance(first, SipUri)
        or first.has_param("lr")
        or any(name == "lr" for name, _ in route.params)
    ):
        return remote_target, route_set
    # §19.1.1 Table 1: no `method` parameter and no headers in a Request-URI.
    params = tuple((name, value) for name, value in first.params if name != "method")
    uri = replace(first, params=params, headers=None)
    return str(uri), (*route_set[1:], f"<{remote_target}>")
