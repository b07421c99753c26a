"""The benchmark runner's pure parts: SIPp's files, percentiles, the step verdict,
the options, the SIPp command lines, the peers' ports and the summary."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from rich.console import Console

from bench import catalog, procfs, report, runner, sipp, steps
from bench.sipp import RttSample, SippCounts
from bench.steps import ServerUse, Step, UacRun
from sipguard.rules.loader import load_rules

pytestmark = pytest.mark.unit

# the header SIPp 3.6.1 writes with -trace_stat (113 fields: every line ends with ';')
STAT_HEADER = (
    "StartTime;LastResetTime;CurrentTime;ElapsedTime(P);ElapsedTime(C);TargetRate;"
    "CallRate(P);CallRate(C);IncomingCall(P);IncomingCall(C);OutgoingCall(P);"
    "OutgoingCall(C);TotalCallCreated;CurrentCall;SuccessfulCall(P);SuccessfulCall(C);"
    "FailedCall(P);FailedCall(C);FailedCannotSendMessage(P);FailedCannotSendMessage(C);"
    "FailedMaxUDPRetrans(P);FailedMaxUDPRetrans(C);FailedTcpConnect(P);FailedTcpConnect(C);"
    "FailedTcpClosed(P);FailedTcpClosed(C);FailedUnexpectedMessage(P);"
    "FailedUnexpectedMessage(C);FailedCallRejected(P);FailedCallRejected(C);"
    "FailedCmdNotSent(P);FailedCmdNotSent(C);FailedRegexpDoesntMatch(P);"
    "FailedRegexpDoesntMatch(C);FailedRegexpShouldntMatch(P);FailedRegexpShouldntMatch(C);"
    "FailedRegexpHdrNotFound(P);FailedRegexpHdrNotFound(C);FailedOutboundCongestion(P);"
    "FailedOutboundCongestion(C);FailedTimeoutOnRecv(P);FailedTimeoutOnRecv(C);"
    "FailedTimeoutOnSend(P);FailedTimeoutOnSend(C);FailedTestDoesntMatch(P);"
    "FailedTestDoesntMatch(C);FailedTestShouldntMatch(P);FailedTestShouldntMatch(C);"
    "FailedStrcmpDoesntMatch(P);FailedStrcmpDoesntMatch(C);FailedStrcmpShouldntMatch(P);"
    "FailedStrcmpShouldntMatch(C);OutOfCallMsgs(P);OutOfCallMsgs(C);DeadCallMsgs(P);"
    "DeadCallMsgs(C);Retransmissions(P);Retransmissions(C);AutoAnswered(P);AutoAnswered(C);"
    "Warnings(P);Warnings(C);FatalErrors(P);FatalErrors(C);WatchdogMajor(P);"
    "WatchdogMajor(C);WatchdogMinor(P);WatchdogMinor(C);ResponseTime1(P);ResponseTime1(C);"
    "ResponseTime1StDev(P);ResponseTime1StDev(C);ResponseTime2(P);ResponseTime2(C);"
    "ResponseTime2StDev(P);ResponseTime2StDev(C);CallLength(P);CallLength(C);"
    "CallLengthStDev(P);CallLengthStDev(C);ResponseTimeRepartition1;"
    "ResponseTimeRepartition1_<1;ResponseTimeRepartition1_<2;ResponseTimeRepartition1_<5;"
    "ResponseTimeRepartition1_<10;ResponseTimeRepartition1_<20;"
    "ResponseTimeRepartition1_<50;ResponseTimeRepartition1_<100;"
    "ResponseTimeRepartition1_<200;ResponseTimeRepartition1_<500;"
    "ResponseTimeRepartition1_<1000;ResponseTimeRepartition1_>=1000;"
    "ResponseTimeRepartition2;ResponseTimeRepartition2_<1;ResponseTimeRepartition2_<2;"
    "ResponseTimeRepartition2_<5;ResponseTimeRepartition2_<10;ResponseTimeRepartition2_<20;"
    "ResponseTimeRepartition2_<50;ResponseTimeRepartition2_<100;"
    "ResponseTimeRepartition2_<200;ResponseTimeRepartition2_<500;"
    "ResponseTimeRepartition2_<1000;ResponseTimeRepartition2_>=1000;CallLengthRepartition;"
    "CallLengthRepartition_<500;CallLengthRepartition_<600;CallLengthRepartition_<700;"
    "CallLengthRepartition_<1000;CallLengthRepartition_<2000;CallLengthRepartition_<5000;"
    "CallLengthRepartition_>=5000;"
)
COLUMNS = STAT_HEADER.split(";")[:-1]
START = "2026-11-23\t14:32:35.986851\t1795444355.986851"


def stat_line(second: int, **counters: int) -> str:
    """One report line as SIPp writes it: dates with tabs, times as h:m:s, zeros elsewhere."""
    now = f"2026-11-23\t14:32:3{5 + second}.989619\t179544435{5 + second}.989619"
    fixed = {
        "StartTime": START,
        "LastResetTime": now,
        "CurrentTime": now,
        "ElapsedTime(P)": "00:00:01",
        "ElapsedTime(C)": f"00:00:0{second}",
        "TargetRate": "250",
        "CallRate(P)": "249.003",
        "CallRate(C)": "248.503",
    }
    values = []
    for name in COLUMNS:
        if name in fixed:
            values.append(fixed[name])
        elif name.startswith(("ResponseTime", "CallLength")) and "Repartition" not in name:
            values.append("00:00:00:004000")
        else:
            values.append(str(counters.get(name.replace("(", "_").replace(")", ""), 0)))
    return ";".join(values) + ";"


# -- SIPp's statistics file --------------------------------------------------------------


def test_parse_stat_csv_takes_the_cumulative_counters_of_the_last_line() -> None:
    text = "\n".join(
        [
            STAT_HEADER,
            stat_line(0),
            stat_line(
                1,
                TotalCallCreated=249,
                SuccessfulCall_P=122,
                SuccessfulCall_C=122,
                FailedCall_C=1,
                Retransmissions_P=3,
                Retransmissions_C=3,
            ),
            stat_line(
                2,
                TotalCallCreated=500,
                CurrentCall=2,
                SuccessfulCall_P=251,
                SuccessfulCall_C=495,
                FailedCall_P=2,
                FailedCall_C=3,
                Retransmissions_P=4,
                Retransmissions_C=7,
            ),
        ]
    )
    assert {len(line.split(";")) for line in text.splitlines()} == {113}
    counts = sipp.parse_stat_csv(text + "\n")
    assert counts == SippCounts(created=500, successful=495, failed=3, retransmissions=7)
    assert counts.unfinished == 2


def test_parse_stat_csv_ignores_blank_lines_and_crlf() -> None:
    last = stat_line(2, TotalCallCreated=500, SuccessfulCall_C=500)
    text = f"{STAT_HEADER}\r\n\r\n{stat_line(0)}\r\n{last}\r\n\r\n   \r\n"
    assert sipp.parse_stat_csv(text) == SippCounts(500, 500, 0, 0)


@pytest.mark.parametrize("text", ["", "\n\n", STAT_HEADER, STAT_HEADER + "\n\n"])
def test_parse_stat_csv_without_a_data_line_raises(text: str) -> None:
    with pytest.raises(ValueError, match="no data line"):
        sipp.parse_stat_csv(text)


def test_parse_stat_csv_counts_missing_or_empty_columns_as_zero() -> None:
    text = "TotalCallCreated;SuccessfulCall(C);FailedCall(C)\n10;;2\n"
    assert sipp.parse_stat_csv(text) == SippCounts(10, 0, 2, 0)


def test_parse_stat_csv_reads_what_a_cut_off_last_line_holds() -> None:
    full = stat_line(2, TotalCallCreated=500, SuccessfulCall_C=480, FailedCall_C=20)
    cut = ";".join(full.split(";")[:16])  # ends with SuccessfulCall(C); FailedCall(C) lost
    counts = sipp.parse_stat_csv(f"{STAT_HEADER}\n{cut}")
    assert counts == SippCounts(created=500, successful=480, failed=0, retransmissions=0)
    assert counts.unfinished == 20


def test_parse_stat_csv_rejects_a_garbled_counter() -> None:
    fields = stat_line(2).split(";")
    assert COLUMNS[12] == "TotalCallCreated"
    fields[12] = "5\x0000"  # a NUL in the middle of the number
    broken = ";".join(fields)
    with pytest.raises(ValueError):
        sipp.parse_stat_csv(f"{STAT_HEADER}\n{broken}")


@pytest.mark.parametrize(
    ("counts", "unfinished"),
    [(SippCounts(500, 490, 4, 0), 6), (SippCounts(500, 500, 0, 9), 0), (SippCounts(3, 3, 2, 0), 0)],
)
def test_unfinished_calls_never_go_negative(counts: SippCounts, unfinished: int) -> None:
    assert counts.unfinished == unfinished


# -- SIPp's response-time trace ---------------------------------------------------------

RTT_TEXT = """Date_ms;response_time_ms;rtd_no
12.001;4;1
12.001;4;1
20.001;8;1
2500;0;2
2504;0;2
"""


def test_parse_rtt_csv_reads_every_sample_and_skips_the_header() -> None:
    assert sipp.parse_rtt_csv(RTT_TEXT) == [
        RttSample(12.001, 4.0, 1),
        RttSample(12.001, 4.0, 1),
        RttSample(20.001, 8.0, 1),
        RttSample(2500.0, 0.0, 2),
        RttSample(2504.0, 0.0, 2),
    ]


def test_parse_rtt_csv_of_a_header_only_file_is_empty() -> None:
    assert sipp.parse_rtt_csv("Date_ms;response_time_ms;rtd_no\n") == []
    assert sipp.parse_rtt_csv("") == []


def test_parse_rtt_csv_skips_broken_lines() -> None:
    text = (
        "Date_ms;response_time_ms;rtd_no\r\n"
        "12.001;4;1\r\n"
        "16.001;4\n"  # too few fields
        "\n"
        "abc;4;1\n"  # not a number
        "20.001;4;1.5\n"  # rtd not an integer
        "24.001;4;\n"  # cut off while written
        "  28.001;12;1  \n"  # stray blanks are fine
        "32.001;16;1;extra\n"  # fields past the third are ignored
    )
    assert sipp.parse_rtt_csv(text) == [
        RttSample(12.001, 4.0, 1),
        RttSample(28.001, 12.0, 1),
        RttSample(32.001, 16.0, 1),
    ]


def test_response_times_and_moments_keep_one_rtd() -> None:
    samples = sipp.parse_rtt_csv(RTT_TEXT)
    assert sipp.response_times(samples) == [4.0, 4.0, 8.0]
    assert sipp.response_moments(samples) == [12.001, 12.001, 20.001]
    assert sipp.response_times(samples, rtd=2) == [0.0, 0.0]
    assert sipp.response_moments(samples, rtd=3) == []


# -- percentiles and throughput ----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        (list(range(1, 101)), 50, 50),
        (list(range(1, 101)), 99, 99),
        (list(range(1, 101)), 100, 100),
        (list(range(100, 0, -1)), 99, 99),  # unsorted input
        ([10.0, 20.0, 30.0, 40.0], 50, 20.0),
        ([10.0, 20.0, 30.0, 40.0], 51, 30.0),
        ([10.0, 20.0, 30.0, 40.0], 99, 40.0),
        ([10.0, 20.0, 30.0, 40.0], 0.001, 10.0),  # the lowest rank is 1
        ([7.0], 99, 7.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float) -> None:
    assert sipp.percentile(values, q) == expected


def test_percentile_of_nothing_is_none() -> None:
    assert sipp.percentile([], 50) is None


def test_percentile_leaves_its_input_alone() -> None:
    values = [3.0, 1.0, 2.0]
    sipp.percentile(values, 50)
    assert values == [3.0, 1.0, 2.0]


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ([], 0.0),
        ([5.0], 0.0),
        ([5.0, 5.0, 5.0], 0.0),  # no time between them
        ([0.0, 1000.0], 1.0),
        ([4.0 * i for i in range(251)], 250.0),  # one every 4 ms
        ([1000.0, 0.0, 500.0], 2.0),  # order does not matter
    ],
)
def test_throughput_counts_intervals_between_first_and_last(
    times: list[float], expected: float
) -> None:
    assert sipp.throughput(times) == pytest.approx(expected)


# -- a step: combining UACs and the verdict ----------------------------------------------


def make_step(**changes: Any) -> Step:
    base = Step(
        system="sipguard",
        scenario="reject",
        rate=1000,
        offered_cps=1000,
        achieved_cps=1000.0,
        calls=8000,
        successful=8000,
        failed=0,
        failed_pct=0.0,
        retransmissions=0,
        retrans_pct=0.0,
        p50_ms=0.0,
        p99_ms=4.0,
        cpu_us_per_call=120.0,
        server_cpu_pct=12.0,
        loadgen_cpu_pct=30.0,
        host_busy_pct=40.0,
        peak_pss_mib=30.0,
        peak_rss_mib=35.0,
        udp_drops=0,
        wall_s=8.0,
    )
    return replace(base, **changes)


def test_verdict_passes_a_clean_step() -> None:
    assert steps.verdict(make_step()) == (True, "")


def test_verdict_passes_just_inside_every_limit() -> None:
    step = make_step(failed_pct=0.099, retrans_pct=0.099, achieved_cps=950.0)
    assert steps.verdict(step) == (True, "")


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"failed": 8, "failed_pct": 0.1}, "0.10 % failed"),
        ({"failed": 200, "failed_pct": 2.5}, "2.50 % failed"),
        ({"retransmissions": 8, "retrans_pct": 0.1}, "0.10 % retransmissions"),
        ({"retransmissions": 1000, "retrans_pct": 12.5}, "12.50 % retransmissions"),
        ({"achieved_cps": 949.9}, "achieved 950 of 1000 calls/s"),
        ({"achieved_cps": 612.4}, "achieved 612 of 1000 calls/s"),
    ],
)
def test_verdict_fails_each_criterion_on_its_own(changes: dict[str, Any], why: str) -> None:
    assert steps.verdict(make_step(**changes)) == (False, why)


def test_verdict_names_every_failed_criterion_in_order() -> None:
    step = make_step(failed_pct=1.0, retrans_pct=0.5, achieved_cps=10.0)
    passed, why = steps.verdict(step)
    assert not passed
    assert why == "1.00 % failed; 0.50 % retransmissions; achieved 10 of 1000 calls/s"


def every_4_ms(count: int, rtt: float = 4.0, rtd: int = 1) -> list[RttSample]:
    return [RttSample(4.0 * i, rtt, rtd) for i in range(count)]


USE = ServerUse(
    cpu_seconds=0.45,
    wall_seconds=2.5,
    peak_pss_kib=34_099,
    peak_rss_kib=40_960,
    loadgen_cpu_seconds=0.25,
    host_busy_pct=23.456,
    udp_drops=3,
)


def test_uac_run_achieved_rate_and_summary() -> None:
    samples = every_4_ms(500) + every_4_ms(500, rtt=0.0, rtd=2)
    run = UacRun("valid", 15061, 250, 500, SippCounts(500, 500, 0, 0), samples, True)
    assert run.achieved_cps == pytest.approx(250.0)
    assert run.summary() == {
        "role": "valid",
        "port": 15061,
        "offered_cps": 250,
        "achieved_cps": 250.0,
        "calls": 500,
        "created": 500,
        "successful": 500,
        "failed": 0,
        "retransmissions": 0,
    }


def test_combine_a_passing_step() -> None:
    run = UacRun("spoofed", 15061, 250, 500, SippCounts(500, 500, 0, 0), every_4_ms(500), True)
    step = steps.combine("sipguard", "reject", 250, [run], USE)
    assert (step.offered_cps, step.achieved_cps) == (250, 250.0)
    assert (step.calls, step.successful) == (500, 500)
    assert (step.failed, step.failed_pct, step.retransmissions, step.retrans_pct) == (0, 0, 0, 0)
    assert (step.p50_ms, step.p99_ms) == (4.0, 4.0)
    assert step.cpu_us_per_call == 900.0  # 0.45 s over 500 calls
    assert (step.server_cpu_pct, step.loadgen_cpu_pct, step.host_busy_pct) == (18.0, 10.0, 23.5)
    assert (step.peak_pss_mib, step.peak_rss_mib) == (33.3, 40.0)  # 34,099 and 40,960 KiB
    assert (step.udp_drops, step.wall_s) == (3, 2.5)
    assert step.passed and step.why == ""
    assert [u["port"] for u in step.uacs] == [15061]


def test_combine_counts_unfinished_calls_as_failed() -> None:
    # 2 of 1000 calls still open at SIPp's timeout, none failed outright: 0.2 % failed
    counts = SippCounts(created=1000, successful=998, failed=0, retransmissions=0)
    answers = [RttSample(2.0 * i, 4.0, 1) for i in range(998)]  # 500 a second
    run = UacRun("valid", 15061, 500, 1000, counts, answers, True)
    step = steps.combine("kamailio", "call", 500, [run], USE)
    assert (step.failed, step.failed_pct) == (2, 0.2)
    assert not step.passed
    assert step.why == "0.20 % failed"


def test_combine_counts_never_sent_calls_as_failed() -> None:
    counts = SippCounts(created=400, successful=400, failed=0, retransmissions=0)
    run = UacRun("spoofed", 15061, 250, 500, counts, every_4_ms(400), True)
    step = steps.combine("floor", "reject", 250, [run], USE)
    assert (step.calls, step.failed, step.failed_pct) == (500, 100, 20.0)
    assert step.cpu_us_per_call == pytest.approx(1125.0)  # per call SIPp created


def test_combine_fails_on_retransmissions() -> None:
    counts = SippCounts(created=500, successful=500, failed=0, retransmissions=5)
    run = UacRun("spoofed", 15061, 250, 500, counts, every_4_ms(500), True)
    step = steps.combine("sipguard", "reject", 250, [run], USE)
    assert (step.retransmissions, step.retrans_pct) == (5, 1.0)
    assert (step.passed, step.why) == (False, "1.00 % retransmissions")


def test_combine_sums_uacs_and_times_only_the_timed_ones() -> None:
    valid = UacRun(
        "valid", 15061, 100, 200, SippCounts(200, 200, 0, 0), every_4_ms(200, rtt=8.0), True
    )
    slow = [RttSample(2.0 * i, 500.0, 1) for i in range(800)]
    flood = UacRun("flood", 15063, 400, 800, SippCounts(800, 800, 0, 0), slow, False)
    step = steps.combine("sipguard", "flood", 400, [valid, flood], USE)
    assert step.offered_cps == 500
    assert step.calls == 1000 and step.successful == 1000
    assert (step.p50_ms, step.p99_ms) == (8.0, 8.0)  # the flood's 500 ms are not timed
    assert step.achieved_cps == pytest.approx(250.0 + 500.0, abs=0.1)
    assert [u["role"] for u in step.uacs] == ["valid", "flood"]


def test_combine_without_samples_or_calls() -> None:
    run = UacRun("spoofed", 15061, 250, 500, SippCounts(0, 0, 0, 0), [], True)
    use = replace(USE, wall_seconds=0.0)
    step = steps.combine("sipguard", "reject", 250, [run], use)
    assert step.p50_ms is None and step.p99_ms is None
    assert step.cpu_us_per_call is None
    assert step.wall_s == 1.0 and step.server_cpu_pct == 45.0  # a zero wall counts as 1 s
    assert not step.passed
    assert step.why == "100.00 % failed; achieved 0 of 250 calls/s"


def test_pct_of_nothing_is_zero() -> None:
    assert steps.pct(5, 0) == 0.0
    assert steps.pct(1, 8) == 12.5


# -- the catalogue: rates, ports and the peers' files ------------------------------------


@pytest.mark.parametrize(
    ("uac", "rate", "cps"),
    [
        (catalog.Uac("valid", "valid.csv", 15061), 250, 250),
        (catalog.Uac("valid", "valid.csv", 15061, share=0.9), 250, 225),
        (catalog.Uac("spoofed", "spoofed.csv", 15062, share=0.1), 250, 25),
        (catalog.Uac("spoofed", "spoofed.csv", 15062, share=0.1), 5, 1),  # never 0
        (catalog.Uac("valid", "valid.csv", 15061, fixed_cps=100), 32000, 100),
    ],
)
def test_uac_cps(uac: catalog.Uac, rate: int, cps: int) -> None:
    assert uac.cps(rate) == cps


def test_ramps_double_and_the_quick_ramp_is_its_start() -> None:
    assert catalog.RATES == tuple(250 * 2**i for i in range(8))
    assert catalog.RATES[: len(catalog.QUICK_RATES)] == catalog.QUICK_RATES
    assert catalog.QUICK_STEP_SECONDS < catalog.STEP_SECONDS


def test_bench_ports_are_their_own_block() -> None:
    sip = {catalog.SYSTEM_PORT, catalog.UAS_PORT, *catalog.TRUNK_PORTS}
    uacs = max(len(s.uacs) for s in catalog.SCENARIOS.values())
    media = {catalog.UAS_MEDIA_PORT} | {catalog.UAC_MEDIA_PORT + 100 * i for i in range(uacs)}
    # SIPp opens its audio socket at -mp and its video socket 2 above
    media_used = media | {port + 2 for port in media}
    assert len(sip) == 5 and not sip & media_used
    assert len(media_used) == 2 * len(media)
    # the demo, rules/example.yaml and the integration tests use 5060-5099 and SIPp's 6000s
    assert all(port >= 10000 for port in sip | media_used)
    # and none is in Linux's default ephemeral range, where clients get their ports
    assert all(port < 32768 for port in sip | media_used)


def test_scenarios_send_from_the_trunk_ports() -> None:
    ports = {s.name: [u.port for u in s.uacs] for s in catalog.SCENARIOS.values()}
    t0, t1, t2 = catalog.TRUNK_PORTS
    assert ports == {"reject": [t0], "call": [t0], "mixed": [t0, t1], "flood": [t0, t2]}


def test_the_sipguard_rule_file_uses_the_catalogue_s_ports() -> None:
    rules = yaml.safe_load((catalog.PEERS / "sipguard-bench.yaml").read_text())
    assert rules["listen"] == [f"udp:{catalog.HOST}:{catalog.SYSTEM_PORT}"]
    trunks = {t["name"]: t for t in rules["trunks"]}
    sources = [trunks[name]["sources"] for name in ("bench-a", "bench-b", "bench-flood")]
    assert sources == [[f"{catalog.HOST}:{port}"] for port in catalog.TRUNK_PORTS]
    routes = {t["route"] for t in rules["trunks"]}
    assert routes == {f"udp:{catalog.HOST}:{catalog.UAS_PORT}"}


def test_the_rule_file_s_comment_table_matches_its_trunks() -> None:
    text = (catalog.PEERS / "sipguard-bench.yaml").read_text()
    table = re.findall(r"^#\s+(bench-\S+)\s+(\S+:\d+)\s", text, re.MULTILINE)
    rules = yaml.safe_load(text)
    assert table == [(t["name"], t["sources"][0]) for t in rules["trunks"]]
    assert f"SIPp UAS on {catalog.HOST}:{catalog.UAS_PORT}." in text


def test_the_kamailio_config_uses_the_catalogue_s_ports() -> None:
    text = (catalog.PEERS / "kamailio.cfg").read_text()
    assert f"listen=udp:{catalog.HOST}:{catalog.SYSTEM_PORT}\n" in text
    assert f'alias="{catalog.HOST}:{catalog.SYSTEM_PORT}"\n' in text
    assert f'#!define UAS_URI "sip:{catalog.HOST}:{catalog.UAS_PORT}"\n' in text
    trunks = re.findall(r"\$sht\(trunks=>([\d.]+):(\d+)\) = (\d+);", text)
    expected = [(catalog.HOST, str(port), str(i)) for i, port in enumerate(catalog.TRUNK_PORTS)]
    assert trunks == expected


def test_no_peer_file_still_names_an_old_port() -> None:
    old = re.compile(r"(?<![\d+-])50(61|62|63|70|80)(?!\d)")  # not phone numbers nor ranges
    files = [catalog.PEERS / "README.md", catalog.PEERS / "callerid.groups"]
    files += sorted(catalog.PEERS.glob("*.cfg")) + sorted(catalog.PEERS.glob("*.yaml"))
    files += sorted(catalog.PEERS.glob("*.xml")) + sorted(catalog.PEERS.glob("*.py"))
    files += sorted(catalog.PEERS.glob("*.csv"))
    found = [f"{f.name}: {m.group(0)}" for f in files for m in old.finditer(f.read_text())]
    assert found == []


def test_launch_lines_use_the_system_port(tmp_path: Path) -> None:
    floor = catalog.SYSTEMS["floor"].launch(catalog.SCENARIOS["reject"], tmp_path)
    assert floor.argv[-2:] == ["--port", str(catalog.SYSTEM_PORT)]
    sippy = catalog.SYSTEMS["sippy"]
    if sippy.missing() is None:
        argv = sippy.launch(catalog.SCENARIOS["call"], tmp_path).argv
        assert argv[argv.index("-p") + 1] == str(catalog.SYSTEM_PORT)
        assert argv[argv.index("-n") + 1] == f"{catalog.HOST}:{catalog.UAS_PORT}"


def test_sipguard_launch_keeps_its_audit_trail_in_the_work_directory(tmp_path: Path) -> None:
    argv = catalog.SYSTEMS["sipguard"].launch(catalog.SCENARIOS["reject"], tmp_path).argv
    rules_path = Path(argv[argv.index("--rules") + 1])
    assert rules_path.parent == tmp_path
    written = yaml.safe_load(rules_path.read_text())
    original = yaml.safe_load((catalog.PEERS / "sipguard-bench.yaml").read_text())
    assert written["audit_log"] == str(tmp_path / "audit" / "decisions.jsonl")
    assert {**written, "audit_log": original["audit_log"]} == original
    assert load_rules(rules_path).audit_log == str(tmp_path / "audit" / "decisions.jsonl")


def test_a_bench_rule_file_without_an_audit_log_line_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no audit_log line"):
        catalog.with_audit_log("version: 1\n", tmp_path)


def test_kamailio_launch_points_the_config_at_the_groups_file(tmp_path: Path) -> None:
    kamailio = catalog.SYSTEMS["kamailio"]
    reject = kamailio.launch(catalog.SCENARIOS["reject"], tmp_path)
    call = kamailio.launch(catalog.SCENARIOS["call"], tmp_path)
    config = (tmp_path / "kamailio.cfg").read_text()
    assert f"!GROUPS_FILE!{catalog.PEERS / 'callerid.groups'}!" in config
    assert "-m" not in reject.argv  # refusing statelessly needs no large shared memory
    assert call.argv[-4:] == ["-m", "1024", "-x", "tlsf"]
    assert call.argv[:3] == ["kamailio", "-f", str(tmp_path / "kamailio.cfg")]


def test_uac_xml_per_role_and_system() -> None:
    sippy, floor = catalog.SYSTEMS["sippy"], catalog.SYSTEMS["floor"]
    assert catalog.uac_xml(sippy, "valid").name == "uac_valid_b2b.xml"
    assert catalog.uac_xml(floor, "valid").name == "uac_valid.xml"
    assert catalog.uac_xml(floor, "spoofed").name == "uac_spoofed.xml"
    assert catalog.uac_xml(floor, "flood").name == "uac_flood.xml"
    assert all(catalog.uac_xml(sippy, r).exists() for r in ("valid", "spoofed", "flood"))


# -- the runner's options ----------------------------------------------------------------


def test_default_options() -> None:
    opts = runner.parse_args([])
    assert opts.systems == list(catalog.SYSTEMS)
    assert opts.scenarios == list(catalog.SCENARIOS)
    assert opts.rates == list(catalog.RATES)
    assert opts.seconds == catalog.STEP_SECONDS
    assert (opts.settle, opts.sipp_timeout, opts.grace) == (2.0, "30s", 45.0)
    assert opts.out == runner.RESULTS and opts.plot


def test_quick_options() -> None:
    opts = runner.parse_args(["--quick"])
    assert opts.rates == list(catalog.QUICK_RATES)
    assert opts.seconds == catalog.QUICK_STEP_SECONDS
    assert (opts.settle, opts.sipp_timeout, opts.grace) == (0.5, "8s", 6.0)


def test_explicit_rates_and_seconds_win_over_quick(tmp_path: Path) -> None:
    argv = ["--quick", "--rates", "250, 1000", "--seconds", "3", "--out", str(tmp_path)]
    opts = runner.parse_args([*argv, "--no-plot", "--systems", " floor, ,sipguard"])
    assert opts.rates == [250, 1000]
    assert opts.seconds == 3.0
    assert opts.sipp_timeout == "8s"  # the quick timeouts stay
    assert opts.out == tmp_path and not opts.plot
    assert opts.systems == ["floor", "sipguard"]


@pytest.mark.parametrize("argv", [["--systems", "asterisk"], ["--scenarios", "reject,storm"]])
def test_unknown_names_are_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        runner.parse_args(argv)
    assert exit_info.value.code == 2
    assert "unknown name" in capsys.readouterr().err


@pytest.mark.parametrize("rates", ["250,fast", "250,-5", "0", "1.5", " , ", "２５０"])
def test_rates_that_are_not_whole_positive_numbers_are_a_usage_error(
    rates: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        runner.parse_args(["--rates", rates])
    assert exit_info.value.code == 2
    assert "--rates:" in capsys.readouterr().err


def test_plan_skips_what_does_not_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)  # no kamailio here
    opts = runner.parse_args(["--systems", "floor,kamailio", "--scenarios", "reject,call"])
    todo, skipped = runner.plan(opts)
    assert [(system.name, scenario.name) for system, scenario in todo] == [("floor", "reject")]
    assert skipped[0] == {
        "system": "floor",
        "scenario": "call",
        "why": "not applicable: answers every INVITE 403, relays nothing",
    }
    assert skipped[1]["system"] == "kamailio" and skipped[1]["scenario"] == "*"
    assert "kamailio not installed" in skipped[1]["why"]
    assert len(skipped) == 2


# -- the SIPp command lines --------------------------------------------------------------


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_uac_argv() -> None:
    uac = catalog.SCENARIOS["mixed"].uacs[1]
    argv = runner.uac_argv(catalog.SYSTEMS["sipguard"], uac, 25, 200, 16300, "8s")
    assert argv[0] == "sipp"
    assert flag(argv, "-sf") == str(catalog.PEERS / "uac_spoofed.xml")
    assert flag(argv, "-inf") == str(catalog.PEERS / "spoofed.csv")
    assert flag(argv, "-p") == str(catalog.TRUNK_PORTS[1])
    assert flag(argv, "-mp") == "16300"
    assert (flag(argv, "-r"), flag(argv, "-rp"), flag(argv, "-m")) == ("25", "1000", "200")
    assert flag(argv, "-timeout") == "8s"
    assert (flag(argv, "-stf"), flag(argv, "-fd")) == ("stat.csv", "1")
    assert flag(argv, "-buff_size") == str(runner.SOCKET_BUFFER)
    assert "-trace_rtt" in argv and "-trace_stat" in argv
    assert argv[-1] == f"{catalog.HOST}:{catalog.SYSTEM_PORT}"


def test_sipp_base_binds_host_port_and_media_port() -> None:
    argv = runner.sipp_base(catalog.PEERS / "uas.xml", catalog.UAS_PORT, catalog.UAS_MEDIA_PORT)
    assert flag(argv, "-i") == flag(argv, "-ci") == catalog.HOST
    assert flag(argv, "-p") == str(catalog.UAS_PORT)
    assert flag(argv, "-mp") == str(catalog.UAS_MEDIA_PORT)
    assert flag(argv, "-t") == "u1"


def test_collect_reads_a_uac_s_workdir(tmp_path: Path) -> None:
    last = stat_line(2, TotalCallCreated=500, SuccessfulCall_C=499, FailedCall_C=1)
    (tmp_path / "stat.csv").write_text(f"{STAT_HEADER}\n{stat_line(0)}\n{last}\n")
    (tmp_path / "uac_spoofed_11393_rtt.csv").write_text(RTT_TEXT)
    (tmp_path / "uac_spoofed_11394_rtt.csv").write_text("Date_ms;response_time_ms;rtd_no\n30;4;1\n")
    uac = catalog.SCENARIOS["reject"].uacs[0]
    run = runner.collect(tmp_path, uac, 250, 500)
    assert run.counts == SippCounts(500, 499, 1, 0)
    assert len(run.samples) == 6
    assert (run.role, run.port, run.timed) == ("spoofed", catalog.TRUNK_PORTS[0], True)
    assert (run.offered_cps, run.calls) == (250, 500)


def test_collect_without_a_stat_file_counts_nothing(tmp_path: Path) -> None:
    run = runner.collect(tmp_path, catalog.SCENARIOS["reject"].uacs[0], 250, 500)
    assert run.counts == SippCounts(0, 0, 0, 0) and run.samples == []


def test_collect_with_a_header_only_stat_file_counts_nothing(tmp_path: Path) -> None:
    # SIPp killed before its first statistics period leaves only the header.
    (tmp_path / "stat.csv").write_text(f"{STAT_HEADER}\n")
    (tmp_path / "uac_spoofed_11393_rtt.csv").write_text(RTT_TEXT)
    run = runner.collect(tmp_path, catalog.SCENARIOS["reject"].uacs[0], 250, 500)
    assert run.counts == SippCounts(0, 0, 0, 0)
    assert len(run.samples) == 5


def test_usage_between_two_counter_readings() -> None:
    before = runner.Counters(
        at=100.0, server_cpu=1.0, uas_cpu=2.0, children_cpu=3.0, host=(1000, 4000), drops=7
    )
    after = runner.Counters(
        at=110.0, server_cpu=2.5, uas_cpu=2.5, children_cpu=5.0, host=(1300, 5000), drops=9
    )
    use = runner.usage(before, after, procfs.Memory(pss_kib=2048, rss_kib=4096))
    assert use == ServerUse(
        cpu_seconds=1.5,
        wall_seconds=10.0,
        peak_pss_kib=2048,
        peak_rss_kib=4096,
        loadgen_cpu_seconds=2.5,
        host_busy_pct=30.0,
        udp_drops=2,
    )


# -- /proc parsing -----------------------------------------------------------------------


def test_parse_proc_stat_with_a_command_holding_spaces_and_parentheses() -> None:
    line = "4242 (kamailio (udp) 1) S 4200 4242 4200 0 -1 4194560 1 0 0 0 25 17 0 0 20 0 1 0"
    assert procfs.parse_proc_stat(line) == procfs.ProcStat(pid=4242, ppid=4200, cpu_ticks=42)


def test_parse_kib_host_cpu_and_udp_counters() -> None:
    status = "Name:\tsipp\nVmRSS:\t   10240 kB\nRssAnon:\t 2048 kB\n"
    assert procfs.parse_kib(status, "VmRSS") == 10240
    assert procfs.parse_kib(status, "Pss") == 0
    assert procfs.parse_host_cpu("cpu  100 5 50 800 45 0 10 0 0 0\ncpu0 1 2 3 4\n") == (165, 1010)
    snmp = (
        "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n"
        "Udp: 1000 2 5 990 5 0\n"
    )
    assert procfs.parse_udp_snmp(snmp)["RcvbufErrors"] == 5
    assert procfs.parse_udp_snmp("Tcp: a b\nTcp: 1 2\n") == {}


def test_udp_bound_reads_the_hex_port() -> None:
    table = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n"
        "  12: 0100007F:3AEE 00000000:0000 07 00000000:00000000 00:00000000 00000000     0\n"
    )
    assert procfs.udp_bound(table, 15086)  # 0x3AEE
    assert not procfs.udp_bound(table, 5070)
    assert not procfs.udp_bound(table.splitlines()[0], 15086)  # the header alone


# -- the report --------------------------------------------------------------------------


def test_fmt() -> None:
    assert report.fmt(None) == "–"
    assert report.fmt(32000) == "32,000"
    assert report.fmt(1234.6) == "1,235"
    assert report.fmt(0.1, 2) == "0.10"


def test_steps_table_has_a_row_per_step_and_the_verdict_last() -> None:
    bad = make_step(system="floor", passed=False, why="0.20 % failed", p99_ms=None)
    table = report.steps_table([make_step(passed=True), bad])
    assert [c.header for c in table.columns] == [name for name, _ in report.STEP_COLUMNS]
    cells = [list(c.cells) for c in table.columns]
    assert cells[0] == ["sipguard", "floor"]
    assert cells[2] == ["1,000", "1,000"]
    assert cells[7] == ["4", "–"]
    verdicts = [str(v) for v in cells[-1]]
    assert verdicts == ["pass", "FAIL: 0.20 % failed"]


def ramp(system: str, scenario: str, *rates: tuple[int, bool, float | None]) -> list[Step]:
    return [
        make_step(
            system=system,
            scenario=scenario,
            rate=rate,
            offered_cps=rate,
            passed=passed,
            cpu_us_per_call=cpu,
        )
        for rate, passed, cpu in rates
    ]


def test_best_and_at_rate() -> None:
    steps_ = ramp("kamailio", "reject", (250, True, 200.0), (500, True, 180.0), (1000, False, 90.0))
    assert report.best(steps_, "kamailio", "reject") is steps_[1]
    assert report.best(steps_, "kamailio", "call") is None
    assert report.at_rate(steps_, "kamailio", "reject", 250) is steps_[0]
    assert report.at_rate(steps_, "kamailio", "reject", 1000) is None  # it failed


@pytest.mark.parametrize(
    ("mine", "theirs", "expected"),
    [(2.0, 4.0, 0.5), (1.0, 3.0, 0.33), (None, 4.0, None), (2.0, None, None), (2.0, 0.0, None)],
)
def test_ratio(mine: float | None, theirs: float | None, expected: float | None) -> None:
    assert report.ratio(mine, theirs) == expected


SUMMARY_STEPS = (
    ramp("kamailio", "reject", (250, True, 200.0), (500, True, 180.0), (1000, False, 90.0))
    + ramp("sipguard", "reject", (250, True, 400.0), (500, False, 450.0))
    + ramp("floor", "reject", (250, False, 100.0))
    + ramp("sippy", "call", (250, True, 2000.0))
)


def test_summary_rows_compare_with_kamailio() -> None:
    rows = {(r["system"], r["scenario"]): r for r in report.summary(SUMMARY_STEPS)}
    assert list(rows) == [
        ("kamailio", "reject"),
        ("sipguard", "reject"),
        ("floor", "reject"),
        ("sippy", "call"),
    ]
    assert rows["kamailio", "reject"] == {
        "system": "kamailio",
        "scenario": "reject",
        "max_passing_cps": 500,
        "first_cps": 250,
        "cpu_us_per_call": 180.0,
        "p99_ms": 4.0,
        "peak_pss_mib": 30.0,
        "rate_vs_kamailio": 1.0,
        "cpu_vs_kamailio": 1.0,
        "cpu_compared_at_cps": 500,
    }
    sipguard = rows["sipguard", "reject"]
    assert sipguard["max_passing_cps"] == 250
    assert sipguard["rate_vs_kamailio"] == 0.5
    # compared at the highest rate both passed: 400 µs against Kamailio's 200 at 250/s
    assert (sipguard["cpu_vs_kamailio"], sipguard["cpu_compared_at_cps"]) == (2.0, 250)
    floor = rows["floor", "reject"]
    assert (floor["max_passing_cps"], floor["first_cps"]) == (0, 250)
    assert floor["rate_vs_kamailio"] == 0.0
    assert floor["cpu_us_per_call"] is None and floor["cpu_vs_kamailio"] is None
    sippy = rows["sippy", "call"]  # no Kamailio ramp of `call` to compare with
    assert sippy["rate_vs_kamailio"] is None and sippy["cpu_vs_kamailio"] is None


def test_summary_table_cells() -> None:
    table = report.summary_table(report.summary(SUMMARY_STEPS))
    cells = [list(c.cells) for c in table.columns]
    assert cells[2] == ["500", "250", "< 250", "250"]  # max cps; "< first" when none passed
    assert cells[6] == ["1.00", "0.50", "0.00", "–"]
    assert cells[7] == ["1.00 (500)", "2.00 (250)", "–", "–"]


def test_cpu_model() -> None:
    cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) 8375C  \n"
    assert report.cpu_model(cpuinfo) == "Intel(R) Xeon(R) 8375C"
    assert report.cpu_model("processor\t: 0\n") == "unknown"


class QuietDisplay:
    def __init__(self) -> None:
        self.console = Console(file=io.StringIO(), width=200)
        self.notes: list[str] = []

    def note(self, text: str) -> None:
        self.notes.append(text)


def test_latest_json_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "machine", lambda buffers: {"socket_buffers": buffers})
    opts = runner.parse_args(["--systems", "floor", "--rates", "250", "--no-plot"])
    display = QuietDisplay()
    skipped = [{"system": "floor", "scenario": "call", "why": "not applicable"}]
    steps_ = ramp("floor", "reject", (250, True, 120.0))
    report.write_outputs(tmp_path, steps_, skipped, "rmem_max=1", opts, display)  # type: ignore[arg-type]
    document = json.loads((tmp_path / "latest.json").read_text())
    assert list(document) == [
        "machine",
        "options",
        "summary",
        "latency_vs_direct",
        "skipped",
        "steps",
    ]
    assert document["machine"] == {"socket_buffers": "rmem_max=1"}
    assert document["options"] == {
        "systems": ["floor"],
        "scenarios": list(catalog.SCENARIOS),
        "rates": [250],
        "seconds_per_step": catalog.STEP_SECONDS,
    }
    assert document["skipped"] == skipped
    assert [row["max_passing_cps"] for row in document["summary"]] == [250]
    (step,) = document["steps"]
    assert set(step) == set(Step.__dataclass_fields__)
    assert (step["system"], step["passed"], step["cpu_us_per_call"]) == ("floor", True, 120.0)
    assert display.notes == [f"results: {tmp_path / 'latest.json'}"]  # no plot asked for
    assert not (tmp_path / "latest.png").exists()


# -- the 403 floor -----------------------------------------------------------------------


def load_floor() -> ModuleType:
    spec = importlib.util.spec_from_file_location("floor403", catalog.PEERS / "floor403.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_floor_answers_403_copying_the_dialog_headers() -> None:
    floor = load_floor()
    invite = (
        b"INVITE sip:+8613900200000@127.0.0.1:15070 SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 127.0.0.1:15061;branch=z9hG4bK-1\r\n"
        b"From: <sip:+862177000000@127.0.0.1:15061>;tag=1SIPpTag001\r\n"
        b"To: <sip:+8613900200000@127.0.0.1:15070>\r\n"
        b"Call-ID: 1-11393@127.0.0.1\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Max-Forwards: 70\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    assert floor.forbidden(invite) == (
        b"SIP/2.0 403 Forbidden\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:15061;branch=z9hG4bK-1\r\n"
        b"From: <sip:+862177000000@127.0.0.1:15061>;tag=1SIPpTag001\r\n"
        b"To: <sip:+8613900200000@127.0.0.1:15070>;tag=floor403\r\n"
        b"Call-ID: 1-11393@127.0.0.1\r\n"
        b"CSeq: 1 INVITE\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def test_floor_keeps_an_existing_to_tag_and_ignores_acks_and_responses() -> None:
    floor = load_floor()
    bye = b"BYE sip:a@b SIP/2.0\r\nt: <sip:b@c>;tag=x\r\n\r\n"
    answer = floor.forbidden(bye)
    assert answer is not None and b"To: <sip:b@c>;tag=x\r\n" in answer
    assert b"floor403" not in answer
    assert floor.forbidden(b"ACK sip:a@b SIP/2.0\r\n\r\n") is None
    assert floor.forbidden(b"SIP/2.0 200 OK\r\n\r\n") is None


def test_latency_target_compares_p99_at_half_the_best_rate_with_direct_calls() -> None:
    steps_ = ramp("sipguard", "call", (250, True, 900.0), (500, True, 1000.0), (1000, False, None))
    steps_ += ramp("direct", "call", (250, True, 50.0), (500, True, 40.0))
    steps_[0] = replace(steps_[0], p99_ms=6.0)
    steps_[3] = replace(steps_[3], p99_ms=1.5)
    assert report.latency_vs_direct(steps_) == {
        "rate": 250,
        "p99_ms": 6.0,
        "direct_p99_ms": 1.5,
        "difference_ms": 4.5,
    }
    assert report.latency_vs_direct(steps_[:3]) is None, "no direct ramp: no figure"
    lower = ramp("sipguard", "call", (100, True, 900.0), (300, True, 1000.0))
    lower += ramp("direct", "call", (100, True, 50.0), (300, True, 40.0))
    nearest = report.latency_vs_direct(lower)
    assert nearest is not None and nearest["rate"] == 100, "the nearest step below half"
    assert report.latency_vs_direct(steps_[2:]) is None, "no passing sipguard step"


def test_direct_system_is_a_sipp_uas_on_the_system_port() -> None:
    direct = catalog.SYSTEMS["direct"]
    argv = direct.launch(catalog.SCENARIOS["call"], Path("/tmp")).argv
    assert argv[:3] == ["sipp", "-sf", str(catalog.PEERS / "uas.xml")]
    assert argv[argv.index("-p") + 1] == str(catalog.SYSTEM_PORT)
    assert direct.scenarios == frozenset({"call"})
