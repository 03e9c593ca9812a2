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
from .errors import UsageError
from .history import History
from .reports import document, write_reports

LEDGER_BYTES_MAX = 4 * 1024**3  # a bound on what one file may make us read


@dataclass(frozen=True)
class RecheckConfig:
    history: Path
    ledger: Path
    sla_ms: int | None = None  # default: the service level the run recorded
    policy: Path | None = None
    report_dir: Path | None = None


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
    policy = gate.load_policy(config.policy)  # a bad policy fails before any work
    started_s = time.time()
    history = load_history(config.history)
    ledger = load_ledger(config.ledger)
    sla_ms = config.sla_ms or history.meta.get("sla_ms")
    if type(sla_ms) is not int or sla_ms <= 0:
        raise UsageError(f"{config.history} records no service level; pass --sla-ms MS")
    verdict = checkers.check(history, ledger, CheckConfig(sla_ms=sla_ms))
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
    write_reports(report, history, report_dir)
    return RecheckResult(config, history, report, report_dir)


def load_history(path: Path) -> History:
    try:
        data = _read(path, "history")
        return History.loads(data)
    except ValueError as exc:
        raise UsageError(f"history {path}: {_one_line(exc)}") from None


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
