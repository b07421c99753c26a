"""The call gate: which trunk a request belongs to, and whether to admit it.

For every dialog-creating INVITE the B2BUA core asks `decide()`; the gate
identifies the trunk by the request's source and refuses the call when no
trunk claims that source (`unknown_source`), so sipguard is never an open
relay. Caller-ID rules are evaluated by the policy engine behind this gate.
"""

from __future__ import annotations

from sipguard.peer import Peer
from sipguard.policy.decision import Allow, Refuse
from sipguard.policy.trunks import TrunkIndex
from sipguard.rules.schema import RuleSet
from sipguard.sip.message import Request

__all__ = ["TrunkGate", "reason_headers"]


def reason_headers(status: int, rule: str, text: str) -> tuple[tuple[str, str], ...]:
    """RFC 3326 Reason naming the rule id, and a Warning 399 explaining it."""
    return (
        ("Reason", f'SIP;cause={status};text="{rule}"'),
        ("Warning", f'399 sipguard "{text}"'),
    )


class TrunkGate:
    """Admit calls from known trunks and route them to the trunk's next hop."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self._index = TrunkIndex(rules.trunks)
        self._routes = {
            trunk.name: Peer(trunk.route.transport, trunk.route.host, trunk.route.port)
            for trunk in rules.trunks
        }
        self._route_hosts = frozenset(peer.host for peer in self._routes.values())
        self._unknown = Refuse(
            403,
            "Forbidden",
            "unknown_source",
            headers=reason_headers(403, "unknown_source", "source address matches no trunk"),
        )

    def decide(self, request: Request, peer: Peer, *, now: float) -> Allow | Refuse:
        trunk = self._index.lookup(peer.host, peer.port)
        if trunk is None:
            return self._unknown
        return Allow(trunk.name, self._routes[trunk.name])

    def is_known(self, peer: Peer) -> bool:
        return (
            peer.host in self._route_hosts or self._index.lookup(peer.host, peer.port) is not None
        )
