"""The floor: the least an asyncio SIP server can do per request.

Answers every request but ACK with `403 Forbidden`, copying Via, From, To
(adding a To-tag when there is none), Call-ID and CSeq; checks nothing,
keeps no state, never forwards. Whatever sipguard spends per refused call
above this is the cost of parsing properly, deciding and keeping
transactions. Runs on uvloop when it is installed.

Run: python bench/peers/floor403.py [--host 127.0.0.1] [--port 15070]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

COPIED = {
    b"via": b"Via",
    b"v": b"Via",
    b"from": b"From",
    b"f": b"From",
    b"to": b"To",
    b"t": b"To",
    b"call-id": b"Call-ID",
    b"i": b"Call-ID",
    b"cseq": b"CSeq",
}
TAG = b";tag=floor403"


def forbidden(request: bytes) -> bytes | None:
    """The 403 for one request datagram; None for ACK, responses and junk."""
    head = request.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\r\n")
    if not lines or lines[0].startswith((b"ACK ", b"SIP/2.0")):
        return None
    out = [b"SIP/2.0 403 Forbidden"]
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        canonical = COPIED.get(name.strip().lower())
        if not sep or canonical is None:
            continue
        value = value.strip()
        if canonical == b"To" and b";tag=" not in value:
            value += TAG
        out.append(canonical + b": " + value)
    out.append(b"Content-Length: 0")
    return b"\r\n".join(out) + b"\r\n\r\n"


class Floor(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement DatagramTransport without subclassing it
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        answer = forbidden(data)
        if answer is not None:
            self.transport.sendto(answer, addr)


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Floor, local_addr=(host, port))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        transport.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=15070)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
        return
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
