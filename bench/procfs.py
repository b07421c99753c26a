"""CPU time and memory of a process tree, from /proc (Linux).

The parse_* functions are pure (file contents in, numbers out); the others
read /proc. CPU is utime + stime of every live process of the tree (threads
are included in their process's figures); memory is the sum of Pss over the
tree (shared pages counted once, so Kamailio's shared memory is not counted
once per worker) and the sum of Rss.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    cpu_ticks: int


@dataclass(frozen=True)
class Memory:
    pss_kib: int
    rss_kib: int


def parse_proc_stat(text: str) -> ProcStat:
    """pid, ppid and utime + stime (clock ticks) of a /proc/PID/stat line."""
    pid = int(text.split(" ", 1)[0])
    # the command name is in parentheses and may hold spaces and parentheses
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15
    return ProcStat(pid=pid, ppid=int(rest[1]), cpu_ticks=int(rest[11]) + int(rest[12]))


def parse_kib(text: str, key: str) -> int:
    """The `key:   N kB` value of /proc/PID/status or smaps_rollup; 0 when absent."""
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return int(value.split()[0])
    return 0


def parse_host_cpu(text: str) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from the first line of /proc/stat."""
    fields = [int(v) for v in text.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def parse_udp_snmp(text: str) -> dict[str, int]:
    """The `Udp:` counters of /proc/net/snmp (RcvbufErrors: datagrams dropped, buffer full)."""
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith("Udp:")]
    if len(rows) < 2:
        return {}
    return {name: int(value) for name, value in zip(rows[0], rows[1], strict=False)}


def udp_bound(proc_net_udp: str, port: int) -> bool:
    """Whether /proc/net/udp shows a socket bound to `port` (any address)."""
    for line in proc_net_udp.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 1 and int(fields[1].rsplit(":", 1)[1], 16) == port:
            return True
    return False


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def all_stats() -> list[ProcStat]:
    stats: list[ProcStat] = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            text = _read(entry / "stat")
            if text:
                stats.append(parse_proc_stat(text))
    return stats


def tree(root: int) -> list[ProcStat]:
    """The live processes of root's tree (root first)."""
    stats = all_stats()
    children: dict[int, list[ProcStat]] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat)
    found = [s for s in stats if s.pid == root]
    index = 0
    while index < len(found):
        found.extend(children.get(found[index].pid, []))
        index += 1
    return found


def cpu_seconds(roots: Iterable[int]) -> float:
    return sum(s.cpu_ticks for root in roots for s in tree(root)) / CLOCK_TICKS


def memory(root: int) -> Memory:
    pss = rss = 0
    for stat in tree(root):
        rollup = _read(PROC / str(stat.pid) / "smaps_rollup") or ""
        status = _read(PROC / str(stat.pid) / "status") or ""
        pss += parse_kib(rollup, "Pss")
        rss += parse_kib(status, "VmRSS")
    return Memory(pss_kib=pss, rss_kib=rss)


def host_cpu() -> tuple[int, int]:
    return parse_host_cpu(_read(PROC / "stat") or "cpu 0 0 0 0")


def port_in_use(port: int) -> bool:
    return udp_bound(_read(PROC / "net" / "udp") or "", port) or udp_bound(
        _read(PROC / "net" / "udp6") or "", port
    )


def udp_receive_drops() -> int:
    """Datagrams the kernel dropped on this host because a socket's receive buffer was full."""
    return parse_udp_snmp(_read(PROC / "net" / "snmp") or "").get("RcvbufErrors", 0)
