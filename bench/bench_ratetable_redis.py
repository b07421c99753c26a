"""Shared rate-table benchmark: what sharing through Redis costs, side by side.

Run: python bench/bench_ratetable_redis.py [--quick]   (needs redis-server on PATH)

Starts its own redis-server on 127.0.0.1 (a free port, no persistence) and
prints, in one run:

- admit() of a known caller on the in-memory `RateTable` and on the
  `SharedRateTable` (which also journals the call for the next sync round),
  10,000 tracked callers, every limit on: the hot-path cost of sharing;
- one sync round (cut, one EVALSHA of the Lua script, apply) with 0, 50 and
  500 numbers in the batch: the round trip's wall time per round and per
  number, median of many rounds, and the Redis server's CPU time per round
  (from INFO's used_cpu_sys + used_cpu_user over the rounds).

The rounds run on the event loop in the background of a real server, never
on a call's path; a round of 50 numbers is what 500 calls/s admit within
the default 50 ms interval (a caller and a callee each).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sipguard.ratesync import RedisSync, SyncSettings  # noqa: E402
from sipguard.ratetable import (  # noqa: E402
    OneRingLimit,
    RateTable,
    TokenBucketLimit,
    TrunkLimits,
    WindowLimit,
)
from sipguard.sharedtable import SharedRateTable  # noqa: E402

TRUNK = "sh-callcenter"
LIMITS = TrunkLimits(
    cps=TokenBucketLimit(rate=1e9, burst=10**9),
    concurrent=10**9,
    per_caller=WindowLimit(calls=10**9, window=1800.0, block_for=600.0),
    per_callee=WindowLimit(calls=10**9, window=3600.0),
    one_ring=OneRingLimit(max_ring=3.0, calls=10**9, window=3600.0, block_for=86400.0),
)
CALLERS = 10_000


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed: `make setup` (Debian package redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    sys.exit("redis-server did not start")


def numbers(count: int, prefix: str) -> list[str]:
    return [f"{prefix}{index:08d}" for index in range(count)]


def time_admits(table: RateTable, callers: list[str], callees: list[str], rounds: int) -> float:
    """Median ns per admit of a known caller over `rounds` runs."""
    runs = []
    order = list(range(len(callers)))
    for _ in range(rounds):
        random.shuffle(order)
        start = time.perf_counter_ns()
        for index in order:
            table.admit(LIMITS, trunk=TRUNK, caller=callers[index], callee=callees[index], now=1.0)
        runs.append((time.perf_counter_ns() - start) / len(order))
        if isinstance(table, SharedRateTable):
            table.cut(now=1.0)  # drop the journal, as a round would
    return statistics.median(runs)


def hot_path(rounds: int) -> tuple[float, float]:
    callers, callees = numbers(CALLERS, "+86138"), numbers(CALLERS, "+86139")
    results = []
    for table in (RateTable(max_keys=10**6), SharedRateTable(max_keys=10**6)):
        for caller, callee in zip(callers, callees, strict=True):
            table.admit(LIMITS, trunk=TRUNK, caller=caller, callee=callee, now=0.0)
        if isinstance(table, SharedRateTable):
            table.cut(now=0.0)
        results.append(time_admits(table, callers, callees, rounds))
    return results[0], results[1]


async def sync_rounds(url: str, size: int, rounds: int, port: int) -> tuple[float, float, float]:
    """Median wall µs per round with `size` numbers; this process's and Redis's CPU µs per round."""
    loop = asyncio.get_running_loop()
    table = SharedRateTable(max_keys=10**6)
    table.configure({TRUNK: LIMITS})
    sync = RedisSync(table, SyncSettings(url=url, timeout=0.5), clock=loop.time, instance="bench")
    callers = numbers(size // 2, "+86137")
    callees = numbers(size - size // 2, "+86136")
    await sync.sync_once()  # load the script
    cpu_before = redis_cpu(port)
    times: list[float] = []
    own_cpu: list[float] = []
    for _ in range(rounds):
        for caller in callers:
            table.admit(LIMITS, trunk=TRUNK, caller=caller, callee=callees[0], now=loop.time())
        for callee in callees[1:]:
            table.admit(LIMITS, trunk=TRUNK, caller=callers[0] if callers else "+1",
                        callee=callee, now=loop.time())  # fmt: skip
        start, cpu_start = time.perf_counter(), time.process_time()
        if not await sync.sync_once():
            sys.exit(f"sync failed: {sync.last_error}")
        times.append((time.perf_counter() - start) * 1e6)
        own_cpu.append((time.process_time() - cpu_start) * 1e6)
    cpu = (redis_cpu(port) - cpu_before) / rounds * 1e6
    await sync.close()
    return statistics.median(times), statistics.median(own_cpu), cpu


def redis_cpu(port: int) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as sock:
        sock.sendall(b"INFO cpu\r\n")
        data = b""
        while b"used_cpu_user:" not in data or not data.endswith(b"\r\n"):
            data += sock.recv(65536)
    fields = dict(
        line.split(":", 1) for line in data.decode().splitlines() if ":" in line and line[0] != "#"
    )
    return float(fields["used_cpu_sys"]) + float(fields["used_cpu_user"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    memory, shared = hot_path(rounds)
    print(f"admit, known caller, {CALLERS:,} callers, every limit on:")
    print(f"  in-memory RateTable   {memory:8,.0f} ns")
    print(f"  SharedRateTable       {shared:8,.0f} ns   (ratio {shared / memory:.2f})")
    with tempfile.TemporaryDirectory() as workdir:
        process, port = start_redis(Path(workdir))
        try:
            print("\none sync round (cut + EVALSHA + apply), median:")
            print(
                "  numbers | round trip (µs) | sipguard CPU (µs) | per number (µs) | redis CPU (µs)"
            )
            url = f"redis://127.0.0.1:{port}/0"
            for size in (0, 50, 500):
                wall, own, cpu = asyncio.run(
                    sync_rounds(url, size, 20 if args.quick else 200, port)
                )
                per = f"{own / size:15,.1f}" if size else f"{'-':>15}"
                print(f"  {size:7} | {wall:15,.0f} | {own:17,.0f} | {per} | {cpu:14,.0f}")
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
