"""A stranger cannot predict sipguard's identifiers from the ones it is shown.

Every answer sipguard makes up carries a fresh To-tag, and a stranger gets
one in each 403. If tags, branches and Call-IDs came from a Mersenne Twister
(Python's `random`), 624 consecutive 32-bit outputs, i.e. 312 tags of 64
bits, would give away the generator's whole state, and with it every branch,
tag and Call-ID sipguard uses next: enough to answer for the callee of a
call in progress or to cancel it. The attack is run here for real against a
server on a loopback socket.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sipguard.rules.loader import load_rules
from sipguard.server import Server, ServerOptions

pytestmark = pytest.mark.integration

# The test socket is a stranger (no trunk claims it); its answer budget is
# raised so that every probe is answered.
RULES = """\
version: 1
numbering: {country_code: "86"}
listen: ["udp:127.0.0.1:0"]
protection: {unknown_source_rate: 100000}
trunks:
  - name: far-trunk
    sources: ["192.0.2.1"]
    route: "udp:192.0.2.2:5060"
    ranges: ["*"]
"""

# The Mersenne Twister's state is 624 words of 32 bits.
_STATE_WORDS = 624
# random.getrandbits(64) draws two words, the first one the low half.
_WORDS_PER_TAG = 2
PROBES = 700
TAG = re.compile(rb"\r\nTo: [^\r]*;tag=([0-9a-f]+)\r\n")


def _undo_right_shift(value: int, shift: int) -> int:
    """Invert `value ^= value >> shift` (32 bits)."""
    result = value
    for _ in range(32 // shift + 1):
        result = value ^ (result >> shift)
    return result & 0xFFFFFFFF


def _undo_left_shift(value: int, shift: int, mask: int) -> int:
    """Invert `value ^= (value << shift) & mask` (32 bits)."""
    result = value
    for _ in range(32 // shift + 1):
        result = value ^ ((result << shift) & mask)
    return result & 0xFFFFFFFF


def untemper(output: int) -> int:
    """The state word behind one 32-bit output of MT19937 (the tempering undone)."""
    value = _undo_right_shift(output, 18)
    value = _undo_left_shift(value, 15, 0xEFC60000)
    value = _undo_left_shift(value, 7, 0x9D2C5680)
    return _undo_right_shift(value, 11)


def clone_from_tags(tags: list[int]) -> random.Random:
    """A generator in the state of the one that produced `tags` (312 or more
    consecutive getrandbits(64)), poised to produce the tag after the last."""
    words: list[int] = []
    for tag in tags:
        words += [tag & 0xFFFFFFFF, tag >> 32]
    state = tuple(untemper(word) for word in words[-_STATE_WORDS:])
    clone = random.Random()
    clone.setstate((3, (*state, _STATE_WORDS), None))
    return clone


def test_the_attack_predicts_a_mersenne_twister() -> None:
    """The attacker's tool works: without this, a failed prediction proves nothing."""
    victim = random.Random(5060)
    victim.getrandbits(17)  # not aligned on anything
    shown = [victim.getrandbits(64) for _ in range(_STATE_WORDS // _WORDS_PER_TAG)]
    clone = clone_from_tags(shown)
    assert [clone.getrandbits(64) for _ in range(50)] == [victim.getrandbits(64) for _ in range(50)]


def _options(index: int) -> bytes:
    return (
        f"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKprobe{index};rport\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:probe@127.0.0.1>;tag=p{index}\r\n"
        f"To: <sip:probe@127.0.0.1>\r\n"
        f"Call-ID: probe-{index}\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Content-Length: 0\r\n\r\n"
    ).encode()


class _Prober(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.put_nowait(data)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    rules_path = tmp_path / "rules.yaml"
    rules_path.write_text(RULES)
    running = Server(
        load_rules(rules_path), ServerOptions(rules_path=rules_path, watch_rules=False)
    )
    await running.start()
    yield running
    await running.close()


async def _collect_tags(port: int, count: int) -> list[int]:
    """The To-tags of `count` OPTIONS sent one after the other, in order."""
    loop = asyncio.get_running_loop()
    transport, prober = await loop.create_datagram_endpoint(_Prober, local_addr=("127.0.0.1", 0))
    tags = []
    try:
        for index in range(count):
            transport.sendto(_options(index), ("127.0.0.1", port))
            answer = await asyncio.wait_for(prober.received.get(), 5.0)
            assert answer.startswith(b"SIP/2.0 403 "), answer[:40]
            assert f"Call-ID: probe-{index}\r\n".encode() in answer
            found = TAG.search(answer)
            assert found is not None, answer
            tags.append(int(found.group(1), 16))
    finally:
        transport.close()
    return tags


async def test_a_stranger_cannot_predict_the_next_tag(server: Server) -> None:
    port = int(server.listening[0].rsplit(":", 1)[1])
    tags = await _collect_tags(port, PROBES)
    assert len(set(tags)) == PROBES, "every answer has a tag of its own"
    seen = _STATE_WORDS // _WORDS_PER_TAG
    clone = clone_from_tags(tags[:seen])
    predicted = [clone.getrandbits(64) for _ in tags[seen:]]
    hits = sum(guess == tag for guess, tag in zip(predicted, tags[seen:], strict=True))
    assert hits == 0, f"{hits} of {len(predicted)} tags predicted from the {seen} before them"
