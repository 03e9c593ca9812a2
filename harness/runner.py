"""`limit-harness run`: setup, safety phase under the nemesis, convergence phase, check, gate.

`execute(config)` drives, checks and judges one run and returns a `RunResult`; `save(result)`
writes its files. Nothing here parses arguments or prints: the CLI does.

Every phase is bounded in wall-clock time (`harness/deadline.py`): without `--max-run-s` each
phase by its own bound, derived from the run's length (`phase_bound_s`); with it, the whole run.
A run cut short saves what it recorded, marked incomplete and never judged (`save_incomplete`).
"""

from __future__ import annotations

import datetime as dt
import math
import shlex
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import orjson

from . import gate
from .checkers import Verdict
from .client import Recorder, ledger_head_seq
from .clock import rfc3339
from .convergence import HARNESS, converge_and_check, injected_delay_ms
from .deadline import Deadline, DeadlineExceeded, bounded
from .driver import HTTP_STOP_GRACE_S, Drive, drive
from .errors import UsageError
from .history import History, new_history
from .http_options import ANSWER_BYTES_MAX_DEFAULT, TIMEOUT_S_DEFAULT, HttpOptions
from .secrets import REDACTED, url_shown
from .nemesis import load_profile
from .progress import Progress
from .reports import FILE_NAMES, document, json_report, write_file, write_reports
from .deployment import open_run_target
from .targets import probe
from .workload import load_config

DEFAULT_ACCOUNTS = 24
DEFAULT_OPS = 20_000
DEFAULT_DURATION_S = 20.0
DEFAULT_LEDGER = "sqlite://"

# Wall-clock bounds (seconds). Generous on purpose: a bound that cuts a healthy run on a busy CI
# machine is worse than none; these only stop a target that stalls or trickles.
PHASES = ("setup", "safety", "convergence", "check", "report")
PHASE_BASE_S = 60.0         # every phase: start-up, a loaded machine, a few slow answers
OPEN_S_MAX = 1.0            # HTTP setup: per account, an open slower than this on average stalls
SIM_OPEN_S = 0.01           # simulated setup, per account
SIM_OPS_PER_S_MIN = 500     # simulated safety: 13,000+ ops/s measured; 25 times slower is stuck
CHECK_OPS_PER_S_MIN = 2_000  # check and report: the checkers judge 40,000 ops/s
HTTP_OPS_PER_WORKER_S = 1_000  # only to estimate an HTTP history's length for the whole bound


@dataclass(frozen=True)
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
    ledger: str = DEFAULT_LEDGER
    workers: int = 8
    quiet: bool = False
    http: HttpOptions = HttpOptions()
    max_run_s: float | None = None  # None: each phase bounded by its own derived bound
    target_cmd: str | None = None  # --target-cmd: the harness starts the target itself
    deployment: str | None = None  # --deployment FILE: its processes, proxies, hooks, containers

    def __post_init__(self) -> None:
        # A password in a URL (the target's, a PostgreSQL store's) is a secret from the moment
        # the run knows it: every output and the replay command show it as <redacted>.
        for url in (self.target, self.ledger):
            if url:
                url_shown(url)

    @property
    def simulated(self) -> bool:
        return self.target is None and self.target_cmd is None and self.deployment is None

    def replay_argv(self) -> list[str]:
        argv = ["limit-harness", "run", "--seed", str(self.seed), "--accounts", str(self.accounts),
                "--faults", self.faults, "--sla-ms", str(self.sla_ms)]
        if self.simulated:
            argv += ["--ops", str(self.ops)]
        else:
            argv += [*(["--target", self.target] if self.target else []),
                     *(["--target-cmd", self.target_cmd] if self.target_cmd else []),
                     *(["--deployment", self.deployment] if self.deployment else []),
                     "--duration", f"{self.duration_s:g}", "--workers", str(self.workers),
                     *self.http.argv()]
        for bug in self.bugs:
            argv += ["--bug", bug]
        if self.simulated and self.ledger != DEFAULT_LEDGER:
            argv += ["--ledger", self.ledger]
        if self.personas:
            argv += ["--personas", self.personas]
        if self.locale:
            argv += ["--locale", self.locale]
        if self.policy:
            argv += ["--policy", str(self.policy)]
        if self.max_run_s is not None:
            argv += ["--max-run-s", f"{self.max_run_s:g}"]
        return argv

    def to_dict(self) -> dict:
        """What report.json keeps to replay the run (not where its reports went)."""
        out = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()
               if k not in ("report_dir", "http")}
        out["bugs"] = list(self.bugs)
        out["target"] = None if self.target is None else url_shown(self.target)
        out["http"] = self.http.argv()
        return out

    @classmethod
    def from_dict(cls, raw: dict, source: str) -> "RunConfig":
        """The config a report.json recorded; UsageError when it cannot be replayed."""
        known = {f.name for f in fields(cls)} - {"report_dir"}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise UsageError(f"{source}: the run config has unknown key {unknown[0]!r}; was it "
                             f"made by another version?")
        problem = next(filter(None, (_replay_problem(cls, name, value)
                                     for name, value in raw.items())), None)
        if problem:
            raise UsageError(f"{source}: the run config's {problem}")
        http_words = raw.get("http") or []
        if REDACTED in str(http_words) or REDACTED in str(raw.get("target")) or \
                REDACTED in str(raw.get("ledger")):
            raise UsageError(f"{source}: the run was given a secret (a header value or a URL "
                             f"password) that reports never keep; run its replay command again "
                             f"with the secret")
        try:
            config = cls(**{**raw, "policy": Path(raw["policy"]) if raw.get("policy") else None,
                            "bugs": tuple(raw.get("bugs", ())),
                            "http": _http_from_words(http_words)})
        except (TypeError, ValueError, StopIteration, UsageError) as exc:
            raise UsageError(f"{source}: the run config cannot be replayed ({exc})") from None
        if config.simulated != (config.ops is not None) or \
                config.simulated == (config.duration_s is not None):
            raise UsageError(f"{source}: the run config needs ops for a simulated run and "
                             f"duration_s for a real one")
        return config


# What a report's run config may hold, by the field's annotation: a hand-edited report.json must
# fail here in one line, not deep inside the run. Whole numbers in POSITIVE must be above 0.
_REPLAY_TYPES = {
    "int": (int,), "int | None": (int, type(None)), "float | None": (int, float, type(None)),
    "str": (str,), "str | None": (str, type(None)), "Path | None": (str, type(None)),
    "bool": (bool,), "tuple[str, ...]": (list,), "HttpOptions": (list,),
}
_POSITIVE = ("accounts", "ops", "duration_s", "sla_ms", "workers", "max_run_s")
_REPLAY_WORDS = {"int": "a whole number", "int | None": "a whole number or null",
                 "float | None": "a number or null", "str": "a string",
                 "str | None": "a string or null", "Path | None": "a path or null",
                 "bool": "true or false", "tuple[str, ...]": "a list of strings",
                 "HttpOptions": "a list of command-line words"}
_JSON_WORDS = {dict: "an object", list: "a list", str: "a string", int: "a whole number",
               float: "a number", bool: "true or false", type(None): "null"}


def _replay_problem(cls, name: str, value) -> str | None:
    annotation = cls.__dataclass_fields__[name].type if name in cls.__dataclass_fields__ else None
    kinds = _REPLAY_TYPES.get(str(annotation))
    if kinds is None:
        return None  # a field this check does not know: the config's own checks judge it
    if type(value) not in kinds:
        return f"{name!r} is {_JSON_WORDS.get(type(value), type(value).__name__)}, not " \
               f"{_REPLAY_WORDS.get(str(annotation), annotation)}"
    if isinstance(value, list) and not all(type(v) is str for v in value):
        return f"{name!r} must be a list of strings"
    if type(value) is float and not math.isfinite(value):
        return f"{name!r} must be a finite number"
    if type(value) in (int, float) and (value < 0 or name in _POSITIVE and value <= 0):
        return f"{name!r} must be {'above' if name in _POSITIVE else 'at least'} 0"
    return None


def _http_from_words(words: list[str]) -> HttpOptions:
    """The HTTP options back from `HttpOptions.argv` words, as a replay needs them."""
    headers, ca_bundle, insecure, timeout_s = [], None, False, TIMEOUT_S_DEFAULT
    answer_bytes_max = ANSWER_BYTES_MAX_DEFAULT
    pairs = iter(words)
    for word in pairs:
        if word == "--insecure":
            insecure = True
        elif word == "--header":
            headers.append(next(pairs))
        elif word == "--ca-bundle":
            ca_bundle = Path(next(pairs))
        elif word == "--timeout-s":
            timeout_s = float(next(pairs))
        elif word == "--answer-bytes-max":
            answer_bytes_max = int(next(pairs))
    return HttpOptions.parse(headers, ca_bundle, insecure, timeout_s, answer_bytes_max)


@dataclass
class RunResult:
    config: RunConfig
    history: History
    ledger: list[dict]
    verdict: Verdict
    report: dict
    stats: dict = field(default_factory=dict)
    deadline: Deadline | None = None  # the report phase's, which saving is part of
    started_wall: float = 0.0

    @property
    def passed(self) -> bool:
        return self.report["verdict"] == "pass"


def execute(config: RunConfig, policy: gate.Policy | None = None) -> RunResult:
    """Drive, check and judge one run; writes nothing to disk, unless the run is cut short by
    its bounds: then what it recorded is saved, marked incomplete, and the DeadlineExceeded
    raised says where."""
    policy = policy or gate.load_policy(config.policy)
    started_wall = time.time()
    deadline = Deadline("run", config.max_run_s or default_max_run_s(config))
    history: History | None = None
    recorder: Recorder | None = None
    ledger: list[dict] | None = None

    def enter(phase: str) -> None:
        deadline.enter(phase, None if config.max_run_s else
                       phase_bound_s(config, phase, len(history or ()),
                                     injected_delay_ms(history) if history else 0))

    enter("setup")
    target = bounded(open_run_target(config.target, target_cmd=config.target_cmd,
                                     deployment=config.deployment, seed=config.seed,
                                     bugs=config.bugs, pool_size=config.workers + 2,
                                     ledger=config.ledger, http=config.http), deadline)
    try:
        supported = probe(target)
        profile = load_profile(config.faults).restricted_to(supported)
        workload_config = load_config(config.personas, config.locale)
        history = new_history(target.name, target.simulated, config.sla_ms, seed=config.seed,
                              faults=list(profile.kinds), supported=supported)
        recorder = _PhasedRecorder(target, history, enter,
                                   ledger_after_seq=0 if target.simulated else
                                   ledger_head_seq(target))
        progress = Progress("ops" if config.simulated else "s", quiet=config.quiet)
        run_tag = f"s{config.seed}" if config.simulated else \
            f"s{config.seed}t{int(started_wall * 1000) % 10**9}"
        plan = Drive(seed=config.seed, accounts=config.accounts, ops=config.ops,
                     duration_s=config.duration_s, workers=config.workers, run_tag=run_tag)
        users = drive(plan, target, recorder, profile, workload_config, progress)
        history.meta["users"] = {acc: {"name": u.name, "persona": u.persona}
                                 for u in users for acc in u.accounts}
        marks_s: dict[str, float] = {}

        def on_phase(name: str) -> None:
            marks_s[name] = time.time()
            progress.phase(name)

        ledger, verdict = converge_and_check(recorder, config.sla_ms, on_phase=on_phase)
        enter("report")
        progress.done()
        duration_s = time.time() - started_wall
        stats = _run_stats(target, history, verdict, duration_s, marks_s["check"] - started_wall)
        stamp = dt.datetime.fromtimestamp(started_wall, dt.timezone.utc)
        report = document.build(
            run_id=document.run_id(stamp, f"seed{config.seed}"), seed=config.seed,
            target=target.name, mode=history.meta["mode"], started=stamp,
            duration_s=duration_s, config=config.to_dict(), stats=stats,
            findings=verdict.findings, replay=shlex.join(config.replay_argv()), policy=policy,
            history_sha256=document.history_digest(history))
        deadline.check()
        return RunResult(config, history, ledger, verdict, report, stats, deadline, started_wall)
    except DeadlineExceeded as exc:
        if recorder is not None:
            _clear_faults(recorder, history)
        if history is not None:
            exc.saved = str(save_incomplete(config, history, ledger, exc, started_wall))
        raise
    finally:
        target.close()


class _PhasedRecorder(Recorder):
    """A recorder whose phase marks (the driver's, the convergence phase's) also begin the
    deadline's phases, so each phase of the run is bounded where it begins."""

    def __init__(self, target, history: History, on_phase, ledger_after_seq: int) -> None:
        super().__init__(target, history, ledger_after_seq)
        self.on_phase = on_phase

    def phase(self, name: str) -> None:
        self.on_phase(name)
        super().phase(name)


def phase_bound_s(config: RunConfig, phase: str, ops: int, delay_ms: int) -> float:
    """How long `phase` may take, from the run's length: `ops` is the history's length when the
    phase begins, `delay_ms` the largest delay the run injected into the event path."""
    http = not config.simulated
    if phase == "setup":
        return PHASE_BASE_S + config.accounts * (OPEN_S_MAX if http else SIM_OPEN_S)
    if phase == "safety":
        return PHASE_BASE_S + (_duration_s(config) + HTTP_STOP_GRACE_S if http
                               else _ops(config) / SIM_OPS_PER_S_MIN)
    if phase == "convergence":
        return PHASE_BASE_S + (config.sla_ms + delay_ms) / 1000
    assert phase in ("check", "report"), phase
    return PHASE_BASE_S + ops / CHECK_OPS_PER_S_MIN


def default_max_run_s(config: RunConfig) -> float:
    """The whole run's bound without --max-run-s: its phases' bounds, added up, for the longest
    history and delay the run can be expected to make."""
    profile = load_profile(config.faults)
    delay_ms = max(profile.delay_ms) if "delay_sync" in profile.kinds else 0
    ops = _ops(config) + 4 * config.accounts if config.simulated else \
        int(_duration_s(config) * config.workers * HTTP_OPS_PER_WORKER_S)
    return round(sum(phase_bound_s(config, phase, ops, delay_ms) for phase in PHASES))


def _ops(config: RunConfig) -> int:
    return config.ops or DEFAULT_OPS


def _duration_s(config: RunConfig) -> float:
    return config.duration_s or DEFAULT_DURATION_S


def _clear_faults(recorder: Recorder, history: History) -> None:
    """A run cut short before its convergence phase leaves no fault behind on a real service
    (a clearing request is never refused by the deadline)."""
    if not recorder.target.simulated and any(op.f == "fault_add" for op in history.ops):
        recorder.remove_fault(HARNESS, None)


def _run_stats(target, history: History, verdict: Verdict, duration_s: float,
               drive_s: float) -> dict:
    stats = dict(verdict.stats)
    client_ops = sum(1 for op in history.ops if op.f != "phase")
    stats["client_ops"] = client_ops
    stats.update(target.counters())
    # Throughput of driving the target (setup, safety, convergence) in operations the harness
    # performed; checking and reporting come on top, shown as check_s.
    stats["ops_per_s"] = round(client_ops / max(drive_s, 1e-9), 1)
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


def save(result: RunResult, report_dir: Path | None = None) -> Path:
    """The run's files: history.jsonl and ledger.jsonl (so `check` can judge it again) and the
    four reports; by default under ./reports/<run id>/. The raw material first: a run cut short
    here (its report phase's bound) keeps it, with report.json marked incomplete."""
    report_dir = report_dir or result.config.report_dir or \
        Path.cwd() / "reports" / result.report["run_id"]
    _save_raw(result.history, result.ledger, report_dir)
    if result.deadline is not None:
        try:
            result.deadline.check()
        except DeadlineExceeded as exc:
            exc.saved = str(save_incomplete(result.config, result.history, result.ledger, exc,
                                            result.started_wall, report_dir))
            raise
    write_reports(result.report, result.history, report_dir)
    return report_dir


def _save_raw(history: History, ledger: list[dict] | None, report_dir: Path) -> None:
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create report directory {report_dir}: "
                         f"{exc.strerror or exc}") from None
    write_file(report_dir / "history.jsonl", history.dumps())
    if ledger is not None:
        write_file(report_dir / "ledger.jsonl", b"".join(orjson.dumps(e) + b"\n" for e in ledger))


def save_incomplete(config: RunConfig, history: History, ledger: list[dict] | None,
                    exc: DeadlineExceeded, started_wall: float,
                    report_dir: Path | None = None) -> Path:
    """What a run cut short recorded: history.jsonl (its meta saying so, so `check` will not
    judge it as whole), ledger.jsonl when it was read, and a report.json whose verdict is
    `incomplete`, without findings or a gate; no other report, and none left from before."""
    stamp = dt.datetime.fromtimestamp(started_wall, dt.timezone.utc)
    run_id = document.run_id(stamp, f"seed{config.seed}")
    report_dir = report_dir or config.report_dir or Path.cwd() / "reports" / run_id
    incomplete = {"phase": exc.phase, "bound_s": exc.bound_s, "reason": exc.reason()}
    history.meta["incomplete"] = incomplete
    _save_raw(history, ledger, report_dir)
    for name in FILE_NAMES.values():  # a report of an earlier run here would look like this one's
        (report_dir / name).unlink(missing_ok=True)
    report = {"verdict": "incomplete", "incomplete": incomplete, "run_id": run_id,
              "seed": config.seed, "target": history.meta.get("target"),
              "mode": history.meta.get("mode"), "started_at": rfc3339(stamp, "seconds"),
              "duration_s": round(time.time() - started_wall, 3), "config": config.to_dict(),
              "stats": {"client_ops": sum(1 for op in history.ops if op.f != "phase")},
              "replay": shlex.join(config.replay_argv())}
    write_file(report_dir / FILE_NAMES["json"], json_report.dumps(report))
    return report_dir
