"""The command line as an operator meets it: real processes, real pipes and sockets."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SIPGUARD = [sys.executable, "-m", "sipguard"]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_run_with_its_listen_port_taken_says_so_in_one_line_and_exits_1(
    tmp_path: Path, transport: str
) -> None:
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if transport == "tcp":
            taken.listen()
        port = taken.getsockname()[1]
        rules = tmp_path / "rules.yaml"
        rules.write_text(
            "version: 1\n"
            'numbering: {country_code: "86"}\n'
            f'listen: ["{transport}:127.0.0.1:{port}"]\n'
            "trunks: []\n",
            encoding="utf-8",
        )
        done = subprocess.run(
            [*SIPGUARD, "run", "--rules", str(rules)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"sipguard: cannot listen on {transport}:127.0.0.1:{port}: address already in use"
    )


def test_trace_into_a_pipe_that_closes_early_ends_quietly(tmp_path: Path) -> None:
    trail = tmp_path / "decisions.jsonl"
    record = {
        "ts": "2026-11-18T11:07:10.000Z",
        "event": "decision",
        "verdict": "allow",
        "trunk": "sh-callcenter",
        "source": "udp:10.1.0.5:5071",
        "caller": "+862131771234",
        "callee": "+8613800138000",
    }
    with trail.open("w", encoding="utf-8") as out:
        for index in range(20_000):  # far more than a pipe holds
            out.write(json.dumps({**record, "call_id": f"call-{index}"}) + "\n")

    reader = subprocess.Popen(
        [*SIPGUARD, "trace", "--audit-log", str(trail), "+862131771234"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert reader.stdout is not None and reader.stderr is not None
    first = reader.stdout.readline()
    reader.stdout.close()  # what `| head -1` does
    status = reader.wait(timeout=60)
    errors = reader.stderr.read().decode()
    reader.stderr.close()

    assert b"call-id=call-0" in first
    assert status == 0
    assert errors == ""
