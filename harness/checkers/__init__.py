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
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

from ..analysis import Analysis, CheckConfig, analyse
from ..collector import no_collections
from ..findings import Finding, sort_findings
from ..history import History
from ..statistics import COSTLY, costly, finding_counts, lag_statistics, statistics
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
    the parts of the analysis nearly all the work reads are built, then a child is forked and
    the two processes share out the checkers and the costliest statistics."""
    with no_collections():
        return _check(history, ledger_entries, config, with_stats)


def _check(history: History, ledger_entries: list, config: CheckConfig | None,
           with_stats: bool) -> Verdict:
    tasks = _tasks(with_stats)
    split = len(history.ops) >= SPLIT_OPS_MIN and _can_fork()
    analysis = Analysis(history, ledger_entries, config)
    child = None
    try:
        if split:
            # What nearly all the work reads is built before the fork and shared; each process
            # builds what else the work it takes reads (which cannot fail: it derives from what
            # `build_common` validated).
            child = _start_child(tasks, analysis.build_common())
        else:
            analysis.build()
    except Exception as exc:  # noqa: BLE001 - no checker can judge; say so instead of dying
        if child is not None:
            _stop_child(child)
        return Verdict([_crashed("analysis", exc)], {})
    if child is None:
        results = {task.name: task.run(analysis) for task in tasks}
    else:
        results = _run_shared(child, tasks, analysis)
        results.update(_join_child(child, [t for t in tasks if t.name not in results]))
    return _verdict(results, analysis, with_stats)


# -- the work: each checker, and each of the costliest statistics ----------------------------------
STATISTICS = "statistics"


@dataclass(frozen=True)
class _Task:
    """One piece of the work, run in either process: its result must pickle."""

    name: str  # a checker's name, or "statistics:" and a key of `statistics.COSTLY`
    run: Callable[[Analysis], Any]
    with_lag: bool = False  # display's: its findings and the lag statistics

    def lost(self, exc: Exception) -> Any:
        """Its result when the process running it died: its checker crashed (and the lag
        statistics with display's are unknown); a statistic it did not hand over, `statistics`
        computes itself."""
        if _is_statistic(self.name):
            return {}
        found = [_crashed(self.name, exc)]
        return (found, _crashed(STATISTICS, exc)) if self.with_lag else found


def _is_statistic(name: str) -> bool:
    return name.startswith(f"{STATISTICS}:")


def _tasks(with_stats: bool) -> list[_Task]:
    tasks = [_Task(name, partial(_run_safely, checker)) for name, checker in REGISTRY.items()]
    if with_stats:
        # The lag statistics go with the display checker: they are its by-product (memoised).
        tasks = [_Task(t.name, _display_and_lag, with_lag=True) if t.name == display.NAME else t
                 for t in tasks]
        tasks += [_Task(f"{STATISTICS}:{key}", partial(_costly, key)) for key in COSTLY]
    return tasks


def _display_and_lag(analysis: Analysis) -> tuple[list[Finding], dict | Finding]:
    found = _run_safely(REGISTRY[display.NAME], analysis)
    return found, _attempt(lambda a: lag_statistics(display.lag_records(a), a.config), analysis)


def _costly(key: str, analysis: Analysis) -> dict[str, Any]:
    """{key: `statistics.costly(analysis, key)`}, or {} when it raises: `statistics` computes it
    again and reports the error where it reports any other."""
    try:
        return {key: costly(analysis, key)}
    except Exception:  # noqa: BLE001 - reported by `statistics`, in the usual way
        return {}


def _attempt(compute: Callable[[Analysis], dict], analysis: Analysis) -> dict | Finding:
    try:
        return compute(analysis)
    except Exception as exc:  # noqa: BLE001 - the findings stand; the stats are unknown
        return _crashed(STATISTICS, exc)


def _verdict(results: dict[str, Any], analysis: Analysis, with_stats: bool) -> Verdict:
    found = {name: results[name] for name in REGISTRY}
    stats: dict = {}
    if with_stats:
        found[display.NAME], lag = found[display.NAME]
        for name, handed in results.items():
            if _is_statistic(name):  # computed by either process: `statistics` reads it here
                for key, value in handed.items():
                    analysis.memo(key, lambda value=value: value)
        whole = _attempt(statistics, analysis)
        # The first part that failed makes the statistics unknown, as one computation would.
        failed = next((part for part in (whole, lag) if isinstance(part, Finding)), None)
        if failed is not None:
            found[STATISTICS] = [failed]
        else:
            stats = {**whole, **lag}
    # In registry order, whichever process ran each: the same order as one process gives.
    findings = sort_findings(f for name in [*REGISTRY, STATISTICS] for f in found.get(name, ()))
    if with_stats:
        stats.update(finding_counts(findings))
    return Verdict(findings, stats)


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


# The pieces of the work by their cost over a typical run (the benchmark's), largest first;
# but the ledger checker before the other checkers: a broken ledger makes it by far the largest
# (thousands of findings), and started late it would keep the other process waiting.
_BY_COST = (f"{STATISTICS}:symptoms", f"{STATISTICS}:fault_effects", display.NAME, ledger.NAME,
            writes.NAME, rejections.NAME, f"{STATISTICS}:coverage_outcomes",
            f"{STATISTICS}:availability", f"{STATISTICS}:fault_coverage")


def _by_cost(task: _Task) -> int:
    return _BY_COST.index(task.name) if task.name in _BY_COST else len(_BY_COST)


def _child_first(tasks: list[_Task]) -> list[_Task]:
    """What the child starts with, at once, while this process builds the whole analysis: the
    largest piece of the work."""
    return sorted(tasks, key=_by_cost)[:1]


def _shared(tasks: list[_Task]) -> list[_Task]:
    """The rest, claimed by whichever process is free first, the largest first; so neither
    process waits long for the other however the run's shape weighs them."""
    first = _child_first(tasks)
    return sorted((t for t in tasks if t not in first), key=_by_cost)


def _can_fork() -> bool:
    # A fork copies only the calling thread: with others running (an HTTP run's workers, gevent
    # in a locust process) a lock they held would stay locked in the child forever.
    return hasattr(os, "fork") and threading.active_count() == 1 and "gevent" not in sys.modules


@dataclass(frozen=True)
class _Child:
    pid: int
    answer_fd: int  # the child's results, pickled
    claims_fd: int  # one byte per shared task: reading one claims it, so each runs once


def _start_child(tasks: list[_Task], analysis: Analysis) -> _Child:
    """Fork a child that runs its first tasks, then claims shared ones, on `analysis` (shared,
    copy on write; what else they read, the child builds), and sends their results back through
    a pipe."""
    shared = _shared(tasks)
    assert len(shared) < 256
    claims_read, claims_write = os.pipe()
    os.write(claims_write, bytes(range(len(shared))))
    os.close(claims_write)  # once every byte is read, the next read ends: nothing is left
    answer_read, answer_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(answer_read)
            results = {t.name: t.run(analysis) for t in _child_first(tasks)}
            results.update(_claimed(claims_read, shared, analysis))
            answer = pickle.dumps(results)
            with os.fdopen(answer_write, "wb") as pipe:
                pipe.write(answer)
        except BaseException:  # noqa: BLE001 - the parent reports a child that said nothing
            code = 1
        finally:
            os._exit(code)
    os.close(answer_write)
    return _Child(pid, answer_read, claims_read)


def _claimed(claims_fd: int, shared: list[_Task], analysis: Analysis) -> dict[str, Any]:
    """Run shared tasks as long as some are left unclaimed."""
    results = {}
    for _ in shared:
        claim = os.read(claims_fd, 1)
        if not claim:
            break
        task = shared[claim[0]]
        results[task.name] = task.run(analysis)
    return results


def _run_shared(child: _Child, tasks: list[_Task], analysis: Analysis) -> dict[str, Any]:
    try:
        return _claimed(child.claims_fd, _shared(tasks), analysis)
    finally:
        os.close(child.claims_fd)


def _stop_child(child: _Child) -> None:
    os.close(child.claims_fd)
    os.close(child.answer_fd)
    os.kill(child.pid, signal.SIGKILL)
    os.waitpid(child.pid, 0)


def _join_child(child: _Child, tasks: list[_Task]) -> dict[str, Any]:
    """The results of `tasks`, which the child ran."""
    with os.fdopen(child.answer_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(child.pid, 0)
    try:
        found = pickle.loads(data)
        assert set(found) == {t.name for t in tasks}
        return found
    except Exception:  # noqa: BLE001 - killed, or died: what each of its tasks saw is unknown
        gone = RuntimeError("the process running it ended without an answer")
        return {t.name: t.lost(gone) for t in tasks}


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
