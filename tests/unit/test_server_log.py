"""The service log: one line per event, whatever the request said."""

from __future__ import annotations

import logging

import pytest

from sipguard.events import CallStarted
from sipguard.server import _log_event
from tests.helpers import CALLER

pytestmark = pytest.mark.unit


def test_a_decoded_line_break_in_the_callee_cannot_forge_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    forged = "13800138000\n2026-12-06 10:00:00 INFO    allow   trunk=bank caller=+8695555"
    event = CallStarted("sh", CALLER, "a-1", "b-1", "+862131771234", forged, 1.0)
    with caplog.at_level(logging.INFO, logger="sipguard"):
        _log_event(event)
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message and "\r" not in message
    assert "callee=13800138000?2026-12-06" in message
