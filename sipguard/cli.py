"""Command line: `sipguard run`, `sipguard check` (ring 3)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sipguard import __version__
from sipguard.errors import RuleFileErrors, RuleFileWarning, StartupError
from sipguard.rules.loader import load_rules
from sipguard.rules.schema import RuleSet

__all__ = ["main"]

DEFAULT_RULES = "rules/example.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sipguard` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        status = handler(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`sipguard trace ... | head -1`): what it
        # wanted was printed. Point stdout at /dev/null so that the
        # interpreter's own flush at exit stays quiet too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sipguard", description="SIP caller-ID gateway")
    parser.add_argument("--version", action="version", version=f"sipguard {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="serve calls with a rule file")
    run.add_argument("--rules", default=DEFAULT_RULES, help=f"rule file (default {DEFAULT_RULES})")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    run.add_argument("--no-watch", action="store_true", help="reload only on SIGHUP")
    run.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="log lines (default text)"
    )
    run.add_argument(
        "--check-config",
        action="store_true",
        help="pre-flight: check the rule file, sockets, audit directory, metrics port and "
        "Redis, then exit (0: all pass)",
    )
    run.add_argument(
        "--drain-timeout",
        type=float,
        metavar="SECONDS",
        help="on SIGTERM, wait this long for live calls to end before hanging them up (default 30)",
    )
    run.set_defaults(handler=_run)

    check = commands.add_parser("check", help="validate rule files")
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(handler=_check)

    explain = commands.add_parser(
        "explain", help="show what the server would do with a call, offline"
    )
    explain.add_argument("--rules", default=DEFAULT_RULES, help="rule file")
    explain.add_argument("--source", required=True, help="the call's source, IP:PORT")
    explain.add_argument(
        "--transport", default="udp", choices=["udp", "tcp"], help="the call's transport"
    )
    explain.add_argument("--from", dest="from_", required=True, help="From URI or name-addr")
    explain.add_argument("--pai", action="append", default=[], help="P-Asserted-Identity")
    explain.add_argument("--privacy", help="Privacy header value, e.g. id")
    explain.add_argument("--to", required=True, help="callee URI (Request-URI and To)")
    explain.add_argument("--at", help="evaluate at this time (ISO 8601), default now")
    explain.add_argument("--json", action="store_true", help="print one JSON object")
    explain.set_defaults(handler=_explain)
    _add_trace(commands)
    _add_top(commands)
    return parser


def _run(args: argparse.Namespace) -> int:
    _configure_logging(args.log_level, args.log_format)
    path = Path(args.rules)
    rules = _load_or_report(path)
    if rules is None:
        return 1
    for warning in rules.warnings:
        logging.getLogger("sipguard").warning("%s", warning)
    if args.check_config:
        return _preflight(path, rules)
    from sipguard.server import ServerOptions, serve

    options = ServerOptions(rules_path=path, watch_rules=not args.no_watch)
    if args.drain_timeout is not None:
        options = replace(options, drain_timeout=max(0.0, args.drain_timeout))
    try:
        _run_loop(serve(rules, options))
    except StartupError as exc:
        print(f"sipguard: {exc}", file=sys.stderr)
        return 1
    return 0


class _JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (UTC), level, message (and the traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)


def _preflight(path: Path, rules: RuleSet) -> int:
    from sipguard.preflight import preflight

    print(f"ok   rules {path}: {len(rules.trunks)} trunk(s), mode {rules.mode}")
    checks = preflight(rules)
    for check in checks:
        print(check.line())
    return 0 if all(check.ok for check in checks) else 1


def _load_or_report(path: Path) -> RuleSet | None:
    """Load a rule file; print its errors (FILE:LINE:COL) and return None if bad."""
    try:
        return load_rules(path)
    except RuleFileErrors as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
    except OSError as exc:
        print(f"{path}: {exc.strerror or exc}", file=sys.stderr)
    return None


def _run_loop(main_coroutine: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed, else on the default loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main_coroutine)


def _add_trace(commands: Any) -> None:
    trace = commands.add_parser(
        "trace", help="every audit record of a number or Call-ID, as a timeline"
    )
    trace.add_argument("query", nargs="+", help="a number in any form, or a Call-ID")
    where = trace.add_mutually_exclusive_group()
    where.add_argument("--rules", default=DEFAULT_RULES, help="rule file naming the audit_log")
    where.add_argument("--audit-log", help="the audit log itself (rotated .gz files beside it)")
    trace.add_argument("--json", action="store_true", help="print the records as JSON lines")
    trace.set_defaults(handler=_trace)


def _add_top(commands: Any) -> None:
    top = commands.add_parser("top", help="live per-trunk counters of a running sipguard")
    where = top.add_mutually_exclusive_group()
    where.add_argument(
        "--rules", default=DEFAULT_RULES, help="rule file naming the metrics address"
    )
    where.add_argument("--url", help="the metrics URL, e.g. http://127.0.0.1:9060/metrics")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument("--once", action="store_true", help="print one table and exit")
    top.set_defaults(handler=_top)


def _top(args: argparse.Namespace) -> int:
    from sipguard.top import run_top

    url = args.url
    if url is None:
        rules = _load_or_report(Path(args.rules))
        if rules is None:
            return 2
        if rules.metrics is None:
            print(f"sipguard top: {args.rules} has no metrics address", file=sys.stderr)
            return 2
        url = f"http://{rules.metrics}/metrics"
    try:
        run_top(url, interval=max(0.1, args.interval), once=args.once)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"sipguard top: cannot read {url}: {exc}", file=sys.stderr)
        return 1
    return 0


def _trace(args: argparse.Namespace) -> int:
    import json

    from sipguard.trace import TraceQuery, audit_files, format_record, read_records, trace

    if args.audit_log is not None:
        path = Path(args.audit_log)
    else:
        rules = _load_or_report(Path(args.rules))
        if rules is None:
            return 2
        if rules.audit_log is None:
            print(f"sipguard trace: {args.rules} has no audit_log", file=sys.stderr)
            return 2
        path = Path(rules.audit_log)
    files = audit_files(path)
    if not files:
        print(f"sipguard trace: no audit log at {path}", file=sys.stderr)
        return 2
    found = trace(read_records(files), TraceQuery(tuple(args.query)))
    for record in found:
        print(json.dumps(record, ensure_ascii=False) if args.json else format_record(record))
    if not found:
        print(f"no record of {' '.join(args.query)} in {len(files)} file(s) of {path}")
        return 1
    return 0


def _check(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.text import Text

    # Colour on a terminal only; piped output stays plain FILE:LINE:COL lines.
    console = Console(soft_wrap=True, highlight=False)

    def report(warnings: Sequence[RuleFileWarning]) -> None:
        for warning in warnings:
            where = f"{warning.path}:{warning.line}:{warning.column}"
            console.print(
                Text.assemble((where, "bold yellow"), ": ", ("warning", "yellow"), ": ")
                + Text(warning.message)
            )

    failed = False
    for name in args.files:
        try:
            rules = load_rules(Path(name))
        except RuleFileErrors as exc:
            failed = True
            for error in exc.errors:
                where, _, message = str(error).partition(": ")
                console.print(Text.assemble((where, "bold red"), ": ", message))
            report(exc.warnings)
        except OSError as exc:
            failed = True
            console.print(Text.assemble((name, "bold red"), f": {exc.strerror or exc}"))
        else:
            # Warnings are worth a look but never fail a check.
            report(rules.warnings)
            count = len(rules.warnings)
            note = f" ({count} warning{'' if count == 1 else 's'})" if count else ""
            console.print(Text.assemble(f"{name}: ", ("ok", "green"), note))
    return 1 if failed else 0


def _explain(args: argparse.Namespace) -> int:
    from sipguard.explain import explain_call

    rules = _load_or_report(Path(args.rules))
    if rules is None:
        return 1
    try:
        result = explain_call(
            rules,
            source=args.source,
            transport=args.transport,
            from_=args.from_,
            pai=args.pai,
            privacy=args.privacy,
            to=args.to,
            at=args.at,
        )
    except ValueError as exc:
        print(f"sipguard explain: {exc}", file=sys.stderr)
        return 2
    print(result.to_json() if args.json else result.to_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
