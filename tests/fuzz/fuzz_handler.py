"""Coverage-guided fuzzing of the SIP parser and the B2BUA request handler (atheris).

Every input the fuzzer makes is checked against the properties of
tests/property/test_fuzz_messages.py, whose checks this harness reuses:

1. `parse_message` returns a message or raises `SipParseError`, and what it
   returns survives `to_bytes` and a second parse.
2. `B2BUA.receive_datagram`, on a fresh core, never raises whether the bytes
   come from the trunk or from a stranger; a stranger's bytes reach nobody
   else; once every timer has run no call, dialog or transaction is left.
   The trunk's bytes go to a core that admits every call and to one whose
   caller-ID policy decides.
3. `StreamFramer`, fed the bytes whole and in about 16 chunks, raises only
   `SipParseError` or `MessageTooLarge` and stays within its size bound.

A broken property is an uncaught exception: atheris prints its traceback and
writes the input to a `crash-*` file; keep it in tests/data/fuzz_regressions/
once the defect is understood.

Usage, from the repository root (see tests/fuzz/README.md):

    python tests/fuzz/fuzz_handler.py -max_total_time=300 corpus/

The first corpus directory named is created and filled with seeds from
tests/data/messages, tests/data/torture and tests/data/fuzz_regressions when
it is missing or empty. Any other argument is passed to libFuzzer.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
CHUNK = 7  # the smallest read when the framer gets the input piecemeal
MAX_SIZE = 4_096  # the framer's bound, low enough for long inputs to reach MessageTooLarge


def load_atheris() -> ModuleType:
    """Import atheris, or exit with a message saying how to get it."""
    try:
        return importlib.import_module("atheris")
    except ModuleNotFoundError:
        sys.stderr.write(
            "fuzz_handler.py needs atheris, an optional tool that sipguard does not depend on:\n"
            "    .venv/bin/pip install atheris\n"
        )
        raise SystemExit(2) from None


atheris = load_atheris()
sys.path.insert(0, str(ROOT))

with atheris.instrument_imports(include=["sipguard"]):
    from sipguard.sip.parser import StreamFramer
    from tests.helpers import CALLER, STRANGER
    from tests.property import test_fuzz_messages as properties


def test_one_input(data: bytes) -> None:
    """Check every property on one input; an exception reports a crash."""
    properties.check_parser(data)
    for peer in (CALLER, STRANGER):
        properties.check_core(data, peer)
    properties.check_core(data, CALLER, make_pair=properties.policy_pair)
    for sizes in ([len(data) or 1], [max(CHUNK, len(data) // 16)]):
        chunks = properties.chunks_of(data, sizes)
        for frame in properties.feed(StreamFramer(max_size=MAX_SIZE), chunks, MAX_SIZE):
            properties.check_parser(frame)


def seeds() -> dict[str, bytes]:
    """Seed inputs by file name: the stored messages, torture cases and regressions."""
    found: dict[str, bytes] = {}
    for folder in ("messages", "torture"):
        for path in sorted((DATA / folder).iterdir()):
            if path.suffix in (".sip", ".bin"):
                found[f"{folder}-{path.name}"] = properties.load_wire(path)
    for path in sorted((DATA / "fuzz_regressions").glob("*.sip")):
        found[f"regression-{path.name}"] = properties.load_regression(path)
    return found


def corpus_directory(argv: list[str]) -> Path | None:
    """The first corpus directory on the command line (libFuzzer's first operand)."""
    operands = [arg for arg in argv[1:] if not arg.startswith("-")]
    return Path(operands[0]) if operands else None


def fill_corpus(directory: Path) -> None:
    """Write the seeds into `directory` when it is missing or empty."""
    if directory.is_file() or (directory.is_dir() and any(directory.iterdir())):
        return
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds().items():
        (directory / name).write_bytes(data)
    print(f"fuzz_handler.py: seeded {directory} with {len(seeds())} inputs", file=sys.stderr)


def main() -> None:
    directory = corpus_directory(sys.argv)
    if directory is None:
        print("fuzz_handler.py: no corpus directory given, starting without seeds", file=sys.stderr)
    else:
        fill_corpus(directory)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
