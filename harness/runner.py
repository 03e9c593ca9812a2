"""`limit-harness run`: setup, safety phase under the nemesis, convergence phase, check, gate.

`execute(config)` drives, checks and judges one run and returns a `RunResult`; `save(result)`
writes its files. Nothing here parses arguments or prints: the CLI does.
"""

from __future__ import annotations

import datetime as dt
import shlex
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import orjson

from . import gate
from .checkers import Verdict
from .client import Recorder, ledger_head_seq
from .convergence import converge_and_check
from .driver import Drive, drive
from .errors import UsageError
from .history import History, new_history
from .http_options import ANSWER_BYTES_MAX_DEFAULT, TIMEOUT_S_DEFAULT, HttpOptions
from .secrets import REDACTED, url_shown
from .nemesis import load_profile
from .progress import Progress
from .reports import document, write_file, write_reports
from .targets import open_target, probe
from .workload import load_config

DEFAULT_ACCOUNTS = 24
DEFAULT_OPS = 20_000
DEFAULT_DURATION_S = 20.0
DEFAULT_LEDGER = "sqlite://"


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
                     "--workers", str(self.workers), *self.http.argv()]
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
        http_words = raw.get("http") or []
        if REDACTED in str(http_words) or REDACTED in str(raw.get("target")):
            raise UsageError(f"{source}: the run was given a secret (a header value or a URL "
                             f"password) that reports never keep; run its replay command again "
                             f"with the secret")
        try:
            config = cls(**{**raw, "policy": Path(raw["policy"]) if raw.get("policy") else None,
                            "bugs": tuple(raw.get("bugs", ())),
                            "http": _http_from_words(http_words)})
        except TypeError as exc:
            raise UsageError(f"{source}: the run config cannot be replayed ({exc})") from None
        return config


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

    @property
    def passed(self) -> bool:
        return self.report["verdict"] == "pass"


def execute(config: RunConfig, policy: gate.Policy | None = None) -> RunResult:
    """Drive, check and judge one run; writes nothing to disk."""
    policy = policy or gate.load_policy(config.policy)
    started_wall = time.time()
    target = open_target(config.target, seed=config.seed, bugs=config.bugs,
                         pool_size=config.workers + 2, ledger=config.ledger, http=config.http)
    try:
        supported = probe(target)
        profile = load_profile(config.faults).restricted_to(supported)
        workload_config = load_config(config.personas, config.locale)
        history = new_history(target.name, target.simulated, config.sla_ms, seed=config.seed,
                              faults=list(profile.kinds), supported=supported)
        recorder = Recorder(target, history,
                            ledger_after_seq=0 if target.simulated else ledger_head_seq(target))
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
        return RunResult(config, history, ledger, verdict, report, stats)
    finally:
        target.close()


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
    four reports; by default under ./reports/<run id>/."""
    report_dir = report_dir or result.config.report_dir or \
        Path.cwd() / "reports" / result.report["run_id"]
    write_reports(result.report, result.history, report_dir)
    write_file(report_dir / "history.jsonl", result.history.dumps())
    write_file(report_dir / "ledger.jsonl", b"".join(orjson.dumps(e) + b"\n" for e in result.ledger))
    return report_dir
