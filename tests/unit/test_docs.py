"""Generated documentation stays in step with the code."""

from __future__ import annotations

import importlib.util
import re
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


def test_the_edge_proxy_snippet_is_the_tested_kamailio_configuration() -> None:
    # docs/deploy.md shows edge.cfg from its first loadmodule on: the
    # configuration the edge-proxy integration tests run, so it works.
    config = (DOCS.parent / "tests" / "integration" / "kamailio" / "edge.cfg").read_text()
    tested = config[config.index('\nloadmodule "') + 1 :]
    deploy = (DOCS / "deploy.md").read_text()
    section = deploy[deploy.index("## Behind an edge proxy") :]
    section = section[: section.index("\n## ")]
    blocks = re.findall(r"^```\w*\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    assert tested in blocks, (
        "docs/deploy.md (Behind an edge proxy) differs from tests/integration/kamailio/edge.cfg"
    )
