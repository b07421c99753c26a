"""frozen.build(): the same values as the dataclass __init__, without it."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sipguard.peer import Peer
from sipguard.policy.decision import Allow, Refuse
from sipguard.policy.engine import CallView
from sipguard.policy.frozen import build
from sipguard.policy.verdict import Verdict

pytestmark = pytest.mark.unit

# The classes the per-call path builds with build(), with a full set of fields.
BUILT: list[tuple[type[Any], dict[str, Any]]] = [
    (
        Verdict,
        {
            "allowed": False,
            "rule": "caller_not_allocated",
            "code": 403,
            "phrase": "Forbidden",
            "reason": "caller number is not allocated to this trunk: +8612000004242",
            "trunk": "sh",
            "caller": "+8612000004242",
            "presentation": "+8612000004242",
            "callee": "+862161234567",
        },
    ),
    (
        CallView,
        {
            "from_number": "02131771234",
            "from_anonymous": False,
            "display_name": "Sales",
            "asserted": ("+862131771234", None),
            "privacy_id": True,
            "callee": "13800138000",
        },
    ),
    (
        Allow,
        {
            "trunk": "sh",
            "route": Peer("udp", "10.9.0.1", 5080),
            "from_value": "<sip:+862131771234@10.1.0.5;user=phone>",
            "headers": (("P-Asserted-Identity", "<sip:+862131771234@10.1.0.5>"),),
            "strip": frozenset({"privacy"}),
            "caller": "+862131771234",
            "warnings": ("cps_limit",),
        },
    ),
    (
        Refuse,
        {"status": 503, "reason": "Service Unavailable", "rule": "cps_limit", "trunk": "sh"},
    ),
]


@pytest.mark.parametrize(("cls", "fields"), BUILT, ids=lambda value: getattr(value, "__name__", ""))
def test_build_equals_the_dataclass_init(cls: type[Any], fields: dict[str, Any]) -> None:
    built = build(cls, dict(fields))
    made = cls(**fields)
    assert type(built) is cls
    assert built == made and hash(built) == hash(made) and repr(built) == repr(made)
    assert dataclasses.astuple(built) == dataclasses.astuple(made)
    name = next(iter(fields))
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, name, None)
    changed = dataclasses.replace(built, **{name: None})
    assert changed == dataclasses.replace(made, **{name: None})


@pytest.mark.parametrize("cls", [cls for cls, _ in BUILT], ids=lambda cls: cls.__name__)
def test_built_classes_keep_what_build_relies_on(cls: type[Any]) -> None:
    # An instance dict, every default as a class attribute, nothing run at init.
    assert "__slots__" not in vars(cls)
    assert not hasattr(cls, "__post_init__")
    for field in dataclasses.fields(cls):
        assert field.default_factory is dataclasses.MISSING, field.name
        if field.default is not dataclasses.MISSING:
            assert getattr(cls, field.name) == field.default, field.name


def test_fields_left_out_read_their_default() -> None:
    verdict = build(Verdict, {"allowed": True, "trunk": "sh"})
    assert verdict == Verdict(allowed=True, trunk="sh")
    assert (verdict.rule, verdict.reason, verdict.emergency) == (None, "allowed", False)
