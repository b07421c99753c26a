"""Rule reloads under load: SIGHUP while SIPp calls go through ``sipguard run``.

sipguard runs the two-trunk policy rule file of the policy tests
(`policy_rules_text` in sipp.py) with ``--no-watch``, so that only the
SIGHUP each test sends reloads it. A reload swaps the rules for new calls;
calls in flight go on, and a bad file changes nothing:

- a good file that adds a trunk, sent mid-run: every call of the run
  completes, and the new trunk is known afterwards;
- broken files (an unknown key, then invalid YAML), sent mid-run: every call
  completes, each error is logged with FILE:LINE:COL and "keeping the old
  rules", and the old rules stay in force until a good file comes;
- a file that takes a caller's number away from the trunk: calls already up
  with that number finish normally, new ones get 403 caller_not_allocated,
  other callers are unaffected.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.sipp import (
    CALLERS_CSV,
    SH_RANGES,
    SH_TRUNK,
    ExtraTrunk,
    PolicyPath,
    SippRun,
    free_ports,
    log_count,
    replace_file,
    send_sighup,
    wait_for_lines,
    wait_for_log,
)

pytestmark = [pytest.mark.integration, pytest.mark.sipp]

StartPolicyPath = Callable[..., PolicyPath]

# A run that outlasts its calls: 30 calls/s for 8 s; the callee rings each
# call for 1 s and the caller talks 200 ms, so about 40 calls are up or
# ringing at any moment, and at the reload.
LOAD_CALLS = 240
LOAD_RATE = 30
RING_MS = 1000
# Reload once this many calls were let through (about 2 s into the run).
RELOAD_AFTER_CALLS = 60

ALLOW = f"allow   trunk={SH_TRUNK} "
RELOADED = "rules reloaded"
REFUSED_RELOAD = "reload refused, keeping the old rules: "

NEW_TRUNK = "gz-callcenter"
NEW_TRUNK_RANGES = ("+862088001000-+862088001999",)
NEW_TRUNK_CALLER = "+862088001234"


def start_loaded_path(start_policy_path: StartPolicyPath) -> PolicyPath:
    """A UDP path whose callee rings for 1 s; sipguard logs every call's end."""
    return start_policy_path(
        transport="udp",
        uas_args=("-d", str(RING_MS)),
        sipguard_args=("--no-watch", "--log-level", "debug"),
    )


def calls_across(log: str, marker: str) -> set[str]:
    """Call-IDs allowed before the first log line with `marker` and ended after it."""
    lines = log.splitlines()
    at = next(i for i, line in enumerate(lines) if marker in line)

    def call_ids(chunk: list[str], prefix: str) -> set[str]:
        return {
            match.group(1)
            for line in chunk
            if prefix in line and (match := re.search(r"call-id=(\S+)", line))
        }

    return call_ids(lines[:at], ALLOW) & call_ids(lines[at + 1 :], "end     ")


def probe_new_trunk(path: PolicyPath, port: int, *, known: bool) -> SippRun:
    """Three calls from `port` with a number of the new trunk's ranges.

    `known`: the new trunk must exist (the calls are answered, the callee
    sees the number); otherwise its source is unknown (403 unknown_source).
    """
    calls = 3
    expected = NEW_TRUNK_CALLER if known else "unknown_source"
    injection = path.workdir / f"probe-{port}-{expected}.csv"
    injection.write_text(
        f"SEQUENTIAL\n{NEW_TRUNK_CALLER};{NEW_TRUNK_CALLER};+8613900139009;;{expected}\n",
        encoding="utf-8",
    )
    scenario = "uac_policy.xml" if known else "uac_spoofed.xml"
    run = path.run(scenario, calls=calls, rate=10, injection=injection, local_port=port)
    assert run.returncode == 0, path.explain(run)
    assert run.stats.successful_calls == calls, path.explain(run)
    assert run.stats.received("200" if known else "403") == (2 if known else 1) * calls, (
        path.explain(run)
    )
    return run


def assert_load_run_complete(
    path: PolicyPath, run: SippRun, calls: int, *, other_calls: int = 0
) -> None:
    """Every call of a load run completed, on both sides, with one verdict each.

    `other_calls`: calls of other runs that reached the callee too.
    """
    assert run.returncode == 0, path.explain(run)
    assert run.stats.created_calls == calls, path.explain(run)
    assert run.stats.successful_calls == calls, path.explain(run)
    assert run.stats.failed_calls == 0, path.explain(run)
    assert run.stats.received("200") == 2 * calls, path.explain(run)
    uas = path.uas.stop()
    assert uas.stats.received("INVITE") == calls + other_calls, path.explain(run)
    assert uas.stats.successful_calls == calls + other_calls, path.explain(run)
    assert uas.stats.failed_calls == 0, path.explain(run)
    assert log_count(path.sipguard, ALLOW) == calls, path.explain(run)


def test_reload_under_load_keeps_every_call(start_policy_path: StartPolicyPath) -> None:
    path = start_loaded_path(start_policy_path)
    guard = path.sipguard
    (new_trunk_port,) = free_ports(1)
    # the new trunk's source is unknown before the reload
    probe_new_trunk(path, new_trunk_port, known=False)

    client = path.start("uac_basic.xml", calls=LOAD_CALLS, rate=LOAD_RATE, injection=CALLERS_CSV)
    assert wait_for_log(guard, ALLOW, count=RELOAD_AFTER_CALLS, timeout=15), path.explain(
        client.wait()
    )
    replace_file(
        guard.rules,
        path.rules_text(extra_trunks=[ExtraTrunk(NEW_TRUNK, new_trunk_port, NEW_TRUNK_RANGES)]),
    )
    send_sighup(guard)
    reloaded = wait_for_log(guard, RELOADED, timeout=5)
    still_calling = client.running()
    run = client.wait()

    assert reloaded, path.explain(run)
    assert still_calling, path.explain(run)
    # the new rules are in force: the new trunk's calls go through
    probe_new_trunk(path, new_trunk_port, known=True)
    assert_load_run_complete(path, run, LOAD_CALLS, other_calls=3)
    assert log_count(guard, "reject ") == 3, path.explain(run)  # the first probe
    assert log_count(guard, RELOADED) == 1, path.explain(run)
    assert REFUSED_RELOAD not in guard.stderr, path.explain(run)
    # calls were let through before the reload and ended after it, and new
    # calls were let through after it
    assert len(calls_across(guard.stderr, RELOADED)) >= 10, path.explain(run)
    log = guard.stderr
    assert ALLOW in log[log.index(RELOADED) :], path.explain(run)
    assert guard.stop() == 0, path.explain(run)
    assert "active_calls=0 dialogs=0" in guard.stderr, path.explain(run)


def test_broken_reload_keeps_old_rules_under_load(start_policy_path: StartPolicyPath) -> None:
    path = start_loaded_path(start_policy_path)
    guard = path.sipguard
    rules = guard.rules
    (new_trunk_port,) = free_ports(1)
    good = path.rules_text(
        extra_trunks=[ExtraTrunk(NEW_TRUNK, new_trunk_port, NEW_TRUNK_RANGES)]
    ).splitlines()
    # broken file 1: a misspelt key in the new trunk
    typo_line = max(i for i, line in enumerate(good) if line.strip().startswith("sources:"))
    typo = list(good)
    typo[typo_line] = typo[typo_line].replace("sources:", "soruces:")
    typo_column = len(typo[typo_line]) - len(typo[typo_line].lstrip()) + 1
    # broken file 2: invalid YAML (an unclosed flow sequence)
    ranges_line = max(i for i, line in enumerate(good) if line.strip().startswith("ranges:"))
    unclosed = list(good)
    unclosed[ranges_line] = unclosed[ranges_line].rstrip("]")

    client = path.start("uac_basic.xml", calls=LOAD_CALLS, rate=LOAD_RATE, injection=CALLERS_CSV)
    assert wait_for_log(guard, ALLOW, count=RELOAD_AFTER_CALLS, timeout=15), path.explain(
        client.wait()
    )
    replace_file(rules, "\n".join(typo) + "\n")
    send_sighup(guard)
    first_refused = wait_for_log(guard, "unknown key 'soruces'", timeout=5)
    # calls go on between the two refused reloads: about a second's worth
    assert wait_for_log(guard, ALLOW, count=log_count(guard, ALLOW) + LOAD_RATE, timeout=15), (
        path.explain(client.wait())
    )
    replace_file(rules, "\n".join(unclosed) + "\n")
    send_sighup(guard)
    second_refused = wait_for_log(guard, "invalid YAML", timeout=5)
    still_calling = client.running()
    run = client.wait()

    assert first_refused, path.explain(run)
    assert second_refused, path.explain(run)
    assert still_calling, path.explain(run)
    # the old rules are still in force: the new trunk is unknown
    probe_new_trunk(path, new_trunk_port, known=False)
    # a good file is taken again
    replace_file(rules, "\n".join(good) + "\n")
    send_sighup(guard)
    assert wait_for_log(guard, RELOADED, timeout=5), path.explain(run)
    probe_new_trunk(path, new_trunk_port, known=True)
    assert_load_run_complete(path, run, LOAD_CALLS, other_calls=3)
    assert log_count(guard, "reject ") == 3, path.explain(run)  # the first probe
    log = guard.stderr
    assert log_count(guard, RELOADED) == 1, path.explain(run)  # the good file only
    assert log.index(RELOADED) > log.rindex(REFUSED_RELOAD), path.explain(run)
    # each error with the file, line and column, and that the old rules stay
    typo_error = (
        f"{REFUSED_RELOAD}{rules}:{typo_line + 1}:{typo_column}: "
        f"trunk '{NEW_TRUNK}': unknown key 'soruces'"
    )
    assert typo_error in log, path.explain(run)
    assert re.search(rf"{re.escape(REFUSED_RELOAD + str(rules))}:\d+:\d+: invalid YAML", log), (
        path.explain(run)
    )
    # calls in flight across the refused reloads, and new calls after them
    assert len(calls_across(log, REFUSED_RELOAD)) >= 10, path.explain(run)
    last_refusal = log.rindex(REFUSED_RELOAD)
    assert ALLOW in log[last_refusal:], path.explain(run)
    assert guard.stop() == 0, path.explain(run)
    assert "active_calls=0 dialogs=0" in guard.stderr, path.explain(run)


def test_reload_refuses_new_calls_of_removed_caller(
    start_policy_path: StartPolicyPath, tmp_path: Path
) -> None:
    """The reload takes +862131771250-+862131771299 away from the trunk.

    Calls from +862131771260 already up at the reload (held for 4 s) finish
    normally; new calls from it get 403 caller_not_allocated; a caller that
    keeps its number (+862131771201) is still let through.
    """
    held_calls, refused_calls, other_calls = 10, 10, 10
    caller, other = "+862131771260", "+862131771201"
    shrunk = ("+862131771200-+862131771249", *SH_RANGES[1:])
    held_csv = tmp_path / "held.csv"
    held_csv.write_text(f"SEQUENTIAL\n{caller};{caller};+8613900139001;;{caller}\n")
    refused_csv = tmp_path / "refused.csv"
    refused_csv.write_text(f"SEQUENTIAL\n{caller};{caller};+8613900139002;;caller_not_allocated\n")
    other_csv = tmp_path / "other.csv"
    other_csv.write_text(f"SEQUENTIAL\n{other};{other};+8613900139003;;{other}\n")
    path = start_policy_path(transport="udp", sipguard_args=("--no-watch",))
    guard = path.sipguard

    up_log = tmp_path / "held-up.log"
    held = path.start(
        "uac_policy.xml",
        calls=held_calls,
        rate=20,
        injection=held_csv,
        extra_args=("-d", "4000", "-trace_logs", "-log_file", str(up_log)),
    )
    assert wait_for_log(guard, ALLOW, count=held_calls, timeout=10), path.explain(held.wait())
    # every held call is up: the caller has ACKed its 200
    assert wait_for_lines(up_log, ";up", count=held_calls, timeout=10), path.explain(held.wait())
    replace_file(guard.rules, path.rules_text(ranges=shrunk))
    send_sighup(guard)
    reloaded = wait_for_log(guard, RELOADED, timeout=5)
    held_up = held.running()
    # the held calls occupy the first source port: the new calls come from
    # the trunk's second one
    second_port = path.trunk_ports[1]
    refused = path.run(
        "uac_spoofed.xml",
        calls=refused_calls,
        rate=20,
        injection=refused_csv,
        local_port=second_port,
    )
    allowed = path.run(
        "uac_policy.xml", calls=other_calls, rate=20, injection=other_csv, local_port=second_port
    )
    held_run = held.wait()
    runs = (held_run, refused, allowed)

    assert reloaded, path.explain(*runs)
    assert held_up, path.explain(*runs)
    # the calls that were up finished normally: ACKed, held, BYE answered
    assert held_run.returncode == 0, path.explain(*runs)
    assert held_run.stats.successful_calls == held_calls, path.explain(*runs)
    assert held_run.stats.failed_calls == 0, path.explain(*runs)
    assert held_run.stats.received("200") == 2 * held_calls, path.explain(*runs)
    # new calls from the removed number are refused
    assert refused.returncode == 0, path.explain(*runs)
    assert refused.stats.successful_calls == refused_calls, path.explain(*runs)
    assert refused.stats.failed_calls == 0, path.explain(*runs)
    assert refused.stats.received("403") == refused_calls, path.explain(*runs)
    # other callers are unaffected
    assert allowed.returncode == 0, path.explain(*runs)
    assert allowed.stats.successful_calls == other_calls, path.explain(*runs)
    assert allowed.stats.failed_calls == 0, path.explain(*runs)
    uas = path.uas.stop()
    assert uas.stats.received("INVITE") == held_calls + other_calls, path.explain(*runs)
    assert uas.stats.received("BYE") == held_calls + other_calls, path.explain(*runs)
    assert uas.stats.successful_calls == held_calls + other_calls, path.explain(*runs)
    assert uas.stats.failed_calls == 0, path.explain(*runs)
    assert log_count(guard, "reject  403 caller_not_allocated ") == refused_calls, path.explain(
        *runs
    )
    assert guard.stop() == 0, path.explain(*runs)
    assert "active_calls=0 dialogs=0" in guard.stderr, path.explain(*runs)
