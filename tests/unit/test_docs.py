"""Generated documentation stays in step with the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_transaction_diagrams_match_the_transition_table() -> None:
    spec = importlib.util.spec_from_file_location(
        "make_state_diagrams", DOCS / "make_state_diagrams.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (DOCS / "transactions.md").read_text() == module.render(), (
        "docs/transactions.md is stale: run python docs/make_state_diagrams.py"
    )
