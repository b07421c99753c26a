"""Fixtures for the SIPp integration tests: a call path per test.

A call path is SIPp UAC -> sipguard -> SIPp UAS on 127.0.0.1, every process
with its own free port and its own directory under the test's ``tmp_path``.
`start_call_path` starts the UAS and sipguard; the fixture stops both at
teardown, whatever the test did (UAS first, so it can finish its calls while
sipguard still relays them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.integration.sipp import (
    CallPath,
    StartCallPath,
    free_ports,
    sipp_available,
    start_sipguard,
    start_uas,
    write_rules,
)


@pytest.fixture
def start_call_path(tmp_path: Path) -> Iterator[StartCallPath]:
    """A factory: ``start_call_path(transport=..., uas=..., limits=...)``.

    ``transport`` is ``"udp"`` or ``"tcp"``; ``uas`` a UAS scenario in
    ``sipp_scenarios/`` (default ``uas.xml``); ``limits`` an optional
    ``limits:`` mapping for the test trunk.
    """
    if not sipp_available():
        pytest.fail("SIPp is not on PATH: install it (Debian package sip-tester; `make setup`)")
    started: list[CallPath] = []
    stack = contextlib.ExitStack()

    def start(
        *,
        transport: str,
        uas: str = "uas.xml",
        limits: Mapping[str, int] | None = None,
    ) -> CallPath:
        workdir = tmp_path / f"path-{len(started) + 1}-{transport}"
        listen_port, trunk_port, uas_port = free_ports(3)
        server = start_uas(uas, port=uas_port, transport=transport, workdir=workdir / "uas")
        try:
            rules = write_rules(
                workdir,
                listen_port=listen_port,
                trunk_source_port=trunk_port,
                uas_port=uas_port,
                transport=transport,
                limits=limits,
            )
            guard = start_sipguard(rules, port=listen_port, workdir=workdir / "sipguard")
        except BaseException:
            server.stop(timeout=2.0)
            raise
        path = CallPath(transport, guard, server, trunk_port, workdir)
        started.append(path)
        stack.callback(path.close)
        return path

    with stack:
        yield start
