"""What the benchmark runs: the systems under test, the scenarios, the ramps.

Every system listens on 127.0.0.1:15070/UDP and relays allowed calls to the
SIPp UAS on 127.0.0.1:15080; the SIPp UACs send from the trunk source ports
15061 (trunk 0 / bench-a), 15062 (trunk 1 / bench-b) and 15063 (trunk 2 /
bench-flood). SIPp's media sockets are at 16100 (the UAS) and 16200, 16300
(the UACs of a step). The ports are a block of their own, away from the
demo's and the tests' 5060-5080, so the benchmark can run beside them.
bench/peers/README.md describes each file.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"
SYSTEM_PORT = 15070
UAS_PORT = 15080
TRUNK_PORTS = (15061, 15062, 15063)  # the UACs' source ports: trunks 0, 1 and 2
UAS_MEDIA_PORT = 16100
UAC_MEDIA_PORT = 16200  # the first UAC of a step; the next ones 100 above
DIRECT_MEDIA_PORT = 16500  # the SIPp UAS that stands in for a system ("direct")

RATES = (250, 500, 1000, 2000, 4000, 8000, 16000, 32000)
QUICK_RATES = (250, 500, 1000, 2000, 4000)
STEP_SECONDS = 8.0
QUICK_STEP_SECONDS = 2.0
FLOOD_NORMAL_CPS = 100  # the normal trunk's calls while another trunk floods

MAX_FAILED_PCT = 0.1
MAX_RETRANS_PCT = 0.1
MIN_ACHIEVED_SHARE = 0.95


@dataclass(frozen=True)
class Uac:
    """One SIPp UAC of a step."""

    role: str  # "valid" (the system's full-call scenario), "spoofed" or "flood"
    csv: str
    port: int
    share: float = 1.0  # of the step's rate
    fixed_cps: int | None = None  # a fixed rate instead of a share
    timed: bool = True  # its INVITE response times count in p50/p99

    def cps(self, rate: int) -> int:
        return self.fixed_cps if self.fixed_cps is not None else max(1, round(rate * self.share))


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    uacs: tuple[Uac, ...]
    relays: bool  # allowed calls reach the UAS (so Kamailio needs its large shared memory)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "reject",
            "every call spoofed: INVITE -> 403, ACK",
            (Uac("spoofed", "spoofed.csv", TRUNK_PORTS[0]),),
            relays=False,
        ),
        Scenario(
            "call",
            "every call valid: INVITE relayed, 200, ACK, 500 ms, BYE, 200",
            (Uac("valid", "valid.csv", TRUNK_PORTS[0]),),
            relays=True,
        ),
        Scenario(
            "mixed",
            "90 % valid calls on trunk 0, 10 % spoofed on trunk 1",
            (
                Uac("valid", "valid.csv", TRUNK_PORTS[0], share=0.9),
                Uac("spoofed", "spoofed.csv", TRUNK_PORTS[1], share=0.1),
            ),
            relays=True,
        ),
        Scenario(
            "flood",
            f"trunk 2 floods over its 50 calls/s limit (the step's rate) while trunk 0 "
            f"makes {FLOOD_NORMAL_CPS} valid calls/s; p50/p99 are trunk 0's",
            (
                Uac("valid", "valid.csv", TRUNK_PORTS[0], fixed_cps=FLOOD_NORMAL_CPS),
                Uac("flood", "flood.csv", TRUNK_PORTS[2], timed=False),
            ),
            relays=True,
        ),
    )
}


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class System:
    name: str
    title: str
    scenarios: frozenset[str]
    valid_xml: str = "uac_valid.xml"

    def missing(self) -> str | None:
        """Why it cannot run here, or None."""
        return None

    def launch(self, scenario: Scenario, workdir: Path) -> Launch:
        raise NotImplementedError


class Sipguard(System):
    def missing(self) -> str | None:
        if not (VENV_BIN / "sipguard").exists():
            return f"{VENV_BIN / 'sipguard'} not found: pip install -e . in the venv"
        return None

    def launch(self, scenario: Scenario, workdir: Path) -> Launch:
        rules = workdir / "sipguard-bench.yaml"
        rules.write_text(with_audit_log((PEERS / "sipguard-bench.yaml").read_text(), workdir))
        # --log-level warning: no log line per call (the audit trail still has one per decision)
        argv = [str(VENV_BIN / "sipguard"), "run", "--rules", str(rules)]
        return Launch(argv + ["--log-level", "warning", "--no-watch"])


def with_audit_log(rules_text: str, workdir: Path) -> str:
    """The bench rule file with its audit trail in `workdir` (under --out)."""
    line = f'audit_log: "{workdir / "audit" / "decisions.jsonl"}"'
    text, found = re.subn(r"^audit_log:.*$", line, rules_text, count=1, flags=re.MULTILINE)
    if not found:
        raise ValueError("sipguard-bench.yaml has no audit_log line")
    return text


class Kamailio(System):
    def missing(self) -> str | None:
        if shutil.which("kamailio") is None:
            return "kamailio not installed (make bench-peers: apt-get install -y kamailio)"
        return None

    def launch(self, scenario: Scenario, workdir: Path) -> Launch:
        config = workdir / "kamailio.cfg"
        groups = PEERS / "callerid.groups"
        text = (PEERS / "kamailio.cfg").read_text()
        text = text.replace("!GROUPS_FILE!callerid.groups!", f"!GROUPS_FILE!{groups}!")
        config.write_text(text)
        argv = ["kamailio", "-f", str(config), "-DD", "-E", "-n", "1"]
        if scenario.relays:
            argv += ["-m", "1024", "-x", "tlsf"]
        return Launch(argv)


class Sippy(System):
    def binary(self) -> str | None:
        local = VENV_BIN / "b2bua_simple"
        return str(local) if local.exists() else shutil.which("b2bua_simple")

    def missing(self) -> str | None:
        if self.binary() is None:
            return "Sippy B2BUA not installed (make bench-peers: pip install sippy)"
        return None

    def launch(self, scenario: Scenario, workdir: Path) -> Launch:
        binary = self.binary()
        assert binary is not None
        argv = [binary, "-f", "-l", HOST, "-p", str(SYSTEM_PORT), "-n", f"{HOST}:{UAS_PORT}"]
        return Launch(argv, {"SIPLOG_LVL": "ERR"})


class Floor(System):
    def launch(self, scenario: Scenario, workdir: Path) -> Launch:
        return Launch([sys.executable, str(PEERS / "floor403.py"), "--port", str(SYSTEM_PORT)])


class Direct(System):
    """SIPp calling SIPp with nothing between: the latency baseline (a second
    SIPp UAS, on the system's port)."""

    def missing(self) -> str | None:
        return None if shutil.which("sipp") else "sipp not installed (make setup)"

    def launch(self, scenario: Scenario, workdir: Path) -> Launch:
        argv = ["sipp", "-sf", str(PEERS / "uas.xml"), "-i", HOST, "-p", str(SYSTEM_PORT)]
        argv += ["-t", "u1", "-buff_size", "4194304", "-nostdin", "-mp", str(DIRECT_MEDIA_PORT)]
        return Launch(argv)


SYSTEMS: dict[str, System] = {
    s.name: s
    for s in (
        Sipguard("sipguard", "sipguard (uvloop)", frozenset(SCENARIOS)),
        Kamailio("kamailio", "Kamailio 5.6, -n 1", frozenset(SCENARIOS)),
        Sippy("sippy", "Sippy B2BUA (b2bua_simple)", frozenset({"call"}), "uac_valid_b2b.xml"),
        Floor("floor", "asyncio 403 floor", frozenset({"reject"})),
        Direct("direct", "SIPp to SIPp, nothing between", frozenset({"call"})),
    )
}

NOT_APPLICABLE = {
    "sippy": "relays every call, checks no caller ID",
    "floor": "answers every INVITE 403, relays nothing",
    "direct": "no system between the UAC and the UAS: only full calls",
}


def uac_xml(system: System, role: str) -> Path:
    name = {"valid": system.valid_xml, "spoofed": "uac_spoofed.xml", "flood": "uac_flood.xml"}
    return PEERS / name[role]


def environment(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env
