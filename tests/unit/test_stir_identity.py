"""STIR/SHAKEN Identity headers from a trunk: stripped unless the trunk passes them.

sipguard does not verify RFC 8224 signatures, so relaying a caller's
`Identity` next to sipguard's own `verstat=TN-Validation-Passed` would let an
unverified signature ride on a validated call. Real core, real gate.
"""

from __future__ import annotations

import pytest

from sipguard.sip.message import Request
from tests.helpers import CALLER, CorePair, invite, policy_pair

pytestmark = pytest.mark.unit

RULES = """\
version: 1
numbering: {country_code: "86"}
trunks:
  - name: sh
    sources: ["10.1.0.5:5071"]
    route: "udp:10.9.0.1:5080"
    ranges: ["+862131771200-+862131771299"]
"""
PASSING = RULES + "    identity: {stir_identity: pass}\n"
SIGNATURE = (
    "eyJhbGciOiJFUzI1NiIsInBwdCI6InNoYWtlbiIsInR5cCI6InBhc3Nwb3J0In0.e30.c2ln"
    ";info=<https://cert.example.net/sp.pem>;alg=ES256;ppt=shaken"
)
SIGNED = f"Identity: {SIGNATURE}\r\nIdentity-Info: <https://cert.example.net/old.pem>\r\n"


def _outbound(pair: CorePair) -> Request:
    pair.send(invite(extra=SIGNED), CALLER, now=0.0)
    (outbound,) = pair.take_callee()
    assert isinstance(outbound, Request)
    return outbound


def test_a_trunks_identity_header_is_stripped_by_default() -> None:
    outbound = _outbound(policy_pair(RULES))
    assert outbound.headers.get_all("identity") == []
    assert outbound.headers.get_all("identity-info") == []
    (asserted,) = outbound.headers.get_all("p-asserted-identity")
    assert "verstat=TN-Validation-Passed" in asserted


def test_a_trunk_that_passes_them_has_them_relayed_unchanged() -> None:
    outbound = _outbound(policy_pair(PASSING))
    assert outbound.headers.get_all("identity") == [SIGNATURE]
    assert outbound.headers.get_all("identity-info") == ["<https://cert.example.net/old.pem>"]


def test_the_compact_form_is_stripped_too() -> None:
    pair = policy_pair(RULES)
    pair.send(invite(extra=f"y: {SIGNATURE}\r\n"), CALLER, now=0.0)
    (outbound,) = pair.take_callee()
    assert isinstance(outbound, Request) and outbound.headers.get_all("identity") == []
