"""The gate's direct formatting and reading agree with the general SIP values."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipguard.gate import PRIVACY_ID, _phone_name_addr, _privacy_id
from sipguard.sip.uri import NameAddr, SipUri

pytestmark = pytest.mark.property

numbers = st.one_of(
    st.sampled_from(["+862131771234", "+14155550100"]),
    st.text(alphabet="+0123456789", min_size=1, max_size=16),
)
hosts = st.sampled_from(["10.1.0.5", "carrier.example", "[2001:db8::1]", "sbc-1.example.net"])
displays = st.one_of(
    st.none(),
    st.sampled_from(["Sales", 'The "Office"', "back\\slash", "", " 021 3177 1200 "]),
    st.text(max_size=20),
)


@given(numbers, hosts, displays)
def test_phone_name_addr_is_the_name_addr_text(number: str, host: str, display: str | None) -> None:
    general = NameAddr(SipUri("sip", number, host, params=(("user", "phone"),)), display)
    assert _phone_name_addr(number, host, display) == str(general)


tokens = st.one_of(
    st.sampled_from(["id", "ID", " user ", "header", "none", "session", "critical", ""]),
    st.text(alphabet="abcdehinorsu ;", max_size=10),
)
privacy_values = st.lists(st.lists(tokens, min_size=1, max_size=4).map(";".join), max_size=3)


@given(privacy_values)
def test_privacy_id_agrees_with_the_set_of_tokens(values: list[str]) -> None:
    asked = {token.strip().lower() for value in values for token in value.split(";")}
    assert _privacy_id(values) == bool(asked & PRIVACY_ID)
