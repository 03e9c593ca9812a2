"""Checkers: pure functions from an `Analysis` of (history, ledger) to findings, shared by `run`,
`prop`, `check`, the pytest plugin and the load test.

Each checker module has a `NAME`, states its property in its docstring, and has one
`check(analysis) -> list[Finding]`. `REGISTRY` is the one list of them. `check` runs each one
safely: a checker that raises becomes a `checker_error` finding (which fails the gate) instead
of aborting the run, as Jepsen's `check-safe` does.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Callable

from ..analysis import Analysis, CheckConfig, analyse
from ..collector import fewer_collections
from ..findings import Finding, sort_findings
from ..history import History
from ..statistics import finding_counts, lag_statistics, statistics
from . import display, ledger, rejections, writes


@dataclass(frozen=True)
class Checker:
    name: str
    statement: str  # the property it checks, in one sentence
    check: Callable[[Analysis], list[Finding]]


def _checker(module) -> Checker:
    first_paragraph = module.__doc__.split("\n\n")[0]
    return Checker(module.NAME, " ".join(first_paragraph.split(":", 1)[1].split()), module.check)


# In the order a reader meets them; reports list each one even when it found nothing.
REGISTRY: dict[str, Checker] = {c.name: c for c in map(_checker, (writes, ledger, rejections,
                                                                    display))}


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def check(history: History, ledger_entries: list, config: CheckConfig | None = None,
          *, with_stats: bool = True) -> Verdict:
    """Every checker over one run: findings worst first (then earliest) and, `with_stats`, the
    run's statistics (see `statistics.statistics`). A long history is checked on two cores:
    the analysis is built once, then the checkers split between this process and a child."""
    with fewer_collections():
        return _check(history, ledger_entries, config, with_stats)


def _check(history: History, ledger_entries: list, config: CheckConfig | None,
           with_stats: bool) -> Verdict:
    try:
        analysis = analyse(history, ledger_entries, config)
    except Exception as exc:  # noqa: BLE001 - no checker can judge; say so instead of dying
        return Verdict([_crashed("analysis", exc)], {})
    split = len(history.ops) >= SPLIT_OPS_MIN and _can_fork()
    elsewhere = [c for c in REGISTRY.values() if c.name != display.NAME] if split else []
    child = _start_child(elsewhere, analysis) if split else None
    found: dict[str, list[Finding]] = {}
    for checker in REGISTRY.values():
        if checker not in elsewhere:
            found[checker.name] = _run_safely(checker, analysis)
    stats: dict = {}
    if with_stats:  # here, not in the child: that splits the work about evenly
        stats = _stats_safely(found, lambda: {
            **statistics(analysis),
            **lag_statistics(display.lag_records(analysis), analysis.config)})
    if child is not None:
        for name, more in _join_child(child, elsewhere).items():
            found.setdefault(name, []).extend(more)
    # In registry order, whichever process ran each: the same order as one process gives.
    findings = sort_findings(f for name in [*REGISTRY, "statistics"] for f in found.get(name, ()))
    if with_stats:
        stats.update(finding_counts(findings))
    return Verdict(findings, stats)


def _stats_safely(found: dict[str, list[Finding]], compute: Callable[[], dict]) -> dict:
    try:
        return compute()
    except Exception as exc:  # noqa: BLE001 - the findings stand; the stats are unknown
        found.setdefault("statistics", []).append(_crashed("statistics", exc))
        return {}


def _run_safely(checker: Checker, analysis: Analysis) -> list[Finding]:
    try:
        found = checker.check(analysis)
    except Exception as exc:  # noqa: BLE001 - check-safe: a crash is an unknown, not an abort
        return [_crashed(checker.name, exc)]
    assert all(isinstance(f, Finding) for f in found), checker.name
    return found


# -- two processes -------------------------------------------------------------------------------
# Below this many operations one process is fast enough, and a fork costs more than it saves.
SPLIT_OPS_MIN = 50_000


def _can_fork() -> bool:
    # A fork copies only the calling thread: with others running (an HTTP run's workers, gevent
    # in a locust process) a lock they held would stay locked in the child forever.
    return hasattr(os, "fork") and threading.active_count() == 1 and "gevent" not in sys.modules


def _start_child(checkers: list[Checker], analysis: Analysis) -> tuple[int, int]:
    """Fork a child that runs `checkers` on the analysis (shared, copy on write) and sends
    their findings back through a pipe."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(read_fd)
            answer = pickle.dumps({c.name: _run_safely(c, analysis) for c in checkers})
            with os.fdopen(write_fd, "wb") as pipe:
                pipe.write(answer)
        except BaseException:  # noqa: BLE001 - the parent reports a child that said nothing
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd


def _join_child(child: tuple[int, int], checkers: list[Checker]) -> dict[str, list[Finding]]:
    pid, read_fd = child
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    try:
        found = pickle.loads(data)
        assert set(found) == {c.name for c in checkers}
        return found
    except Exception:  # noqa: BLE001 - killed, or died: each of its checkers is unknown
        gone = RuntimeError("the process running it ended without an answer")
        return {c.name: [_crashed(c.name, gone)] for c in checkers}


def _crashed(name: str, exc: Exception) -> Finding:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    words = (f"The {name} checker crashed ({type(exc).__name__}: {exc}{at}), so what it checks "
             f"is unknown for this run; this is a bug in the harness: please report it with "
             f"the history and ledger files of this run.")
    return Finding(kind="checker_error", severity="critical", account_id=None,
                   first_seen_ms=None, expected=None, actual=None, explanation=words,
                   checker=name)


__all__ = ["REGISTRY", "CheckConfig", "Checker", "Verdict", "analyse", "check"]
