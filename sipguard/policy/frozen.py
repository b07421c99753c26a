"""Frozen dataclass values built on the per-call path without their `__init__`.

A frozen dataclass's generated `__init__` stores every field through
`object.__setattr__`, about 0.15 us a field on a slow core: 2 us for the 14
fields of a `Verdict`, more than the rest of a decision. `build()` gives a new
instance its attribute dict in one step instead.

It suits frozen dataclasses declared without `__slots__`, whose every field
either has a plain default (which the dataclass keeps as a class attribute, so
a field left out reads it) or is given, and which have no `__post_init__` or
other checks at construction: none run. Equality, hashing, `repr` and
`dataclasses.replace` see the same value as the one `__init__` would build.

Ring 1: pure.
"""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["build"]

T = TypeVar("T")

_new = object.__new__
_set = object.__setattr__


def build(cls: type[T], fields: dict[str, Any]) -> T:
    """A `cls` holding `fields` (name -> value); fields left out keep their default.

    `fields` becomes the instance's own attribute dict: pass a fresh one.
    """
    instance = _new(cls)
    _set(instance, "__dict__", fields)
    return instance
