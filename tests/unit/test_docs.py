"""Generated documentation stays in step with the code."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

from sipguard.cli import main

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


# A `sipguard explain` command block followed by the block of its output.
EXPLAIN_EXAMPLE = re.compile(r"^```sh\n(sipguard explain [^`]*?)\n```\n```\n([^`]*?)\n```$", re.M)
# Examples without --at are read at the date of the docs' excerpts, so that
# a suspension's end date does not change them.
DOCS_DATE = "2026-11-23T12:00:00+08:00"


def _explain_examples() -> list[tuple[str, str, str]]:
    found = []
    for page in (*sorted(DOCS.glob("*.md")), DOCS.parent / "README.md"):
        for command, output in EXPLAIN_EXAMPLE.findall(page.read_text()):
            found.append((page.name, command, output))
    return found


EXAMPLES = _explain_examples()


@pytest.mark.parametrize(
    ("page", "command", "output"),
    EXAMPLES,
    ids=[f"{page}-{index}" for index, (page, _, _) in enumerate(EXAMPLES)],
)
def test_explain_examples_are_real_output(
    page: str,
    command: str,
    output: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(DOCS.parent)  # the examples name rules/*.yaml
    args = shlex.split(command.replace("\\\n", " "))[1:]
    if "--at" not in args:
        args += ["--at", DOCS_DATE]
    assert main(args) == 0
    assert capsys.readouterr().out.rstrip("\n") == output, f"{page}: {command}"


def test_the_docs_show_explain_examples() -> None:
    pages = {page for page, _, _ in EXAMPLES}
    assert {"why-blocked.md", "policy.md"} <= pages
