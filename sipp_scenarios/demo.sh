#!/usr/bin/env bash
# sipguard demo: real calls through sipguard on loopback, driven by SIPp.
#
#   SIPp caller 127.0.0.1:5071 --\
#                                  >-- sipguard udp:127.0.0.1:5060 --> SIPp callee 127.0.0.1:5080
#   SIPp caller 127.0.0.1:5072 --/
#
# rules/example.yaml makes 127.0.0.1:5071 a source of trunk sh-callcenter,
# routed to 127.0.0.1:5080; nothing claims 127.0.0.1:5072. So the 20 calls
# from :5071 with allocated caller IDs go through to the callee, 6 calls from
# :5071 with forged caller IDs (sipp_scenarios/demo_forged.csv) are refused
# with 403 naming the rule, and the 10 calls from :5072 are refused with 403
# unknown_source. No refused call reaches the callee.
#
# Usage (from anywhere; `make run` does this):
#   VENV=.venv bash sipp_scenarios/demo.sh
# Environment:
#   VENV       virtualenv with sipguard installed (default .venv)
#   RULES      rule file (default rules/example.yaml; it must keep the ports above)
#   DEMO_DIR   where the logs and SIPp files go (default logs/demo)
# Exit status: 0 when both groups of calls ended as expected, 1 otherwise.

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

VENV=${VENV:-.venv}
RULES=${RULES:-rules/example.yaml}
DEMO_DIR=${DEMO_DIR:-logs/demo}
SCENARIOS="$ROOT/sipp_scenarios"
HOST=127.0.0.1
SIPGUARD_PORT=5060
UAS_PORT=5080
TRUNK_PORT=5071
STRANGER_PORT=5072
ALLOWED_CALLS=20
FORGED_CALLS=6
REFUSED_CALLS=10
RATE=10

PYTHON="$VENV/bin/python"
SIPGUARD="$VENV/bin/sipguard"

die() { echo "demo: $*" >&2; exit 1; }

command -v sipp >/dev/null 2>&1 || die "SIPp is not installed (Debian/Ubuntu: apt-get install sip-tester; or run 'make setup')"
[ -x "$SIPGUARD" ] || die "$SIPGUARD not found: create the virtualenv first ('make setup', or VENV=path)"
[ -f "$RULES" ] || die "rule file $RULES not found"

rm -rf "$DEMO_DIR"
mkdir -p "$DEMO_DIR"/uas "$DEMO_DIR"/allowed "$DEMO_DIR"/forged "$DEMO_DIR"/refused
DEMO_DIR=$(cd "$DEMO_DIR" && pwd)

UAS_PID=
SIPGUARD_PID=

# Stop what this script started, and only that: by process id.
cleanup() {
    local status=$?
    if [ -n "$SIPGUARD_PID" ] && kill -0 "$SIPGUARD_PID" 2>/dev/null; then
        kill -TERM "$SIPGUARD_PID" 2>/dev/null || true
    fi
    if [ -n "$UAS_PID" ] && kill -0 "$UAS_PID" 2>/dev/null; then
        # SIGUSR1: SIPp finishes its calls and exits; SIGINT if it lingers
        kill -USR1 "$UAS_PID" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$UAS_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -INT "$UAS_PID" 2>/dev/null || true
    fi
    for pid in $SIPGUARD_PID $UAS_PID; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Options every SIPp process of the demo gets: loopback only (the control
# socket too), no keyboard, final counts in its own directory.
sipp_common=(-i "$HOST" -ci "$HOST" -nostdin -trace_err -trace_counts -trace_stat -trace_error_codes)
# the callers also log their messages, to show which rule refused a call
caller_trace=(-trace_msg)

echo "== sipguard demo"
echo "   rules:    $RULES"
echo "   logs:     $DEMO_DIR"
echo

echo "-- starting the callee (SIPp UAS) on $HOST:$UAS_PORT"
(cd "$DEMO_DIR/uas" && exec sipp -sf "$SCENARIOS/uas.xml" -p "$UAS_PORT" -t u1 \
    "${sipp_common[@]}" -stf stat.csv >sipp.out 2>&1) &
UAS_PID=$!

echo "-- starting sipguard: $SIPGUARD run --rules $RULES"
# Its log goes to sipguard.log; its decision lines (allow / reject with the
# rule id, and the summary of the unknown source's INVITEs, which are not
# logged one by one) also stream to the terminal as the calls run. The
# filter ends when sipguard closes its output.
"$SIPGUARD" run --rules "$RULES" > >(
    tee "$DEMO_DIR/sipguard.log" \
        | grep --line-buffered -E ' (allow|reject) |unknown sources: ' \
        | sed -u -E 's/^[0-9-]+ ([0-9:]+),[0-9]+ INFO +/   \1 /'
) 2>&1 &
SIPGUARD_PID=$!

# Ready when sipguard answers a SIP OPTIONS (any status: 403 from an
# unknown source is an answer too).
if ! "$PYTHON" - "$HOST" "$SIPGUARD_PORT" "$SIPGUARD_PID" <<'PY'
import os, secrets, socket, sys, time

host, port, pid = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
deadline = time.monotonic() + 15
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(1)
    tag = secrets.token_hex(6)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        me = sock.getsockname()[1]
        sock.sendto(
            (
                f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {host}:{me};branch=z9hG4bK-{tag};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:demo@{host}>;tag={tag}\r\n"
                f"To: <sip:{host}:{port}>\r\nCall-ID: {tag}@{host}\r\n"
                "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            ).encode(),
            (host, port),
        )
        sock.settimeout(0.3)
        try:
            if sock.recv(65535).startswith(b"SIP/2.0 "):
                sys.exit(0)
        except OSError:
            time.sleep(0.1)
sys.exit(1)
PY
then
    echo "sipguard did not come up on udp:$HOST:$SIPGUARD_PORT; its log:" >&2
    tail -n 30 "$DEMO_DIR/sipguard.log" >&2 || true
    exit 1
fi
echo "   sipguard answers on udp:$HOST:$SIPGUARD_PORT; its decisions as they happen:"
echo

# run_uac DIR SCENARIO LOCAL_PORT CALLS [CSV]: place CALLS calls and wait for them.
run_uac() {
    local dir=$1 scenario=$2 port=$3 calls=$4 callers=${5:-callers.csv}
    (cd "$DEMO_DIR/$dir" && exec sipp -sf "$SCENARIOS/$scenario" \
        -inf "$SCENARIOS/$callers" -p "$port" -t u1 \
        -m "$calls" -r "$RATE" -timeout 60s -timeout_error \
        "${sipp_common[@]}" "${caller_trace[@]}" -stf stat.csv "$HOST:$SIPGUARD_PORT" \
        >sipp.out 2>&1) || true
}

echo "-- $ALLOWED_CALLS calls from trunk sh-callcenter ($HOST:$TRUNK_PORT), $RATE calls/s"
run_uac allowed uac_basic.xml "$TRUNK_PORT" "$ALLOWED_CALLS"
echo "-- $FORGED_CALLS calls with forged caller IDs from trunk sh-callcenter ($HOST:$TRUNK_PORT)"
run_uac forged uac_spoofed.xml "$TRUNK_PORT" "$FORGED_CALLS" demo_forged.csv
echo "-- $REFUSED_CALLS calls from an unknown source ($HOST:$STRANGER_PORT), $RATE calls/s"
run_uac refused uac_rejected.xml "$STRANGER_PORT" "$REFUSED_CALLS"

# Let the callee finish and write its final counts before the summary.
kill -USR1 "$UAS_PID" 2>/dev/null || true
for _ in $(seq 1 25); do
    kill -0 "$UAS_PID" 2>/dev/null || break
    sleep 0.2
done
kill -INT "$UAS_PID" 2>/dev/null || true
wait "$UAS_PID" 2>/dev/null || true
UAS_PID=
# Stop sipguard (no call is up: it exits at once), so that its last lines,
# the summary of the unknown source's INVITEs among them, are written.
kill -TERM "$SIPGUARD_PID" 2>/dev/null || true
wait "$SIPGUARD_PID" 2>/dev/null || true
SIPGUARD_PID=
sleep 0.3  # the last decision lines reach the terminal before the summary

echo
"$PYTHON" - "$DEMO_DIR" "$ALLOWED_CALLS" "$REFUSED_CALLS" "$TRUNK_PORT" "$STRANGER_PORT" "$FORGED_CALLS" <<'PY'
"""Summarise the SIPp counts of the demo and exit 1 if it went wrong."""
import csv, glob, os, re, sys
from collections import Counter

demo, allowed, refused = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
trunk_port, stranger_port, forged = sys.argv[4], sys.argv[5], int(sys.argv[6])


def last_row(path):
    with open(path, newline="") as handle:
        rows = [row for row in csv.reader(handle, delimiter=";") if any(row)]
    return dict(zip(rows[0], rows[-1])) if len(rows) > 1 else {}


def one(directory, pattern):
    found = sorted(glob.glob(os.path.join(demo, directory, pattern)))
    return found[-1] if found else None


def results(directory):
    """(calls made, successful, failed, Counter of messages seen)."""
    stat = one(directory, "stat.csv")
    counters = last_row(stat) if stat else {}
    number = lambda name: int(counters.get(name, "0") or 0)
    seen = Counter()
    counts = one(directory, "*_counts.csv")
    for column, value in (last_row(counts) if counts else {}).items():
        parts = column.split("_")
        if len(parts) == 3 and parts[2] in ("Recv", "Sent") and value.isdigit():
            seen[(parts[2], parts[1])] += int(value)
    codes = one(directory, "*_error_codes.csv")
    if codes:
        with open(codes) as handle:
            for line in handle:
                for code in line.rstrip().split(";")[-1].split(","):
                    if code.strip():
                        seen[("Unexpected", code.strip())] += 1
    return number("TotalCallCreated"), number("SuccessfulCall(C)"), number("FailedCall(C)"), seen


RECEIVED_RESPONSE = re.compile(
    r"message received \[\d+\] bytes :\s*SIP/2\.0 (\d{3})(.*?)(?=^-{20,}|\Z)", re.S | re.M
)
REASON_TEXT = re.compile(r'^Reason:.*?text="([^"]*)"', re.M | re.I)


def refusals(directory):
    """Counter of (status, rule) from the Reason header of error responses."""
    found = Counter()
    log = one(directory, "*_messages.log")
    if log:
        with open(log, errors="replace") as handle:
            for match in RECEIVED_RESPONSE.finditer(handle.read()):
                reason = REASON_TEXT.search(match.group(2))
                if int(match.group(1)) >= 300 and reason:
                    found[(match.group(1), reason.group(1))] += 1
    return found


def rules_line(directory):
    found = refusals(directory)
    if not found:
        return None
    return ", ".join(f"{status} {rule} x{count}" for (status, rule), count in sorted(found.items()))


def responses(seen):
    parts = [
        f"{name} x{count}"
        for (kind, name), count in sorted(seen.items(), key=lambda item: item[0][1])
        if kind == "Recv" and name.isdigit() and count
    ]
    parts += [f"{name} x{count} (unexpected)" for (kind, name), count in seen.items() if kind == "Unexpected"]
    return ", ".join(parts) or "none"


ok = True
made, good, bad, seen = results("allowed")
print(f"trunk sh-callcenter, from 127.0.0.1:{trunk_port}")
print(f"   calls made {made}, connected and hung up {good}, failed {bad}")
print(f"   responses seen: {responses(seen)}")
if rules_line("allowed"):
    print(f"   refused by rule: {rules_line('allowed')}")
ok &= made == allowed and good == allowed and bad == 0

made, good, bad, seen = results("forged")
print(f"trunk sh-callcenter with forged caller IDs, from 127.0.0.1:{trunk_port}")
print(f"   calls made {made}, refused with 403 as expected {good}, failed {bad}")
print(f"   responses seen: {responses(seen)}")
if rules_line("forged"):
    print(f"   refused by rule: {rules_line('forged')}")
ok &= made == forged and good == forged and bad == 0 and len(refusals("forged")) == forged

made, good, bad, seen = results("refused")
print(f"unknown source, from 127.0.0.1:{stranger_port}")
print(f"   calls made {made}, refused with 403 {good}, failed {bad}")
print(f"   responses seen: {responses(seen)}")
if rules_line("refused"):
    print(f"   refused by rule: {rules_line('refused')}")
ok &= made == refused and good == refused and bad == 0

_, _, _, seen = results("uas")
invites = seen[("Recv", "INVITE")]
print(f"callee (SIPp UAS on 127.0.0.1:5080): {invites} INVITEs received")
ok &= invites == allowed

print()
if ok:
    print(
        f"demo OK: {allowed} calls from the trunk went through; {forged} forged caller IDs "
        f"and {refused} calls from an unknown source were refused and never reached the callee"
    )
else:
    print(f"demo FAILED: see the SIPp files and sipguard.log in {demo}")
sys.exit(0 if ok else 1)
PY
