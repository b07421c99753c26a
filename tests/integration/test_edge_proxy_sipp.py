"""End to end through a real Kamailio that record-routes, in front of sipguard and behind it.

In front (the usual carrier deployment): SIPp UAC -> Kamailio -> sipguard ->
SIPp UAS. Kamailio is the trunk sipguard sees; it record-routes every new
call and, like a stock configuration, relays in-dialog requests only along
their Route headers (``loose_route()``) and refuses the others with 404. A
call therefore ends cleanly only if sipguard's 18x and 2xx carry Kamailio's
Record-Route (RFC 3261 §12.1.1) and sipguard's own requests toward the
caller (the callee's BYE) go through it: otherwise the caller's ACK and BYE
go around Kamailio and are dropped, and both calls stay up.

Behind (Kamailio as a trunk's route): SIPp UAC -> sipguard -> Kamailio ->
SIPp UAS; sipguard, the UAC of the outbound leg, routes its ACK and BYE
through the callee's Record-Route, reversed (§12.1.2).

Each test checks SIPp's counts on both ends, that Kamailio refused no
in-dialog request, and that sipguard holds no call or dialog at the end
(its shutdown summary). The transport is the same on every hop.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.edge_proxy import EdgePath
from tests.integration.sipp import SPOOFED_CALLERS_CSV, SippRun, log_count

pytestmark = [pytest.mark.integration, pytest.mark.sipp]

StartEdgePath = Callable[..., EdgePath]
TRANSPORTS = ["udp", "tcp"]
# What edge.cfg logs when an in-dialog request carries no Route of its own.
REFUSED_IN_DIALOG = "without a Route of ours"


def assert_ended_cleanly(path: EdgePath, *runs: SippRun) -> None:
    """No in-dialog request was refused on the way, and sipguard holds nothing."""
    assert path.kamailio is not None
    assert REFUSED_IN_DIALOG not in path.kamailio.log, path.explain(*runs)
    path.uas.stop()
    assert path.sipguard.stop() == 0, path.explain(*runs)
    assert "active_calls=0 dialogs=0" in path.sipguard.stderr, path.explain(*runs)


def assert_completed(run: SippRun, path: EdgePath, calls: int) -> None:
    assert run.returncode == 0, path.explain(run)
    assert run.stats.successful_calls == calls, path.explain(run)
    assert run.stats.failed_calls == 0, path.explain(run)


# --------------------------------------------------------------------------
# Kamailio in front of sipguard


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_caller_hangs_up_through_the_edge_proxy(
    start_edge_path: StartEdgePath, transport: str
) -> None:
    calls = 20
    path = start_edge_path(transport=transport, layout="front")

    run = path.call("uac_basic.xml", calls=calls, rate=10)

    assert_completed(run, path, calls)
    # 200 for the INVITE and for the BYE, each through Kamailio
    assert run.stats.received("200") == 2 * calls, path.explain(run)
    uas = path.uas.stop()
    # the caller's ACK and BYE reached sipguard through Kamailio and went on
    assert uas.stats.received("ACK") == calls, path.explain(run)
    assert uas.stats.received("BYE") == calls, path.explain(run)
    assert uas.stats.successful_calls == calls, path.explain(run)
    assert log_count(path.sipguard, "allow ") == calls, path.explain(run)
    assert_ended_cleanly(path, run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_callee_hangs_up_through_the_edge_proxy(
    start_edge_path: StartEdgePath, transport: str
) -> None:
    calls = 20
    path = start_edge_path(transport=transport, layout="front", uas="uas_hangup.xml")

    run = path.call("uac_callee_hangup.xml", calls=calls, rate=10)

    assert_completed(run, path, calls)
    # sipguard's BYE toward the caller went through Kamailio (its Route)
    assert run.stats.received("BYE") == calls, path.explain(run)
    uas = path.uas.stop()
    assert uas.stats.sent("BYE") == calls, path.explain(run)
    # and the caller's 200 came back the same way
    assert uas.stats.received("200") == calls, path.explain(run)
    assert uas.stats.successful_calls == calls, path.explain(run)
    assert_ended_cleanly(path, run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_reinvite_through_the_edge_proxy(start_edge_path: StartEdgePath, transport: str) -> None:
    calls = 20
    path = start_edge_path(transport=transport, layout="front")

    run = path.call("uac_reinvite.xml", calls=calls, rate=10)

    assert_completed(run, path, calls)
    # 200 for the INVITE, the re-INVITE and the BYE
    assert run.stats.received("200") == 3 * calls, path.explain(run)
    uas = path.uas.stop()
    assert uas.stats.received("INVITE") == 2 * calls, path.explain(run)
    assert uas.stats.received("ACK") == 2 * calls, path.explain(run)
    assert uas.stats.received("BYE") == calls, path.explain(run)
    assert uas.stats.successful_calls == calls, path.explain(run)
    assert_ended_cleanly(path, run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cancel_through_the_edge_proxy(start_edge_path: StartEdgePath, transport: str) -> None:
    calls = 20
    path = start_edge_path(transport=transport, layout="front")

    run = path.call("uac_cancel.xml", calls=calls, rate=10)

    assert_completed(run, path, calls)
    assert run.stats.received("487") == calls, path.explain(run)
    # RFC 3261 §9.2: every CANCEL is answered 200
    assert run.stats.received("200") == calls, path.explain(run)
    uas = path.uas.stop()
    assert uas.stats.received("CANCEL") == calls, path.explain(run)
    assert uas.stats.sent("487") == calls, path.explain(run)
    assert uas.stats.successful_calls == calls, path.explain(run)
    assert_ended_cleanly(path, run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_forged_caller_id_is_refused_through_the_edge_proxy(
    start_edge_path: StartEdgePath, transport: str
) -> None:
    """Every forged caller of spoofed_callers.csv: the 403 with the rule's
    Reason (and the Warning) reaches the caller through Kamailio."""
    calls = 19  # each line of spoofed_callers.csv once
    path = start_edge_path(transport=transport, layout="front")

    # uac_spoofed.xml succeeds only on a 403 whose Reason names the
    # injection file's rule and which carries sipguard's Warning
    run = path.call("uac_spoofed.xml", calls=calls, rate=10, injection=SPOOFED_CALLERS_CSV)

    assert_completed(run, path, calls)
    assert run.stats.received("403") == calls, path.explain(run)
    uas = path.uas.stop()
    assert uas.stats.received("INVITE") == 0, path.explain(run)
    # decided on the trunk Kamailio is, once per call
    assert log_count(path.sipguard, "reject  403 ") == calls, path.explain(run)
    assert log_count(path.sipguard, "trunk=sh-callcenter ") == calls, path.explain(run)
    assert_ended_cleanly(path, run)


# --------------------------------------------------------------------------
# Kamailio behind sipguard, as the trunk's route


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_caller_hangs_up_with_the_proxy_as_route(
    start_edge_path: StartEdgePath, transport: str
) -> None:
    calls = 20
    path = start_edge_path(transport=transport, layout="behind")

    run = path.call("uac_basic.xml", calls=calls, rate=10)

    assert_completed(run, path, calls)
    assert run.stats.received("200") == 2 * calls, path.explain(run)
    uas = path.uas.stop()
    # sipguard's ACK and BYE toward the callee went through Kamailio
    assert uas.stats.received("ACK") == calls, path.explain(run)
    assert uas.stats.received("BYE") == calls, path.explain(run)
    assert uas.stats.successful_calls == calls, path.explain(run)
    assert_ended_cleanly(path, run)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_callee_hangs_up_with_the_proxy_as_route(
    start_edge_path: StartEdgePath, transport: str
) -> None:
    calls = 20
    path = start_edge_path(transport=transport, layout="behind", uas="uas_hangup.xml")

    run = path.call("uac_callee_hangup.xml", calls=calls, rate=10)

    assert_completed(run, path, calls)
    assert run.stats.received("BYE") == calls, path.explain(run)
    uas = path.uas.stop()
    assert uas.stats.sent("BYE") == calls, path.explain(run)
    assert uas.stats.received("200") == calls, path.explain(run)
    assert uas.stats.successful_calls == calls, path.explain(run)
    assert_ended_cleanly(path, run)
