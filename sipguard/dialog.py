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

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from sipguard.errors import SipParseError
from sipguard.peer import Peer
from sipguard.sip.message import Headers, Request
from sipguard.sip.uri import NameAddr, SipUri, parse_name_addr, parse_uri

__all__ = [
    "DEFAULT_ID_BATCH",
    "IdFactory",
    "Leg",
    "LocalAddress",
    "name_addr_with_tag",
    "reconnect_address",
    "request_target",
]

# RFC 3261 §8.1.1.7: branch IDs of RFC 3261 transactions start with this.
BRANCH_COOKIE = "z9hG4bK"


# Random bytes drawn from the source at a time (512 tags or branches, 256
# Call-IDs). os.urandom per identifier costs about 0.6 us (a system call
# each); in batches of 4096 bytes a tag costs about 0.25 us, less than a
# Mersenne Twister's getrandbits(64) formatted as hex (0.43 us).
DEFAULT_ID_BATCH = 4096


class IdFactory:
    """Tags, branches and Call-IDs from an injected source of random bytes.

    Rule 1: the identifiers must be unpredictable, not merely unique. A
    stranger sees a fresh To-tag in every answer it gets; if it could
    predict the next tag, branch or Call-ID from those, it could answer for
    a callee or cancel a call in progress. So `random_bytes` must be a
    cryptographically secure source: the driver passes `os.urandom`. A
    seeded generator (`random.Random(seed).randbytes`) is for tests only:
    312 tags of a Mersenne Twister give away its state.

    Rule 2: 64 random bits per tag and branch (RFC 3261 §19.3 asks for at
    least 32 in tags, §8.1.1.7 for a branch unique in space and time), 128
    per Call-ID (globally unique, §8.1.1.4).

    Bytes are drawn `batch` at a time and kept as hex digits until used; the
    cost is a string slice per identifier. A factory must not be shared
    across `fork()`: parent and child would hand out the same pool.

    Args:
        random_bytes: returns that many random bytes (`os.urandom`).
        batch: bytes drawn per call to `random_bytes` (at least 16).
    """

    __slots__ = ("_random_bytes", "_batch", "_pool", "_at")

    def __init__(
        self, random_bytes: Callable[[int], bytes], *, batch: int = DEFAULT_ID_BATCH
    ) -> None:
        if batch < 16:
            raise ValueError("batch must be at least 16 bytes (one Call-ID)")
        self._random_bytes = random_bytes
        self._batch = batch
        self._pool = ""
        self._at = 0

    def _hex(self, digits: int) -> str:
        """The next `digits` hex digits of the pool; refilled (never reused) when short."""
        at = self._at
        end = at + digits
        pool = self._pool
        if end > len(pool):
            pool = self._random_bytes(self._batch).hex()
            if len(pool) < digits:
                raise ValueError(f"random_bytes({self._batch}) returned too few bytes")
            self._pool = pool
            at, end = 0, digits
        self._at = end
        return pool[at:end]

    def tag(self) -> str:
        return self._hex(16)

    def branch(self) -> str:
        return BRANCH_COOKIE + self._hex(16)

    def call_id(self) -> str:
        return self._hex(32)


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
        "reconnect",
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
        reconnect: Peer | None = None,
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
        # Over TCP, where a new connection goes when `peer`'s is gone (see
        # `reconnect_address`); None: to `peer` itself.
        self.reconnect = reconnect

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


def reconnect_address(peer: Peer, route_set: tuple[str, ...], remote_target: str) -> Peer | None:
    """Where a request for a leg set up over an inbound TCP connection goes
    once that connection is gone: the leg's own host (never another, Rule 1),
    at the port of the URI the request is addressed to (RFC 3261 §18.1.1:
    the first route, else the remote target; 5060 when it names none). The
    connection's own port was the peer's ephemeral source port, where
    nothing listens. None over UDP, or when that is the connection's port.
    """
    if peer.transport != "tcp":
        return None
    try:
        uri = parse_name_addr(route_set[0]).uri if route_set else parse_uri(remote_target)
    except SipParseError:
        return None
    port = (uri.port or 5060) if isinstance(uri, SipUri) else 5060
    return None if port == peer.port else Peer(peer.transport, peer.host, port)


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
