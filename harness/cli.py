"""`limit-harness`: the command line. Turns arguments into one config object per command, hands
it to the module that does the work, prints the one-screen summary and maps the result to an
exit code (0 pass, 1 gate failed, 2 could not judge). No other module imports this one."""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

from . import __version__
from .errors import (EXIT_INTERRUPTED, EXIT_PASS, EXIT_UNJUDGED, HarnessError, UsageError,
                     exit_code)
from .http_options import ANSWER_BYTES_MAX_DEFAULT, TIMEOUT_S_DEFAULT, HttpOptions
from .secrets import redact


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage dump
        self.exit(EXIT_UNJUDGED, f"{self.prog}: error: {message} (see --help)\n")


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value != value or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{text!r} must be a finite number")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value
    parse.__name__ = kind.__name__
    return parse


def _duration_s(text: str) -> float:
    from .errors import UsageError as _Usage
    from .load import parse_duration_s

    try:
        return parse_duration_s(text)
    except _Usage as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


# -- the parser -----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="limit-harness", description="A chaos and reconciliation test "
                     "harness for credit-limit services. Exit codes: 0 pass, 1 failed, 2 could "
                     "not judge.")
    parser.add_argument("--version", action="version", version=f"limit-harness {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the reference limit service over HTTP")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_non_negative_int, default=8080,
                       help="0 picks a free port (the printed URL says which)")
    serve.add_argument("--ledger", default="sqlite:///limit-ledger.sqlite",
                       help="memory://, sqlite:// (in memory), sqlite:///PATH or "
                            "postgresql://USER@HOST:PORT/DB[?schema=NAME]")
    serve.add_argument("--role", choices=("all", "api", "projector"), default="all",
                       help="all: one process (default); api: the HTTP edge and the ledger, "
                            "events to --bus, displays from --display; projector: the worker "
                            "from --bus to --display, no HTTP")
    serve.add_argument("--display", default=None, metavar="redis://HOST:PORT/DB",
                       help="the read model in Redis (with --bus; ?prefix=P for its keys)")
    serve.add_argument("--bus", default=None, metavar="redis://HOST:PORT/DB",
                       help="the event stream in Redis (with --display; another DB than the "
                            "display's, so a FLUSHDB of the display leaves it alone)")
    serve.add_argument("--no-chaos-api", action="store_true",
                       help="no chaos routes (404), as a service without them: faults come "
                            "from outside only")
    serve.add_argument("--bug", action="append", default=[], metavar="NAME",
                       help="switch on a seeded bug (repeatable); see --list-bugs")
    serve.add_argument("--list-bugs", action="store_true", help="print the bug catalogue")
    serve.add_argument("--seed", type=_non_negative_int, default=0,
                       help="seed for the fault dice (drop, duplicate, reorder)")
    serve.add_argument("--sync-lag-ms", type=_non_negative_int, default=5)
    limits = serve.add_argument_group("limits on slow or hostile clients (defaults in "
                                      "docs/fuzzing.md)")
    limits.add_argument("--connections-max", type=_positive(int), default=None,
                        help="open connections at most; past it new ones get 503")
    limits.add_argument("--header-bytes-max", type=_positive(int), default=None,
                        help="request line and headers at most this many bytes (else 431)")
    limits.add_argument("--head-read-timeout-s", type=_positive(float), default=None,
                        help="time for the request line and headers to arrive (else 408)")
    limits.add_argument("--body-read-timeout-s", type=_positive(float), default=None,
                        help="time for the whole body to arrive (else 408)")
    limits.add_argument("--keep-alive-timeout-s", type=_positive(float), default=None,
                        help="how long an idle keep-alive connection stays open")

    run = sub.add_parser("run", help="drive a target with generated users and faults, "
                                     "check it, write reports, judge the gate")
    _add_run_options(run)

    replay = sub.add_parser("replay", help="re-run the run a report.json came from")
    replay.add_argument("report", type=Path)
    replay.add_argument("--report-dir", type=Path, default=None)

    check = sub.add_parser("check", help="judge a stored run again: every checker over its "
                                         "history.jsonl and ledger.jsonl")
    check.add_argument("history", type=Path, help="history.jsonl of a run")
    check.add_argument("ledger", type=Path, help="ledger.jsonl of the same run")
    check.add_argument("--sla-ms", type=_positive(int), default=None,
                       help="default: the service level the run recorded")
    check.add_argument("--policy", type=Path, default=None)
    check.add_argument("--report-dir", type=Path, default=None)
    _add_max_run_s(check, "check", "each phase has its own bound, derived from the history's "
                                   "length")

    gate = sub.add_parser("gate", help="re-judge a stored report against a gate policy, or "
                                       "join partial reports into one verdict (--merge)")
    gate.add_argument("report", type=Path, nargs="+",
                      help="a report.json; with --merge, several (or their directories)")
    gate.add_argument("--policy", type=Path, default=None)
    gate.add_argument("--merge", action="store_true",
                      help="join the reports (the parts of reconcile --partition K/N, or several "
                           "runs) into one report and judge it once")
    gate.add_argument("--report-dir", type=Path, default=None,
                      help="with --merge: write the merged report.json, junit.xml, summary.md "
                           "and report.html here")

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
    _add_deployment_options(prop)
    _add_max_run_s(prop, "search", "120 s plus twice the examples' steps and convergence "
                                   "phases at a generous rate")
    _add_http_options(prop)

    contract = sub.add_parser("contract", help="print the HTTP contract every target speaks")
    contract.add_argument("--format", choices=("openapi", "markdown"), default="openapi")

    conform = sub.add_parser("conform", help="probe a service, rule by rule of the contract: "
                                             "the first thing to run against your own service")
    conform.add_argument("--target", default=None,
                         help="base URL of the service (default: the embedded reference service)")
    conform.add_argument("--report-dir", type=Path, default=None,
                         help="where conform.json and junit.xml go (default: ./reports/conform-…)")
    conform.add_argument("--chaos", choices=("auto", "require", "skip"), default="auto",
                         help="the optional chaos API: probe it when listed (auto), fail "
                              "without it (require), or leave it alone (skip)")
    _add_max_run_s(conform, "probe", "120 s + 10 x --timeout-s")
    _add_http_options(conform)

    load = sub.add_parser("load", help="a locust load test under chaos, judged by the same "
                                       "checkers and gate as run")
    load.add_argument("--target", default=None,
                      help="base URL (default: the reference service, started for the test)")
    load.add_argument("--users", type=_positive(int), default=32)
    load.add_argument("--spawn-rate", type=_positive(float), default=8.0)
    load.add_argument("--duration", type=_duration_s, default=30.0, metavar="30s",
                      help="how long the load runs: 30s, 2m, 1h30m")
    load.add_argument("--processes", type=_positive(int), default=1,
                      help="locust worker processes on this machine (locust's --processes)")
    load.add_argument("--faults", default="all")
    load.add_argument("--policy", type=Path, default=None)
    load.add_argument("--report-dir", type=Path, default=None)
    load.add_argument("--seed", type=_non_negative_int, default=0)
    load.add_argument("--sla-ms", type=_positive(int), default=1000)
    _add_max_run_s(load, "load test (start-up, load, convergence, check)",
                   "twice --duration plus the spawning time and 210 s")
    _add_deployment_options(load)
    _add_http_options(load, answer_bound=False)

    reconcile = sub.add_parser("reconcile", help="reconcile an exported ledger against an "
                                                 "exported display snapshot, without a run")
    reconcile.add_argument("--ledger", required=True, metavar="SOURCE",
                           help="a .jsonl, .csv or .parquet file, or postgresql://.../db?table=T "
                                "(or ?query=SQL)")
    reconcile.add_argument("--display", required=True, metavar="SOURCE", help="the same kinds")
    reconcile.add_argument("--as-of-seq", type=_non_negative_int, default=None,
                           help="the ledger seq the display snapshot was taken at: later entries "
                                "are left out, and a display behind it is stale")
    reconcile.add_argument("--columns", type=Path, default=None, metavar="FILE",
                           help="a TOML file mapping the contract's column names to yours "
                                "([ledger] and [display] tables)")
    reconcile.add_argument("--money-unit", choices=("fen", "yuan"), default="fen")
    reconcile.add_argument("--partition", default=None, metavar="K/N",
                           help="only the accounts in part K of N (stable hash of account_id)")
    reconcile.add_argument("--engine", choices=("columnar", "rows"), default="columnar")
    # The default is reconcile's own (harness/reconcile/budget.py), which this module does not
    # import: the reconcile package loads the findings and their diff library.
    reconcile.add_argument("--findings-max", type=_non_negative_int, default=None, metavar="N",
                           help="stop with an error, before explaining any, when there are "
                                "more findings than this (default 100,000)")
    reconcile.add_argument("--policy", type=Path, default=None)
    reconcile.add_argument("--report-dir", type=Path, default=None)
    reconcile.add_argument("--quiet", action="store_true", help="no progress line")

    from . import bench as benchmarks  # the options only; each benchmark's work loads on use

    bench = sub.add_parser("bench", help="benchmarks: reconcile (beside datacompy and the bare "
                                         "engine), sim, check, http")
    benchmarks.add_arguments(bench)
    return parser


def _add_http_options(command: argparse.ArgumentParser, answer_bound: bool = True) -> None:
    group = command.add_argument_group("HTTP (a real service)")
    group.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                       help="send this header with every request (repeatable); a value may be "
                            "$VAR, read from the environment, so tokens stay out of shell "
                            "history; values never appear in reports or logs")
    group.add_argument("--ca-bundle", type=Path, default=None, metavar="FILE",
                       help="trust the CAs in this PEM file for https://")
    group.add_argument("--insecure", action="store_true",
                       help="do not verify the server's TLS certificate")
    group.add_argument("--timeout-s", type=_positive(float), default=TIMEOUT_S_DEFAULT,
                       help=f"seconds to wait for each answer (default {TIMEOUT_S_DEFAULT:g}; a "
                            f"whole answer may take three times it)")
    if not answer_bound:  # locust reads its own answers
        return
    group.add_argument("--answer-bytes-max", type=_positive(int),
                       default=ANSWER_BYTES_MAX_DEFAULT, metavar="BYTES",
                       help="an answer over this is cut off and judged a contract violation "
                            f"(default {ANSWER_BYTES_MAX_DEFAULT:,})")


def _http(args) -> HttpOptions:
    return HttpOptions.parse(args.header, args.ca_bundle, args.insecure, args.timeout_s,
                             args.answer_bytes_max)


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
    run.add_argument("--faults", default="all", help="none, all, or KIND,KIND (or a shipped "
                                                     "profile's name, or a profile file)")
    run.add_argument("--personas", default=None, help="a personas file (TOML) or a shipped "
                                                      "personas name")
    run.add_argument("--locale", default=None, help="faker locale for users (default zh_CN)")
    run.add_argument("--sla-ms", type=_positive(int), default=1000)
    run.add_argument("--report-dir", type=Path, default=None,
                     help="default: ./reports/<run id>/")
    run.add_argument("--policy", type=Path, default=None)
    run.add_argument("--bug", action="append", default=[], metavar="NAME",
                     help="embedded target only: switch on a seeded bug of the reference service")
    run.add_argument("--ledger", default=None,
                     help="embedded target only: the reference service's ledger store "
                          "(sqlite:// in memory, the default; memory://; sqlite:///PATH)")
    run.add_argument("--workers", type=_positive(int), default=8,
                     help="concurrent clients (HTTP runs)")
    run.add_argument("--quiet", action="store_true", help="no progress line")
    _add_max_run_s(run, "run", "each phase has its own bound, derived from the run's length")
    _add_deployment_options(run)
    _add_http_options(run)


def _add_max_run_s(command: argparse.ArgumentParser, what: str, default: str) -> None:
    command.add_argument("--max-run-s", type=_positive(float), default=None, metavar="S",
                         help=f"wall-clock bound on the whole {what}: past it, it is cut short "
                              f"with exit 2, naming the phase (default: {default})")


def _add_deployment_options(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group("faults from outside (docs/deployments.md)")
    group.add_argument("--target-cmd", default=None, metavar="'CMD {port}'",
                       help="start the service with this command on a free port (put {port} "
                            "where it goes), crash and pause it, stop it at the end")
    group.add_argument("--deployment", default=None, metavar="FILE",
                       help="a deployment file: processes to start, TCP fault proxies, hooks, "
                            "containers, and which fault kind each carries out")


def _deployment_given(args) -> bool:
    return args.target_cmd is not None or args.deployment is not None


def _interrupt_on_sigterm(args) -> None:
    """With a deployment, SIGTERM (a cancelled CI job) unwinds like Ctrl-C, so the processes
    the harness started are stopped instead of left serving."""
    if _deployment_given(args):
        import signal

        def interrupted(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, interrupted)


# -- configs from arguments -----------------------------------------------------------------

def _run_config(args):
    from . import runner

    simulated = args.target is None and not _deployment_given(args)
    if simulated and args.duration is not None:
        raise UsageError("--duration bounds an HTTP run; a simulated run is bounded by --ops")
    if not simulated and args.ops is not None:
        raise UsageError("--ops bounds a simulated run; bound an HTTP run with --duration S")
    if not simulated and args.ledger is not None:
        raise UsageError("--ledger chooses the embedded service's store; an HTTP target has its own")
    return runner.RunConfig(
        target=args.target,
        seed=args.seed if args.seed is not None else random.SystemRandom().randrange(10**6),
        accounts=args.accounts or runner.DEFAULT_ACCOUNTS,
        ops=(args.ops or runner.DEFAULT_OPS) if simulated else None,
        duration_s=None if simulated else (args.duration or runner.DEFAULT_DURATION_S),
        faults=args.faults, personas=args.personas, locale=args.locale, sla_ms=args.sla_ms,
        report_dir=args.report_dir, policy=args.policy, bugs=tuple(args.bug),
        ledger=args.ledger or runner.DEFAULT_LEDGER, workers=args.workers, quiet=args.quiet,
        http=_http(args), max_run_s=args.max_run_s, target_cmd=args.target_cmd,
        deployment=args.deployment)


def _prop_config(args):
    from .prop import PropConfig

    return PropConfig(target=args.target, examples=args.examples, steps=args.steps,
                      seed=args.seed, sla_ms=args.sla_ms, report_dir=args.report_dir,
                      bugs=tuple(args.bug), http=_http(args), max_run_s=args.max_run_s,
                      target_cmd=args.target_cmd, deployment=args.deployment)


# -- commands -------------------------------------------------------------------------------

def _say(text: str) -> None:
    """Print a summary: a service may echo a token back, and secrets never reach a log."""
    print(redact(text))


def _serve(args) -> int:
    from .service import server
    return server.main(args)


def _run(args) -> int:
    from . import console, runner

    _interrupt_on_sigterm(args)
    result = runner.execute(_run_config(args))
    report_dir = runner.save(result)
    _say(console.run_summary(result.report, report_dir))
    return exit_code(result.passed)


def _replay(args) -> int:
    from . import console, runner
    from .reports import load_report

    stored = load_report(args.report)
    raw = stored.get("config")
    if not isinstance(raw, dict):
        raise UsageError(f"{args.report} has no run config to replay")
    config = runner.RunConfig.from_dict(raw, str(args.report))
    result = runner.execute(config)
    report_dir = runner.save(result, args.report_dir)
    _say(console.run_summary(result.report, report_dir))
    if config.simulated:
        _say(console.replay_verdict(
            result.report["history_sha256"] == stored.get("history_sha256")))
    return exit_code(result.passed)


def _check(args) -> int:
    from . import console
    from .recheck import RecheckConfig, recheck

    result = recheck(RecheckConfig(history=args.history, ledger=args.ledger, sla_ms=args.sla_ms,
                                   policy=args.policy, report_dir=args.report_dir,
                                   max_run_s=args.max_run_s))
    _say(console.run_summary(result.report, result.report_dir))
    return exit_code(result.passed)


def _gate(args) -> int:
    from . import gate
    from .reports import load_report

    if args.merge:
        return _gate_merge(args)
    if len(args.report) > 1 or args.report_dir is not None:
        raise UsageError("gate judges one report; join several with --merge (which also takes "
                         "--report-dir)")
    report = load_report(args.report[0])
    result = gate.judge(report, gate.load_policy(args.policy))
    for reason in result.reasons:
        print(f"  - {reason}")
    print(f"gate: {'PASS' if result.passed else 'FAIL'} ({args.report[0]})")
    return exit_code(result.passed)


def _gate_merge(args) -> int:
    from . import gate, merge
    from .reports import write_reports

    policy = gate.load_policy(args.policy)
    argv = ["limit-harness", "gate", "--merge", *map(str, args.report)] + (
        ["--policy", str(args.policy)] if args.policy else [])
    report = merge.merge(merge.load_parts(args.report), policy, argv)
    if args.report_dir is not None:
        write_reports(report, None, args.report_dir)
    _say(merge.summary(report, args.report_dir))
    return exit_code(report["verdict"] == "pass")


def _prop(args) -> int:
    from . import console, prop
    from .progress import Progress

    _interrupt_on_sigterm(args)
    result = prop.search(_prop_config(args), Progress("examples"))
    report_dir = prop.save(result) if result.failed else None
    _say(console.prop_summary(result, report_dir))
    return exit_code(not result.failed)


def _contract(args) -> int:
    from .packaged import document

    sys.stdout.write(document("openapi.json" if args.format == "openapi" else "contract.md"))
    return EXIT_PASS


def _conform(args) -> int:
    from . import conform
    from .deadline import Deadline, DeadlineExceeded, bounded
    from .targets import open_target

    http = _http(args)
    deadline = Deadline("conform", args.max_run_s or conform.default_max_run_s(http.timeout_s))
    target = bounded(open_target(args.target, http=http), deadline)
    report_dir = args.report_dir or Path.cwd() / "reports" / f"conform-{conform.run_prefix(None)}"
    try:
        chaos = {"auto": None, "require": True, "skip": False}[args.chaos]
        checks = conform.conform(target, chaos=chaos, deadline=deadline)
    except DeadlineExceeded as exc:  # keep the rules judged so far, marked incomplete
        conform.write_reports(getattr(exc, "checks", []), report_dir, cut_short=exc)
        exc.saved = str(report_dir)
        raise
    finally:
        target.close()
    conform.write_reports(checks, report_dir)
    _say("\n".join([*conform.summary_lines(checks), f"  reports: {report_dir}"]))
    return exit_code(conform.counts(checks)["fail"] == 0)


def _load(args) -> int:
    from . import console
    from .load import LoadConfig, parse_header, run_load

    _interrupt_on_sigterm(args)
    result = run_load(LoadConfig(
        target=args.target, users=args.users, spawn_rate=args.spawn_rate,
        duration_s=args.duration, processes=args.processes, faults=args.faults,
        policy=args.policy, report_dir=args.report_dir, seed=args.seed, sla_ms=args.sla_ms,
        headers=dict(parse_header(h) for h in args.header), ca_bundle=args.ca_bundle,
        insecure=args.insecure, timeout_s=args.timeout_s, max_run_s=args.max_run_s,
        target_cmd=args.target_cmd, deployment=args.deployment))
    _say(console.run_summary(result.report, result.report_dir))
    return result.exit_code


def _reconcile(args) -> int:
    import datetime as dt
    import shlex
    import time

    from . import console, gate
    from .packaged import read_toml
    from .progress import LOG_EVERY_S, Progress
    from .reconcile import ReconcileConfig, partition, reconcile
    from .reports import document, write_reports
    from .secrets import url_shown

    policy = gate.load_policy(args.policy)
    columns = _columns(args.columns) if args.columns else None
    config = ReconcileConfig(
        ledger=args.ledger, display=args.display, as_of_seq=args.as_of_seq, columns=columns,
        money_unit=args.money_unit, engine=args.engine,
        partition=partition.parse(args.partition) if args.partition else None,
        **({} if args.findings_max is None else {"findings_max": args.findings_max}))
    started_s = time.time()
    progress = Progress("rows", quiet=args.quiet, log_after_s=LOG_EVERY_S)
    try:
        result = reconcile(config, progress)
    finally:
        progress.done()
    stamp = dt.datetime.fromtimestamp(started_s, dt.timezone.utc)
    shown = {"ledger": url_shown(args.ledger), "display": url_shown(args.display),
             "as_of_seq": args.as_of_seq, "partition": args.partition, "engine": args.engine,
             "money_unit": args.money_unit}
    argv = ["limit-harness", "reconcile", "--ledger", shown["ledger"], "--display",
            shown["display"]] + [word for flag, value in (
                ("--as-of-seq", args.as_of_seq), ("--partition", args.partition),
                ("--policy", args.policy), ("--columns", args.columns)) if value is not None
                for word in (flag, str(value))]
    report = document.build(
        run_id=document.run_id(stamp, "reconcile"), seed=None, target=shown["ledger"],
        mode="reconcile", started=stamp, duration_s=time.time() - started_s, config=shown,
        stats=result.stats, findings=result.findings, replay=shlex.join(argv), policy=policy)
    report_dir = args.report_dir or Path.cwd() / "reports" / report["run_id"]
    write_reports(report, None, report_dir)
    _say(console.run_summary(report, report_dir))
    return exit_code(report["verdict"] == "pass")


def _one_line(exc: BaseException) -> str:
    """An error is one line on stderr, whatever its text held (a file's bytes, a library's
    multi-line message)."""
    return " ".join(str(exc).split())


def _bench(args) -> int:
    from . import bench

    return bench.execute(args)


def _columns(path: Path) -> dict:
    """The reconcile --columns file, read and checked whole: its errors name it."""
    from .packaged import read_toml
    from .reconcile.sources import column_names

    columns = read_toml(path, "columns file")
    try:
        for side in ("ledger", "display"):
            column_names(columns, side)
    except UsageError as exc:
        raise UsageError(f"columns file {path}: {exc}") from None
    return columns


COMMANDS = {"serve": _serve, "run": _run, "replay": _replay, "check": _check, "gate": _gate,
            "prop": _prop, "contract": _contract, "conform": _conform, "reconcile": _reconcile,
            "load": _load, "bench": _bench}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except HarnessError as exc:
        print(redact(f"limit-harness: error: {_one_line(exc)}"), file=sys.stderr)
        return EXIT_UNJUDGED
    except KeyboardInterrupt:
        print("limit-harness: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `limit-harness run | head`: the reader left before the summary
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return EXIT_UNJUDGED
    except Exception as exc:  # a harness bug must still not end in a traceback for the user
        if os.environ.get("LIMIT_HARNESS_DEBUG"):
            raise
        print(redact(f"limit-harness: internal error: {type(exc).__name__}: {_one_line(exc)} "
                     f"(rerun with LIMIT_HARNESS_DEBUG=1 for the traceback)"), file=sys.stderr)
        return EXIT_UNJUDGED


if __name__ == "__main__":
    sys.exit(main())
