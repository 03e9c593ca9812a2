"""Display: what the app shows may be old, never invented; it catches up with the ledger within
the service level once nothing keeps it from doing so; after convergence it equals the oracle.

Lag is measured conservatively: from the acknowledgement of a write the display lacks (by then
the entry was surely committed) to the moment the read was sent (the display surely answered
later), so the measured lag is never larger than the true one. Its allowance grows with every
fault that could have held the read model back, which is what keeps the checker from calling
allowed lag a defect.
"""

from __future__ import annotations

import bisect
import math
import operator
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import contract, oracle
from ..analysis import AccountIndex, Analysis, CheckConfig
from ..findings import SEVERITY_RANK, Finding, entry_words, view_words
from ..history import (RESETS_DISPLAY, FaultIndex, FaultWindow, History, Op, delay_of,
                       described)

NAME = "display"
_BY_INVOKE = operator.attrgetter("invoke_ms", "index")
VIEW_FIELDS = oracle.DISPLAY_FIELDS


class Allowance:
    """How long a display may lack an entry, for the many commit times of one run.

    The contract obliges convergence within `sla_ms` only once nothing holds the read model
    back, so every fault that overlaps the allowance pushes it to its own end plus `sla_ms` (plus
    its delay, for a delay), and a fault still on makes the allowance unbounded. Under a busy
    nemesis one allowance can chain through dozens of windows, for each of tens of thousands
    of commits; so each window's `reach` (where it pushes the allowance) and `closure` (where
    the chain goes once that window sets it) are computed once, back to front."""

    def __init__(self, faults: FaultIndex, config: CheckConfig) -> None:
        self._faults = faults
        self._sla_ms = config.sla_ms
        by_start = faults.starting_after(-math.inf)
        self._first_ms = [w.start_ms for w in by_start]
        self._reach_ms = [math.inf if w.end_ms is None else w.end_ms + config.sla_ms + delay_of(w)
                          for w in by_start]
        self._closure_ms = [math.inf] * len(by_start)
        for n in range(len(by_start) - 1, -1, -1):
            if self._reach_ms[n] != math.inf:
                self._closure_ms[n] = self._chain(n + 1, self._reach_ms[n])
        self._known: dict[int, float] = {}
        self._pushes: dict[int, tuple[int, float]] = {}  # by stretch of time (`_pushes_of`)

    def _pushes_of(self, active: tuple[FaultWindow, ...]) -> tuple[int, float]:
        """The largest delay of the windows on, and the furthest any of them pushes an allowance
        (-inf for none): the same for every commit while the same windows are on."""
        reach_ms = max((math.inf if w.end_ms is None else w.end_ms + self._sla_ms + delay_of(w)
                        for w in active), default=-math.inf)
        return max(map(delay_of, active), default=0), reach_ms

    def _chain(self, n: int, until_ms: float) -> float:
        """The allowance that ends at `until_ms` once it takes in windows n... : the windows
        starting by its end push it on. Once a window starts after it ends, so does every
        later one (they are in order of start)."""
        first_ms, reach_ms = self._first_ms, self._reach_ms
        for n in range(n, len(first_ms)):
            if first_ms[n] > until_ms:
                break
            if reach_ms[n] >= until_ms:
                return self._closure_ms[n]  # from here on, it goes where this window sends it
        return until_ms

    def deadline_ms(self, t_c_ms: int) -> float:
        """The latest moment a display may still lack an entry committed by `t_c_ms`."""
        known = self._known.get(t_c_ms)
        if known is not None:
            return known
        stretch = self._faults.stretch_at(t_c_ms)
        pushes = self._pushes.get(stretch)
        if pushes is None:
            pushes = self._pushes[stretch] = self._pushes_of(self._faults.active_at(t_c_ms))
        delay_ms, reach_ms = pushes
        until_ms: float = max(t_c_ms + self._sla_ms + delay_ms, reach_ms)
        if until_ms != math.inf:
            until_ms = self._chain(bisect.bisect_right(self._first_ms, t_c_ms), until_ms)
        assert until_ms >= t_c_ms + self._sla_ms
        self._known[t_c_ms] = until_ms
        return until_ms


def deadline_ms(t_c_ms: int, windows: Sequence[FaultWindow], config: CheckConfig) -> float:
    """`Allowance.deadline_ms` over these windows."""
    return Allowance(FaultIndex(list(windows)), config).deadline_ms(t_c_ms)


class _Resets:
    """A maintenance reset may put back a snapshot of any age, and a restarted service rebuilds
    its display from scratch (`RESETS_DISPLAY`), so after one the display may lack even old
    entries until it has rebuilt: each restarts the allowance of every entry committed before
    it, as if committed when it ended. An entry committed after a reset owes it nothing."""

    def __init__(self, windows: list[FaultWindow], allowance: Allowance) -> None:
        resets = sorted((w for w in windows if w.kind in RESETS_DISPLAY),
                        key=lambda w: w.start_ms)
        self._start_ms = [w.start_ms for w in resets]
        self._end_ms = [math.inf if w.end_ms is None else w.end_ms for w in resets]
        self._deadline_ms = [allowance.deadline_ms(w.end_ms) if w.end_ms is not None
                             else math.inf for w in resets]
        self._longest_ms = max((end - start for start, end in zip(self._start_ms, self._end_ms)),
                               default=0)

    def deadline_between(self, t_c_ms: int, read_ms: int) -> float:
        """The latest allowance restarted, for an entry committed by `t_c_ms`, by a reset that
        had not ended by then and was sent by `read_ms`."""
        hi = bisect.bisect_right(self._start_ms, read_ms)
        lo = 0 if self._longest_ms == math.inf else \
            bisect.bisect_left(self._start_ms, t_c_ms - self._longest_ms)
        return max((self._deadline_ms[n] for n in range(lo, hi) if self._end_ms[n] >= t_c_ms),
                   default=-math.inf)


@dataclass
class _Case:
    """One read that broke a display property."""

    op: Op
    severity: str
    expected: Any
    actual: Any
    words: str
    measure_ms: int = 0
    faults: list[str] = field(default_factory=list)


def check(a: Analysis) -> list[Finding]:
    return judge(a)[0]


def lag_records(a: Analysis) -> list[dict]:
    """{account_id, t_ms, lag_ms, faults, stale} for every display read judged for staleness:
    `lag_ms` is 0 for a current display, `faults` the kinds that overlapped the lag."""
    return judge(a)[1]


def judge(a: Analysis) -> tuple[list[Finding], list[dict]]:
    """The display findings and the lag records, computed once per analysis."""
    return a.memo(NAME, lambda: _judge(a))


def _judge(a: Analysis) -> tuple[list[Finding], list[dict]]:
    config, faults, windows = a.config, a.faults, a.windows
    conv_deadline_ms = _convergence_deadline_ms(a.history, windows, config)
    max_delay_ms = faults.max_delay_ms
    allowance = Allowance(faults, config)
    resets = _Resets(windows, allowance)
    cases: dict[tuple[str, str], list[_Case]] = {}
    records: list[dict] = []
    reads = sorted((op for op in a.history.ops if op.f == "display"), key=_BY_INVOKE)
    last_write_ms = a.last_write_ms
    for op in reads:
        account_id = str(op.account_id)
        account = a.accounts.get(account_id)
        # A write still landing after the convergence marker restarts that account's clock.
        converged = (account is not None and conv_deadline_ms is not None
                     and op.invoke_ms >= max(conv_deadline_ms, last_write_ms.get(account_id, 0)
                                             + config.sla_ms + max_delay_ms))
        if op.outcome == "fail" and op.http_status == 503:
            if converged:
                cases.setdefault(("display_divergence", account_id), []).append(
                    _unavailable(op, account, conv_deadline_ms, windows))
            continue
        problem = _shape_problem(op)
        if problem is not None:
            cases.setdefault(("contract_violation", account_id), []).append(
                _Case(op, "major", None, op.response, problem))
            continue
        if op.outcome != "ok":
            continue
        display = op.response
        if account is None:
            account = a.account(account_id)
        seq, case = _consistency(op, display, account, faults)
        assert (seq is None) != (case is None)
        if case is not None:
            cases.setdefault(("inconsistent_display", account_id), []).append(case)
        if converged:
            case = _divergence(op, display, account, conv_deadline_ms)
            if case is not None:
                cases.setdefault(("display_divergence", account_id), []).append(case)
        elif seq is not None:
            record, case = _staleness(op, display, seq, account, faults, resets, allowance,
                                      config)
            if record is not None:
                records.append(record)
            if case is not None:
                cases.setdefault(("stale_display", account_id), []).append(case)
    findings = [_finding(a, kind, account_id, found)
                for (kind, account_id), found in cases.items()]
    return findings, records


# -- convergence ----------------------------------------------------------------------------------

def _convergence_deadline_ms(history: History, windows: list[FaultWindow],
                             config: CheckConfig) -> float | None:
    t_conv_ms = history.phase_start_ms("convergence")
    if t_conv_ms is None:
        return None
    if any(w.end_ms is None for w in windows):
        return math.inf
    last_end_ms = max((w.end_ms for w in windows), default=t_conv_ms)
    max_delay_ms = max((delay_of(w) for w in windows), default=0)
    return max(t_conv_ms, last_end_ms) + config.sla_ms + max_delay_ms


# -- a. shape -------------------------------------------------------------------------------------

def _shape_problem(op: Op) -> str | None:
    if op.error and op.error.startswith("contract:"):
        return (f"the display read of account {op.account_id!r} at t={op.invoke_ms} ms got a "
                f"reply that broke the contract ({op.error})")
    if op.outcome != "ok":
        return None
    d = op.response
    # The usual display, decided in one expression (and no words built for it): what it
    # accepts, every check below accepts too.
    if type(d) is dict and d.get("account_id") == op.account_id \
            and type(d.get("credit_line")) is int and type(d.get("outstanding")) is int \
            and type(d.get("available")) is int and type(d.get("status")) is str \
            and d["status"] in contract.STATUSES and type(d.get("usable")) is bool \
            and (d.get("as_of_seq") is None or type(d["as_of_seq"]) is int):
        return None
    where = f"the display of account {op.account_id!r} read at t={op.invoke_ms} ms"
    if not isinstance(d, dict):
        return f"{where} is not a JSON object: {d!r:.80}"
    if d.get("account_id") != op.account_id:
        return f"{where} names account {d.get('account_id')!r}"
    for name in ("credit_line", "outstanding", "available"):
        if type(d.get(name)) is not int:
            return f"{where} has {name} {d.get(name)!r}, not an integer number of fen"
    if type(d.get("status")) is not str or d.get("status") not in contract.STATUSES:
        return f"{where} has status {d.get('status')!r}"
    if type(d.get("usable")) is not bool:
        return f"{where} has usable {d.get('usable')!r}, not a boolean"
    if d.get("as_of_seq") is not None and type(d.get("as_of_seq")) is not int:
        return f"{where} has as_of_seq {d.get('as_of_seq')!r}, neither an integer nor null"
    return None


# -- b. old, never invented -----------------------------------------------------------------------

def _consistency(op: Op, d: dict, account: AccountIndex,
                 faults: FaultIndex) -> tuple[int | None, _Case | None]:
    """The seq the display reflects, or a case when it reflects no state the account had (one
    of the two, never both)."""
    as_of_seq = d["as_of_seq"]
    if as_of_seq is not None and _shows(d, account.state_at(as_of_seq)):
        return as_of_seq, None  # the usual display: what it claims, without building views
    shown = _view(d)
    if as_of_seq is not None:
        state = account.state_at(as_of_seq)
        if state is not None and state.view() == shown:
            return as_of_seq, None
        truth = state.view() if state is not None else None
        words = (f"the ledger up to seq {as_of_seq} gives {view_words(truth)}" if truth
                 else f"the account had no entries up to seq {as_of_seq}")
        claim = f"claiming as_of_seq={as_of_seq}"
    else:
        seq = account.view_seq.get(tuple(shown[f] for f in VIEW_FIELDS))
        if seq is not None:
            return seq, None
        state = account.state_known_at(op.invoke_ms)
        truth = state.view() if state is not None else None
        words = (f"that is no state the account has ever been in (the ledger's state by then: "
                 f"{view_words(truth)})" if truth else "that is no state the account has ever been in")
        claim = "with as_of_seq null"
    truth_available = truth["available"] if truth else 0
    severity = "critical" if shown["available"] > truth_available else "major"
    on = _fault_context(faults, op.invoke_ms)
    return None, _Case(op, severity, truth, shown,
                       f"At t={op.invoke_ms} ms the display of account {op.account_id!r} showed "
                       f"{view_words(shown)}, {claim}, but {words}; a display may be old, never "
                       f"invented{on}", faults=described(faults.active_at(op.invoke_ms)))


# -- c. fresh within the allowance ----------------------------------------------------------------

def _staleness(op: Op, d: dict, seq: int, account: AccountIndex, faults: FaultIndex,
               resets: "_Resets", allowance: Allowance,
               config: CheckConfig) -> tuple[dict | None, _Case | None]:
    n = bisect.bisect_right(account.seqs, seq)
    if n == len(account.seqs):
        kinds = list(faults.kinds_at(op.invoke_ms))
        return {"account_id": op.account_id, "t_ms": op.invoke_ms, "lag_ms": 0, "faults": kinds,
                "stale": False}, None
    committed_ms = account.committed_by_ms[n]
    if committed_ms == math.inf:
        # Only writes of unknown outcome follow: nothing says when they were committed.
        return None, None
    t_c_ms = int(committed_ms)
    lag_ms = max(0, op.invoke_ms - t_c_ms)
    assert seq < account.seqs[n], "the display misses an entry after the one it shows"
    allowed_until_ms = max(allowance.deadline_ms(t_c_ms),
                           resets.deadline_between(t_c_ms, op.invoke_ms))
    stale = op.invoke_ms > allowed_until_ms
    # The faults that overlapped the lag (those on at the read, when there was none).
    kinds = (faults.kinds_overlapping(t_c_ms, op.invoke_ms) if lag_ms
             else list(faults.kinds_at(op.invoke_ms)))
    record = {"account_id": op.account_id, "t_ms": op.invoke_ms, "lag_ms": lag_ms,
              "faults": kinds, "stale": stale}
    if not stale:
        return record, None
    overlapping = (faults.overlapping(t_c_ms, op.invoke_ms) if lag_ms
                   else list(faults.active_at(op.invoke_ms)))
    late_ms = int(op.invoke_ms - allowed_until_ms)
    known = account.state_known_at(op.invoke_ms)
    known_available = known.available if known is not None else 0
    if late_ms <= config.stale_grace_ms:
        severity = "minor"
    elif d["available"] > known_available:
        severity = "critical"
    else:
        severity = "major"
    missed = account.entries[n]
    allowance = (f"its allowance ended at t={int(allowed_until_ms)} ms (service level "
                 f"{config.sla_ms} ms"
                 + (f"; faults in between: {', '.join(described(overlapping))}" if overlapping
                    else "; no fault was on") + ")")
    expected = known.view() if known is not None else None
    return record, _Case(
        op, severity, expected, _view(d),
        f"At t={op.invoke_ms} ms the display of account {op.account_id!r} still showed "
        f"{view_words(_view(d))} (as of seq {seq}), missing ledger seq={missed['seq']} "
        f"({entry_words(missed)}), committed by t={t_c_ms} ms: {lag_ms} ms behind, and "
        f"{allowance}; the ledger by then said {view_words(expected)}",
        measure_ms=lag_ms, faults=described(overlapping))


# -- d. converged ---------------------------------------------------------------------------------

def _divergence(op: Op, d: dict, account: AccountIndex, conv_deadline_ms: float) -> _Case | None:
    if not account.timeline:
        return None
    final = account.timeline[-1][1].view()
    shown = _view(d)
    if shown == final:
        return None
    severity = "critical" if shown["available"] > final["available"] else "major"
    late_ms = int(op.invoke_ms - conv_deadline_ms)
    return _Case(op, severity, final, shown,
                 f"At t={op.invoke_ms} ms, {late_ms} ms past the convergence deadline "
                 f"(t={int(conv_deadline_ms)} ms: faults removed, service level and largest delay "
                 f"elapsed), the display of account {op.account_id!r} showed {view_words(shown)} "
                 f"but the ledger says {view_words(final)}; it never caught up",
                 measure_ms=late_ms)


def _unavailable(op: Op, account: AccountIndex | None, conv_deadline_ms: float,
                 windows: list[FaultWindow]) -> _Case:
    healed_ms = max([w.end_ms for w in windows if w.end_ms is not None] + [0])
    final = account.timeline[-1][1].view() if account and account.timeline else None
    return _Case(op, "major", final, {"http_status": 503},
                 f"At t={op.invoke_ms} ms the display of account {op.account_id!r} was still "
                 f"unavailable (503) {op.invoke_ms - healed_ms} ms after faults were removed "
                 f"(convergence deadline t={int(conv_deadline_ms)} ms)",
                 measure_ms=int(op.invoke_ms - conv_deadline_ms))


# -- findings -------------------------------------------------------------------------------------

def _finding(a: Analysis, kind: str, account_id: str, cases: list[_Case]) -> Finding:
    # One finding per property and account: the first read that broke it tells the story, the
    # count and the worst case tell how bad it got.
    first = cases[0]
    worst = min(cases, key=lambda c: SEVERITY_RANK[c.severity])
    severity = worst.severity
    words = first.words
    if len(cases) > 1:
        last = cases[-1]
        words += (f". {len(cases)} reads were affected, from t={first.op.invoke_ms} ms to "
                  f"t={last.op.invoke_ms} ms")
        if kind == "stale_display":
            words += f"; the worst lag was {max(c.measure_ms for c in cases)} ms"
        elif kind == "display_divergence":
            words += (f"; still wrong {max(c.measure_ms for c in cases)} ms past the convergence "
                      f"deadline")
    else:
        words += ". 1 read was affected"
    if worst is not first and SEVERITY_RANK[worst.severity] < SEVERITY_RANK[first.severity]:
        words += (f"; worst at t={worst.op.invoke_ms} ms ({worst.severity}): "
                  f"{worst.words[0].lower()}{worst.words[1:]}")
    return a.finding(kind=kind, severity=severity, account_id=account_id,
                  first_seen_ms=first.op.invoke_ms, expected=worst.expected, actual=worst.actual,
                  explanation=words + ".", checker=NAME, faults_active=first.faults)


def _view(d: dict) -> dict:
    return {f: d.get(f) for f in VIEW_FIELDS}


def _shows(d: dict, state: oracle.State | None) -> bool:
    """`state.view() == _view(d)` for a well-formed display, field by field."""
    if state is None:
        return False
    available = state.available
    return (d["credit_line"] == state.credit_line and d["outstanding"] == state.outstanding
            and d["available"] == available and d["status"] == state.status
            and d["usable"] == (available > 0))


def _fault_context(faults: FaultIndex, t_ms: int) -> str:
    # A one-shot reset is never "on", yet it is usually the cause a reader is looking for, so the
    # latest one before the read is named whenever there was one.
    parts = []
    on = faults.active_at(t_ms)
    if on:
        parts.append(f"faults on: {', '.join(described(on))}")
    resets = [w for w in faults.windows if w.kind == "maintenance_reset" and w.start_ms <= t_ms]
    if resets:
        last = max(resets, key=lambda w: w.start_ms)
        parts.append(f"last maintenance reset: {last.describe()} at t={last.start_ms} ms")
    elif not on:
        before = [w for w in faults.windows if w.start_ms <= t_ms]
        if before:
            last = max(before, key=lambda w: w.start_ms)
            parts.append(f"last fault before it: {last.describe()} at t={last.start_ms} ms")
    return f" ({'; '.join(parts)})" if parts else ""
