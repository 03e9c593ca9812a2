"""`limit-harness check`: a run stored on disk (its history.jsonl and ledger.jsonl) judged again
by every checker, with the same reports and exit codes as the run that made it. A history, not
the harness's memory, is what is judged, so a run can be re-checked later, after a checker was
fixed or under another policy."""

from __future__ import annotations

import datetime as dt
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from . import checkers, gate
from .analysis import CheckConfig
from .deadline import Deadline
from .errors import UsageError
from .history import History
from .reports import document, write_reports

LEDGER_BYTES_MAX = 4 * 1024**3  # a bound on what one file may make us read
# Without --max-run-s, each phase's bound (seconds): a base, plus the history's operations at a
# rate 20 times below what the checkers do (40,000/s), like `run`'s check and report phases.
PHASE_BASE_S = 60.0
CHECK_OPS_PER_S_MIN = 2_000
READ_BYTES_PER_S_MIN = 20 * 1024**2


@dataclass(frozen=True)
class RecheckConfig:
    history: Path
    ledger: Path
    sla_ms: int | None = None  # default: the service level the run recorded
    policy: Path | None = None
    report_dir: Path | None = None
    max_run_s: float | None = None  # None: each phase bounded by its own derived bound


@dataclass
class RecheckResult:
    config: RecheckConfig
    history: History
    report: dict
    report_dir: Path

    @property
    def passed(self) -> bool:
        return self.report["verdict"] == "pass"


def recheck(config: RecheckConfig) -> RecheckResult:
    """Judge the stored run; writes its reports. Cut short (DeadlineExceeded) before writing
    anything when a phase runs past its bound: a stored run has nothing new to keep."""
    policy = gate.load_policy(config.policy)  # a bad policy fails before any work
    started_s = time.time()
    deadline = Deadline("check", config.max_run_s)

    def enter(phase: str, work: float) -> None:
        deadline.enter(phase, None if config.max_run_s else PHASE_BASE_S + work)

    enter("load", _size(config.history) / READ_BYTES_PER_S_MIN)
    history = load_history(config.history)
    ledger = load_ledger(config.ledger)
    sla_ms = config.sla_ms or history.meta.get("sla_ms")
    if type(sla_ms) is not int or sla_ms <= 0:
        raise UsageError(f"{config.history} records no service level; pass --sla-ms MS")
    enter("check", len(history) / CHECK_OPS_PER_S_MIN)
    verdict = checkers.check(history, ledger, CheckConfig(sla_ms=sla_ms))
    enter("report", len(history) / CHECK_OPS_PER_S_MIN)
    stamp = dt.datetime.fromtimestamp(started_s, dt.timezone.utc)
    argv = ["limit-harness", "check", str(config.history), str(config.ledger),
            "--sla-ms", str(sla_ms)] + (["--policy", str(config.policy)] if config.policy else [])
    report = document.build(
        run_id=document.run_id(stamp, "check"), seed=history.meta.get("seed"),
        target=str(history.meta.get("target", "unknown")), mode="check", started=stamp,
        duration_s=time.time() - started_s,
        config={"history": str(config.history), "ledger": str(config.ledger), "sla_ms": sla_ms,
                "policy": str(config.policy) if config.policy else None,
                "checked_run": {k: history.meta.get(k) for k in ("mode", "started_at", "seed")}},
        stats=verdict.stats, findings=verdict.findings, replay=shlex.join(argv), policy=policy,
        history_sha256=document.history_digest(history))
    report_dir = config.report_dir or Path.cwd() / "reports" / report["run_id"]
    deadline.check()
    write_reports(report, history, report_dir)
    return RecheckResult(config, history, report, report_dir)


def load_history(path: Path) -> History:
    """A stored history, whole: one cut short by its bounds is refused (its operations in
    flight have no answer, so judging it would report on a run that never ended)."""
    try:
        data = _read(path, "history")
        history = History.loads(data)
    except ValueError as exc:
        raise UsageError(f"history {path}: {_one_line(exc)}") from None
    incomplete = history.meta.get("incomplete")
    if incomplete is not None:
        phase = incomplete.get("phase") if isinstance(incomplete, dict) else None
        raise UsageError(f"history {path} is of a run cut short (in its {phase} phase) and "
                         f"cannot be judged as a whole run; run it again")
    return history


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0  # the read says why, in its own words


def load_ledger(path: Path) -> list:
    """Entries as stored, one JSON value a line; what each one holds is the checkers' to judge
    (a malformed entry is a finding), but a line that is not JSON at all cannot be judged."""
    data = _read(path, "ledger")
    entries = []
    for line_no, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise UsageError(f"ledger {path} line {line_no} is not JSON: {_one_line(exc)}") \
                from None
    return entries


def _read(path: Path, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > LEDGER_BYTES_MAX:
            raise UsageError(f"{what} {path} is {size:,} bytes, over the {LEDGER_BYTES_MAX:,} "
                             f"this command reads")
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
