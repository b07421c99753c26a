"""The README's demo (`make run`) works: allowed, forged and unknown-source calls."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.sipp]

ROOT = Path(__file__).resolve().parents[2]


def test_demo_shows_allowed_and_refused_calls(tmp_path: Path) -> None:
    env = {**os.environ, "VENV": str(Path(sys.executable).parent.parent), "DEMO_DIR": str(tmp_path)}
    result = subprocess.run(
        ["bash", str(ROOT / "sipp_scenarios" / "demo.sh")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "demo OK" in output
    assert "calls made 20, connected and hung up 20, failed 0" in output
    forged = ("caller_not_allocated", "do_not_originate", "suspended_number", "identity_mismatch")
    for rule in forged:
        assert f"403 {rule} x1" in output, output
    assert "403 unknown_source x10" in output
    assert "20 INVITEs received" in output
    # The decisions streamed to the terminal as they happened, each with its rule.
    stream = [
        line
        for line in result.stdout.splitlines()
        if " allow " in line or " reject " in line or "unknown sources: " in line
    ]
    assert sum(" allow   trunk=sh-callcenter " in line for line in stream) == 20, output
    for rule in forged:
        assert sum(f" reject  403 {rule} trunk=sh-callcenter " in line for line in stream) == 1
    # The unknown source's INVITEs are summed up (every 10 s and at the
    # stop, so in one line or two), not logged one by one.
    assert sum("unknown_source" in line for line in stream) == 0, output
    summaries = [
        re.search(
            r"unknown sources: (\d+) INVITEs refused, 0 dropped, from 1 address; top: "
            r"127\.0\.0\.1 \((\d+)\)",
            line,
        )
        for line in stream
        if "unknown sources: " in line
    ]
    assert summaries and all(summaries), output
    assert sum(int(match.group(1)) for match in summaries if match) == 10, output
    assert stream and all(line.startswith("   ") for line in stream), "indented, without dates"
