"""`limit-harness`: the command line. Parses options, hands off to one module per command, and
turns every failure into one line and a defined exit code (0 pass, 1 gate failed, 2 could not
judge)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import HarnessError

EXIT_PASS, EXIT_FAIL, EXIT_UNJUDGED = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage dump
        self.exit(EXIT_UNJUDGED, f"{self.prog}: error: {message} (see --help)\n")


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value
    parse.__name__ = kind.__name__
    return parse


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="limit-harness", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the reference limit service over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_non_negative_int, default=8080,
                       help="0 picks a free port (the printed URL says which)")
    serve.add_argument("--ledger", default="sqlite:///limit-ledger.sqlite",
                       help="memory://, sqlite:// (in memory) or sqlite:///PATH")
    serve.add_argument("--bug", action="append", default=[], metavar="NAME",
                       help="switch on a seeded bug (repeatable); see --list-bugs")
    serve.add_argument("--list-bugs", action="store_true", help="print the bug catalogue")
    serve.add_argument("--seed", type=_non_negative_int, default=0,
                       help="seed for the fault dice (drop, duplicate, reorder)")
    serve.add_argument("--sync-lag-ms", type=_non_negative_int, default=5)

    run = sub.add_parser("run", help="drive a target with generated users and faults, "
                                     "check it, write reports, judge the gate")
    _add_run_options(run)

    replay = sub.add_parser("replay", help="re-run the run a report.json came from")
    replay.add_argument("report", type=Path)
    replay.add_argument("--report-dir", type=Path, default=None)

    gate = sub.add_parser("gate", help="re-judge a stored report against a gate policy")
    gate.add_argument("report", type=Path)
    gate.add_argument("--policy", type=Path, default=None)

    prop = sub.add_parser("prop", help="property-based test: hypothesis finds and shrinks a "
                                       "failing program")
    prop.add_argument("--target", default=None)
    prop.add_argument("--examples", type=_positive(int), default=200)
    prop.add_argument("--steps", type=_positive(int), default=30)
    prop.add_argument("--seed", type=_non_negative_int, default=0)
    prop.add_argument("--sla-ms", type=_positive(int), default=1000)
    prop.add_argument("--report-dir", type=Path, default=None)
    prop.add_argument("--bug", action="append", default=[], metavar="NAME",
                      help="embedded target only: switch on a seeded bug")
    return parser


def _add_run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--target", default=None,
                     help="base URL of a service speaking the contract, or py:MODULE:CLASS; "
                          "default: the embedded reference service under a simulated clock")
    run.add_argument("--seed", type=_non_negative_int, default=None,
                     help="default: a fresh seed, printed so the run can be replayed")
    run.add_argument("--accounts", type=_positive(int), default=None)
    bound = run.add_mutually_exclusive_group()
    bound.add_argument("--ops", type=_positive(int), default=None,
                       help="client operations in the safety phase (simulated runs)")
    bound.add_argument("--duration", type=_positive(float), default=None, metavar="S",
                       help="seconds of safety phase (HTTP runs)")
    run.add_argument("--faults", default="all", help="none, all, or KIND,KIND (or a profile "
                                                     "name or file from fixtures/)")
    run.add_argument("--personas", default=None, help="a personas file (TOML) or name in fixtures/")
    run.add_argument("--locale", default=None, help="faker locale for users (default zh_CN)")
    run.add_argument("--sla-ms", type=_positive(int), default=1000)
    run.add_argument("--report-dir", type=Path, default=None)
    run.add_argument("--policy", type=Path, default=None)
    run.add_argument("--bug", action="append", default=[], metavar="NAME",
                     help="embedded target only: switch on a seeded bug of the reference service")
    run.add_argument("--ledger", default="sqlite://",
                     help="embedded target only: the reference service's ledger store "
                          "(sqlite:// in memory, memory://, sqlite:///PATH)")
    run.add_argument("--workers", type=_positive(int), default=8,
                     help="concurrent clients (HTTP runs)")
    run.add_argument("--quiet", action="store_true", help="no progress line")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except HarnessError as exc:
        print(f"limit-harness: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("limit-harness: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a harness bug must still not end in a traceback for the user
        if os.environ.get("LIMIT_HARNESS_DEBUG"):
            raise
        print(f"limit-harness: internal error: {type(exc).__name__}: {exc} "
              f"(rerun with LIMIT_HARNESS_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_UNJUDGED


def _dispatch(args) -> int:
    if args.command == "serve":
        from .service import server
        return server.main(args)
    if args.command == "run":
        from . import runner
        return runner.main(args)
    if args.command == "replay":
        from . import runner
        return runner.replay_main(args)
    if args.command == "gate":
        return _gate(args)
    if args.command == "prop":
        from . import prop
        return prop.main(args)
    raise AssertionError(args.command)


def _gate(args) -> int:
    from . import gate
    from .reports import load_report

    report = load_report(args.report)
    policy = gate.load_policy(args.policy)
    result = gate.judge(report, policy)
    for reason in result.reasons:
        print(f"  - {reason}")
    print(f"gate: {'PASS' if result.passed else 'FAIL'} ({args.report})")
    return EXIT_PASS if result.passed else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
