"""`limit-harness run`: setup, safety phase under the nemesis, convergence phase, check.

A simulated run (no --target) is single-threaded and takes every random choice from seeded
generators, so the same seed replays the same history bit for bit. An HTTP run drives the
target from several workers in real time; it is reproducible in intent, not bit for bit.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import heapq
import random
import shlex
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import checkers, gate
from .checkers import CheckConfig
from .client import Recorder
from .clock import SIM_EPOCH
from .convergence import converge, fetch_ledger
from .errors import UsageError
from .history import History
from .nemesis import Nemesis, load_profile
from .progress import Progress
from .targets import open_target, probe
from .workload import Action, User, Workload, load_config

EXIT_PASS, EXIT_FAIL = 0, 1
DEFAULT_ACCOUNTS = 24
DEFAULT_OPS = 20_000
DEFAULT_DURATION_S = 20.0
ROOT = Path(__file__).resolve().parent.parent
GC_THRESHOLD_WHILE_DRIVING = 200_000  # allocations between young-generation collections


@dataclass
class RunConfig:
    target: str | None = None
    seed: int = 0
    accounts: int = DEFAULT_ACCOUNTS
    ops: int | None = None
    duration_s: float | None = None
    faults: str = "all"
    personas: str | None = None
    locale: str | None = None
    sla_ms: int = 1000
    report_dir: Path | None = None
    policy: Path | None = None
    bugs: tuple[str, ...] = ()
    ledger: str = "sqlite://"
    workers: int = 8
    quiet: bool = False

    @property
    def simulated(self) -> bool:
        return self.target is None

    def replay_argv(self) -> list[str]:
        argv = ["limit-harness", "run", "--seed", str(self.seed), "--accounts", str(self.accounts),
                "--faults", self.faults, "--sla-ms", str(self.sla_ms)]
        if self.simulated:
            argv += ["--ops", str(self.ops)]
        else:
            argv += ["--target", self.target, "--duration", f"{self.duration_s:g}",
                     "--workers", str(self.workers)]
        for bug in self.bugs:
            argv += ["--bug", bug]
        if self.simulated and self.ledger != "sqlite://":
            argv += ["--ledger", self.ledger]
        if self.personas:
            argv += ["--personas", self.personas]
        if self.locale:
            argv += ["--locale", self.locale]
        if self.policy:
            argv += ["--policy", str(self.policy)]
        return argv


def config_from_args(args) -> RunConfig:
    simulated = args.target is None
    if simulated and args.duration is not None:
        raise UsageError("--duration bounds an HTTP run; a simulated run is bounded by --ops")
    if not simulated and args.ops is not None:
        raise UsageError("--ops bounds a simulated run; bound an HTTP run with --duration S")
    if not simulated and args.ledger != "sqlite://":
        raise UsageError("--ledger chooses the embedded service's store; an HTTP target has its own")
    return RunConfig(
        target=args.target,
        seed=args.seed if args.seed is not None else random.SystemRandom().randrange(10**6),
        accounts=args.accounts or DEFAULT_ACCOUNTS,
        ops=(args.ops or DEFAULT_OPS) if simulated else None,
        duration_s=None if simulated else (args.duration or DEFAULT_DURATION_S),
        faults=args.faults, personas=args.personas, locale=args.locale, sla_ms=args.sla_ms,
        report_dir=args.report_dir, policy=args.policy, bugs=tuple(args.bug), ledger=args.ledger,
        workers=args.workers, quiet=args.quiet)


@dataclass
class RunResult:
    config: RunConfig
    history: History
    ledger: list[dict]
    verdict: checkers.Verdict
    report: dict
    stats: dict = field(default_factory=dict)


# -- entry points ---------------------------------------------------------------------------
def main(args) -> int:
    config = config_from_args(args)
    policy = gate.load_policy(config.policy)  # fail on a bad policy before driving anything
    result = execute(config, policy)
    report_dir = write(result)
    print(summary(result, report_dir))
    return EXIT_PASS if result.report["verdict"] == "pass" else EXIT_FAIL


def replay_main(args) -> int:
    from .reports import load_report

    stored = load_report(args.report)
    raw = stored.get("config")
    if not isinstance(raw, dict):
        raise UsageError(f"{args.report} has no run config to replay")
    try:
        config = RunConfig(**{**raw, "report_dir": args.report_dir,
                              "policy": Path(raw["policy"]) if raw.get("policy") else None,
                              "bugs": tuple(raw.get("bugs", ()))})
    except TypeError as exc:
        raise UsageError(f"{args.report}: the run config cannot be replayed ({exc})") from None
    result = execute(config, gate.load_policy(config.policy))
    report_dir = write(result)
    print(summary(result, report_dir))
    if config.simulated:
        same = result.report["history_sha256"] == stored.get("history_sha256")
        print("replay: the same history, bit for bit" if same else
              "replay: the history DIFFERS from the stored run (was it made by another version?)")
    return EXIT_PASS if result.report["verdict"] == "pass" else EXIT_FAIL


def execute(config: RunConfig, policy: gate.Policy | None = None) -> RunResult:
    """Drive, check and judge one run; writes nothing to disk."""
    started_wall = time.time()
    target = open_target(config.target, seed=config.seed, bugs=config.bugs,
                         pool_size=config.workers + 2, ledger=config.ledger)
    try:
        supported = probe(target)
        profile = load_profile(config.faults).restricted_to(supported)
        workload_config = load_config(config.personas, config.locale)
        run_tag = f"s{config.seed}" if config.simulated else \
            f"s{config.seed}t{int(started_wall * 1000) % 10**9}"
        started_at = SIM_EPOCH if config.simulated else dt.datetime.now(dt.timezone.utc)
        history = History(meta={
            "seed": config.seed, "target": target.name,
            "mode": "simulated" if config.simulated else "http",
            "started_at": started_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "sla_ms": config.sla_ms, "faults": list(profile.kinds), "supported": supported})
        recorder = Recorder(target, history)
        progress = Progress("ops" if config.simulated else "s", quiet=config.quiet)
        drive = _drive_simulated if config.simulated else _drive_http
        with _fewer_gc_passes():
            users, nemesis = drive(config, target, recorder, profile, workload_config, run_tag,
                                   progress)
        history.meta["users"] = {acc: {"name": u.name, "persona": u.persona}
                                 for u in users for acc in u.accounts}
        progress.phase("convergence")
        converge(recorder, config.sla_ms, poll=True)
        drive_s = time.time() - started_wall
        recorder.phase("check")
        progress.phase("check")
        ledger = fetch_ledger(recorder)
        verdict = checkers.check(history, ledger, CheckConfig(sla_ms=config.sla_ms))
        progress.done()
        duration_s = time.time() - started_wall
        stats = _run_stats(config, target, history, verdict, duration_s, drive_s)
        report = _report(config, history, verdict, stats, started_wall, duration_s,
                         policy or gate.load_policy(None))
        return RunResult(config, history, ledger, verdict, report, stats)
    finally:
        target.close()


# -- driving --------------------------------------------------------------------------------
@contextlib.contextmanager
def _fewer_gc_passes():
    """The history and the ledger only grow and hold no reference cycles, yet the cyclic
    collector rescans them again and again (a fifth of a simulated run's time). Collect rarely
    while driving; the usual thresholds come back afterwards."""
    thresholds = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD_WHILE_DRIVING, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
def _open_accounts(recorder: Recorder, workload: Workload, users: list[User]) -> None:
    recorder.phase("setup")
    for user in users:
        for action in workload.opens(user):
            _perform(recorder, workload, user, action)


def _perform(recorder: Recorder, workload: Workload, user: User, action: Action) -> None:
    if action.f == "display":
        recorder.display(user.process, action.account_id)
        return
    op = recorder.write(user.process, action.f, action.account_id, action.body, action.retry_of)
    workload.observe(user, action, op.index, op.outcome, op.response)


def _nemesis_move(recorder: Recorder, nemesis: Nemesis, now_ms: int) -> None:
    move, what = nemesis.next_move(now_ms)
    if move == "add":
        op = recorder.add_fault(0, what)
        fault_id = op.response.get("fault_id") if op.outcome == "ok" else None
        nemesis.added(what, fault_id)
    else:
        recorder.remove_fault(0, what)


def _dice(seed: int, stream: int) -> random.Random:
    """Independent seeded generators per purpose, so adding a draw to one (the nemesis, say)
    does not shift every choice of another (the users)."""
    return random.Random(seed * 7919 + stream)


def _setup(config, target, recorder, profile, workload_config, run_tag):
    """Setup phase: the users and their accounts; then the safety phase begins."""
    workload = Workload(workload_config, _dice(config.seed, 1), run_tag)
    users = workload.users(config.accounts)
    _open_accounts(recorder, workload, users)
    recorder.phase("safety")
    return workload, users, Nemesis(profile, _dice(config.seed, 2), target.now_ms())


def _drive_simulated(config, target, recorder, profile, workload_config, run_tag, progress):
    workload, users, nemesis = _setup(config, target, recorder, profile, workload_config, run_tag)
    progress.phase("safety", total=config.ops)
    queue = [(target.now_ms() + workload.think_ms(), user.process) for user in users]
    heapq.heapify(queue)
    by_process = {user.process: user for user in users}
    for done in range(config.ops):
        at_ms, process = heapq.heappop(queue)
        while nemesis.due(at_ms):
            target.wait_ms(max(0, nemesis.next_ms - target.now_ms()))
            _nemesis_move(recorder, nemesis, target.now_ms())
        target.wait_ms(max(0, at_ms - target.now_ms()))
        user = by_process[process]
        _perform(recorder, workload, user, workload.next_action(user))
        # +1: the next op of anyone is invoked strictly after this one completed.
        heapq.heappush(queue, (target.now_ms() + 1 + workload.think_ms(), process))
        if done % 512 == 0:
            progress.update(done, faults=len(nemesis.active))
    return users, nemesis


def _drive_http(config, target, recorder, profile, workload_config, run_tag, progress):
    _, users, nemesis = _setup(config, target, recorder, profile, workload_config, run_tag)
    stop_ms = target.now_ms() + int(config.duration_s * 1000)
    progress.phase("safety", total=int(config.duration_s))
    workers = min(config.workers, len(users))
    threads = []
    errors: list[BaseException] = []
    for index in range(workers):
        mine = users[index::workers]
        # Each worker owns its users and its own dice, so no two threads share a generator.
        workload = Workload(workload_config, _dice(config.seed, 10 + index), run_tag)
        thread = threading.Thread(target=_worker, args=(target, recorder, workload, mine, stop_ms, errors),
                                  name=f"worker-{index}", daemon=True)
        threads.append(thread)
        thread.start()
    deadline_s = time.monotonic() + config.duration_s + 30  # a bound even if workers hang
    while target.now_ms() < stop_ms and time.monotonic() < deadline_s:
        now_ms = target.now_ms()
        if nemesis.due(now_ms):
            _nemesis_move(recorder, nemesis, now_ms)
        progress.update((now_ms - (stop_ms - int(config.duration_s * 1000))) // 1000,
                        faults=len(nemesis.active), ops=len(recorder.history))
        time.sleep(0.02)
    for thread in threads:
        thread.join(timeout=max(0.1, deadline_s - time.monotonic()))
    if errors:
        raise errors[0]
    return users, nemesis


def _worker(target, recorder, workload, users, stop_ms, errors) -> None:
    try:
        for _ in range(10**9):
            if target.now_ms() >= stop_ms:
                return
            for user in users:
                _perform(recorder, workload, user, workload.next_action(user))
    except BaseException as exc:  # surfaced by the main thread; a worker must not die silently
        errors.append(exc)


# -- results --------------------------------------------------------------------------------
def _run_stats(config, target, history, verdict, duration_s, drive_s) -> dict:
    stats = dict(verdict.stats)
    client_ops = sum(1 for op in history.ops if op.f not in ("phase",))
    events = getattr(getattr(target, "service", None), "delivered", 0)
    stats["client_ops"] = client_ops
    stats["events_delivered"] = events
    # Throughput of driving the target (setup, safety, convergence), the figure the benchmark
    # compares with its target; checking and reporting come on top, shown as check_s.
    stats["ops_per_s"] = round((client_ops + events) / max(drive_s, 1e-9), 1)
    stats["drive_s"] = round(drive_s, 3)
    stats["check_s"] = round(duration_s - drive_s, 3)
    stats["run_ms"] = history.ops[-1].complete_ms if history.ops else 0
    # The safety phase alone: the rate the workload drove, without the convergence wait.
    safety_ms = history.phase_start_ms("safety") or 0
    convergence_ms = history.phase_start_ms("convergence") or stats["run_ms"]
    safety_ops = sum(1 for op in history.ops if op.f != "phase"
                     and safety_ms <= op.invoke_ms < convergence_ms)
    stats["safety_ops_per_s"] = round(safety_ops * 1000 / max(convergence_ms - safety_ms, 1), 1)
    stats["faults_injected"] = _count_faults(history)
    return stats


def _count_faults(history: History) -> dict:
    counts: dict[str, int] = {}
    for op in history.ops:
        if op.f == "fault_add" and op.outcome == "ok":
            counts[op.request["kind"]] = counts.get(op.request["kind"], 0) + 1
    return counts


def _report(config, history, verdict, stats, started_wall, duration_s, policy) -> dict:
    digest = hashlib.sha256(history.dumps()).hexdigest()
    config_dict = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    config_dict["bugs"] = list(config.bugs)
    config_dict.pop("report_dir")
    stamp = dt.datetime.fromtimestamp(started_wall, dt.timezone.utc)
    report = {
        "verdict": "pass",
        "run_id": f"{stamp:%Y%m%d-%H%M%S}-seed{config.seed}",
        "seed": config.seed,
        "target": history.meta["target"],
        "mode": history.meta["mode"],
        "started_at": stamp.isoformat(timespec="seconds").replace("+00:00", "Z"),
        "duration_s": round(duration_s, 3),
        "config": config_dict,
        "stats": stats,
        "findings": [f.to_dict() for f in verdict.findings],
        "replay": shlex.join(config.replay_argv()),
        "history_sha256": digest,
    }
    result = gate.judge(report, policy)
    report["gate"] = {"policy": str(config.policy or "default"), "passed": result.passed,
                      "reasons": result.reasons}
    report["verdict"] = "pass" if result.passed else "fail"
    return report


def write(result: RunResult) -> Path:
    from .reports import write_reports

    report_dir = result.config.report_dir or ROOT / "reports" / result.report["run_id"]
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        result.history.save(report_dir / "history.jsonl")
        import orjson
        (report_dir / "ledger.jsonl").write_bytes(
            b"".join(orjson.dumps(e) + b"\n" for e in result.ledger))
    except OSError as exc:
        raise UsageError(f"cannot write reports to {report_dir}: {exc.strerror}") from None
    write_reports(result.report, result.history, report_dir)
    return report_dir


def summary(result: RunResult, report_dir: Path) -> str:
    report, stats = result.report, result.stats
    findings = report["findings"]
    lines = [
        f"{'PASS' if report['verdict'] == 'pass' else 'FAIL'}  seed {report['seed']}  "
        f"target {report['target']}  {report['duration_s']:.1f} s",
        f"  ops: {stats['client_ops']} client + {stats['events_delivered']} events "
        f"({stats['ops_per_s']:,.0f}/s); faults injected: "
        + (", ".join(f"{k} x{v}" for k, v in sorted(stats['faults_injected'].items())) or "none"),
    ]
    lag = stats.get("lag_ms") or {}
    if lag.get("count"):
        lines.append(f"  display lag: p50 {lag.get('p50')} ms, p99 {lag.get('p99')} ms, "
                     f"max {lag.get('max')} ms over {lag.get('count')} reads")
    by_sev: dict[str, int] = {}
    for f in findings:
        by_sev[f["severity"]] = by_sev.get(f["severity"], 0) + 1
    lines.append("  findings: " + (", ".join(f"{n} {s}" for s, n in sorted(by_sev.items()))
                                   if findings else "none"))
    for f in findings[:8]:
        lines.append(f"   - [{f['severity']}] {f['kind']} {f['account_id'] or ''}: "
                     f"{f['explanation'].splitlines()[0][:150]}")
    if len(findings) > 8:
        lines.append(f"   ... and {len(findings) - 8} more in the report")
    for reason in report["gate"]["reasons"]:
        lines.append(f"  gate: {reason}")
    lines.append(f"  reports: {report_dir}")
    lines.append(f"  replay:  {report['replay']}")
    return "\n".join(lines)
