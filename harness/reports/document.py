"""The report document (report.json's content): one shape for every command that judges a run
(`run`, `check` and the load test), with the gate's verdict in it."""

from __future__ import annotations

import datetime as dt
import hashlib

from .. import gate
from ..clock import rfc3339
from ..findings import Finding
from ..history import History


def run_id(started: dt.datetime, label: str) -> str:
    """`20261129-150102-seed7`: sortable by time, and says what ran."""
    return f"{started:%Y%m%d-%H%M%S}-{label}"


def history_digest(history: History) -> str:
    """The replay digest: a simulated run with the same seed gives the same one, bit for bit."""
    return hashlib.sha256(history.dumps()).hexdigest()


def build(*, run_id: str, seed: int | None, target: str, mode: str, started: dt.datetime,
          duration_s: float, config: dict, stats: dict, findings: list[Finding], replay: str,
          policy: gate.Policy, history_sha256: str | None = None) -> dict:
    """The whole report, judged by `policy`: `verdict` is the gate's."""
    report = {
        "verdict": "pass",
        "run_id": run_id,
        "seed": seed,
        "target": target,
        "mode": mode,
        "started_at": rfc3339(started, "seconds"),
        "duration_s": round(duration_s, 3),
        "config": config,
        "stats": stats,
        "findings": [f.to_dict() for f in findings],
        "replay": replay,
    }
    if history_sha256 is not None:
        report["history_sha256"] = history_sha256
    return judged(report, policy)


def judged(report: dict, policy: gate.Policy) -> dict:
    """`report` with its gate entry and verdict set by `policy`."""
    result = gate.judge(report, policy)
    report["gate"] = result.to_dict(policy)
    report["verdict"] = "pass" if result.passed else "fail"
    return report
