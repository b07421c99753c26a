"""Properties of the policy engine over generated calls."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipguard.policy.engine import CallView, evaluate
from sipguard.policy.verdict import RULE_DEFAULTS
from tests.unit.test_policy_engine import OPEN, policy

pytestmark = pytest.mark.property

COMPILED = policy()
TRUNKS = [None, *COMPILED.trunks]

numbers = st.one_of(
    st.none(),
    st.sampled_from(["+862131771234", "021-3177-1299", "+861065550001", "4008001234", "95555"]),
    st.text(alphabet="+0123456789-() ", max_size=20),
    st.text(max_size=12),
)
calls = st.builds(
    CallView,
    from_number=numbers,
    from_anonymous=st.booleans(),
    display_name=st.one_of(st.none(), numbers.map(lambda n: n or "")),
    asserted=st.lists(numbers, max_size=2).map(tuple),
    privacy_id=st.booleans(),
    callee=numbers,
)


@given(trunk=st.sampled_from(TRUNKS), call=calls, wall=st.floats(0, 4e9))
@settings(max_examples=400, deadline=None)
def test_every_verdict_is_an_allow_or_a_reject_naming_a_rule(trunk, call, wall) -> None:
    verdict = evaluate(COMPILED, trunk, call, wall_time=wall)
    if verdict.allowed and verdict.rule is not None:
        # Relayed although a rule fired: only a call to an emergency number
        # (the rule file here monitors no rule), which nothing refuses.
        assert verdict.emergency and not verdict.monitored and verdict.code is None
        assert verdict.rule in RULE_DEFAULTS and verdict.rule != "unknown_source"
    elif verdict.allowed:
        assert verdict.code is None
        assert verdict.caller is not None and verdict.caller.startswith("+")
    else:
        assert verdict.rule in RULE_DEFAULTS
        assert verdict.code is not None and 400 <= verdict.code <= 699
        assert verdict.reason
    assert evaluate(COMPILED, trunk, call, wall_time=wall) == verdict  # pure


@given(call=calls)
@settings(max_examples=200, deadline=None)
def test_an_unknown_source_is_always_refused(call) -> None:
    verdict = evaluate(COMPILED, None, call, wall_time=OPEN)
    assert (verdict.allowed, verdict.rule) == (False, "unknown_source")


@given(
    trunk=st.sampled_from(COMPILED.trunks),
    call=calls,
    at=st.integers(0, 2),
    wall=st.floats(0, 4e9),
)
@settings(max_examples=300, deadline=None)
def test_a_repeated_asserted_value_changes_nothing(trunk, call, at, wall) -> None:
    # The engine normalises a value once when it repeats the one before it
    # (the sip: and tel: forms of one number); the verdict must not notice.
    if not call.asserted:
        return
    at = min(at, len(call.asserted) - 1)
    repeated = call.asserted[: at + 1] + call.asserted[at:]
    twice = dataclasses.replace(call, asserted=repeated)
    assert evaluate(COMPILED, trunk, twice, wall_time=wall) == evaluate(
        COMPILED, trunk, call, wall_time=wall
    )
