"""NumberPlan.normalise: total, shape-preserving and idempotent on any text."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipguard.policy.numbers import (
    ANONYMOUS_USERS,
    NumberPlan,
    is_anonymous,
    numbers_in_display_name,
)
from sipguard.sip.uri import SipUri

pytestmark = pytest.mark.property

PLANS = st.sampled_from(
    [
        NumberPlan(country_code="86"),
        NumberPlan(country_code="44"),
        NumberPlan(country_code="1", national_prefix="1", international_prefix="011"),
        NumberPlan(country_code="39", national_prefix=""),
        NumberPlan(country_code="353", max_national_length=3),
        NumberPlan(country_code="7", national_prefix="8", international_prefix="810"),
    ]
)

# Text that looks like phone numbers, so that most examples are dialable.
phone_like = st.text(alphabet="0123456789+-.() ", max_size=24)
dialled = st.builds(
    lambda head, digits: head + digits,
    st.sampled_from(["", "+", "0", "00", "011", "810", "8", "1", "86", "44"]),
    st.text(alphabet="0123456789", min_size=0, max_size=16),
)
any_text = st.one_of(st.text(), phone_like, dialled)


def is_e164(number: str) -> bool:
    digits = number[1:]
    return (
        number.startswith("+")
        and digits.isascii()
        and digits.isdigit()
        and 3 <= len(digits) <= 15
        and digits[0] != "0"
    )


@given(PLANS, any_text)
def test_normalise_is_total_and_gives_e164(plan: NumberPlan, text: str) -> None:
    number = plan.normalise(text)
    assert number is None or is_e164(number)


@given(PLANS, any_text)
def test_normalise_is_idempotent(plan: NumberPlan, text: str) -> None:
    number = plan.normalise(text)
    if number is not None:
        assert plan.normalise(number) == number


@given(PLANS, dialled, st.lists(st.sampled_from("-.() "), max_size=4), st.data())
def test_visual_separators_do_not_matter(
    plan: NumberPlan, text: str, separators: list[str], data: st.DataObject
) -> None:
    spaced = text
    for separator in separators:
        at = data.draw(st.integers(0, len(spaced)))
        spaced = spaced[:at] + separator + spaced[at:]
    assert plan.normalise(spaced) == plan.normalise(text)


@given(PLANS, st.text(alphabet="0123456789", min_size=3, max_size=15).filter(lambda d: d[0] != "0"))
def test_e164_numbers_are_kept(plan: NumberPlan, digits: str) -> None:
    assert plan.normalise("+" + digits) == "+" + digits


@given(any_text)
def test_display_name_numbers_hold_enough_ascii_digits(name: str) -> None:
    for number in numbers_in_display_name(name):
        assert sum("0" <= char <= "9" for char in number) >= 5
        assert set(number) <= set("+-.() 0123456789")
        if name.isascii():
            assert number in name


# What the fast paths take: "+" and digits, or digits only, of any length.
fast_path_text = st.builds(
    lambda head, digits: head + digits,
    st.sampled_from(["+", ""]),
    st.text(alphabet="0123456789", max_size=17),
)


@given(PLANS, st.one_of(fast_path_text, any_text))
def test_the_fast_paths_agree_with_the_separator_path(plan: NumberPlan, text: str) -> None:
    # A trailing space keeps E.164 and digit-only text off the fast paths:
    # normalise() then reads it after removing the separators.
    assert plan.normalise(text) == plan.normalise(text + " ")


@given(PLANS, any_text)
def test_the_prefix_shortcut_never_skips_a_prefix(plan: NumberPlan, text: str) -> None:
    # The same plan, made to probe both prefixes whatever digit a number starts with.
    probing = dataclasses.replace(plan)
    object.__setattr__(probing, "_prefix_heads", frozenset("0123456789"))
    assert plan.normalise(text) == probing.normalise(text)


users = st.one_of(
    st.sampled_from(sorted(ANONYMOUS_USERS)).map(str.upper),
    st.sampled_from(["Anonymous;tag=1", "+8613800138000", "13800138000;isub=1", "", "\u0130d"]),
    st.text(max_size=12),
)
hosts = st.one_of(
    st.sampled_from(["anonymous.invalid", "ANONYMOUS.invalid", "carrier.example", "10.1.0.5"]),
    st.text(max_size=20),
    st.text(alphabet="anonymous.invalid\u0130\u212a", min_size=15, max_size=18),
)


@given(st.one_of(st.none(), users), hosts)
def test_is_anonymous_shortcuts_agree_with_the_definition(user: str | None, host: str) -> None:
    expected = host.lower() == "anonymous.invalid" or (
        user is not None and user.partition(";")[0].lower() in ANONYMOUS_USERS
    )
    assert is_anonymous(SipUri("sip", user, host)) == expected
