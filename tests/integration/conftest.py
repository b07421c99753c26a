"""Fixtures for the SIPp integration tests: a call path per test.

A call path is SIPp UAC -> sipguard -> SIPp UAS on 127.0.0.1, every process
with its own free port and its own directory under the test's ``tmp_path``;
a start that finds a port taken after all starts again with fresh ports.
`start_call_path` starts the UAS and sipguard; the fixture stops both at
teardown, whatever the test did (UAS first, so it can finish its calls while
sipguard still relays them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from tests.integration.edge_proxy import EdgePath, Kamailio, start_kamailio
from tests.integration.sipp import (
    HOST,
    CallPath,
    PolicyPath,
    StartCallPath,
    policy_rules_text,
    sipp_available,
    start_sipguard,
    start_uas,
    with_fresh_ports,
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

        def start_on(ports: list[int]) -> CallPath:
            listen_port, trunk_port, uas_port = ports
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
            return CallPath(transport, guard, server, trunk_port, workdir)

        path = with_fresh_ports(3, start_on)
        started.append(path)
        stack.callback(path.close)
        return path

    with stack:
        yield start


@pytest.fixture
def start_policy_path(tmp_path: Path) -> Iterator[Callable[..., PolicyPath]]:
    """A factory for call paths with the two-trunk policy rule file.

    ``start_policy_path(transport=..., uas=..., uas_args=..., sipguard_args=...,
    trunk_port_count=...)``: ``uas`` is a UAS scenario (default
    ``uas_check_identity.xml``), ``uas_args`` more options for it (``-d``:
    ringing time), ``sipguard_args`` more options for ``sipguard run``
    (``--no-watch``), ``trunk_port_count`` how many source ports trunk
    ``sh-callcenter`` has, ``extra_rules`` top-level keys appended to the
    rule file (e.g. ``metrics:``). Everything is stopped at teardown.
    """
    if not sipp_available():
        pytest.fail("SIPp is not on PATH: install it (Debian package sip-tester; `make setup`)")
    started: list[PolicyPath] = []
    stack = contextlib.ExitStack()

    def start(
        *,
        transport: str,
        uas: str = "uas_check_identity.xml",
        uas_args: Sequence[str] = (),
        sipguard_args: Sequence[str] = (),
        trunk_port_count: int = 2,
        extra_rules: str = "",
    ) -> PolicyPath:
        workdir = tmp_path / f"policy-{len(started) + 1}-{transport}"

        def start_on(ports: list[int]) -> PolicyPath:
            listen_port, other_port, uas_port, *trunk_ports = ports
            server = start_uas(
                uas,
                port=uas_port,
                transport=transport,
                workdir=workdir / "uas",
                extra_args=uas_args,
            )
            try:
                workdir.mkdir(parents=True, exist_ok=True)
                rules = workdir / "rules.yaml"
                rules.write_text(
                    policy_rules_text(
                        listen_port=listen_port,
                        trunk_ports=trunk_ports,
                        other_trunk_port=other_port,
                        uas_port=uas_port,
                        transport=transport,
                    )
                    + extra_rules,
                    encoding="utf-8",
                )
                guard = start_sipguard(
                    rules, port=listen_port, workdir=workdir / "sipguard", extra_args=sipguard_args
                )
            except BaseException:
                server.stop(timeout=2.0)
                raise
            return PolicyPath(
                transport,
                guard,
                server,
                trunk_ports[0],
                workdir,
                trunk_ports=tuple(trunk_ports),
                other_trunk_port=other_port,
                uas_port=uas_port,
            )

        path = with_fresh_ports(3 + trunk_port_count, start_on)
        started.append(path)
        stack.callback(path.close)
        return path

    with stack:
        yield start


@pytest.fixture
def start_edge_path(tmp_path: Path) -> Iterator[Callable[..., EdgePath]]:
    """A factory for call paths through a real Kamailio edge proxy.

    ``start_edge_path(transport=..., layout=..., uas=...)``: ``layout`` is
    ``"front"`` (SIPp UAC -> Kamailio -> sipguard -> SIPp UAS; Kamailio is
    trunk ``sh-callcenter``) or ``"behind"`` (SIPp UAC -> sipguard ->
    Kamailio -> SIPp UAS; the UAC is the trunk and Kamailio its route);
    ``uas`` a UAS scenario (default ``uas.xml``). sipguard runs the two-trunk
    policy rule file (`policy_rules_text`), so the injection files of the
    policy tests apply. The transport is the same on every hop. Everything
    is stopped at teardown, Kamailio last.
    """
    if not sipp_available():
        pytest.fail("SIPp is not on PATH: install it (Debian package sip-tester; `make setup`)")
    started: list[EdgePath] = []
    stack = contextlib.ExitStack()

    def start(*, transport: str, layout: str, uas: str = "uas.xml") -> EdgePath:
        if layout not in ("front", "behind"):
            raise ValueError(f"layout must be front or behind, not {layout!r}")
        workdir = tmp_path / f"edge-{len(started) + 1}-{layout}-{transport}"

        def start_on(ports: list[int]) -> EdgePath:
            listen_port, proxy_port, caller_port, other_port, uas_port = ports
            server = start_uas(uas, port=uas_port, transport=transport, workdir=workdir / "uas")
            kamailio: Kamailio | None = None
            try:
                suffix = ";transport=tcp" if transport == "tcp" else ""
                front = layout == "front"
                next_hop = f"sip:{HOST}:{listen_port if front else uas_port}{suffix}"
                kamailio = start_kamailio(
                    port=proxy_port, next_hop=next_hop, workdir=workdir / "kamailio"
                )
                workdir.mkdir(parents=True, exist_ok=True)
                rules = workdir / "rules.yaml"
                rules.write_text(
                    policy_rules_text(
                        listen_port=listen_port,
                        trunk_ports=[proxy_port if front else caller_port],
                        other_trunk_port=other_port,
                        uas_port=uas_port if front else proxy_port,
                        transport=transport,
                    ),
                    encoding="utf-8",
                )
                guard = start_sipguard(rules, port=listen_port, workdir=workdir / "sipguard")
            except BaseException:
                server.stop(timeout=2.0)
                if kamailio is not None:
                    kamailio.stop()
                raise
            return EdgePath(
                transport,
                guard,
                server,
                caller_port,
                workdir,
                kamailio=kamailio,
                layout=layout,
                entry_port=proxy_port if front else listen_port,
            )

        path = with_fresh_ports(5, start_on)
        started.append(path)
        stack.callback(path.close)
        return path

    with stack:
        yield start
