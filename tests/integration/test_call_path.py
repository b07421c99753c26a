"""End to end: SIPp callers -> ``sipguard run`` -> SIPp callee, over UDP and TCP.

Each test starts its own sipguard (one trunk, any caller ID allowed) and SIPp
UAS, places calls with a SIPp UAC from the trunk's source port, and checks
both SIPp's call counts and per-message counts. The transport is the same on
both sides of sipguard (UAC -> sipguard and sipguard -> UAS).
"""

from __future__ import annotations

import pytest

from tests.integration.sipp import StartCallPath, free_ports, options_ping

pytestmark = [pytest.mark.integration, pytest.mark.sipp]

TRANSPORTS = ["udp", "tcp"]


@pytest.mark.parametrize(("transport", "calls"), [("udp", 500), ("tcp", 200)])
def test_basic_calls_complete(start_call_path: StartCallPath, transport: str, calls: int) -> None:
    path = start_call_path(transport=transport)

    run = path.call("uac_basic.xml", calls=calls, rate=50)

    assert run.returncode == 0, path.explain(run)
    assert run.stats.successful_calls == calls, path.explain(run)
    assert run.stats.failed_calls == 0, path.explain(run)
    # 200 for the INVITE and 200 for the BYE, once per call
    assert run.stats.received("200") == 2 * calls, path.explain(run)
    uas = path.uas.stop()
    assert uas.stats.received("INVITE") == calls, path.explain(run)
    assert uas.stats.received("BYE") == calls, path.explain(run)
    assert uas.stats.successful_calls == calls, path.explain(run)
    assert uas.stats.failed_calls == 0, path.explain(run)
    assert path.sipguard.stop() == 0, path.explain(run)
    assert "active_calls=0 dialogs=0" in path.sipguard.stderr, path.explain(run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_callee_hangs_up(start_call_path: StartCallPath, transport: str) -> None:
    calls = 50
    path = start_call_path(transport=transport, uas="uas_hangup.xml")

    run = path.call("uac_callee_hangup.xml", calls=calls, rate=25)

    assert run.returncode == 0, path.explain(run)
    assert run.stats.successful_calls == calls, path.explain(run)
    assert run.stats.failed_calls == 0, path.explain(run)
    assert run.stats.received("BYE") == calls, path.explain(run)
    uas = path.uas.stop()
    assert uas.stats.sent("BYE") == calls, path.explain(run)
    # the callee's BYE was answered: sipguard relayed the caller's 200 back
    assert uas.stats.received("200") == calls, path.explain(run)
    assert uas.stats.successful_calls == calls, path.explain(run)
    assert uas.stats.failed_calls == 0, path.explain(run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cancelled_calls_end_with_487(start_call_path: StartCallPath, transport: str) -> None:
    calls = 50
    # A concurrency limit well above what this test keeps up at once: if a
    # cancelled call kept its slot, the follow-up calls would be refused.
    concurrent = 10
    path = start_call_path(transport=transport, limits={"concurrent": concurrent})

    run = path.call("uac_cancel.xml", calls=calls, rate=25)

    assert run.returncode == 0, path.explain(run)
    assert run.stats.successful_calls == calls, path.explain(run)
    assert run.stats.failed_calls == 0, path.explain(run)
    assert run.stats.received("487") == calls, path.explain(run)
    # RFC 3261 §9.2: every CANCEL is answered 200
    assert run.stats.received("200") == calls, path.explain(run)

    # sipguard is still up and still knows the trunk
    assert options_ping(path.sipguard.port, source_port=path.trunk_port) == 200, path.explain(run)

    # and every cancelled call gave back its place: a few more calls, fewer
    # at once than the limit, all go through
    follow_up_calls = 5
    follow_up = path.call("uac_basic.xml", calls=follow_up_calls, rate=5)
    assert follow_up.returncode == 0, path.explain(run, follow_up)
    assert follow_up.stats.successful_calls == follow_up_calls, path.explain(run, follow_up)

    uas = path.uas.stop()
    # sipguard cancelled the callee's leg of every cancelled call
    assert uas.stats.received("CANCEL") == calls, path.explain(run, follow_up)
    assert uas.stats.sent("487") == calls, path.explain(run, follow_up)
    assert uas.stats.received("INVITE") == calls + follow_up_calls, path.explain(run, follow_up)
    assert uas.stats.successful_calls == calls + follow_up_calls, path.explain(run, follow_up)
    assert uas.stats.failed_calls == 0, path.explain(run, follow_up)

    # no leaked call or dialog state: sipguard's shutdown summary says so
    assert path.sipguard.stop() == 0, path.explain(run, follow_up)
    assert "active_calls=0 dialogs=0" in path.sipguard.stderr, path.explain(run, follow_up)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_reinvite_in_dialog(start_call_path: StartCallPath, transport: str) -> None:
    calls = 50
    path = start_call_path(transport=transport)

    run = path.call("uac_reinvite.xml", calls=calls, rate=25)

    assert run.returncode == 0, path.explain(run)
    assert run.stats.successful_calls == calls, path.explain(run)
    assert run.stats.failed_calls == 0, path.explain(run)
    # 200 for the INVITE, the re-INVITE and the BYE
    assert run.stats.received("200") == 3 * calls, path.explain(run)
    uas = path.uas.stop()
    # the initial INVITE and the relayed re-INVITE
    assert uas.stats.received("INVITE") == 2 * calls, path.explain(run)
    assert uas.stats.received("ACK") == 2 * calls, path.explain(run)
    assert uas.stats.received("BYE") == calls, path.explain(run)
    assert uas.stats.successful_calls == calls, path.explain(run)
    assert uas.stats.failed_calls == 0, path.explain(run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_unknown_source_is_refused(start_call_path: StartCallPath, transport: str) -> None:
    calls = 20
    path = start_call_path(transport=transport)
    (stranger_port,) = free_ports(1)

    run = path.call("uac_rejected.xml", calls=calls, rate=20, local_port=stranger_port)

    # uac_rejected.xml succeeds only on 403 (any other final response fails)
    assert run.returncode == 0, path.explain(run)
    assert run.stats.successful_calls == calls, path.explain(run)
    assert run.stats.failed_calls == 0, path.explain(run)
    assert run.stats.received("403") == calls, path.explain(run)
    uas = path.uas.stop()
    assert uas.stats.received("INVITE") == 0, path.explain(run)
    assert uas.stats.created_calls == 0, path.explain(run)
