"""Proof that a fault took effect: for each injection, whether the history shows what it did.

A fault carried out from outside can silently do nothing: a hook that exits 0 having done
nothing, a proxy the service does not use, a process that was not the one serving. A chaos run
whose faults did nothing proves nothing, so each injection is judged by what clients saw while
it was on, against what they saw while no fault was (the quiet baseline):

| sign | what a client saw |
| --- | --- |
| `lag` | a display read behind an acknowledged write by more than the lag bound (below) |
| `unavailable` | a display read answered 503 |
| `no_answer` | a request that got no answer (refused, reset, timed out) |
| `server_error` | a 5xx answer (but a display's honest 503) |
| `slow` | the median request sent while it was on, slower than the quiet p99 by half again |

The lag bound is twice the quiet p99 lag, and at least a quarter of what the fault holds events
back (a 2 s delay shows far more than a busy machine's late read). Each kind can show some signs
(`SHOWS`). A sign is the fault's own when no other fault that can show it was on at that
moment; a sign several could explain counts for none of them. A fault is
- `observed`: at least two signs are its own (one late read or lost request could be the
  machine);
- `not_observed` (listed as ineffective): no sign at all, although clients had every chance
  the kind needs to show one (`NEEDS`): requests sent while it was on; reads of an account
  after a write made while it was on, late enough to be behind and early enough for it to
  still hold the write back; and no other fault of its kind by the same provider was seen
  to act (a provider that works once is not misrouted: that one fault may have been repaired
  before anyone looked);
- `undetermined`: otherwise, with why (it acts on events by chance, a snapshot may be fresh,
  its signs were shared, clients gave it no chance);
- `refused`: the provider refused it; it never acted.

Pure: the history in, a dict for report.json out.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
import statistics as stats_lib
from dataclasses import dataclass, field

from .history import FaultWindow, History, Op, delay_ms_of

SIGNS = ("lag", "unavailable", "no_answer", "server_error", "slow")
# The signs each kind can show when it acts: where it acted (the api, or a worker behind it)
# decides which.
SHOWS: dict[str, tuple[str, ...]] = {
    "delay_sync": ("lag",),
    "drop_events": ("lag",),
    "duplicate_events": (),  # a correct service ignores duplicates: nothing to see
    "reorder_events": ("lag",),
    "pause_sync": ("lag",),
    "maintenance_reset": ("unavailable", "lag"),
    "crash_restart": ("no_answer", "server_error", "unavailable", "lag"),
    "process_pause": ("no_answer", "slow", "lag", "server_error"),
    "network_latency": ("slow", "lag", "no_answer"),
    "network_partition": ("no_answer", "server_error", "slow", "lag"),
    "connection_reset": ("no_answer", "server_error", "lag"),
}
# The chances after which no sign at all means no effect: `requests` sent while it was on;
# `lag`, a read after a write made while it was on (see `_lag_chances`); `reads`, a display read
# of an account written before it. A kind that needs two needs both, since it may act on either
# path. Kinds not here never count as ineffective: drops, duplicates and reordering act on
# events by chance, and a snapshot restore may put back what was already shown.
NEEDS: dict[str, tuple[str, ...]] = {
    "delay_sync": ("lag",),
    "pause_sync": ("lag",),
    "maintenance_reset": ("reads",),  # mode "clear" only
    "crash_restart": ("requests",),
    "process_pause": ("requests", "lag"),
    "network_latency": ("requests", "lag"),
    "network_partition": ("requests", "lag"),
    "connection_reset": ("requests", "lag"),
}
CHAOS_API = "chaos_api"  # the provider of an injection whose answer names none
LAG_FLOOR_MS = 5  # a quiet lag below this is noise: lag must exceed twice it to be a sign
SLOW_FLOOR_MS = 20  # likewise for answer times
QUIET_MIN = 20  # fewer quiet reads or requests than this: the baseline falls back
SLOW_OPS_MIN = 3  # the median of fewer requests says nothing
SIGNS_MIN = 2  # one read a little late, one request lost, could be the machine: two say more
HOLD_SHARE_SHOWN = 4  # a fault holding events back H ms shows lag beyond H / this
FAULTS_LISTED_MAX = 1000  # per-fault rows kept in the report (counts cover every fault)
WORKLOAD_FS = ("open", "draw", "repay", "limit", "status", "display")
_BY_INVOKE = operator.attrgetter("invoke_ms", "index")


@dataclass
class Baseline:
    lag_ms: float  # a read behind by more than this is a lag sign
    slow_ms: float  # a median answer time above this is a slow sign
    quiet_reads: int
    quiet_requests: int


@dataclass
class _Fault:
    window: FaultWindow
    provider: str  # who carried it out, as its injection's answer says
    signs: dict[str, int] = field(default_factory=dict)  # its own
    shared: dict[str, int] = field(default_factory=dict)  # explained by others too
    chances: dict[str, int] = field(default_factory=dict)
    worst_lag_ms: int = 0


class _Acks:
    """One account's acknowledged writes in order of acknowledgement, for "which write made
    while a fault was on did a read come after" and "how far behind was a read"."""

    def __init__(self, acked: list[tuple[int, int, int]]) -> None:
        """`acked`: (ack_ms, invoke_ms, seq) of each write, in order of acknowledgement."""
        self.ack_ms = [ack_ms for ack_ms, _, _ in acked]
        self.invoke_ms = [invoke_ms for _, invoke_ms, _ in acked]
        # The largest seq acknowledged up to each.
        self.seq_max = list(itertools.accumulate((seq for _, _, seq in acked), max))

    def lag_ms(self, read_ms: int, as_of_seq: int) -> int:
        """From the first acknowledgement of a write the read lacks to the read (0: current)."""
        n = bisect.bisect_left(self.ack_ms, read_ms)
        first = bisect.bisect_right(self.seq_max, as_of_seq, 0, n)
        return read_ms - self.ack_ms[first] if first < n else 0

    def latest_before(self, t_ms: float) -> int | None:
        """The index of the last write acknowledged by `t_ms`."""
        n = bisect.bisect_right(self.ack_ms, t_ms)
        return n - 1 if n else None


def fault_effects(history: History) -> dict:
    """Each injection's effect, and the counts the gate and the summaries read."""
    ops = sorted((op for op in history.ops if op.f in WORKLOAD_FS and op.complete_ms is not None),
                 key=_BY_INVOKE)
    end_ms = max((op.complete_ms or op.invoke_ms for op in history.ops), default=0)
    sla_ms = history.meta.get("sla_ms") if type(history.meta.get("sla_ms")) is int else 1000
    acks = _acknowledged(ops)
    lags = _read_lags(ops, acks)
    faults = _faults(history)
    baseline = _baseline(history, ops, lags, faults, end_ms, sla_ms)
    spans = {id(f): _spans(f.window, baseline, end_ms, sla_ms) for f in faults}
    by_invoke = [op.invoke_ms for op in ops]
    # How far back a request in flight when a fault began may have been sent.
    reach_back_ms = max((op.complete_ms - op.invoke_ms for op in ops), default=0)
    slowing = _Cover([spans[id(f)].on for f in faults if "slow" in SHOWS.get(f.window.kind, ())])
    claims: dict[tuple[int, str], int] = {}
    marked: dict[int, list[tuple[int, str, int]]] = {}
    for fault in faults:
        marked[id(fault)] = found = _signs(fault, spans[id(fault)], ops, by_invoke, lags,
                                           reach_back_ms)
        for index, sign, _ in found:
            claims[(index, sign)] = claims.get((index, sign), 0) + 1
    for fault in faults:
        for index, sign, lag_ms in marked[id(fault)]:
            own = claims[(index, sign)] == 1
            into = fault.signs if own else fault.shared
            into[sign] = into.get(sign, 0) + 1
            if own:
                fault.worst_lag_ms = max(fault.worst_lag_ms, lag_ms)
        _slow(fault, spans[id(fault)], slowing, ops, by_invoke, baseline)
        fault.chances = _chances(fault, spans[id(fault)], ops, by_invoke, acks)
    rows = _vouched([_row(fault) for fault in faults]) + _refused(history)
    return _summary(rows, baseline)


# -- what the history holds ---------------------------------------------------------------------

def _acknowledged(ops: list[Op]) -> dict[str, _Acks]:
    by_account: dict[str, list[tuple[int, int, int]]] = {}
    for op in ops:
        if op.outcome == "ok" and op.f != "display" and type(op.response) is dict:
            seq = op.response.get("seq")
            if type(seq) is int:
                by_account.setdefault(str(op.account_id), []).append(
                    (op.complete_ms, op.invoke_ms, seq))
    return {account: _Acks(sorted(acked)) for account, acked in by_account.items()}


def _read_lags(ops: list[Op], acks: dict[str, _Acks]) -> dict[int, int]:
    """op index -> lag of each display read answered with an as_of_seq."""
    out = {}
    for op in ops:
        if op.f == "display" and op.outcome == "ok" and isinstance(op.response, dict):
            as_of_seq = op.response.get("as_of_seq")
            account = acks.get(str(op.account_id))
            if type(as_of_seq) is int:
                out[op.index] = 0 if account is None else account.lag_ms(op.invoke_ms, as_of_seq)
    return out


def _faults(history: History) -> list[_Fault]:
    injections = {str(op.response.get("fault_id")): op for op in history.ops
                  if op.f == "fault_add" and op.outcome == "ok" and isinstance(op.response, dict)}
    out = []
    for window in history.fault_windows():
        op = injections.get(window.fault_id)
        if op is None and window.fault_id.startswith("unanswered@"):
            op = history.ops[int(window.fault_id.split("@")[1])]
        answer = op.response if op is not None and isinstance(op.response, dict) else {}
        out.append(_Fault(window, str(answer.get("provider") or CHAOS_API)))
    return out


def _sign_of(op: Op, lag_ms: int | None, lag_bound_ms: float) -> list[tuple[str, int]]:
    """The per-request signs this op shows (slow is judged over many, in `_slow`)."""
    out = []
    if op.http_status is None and op.outcome == "info":
        out.append(("no_answer", 0))
    elif op.http_status == 503 and op.f == "display":
        out.append(("unavailable", 0))
    elif op.http_status is not None and op.http_status >= 500:
        out.append(("server_error", 0))
    if lag_ms is not None and lag_ms > lag_bound_ms:
        out.append(("lag", lag_ms))
    return out


# -- the quiet baseline -------------------------------------------------------------------------

def _baseline(history: History, ops: list[Op], lags: dict[int, int], faults: list[_Fault],
              end_ms: int, sla_ms: int) -> Baseline:
    """Reads and answer times while no fault was on, nor had just been: the setup phase (the
    nemesis has not begun) and the quiet moments of the safety phase."""
    last_ms = history.phase_start_ms("convergence") or end_ms
    busy = sorted((f.window.start_ms, (f.window.end_ms if f.window.end_ms is not None
                                       else end_ms) + sla_ms) for f in faults)
    starts = [s for s, _ in busy]
    reach = []
    for _, until in busy:  # reach[n]: the latest end among the first n+1 spans
        reach.append(max(until, reach[-1]) if reach else until)

    def quiet(op: Op) -> bool:
        n = bisect.bisect_right(starts, op.complete_ms) - 1
        return op.invoke_ms < last_ms and (n < 0 or reach[n] < op.invoke_ms)

    calm = [op for op in ops if quiet(op)]
    quiet_lags = sorted(lags[op.index] for op in calm if op.index in lags)
    answered = sorted(op.complete_ms - op.invoke_ms for op in calm if op.http_status is not None)
    if len(quiet_lags) >= QUIET_MIN:
        lag_base = max(_p99(quiet_lags), LAG_FLOOR_MS)
    else:  # never quiet for long: a tenth of the service level stands in for the pipeline's lag
        lag_base = max(sla_ms / 10, LAG_FLOOR_MS)
    if len(answered) < QUIET_MIN:
        answered = sorted(op.complete_ms - op.invoke_ms for op in ops if op.http_status is not None)
    slow_base = max(_p99(answered) if answered else 0, SLOW_FLOOR_MS)
    return Baseline(2 * lag_base, 1.5 * slow_base, len(quiet_lags), len(answered))


def _p99(values: list[int]) -> float:
    return values[min(len(values) - 1, math.ceil(0.99 * len(values)) - 1)]


# -- one fault ----------------------------------------------------------------------------------

@dataclass
class _Spans:
    on: tuple[float, float]  # while it was on
    after: tuple[float, float]  # while what it did may still show (a rebuild, a catch-up)
    hold_ms: int  # how long it holds an event back (0: until removed)
    lag_ms: float  # a read behind by more than this is a lag sign of it


def _spans(window: FaultWindow, baseline: Baseline, end_ms: int, sla_ms: int) -> _Spans:
    stop = window.end_ms if window.end_ms is not None else end_ms
    hold_ms = delay_ms_of(window.kind, window.params)
    tail = sla_ms if window.kind in ("maintenance_reset", "crash_restart") else \
        max(hold_ms, baseline.lag_ms)
    # A fault that holds events back for long shows long lag: a read a little late on a busy
    # machine is not its sign.
    lag_ms = max(baseline.lag_ms, hold_ms / HOLD_SHARE_SHOWN)
    return _Spans((window.start_ms, stop), (window.start_ms, stop + tail), hold_ms, lag_ms)


def _within(ops: list[Op], by_invoke: list[int], lo: float, hi: float) -> list[Op]:
    return ops[bisect.bisect_left(by_invoke, lo):bisect.bisect_right(by_invoke, hi)]


def _signs(fault: _Fault, spans: _Spans, ops: list[Op], by_invoke: list[int],
           lags: dict[int, int], reach_back_ms: int) -> list[tuple[int, str, int]]:
    """(op index, sign, lag) of every per-request sign this fault's kind could explain."""
    shows = SHOWS.get(fault.window.kind, ())
    if not shows:
        return []
    lo, hi = spans.after
    # A request in flight when the fault began may have been cut by it.
    earliest = bisect.bisect_left(by_invoke, lo - reach_back_ms)
    out = []
    for op in ops[earliest:bisect.bisect_right(by_invoke, hi)]:
        if op.complete_ms < lo:
            continue
        in_flight_while_on = op.invoke_ms <= spans.on[1]
        for sign, lag_ms in _sign_of(op, lags.get(op.index), spans.lag_ms):
            if sign not in shows:
                continue
            if sign in ("no_answer", "server_error") and not in_flight_while_on:
                continue
            if sign in ("lag", "unavailable") and op.invoke_ms < lo:
                continue  # a read sent before it began shows what came before
            out.append((op.index, sign, lag_ms))
    return out


class _Cover:
    """How many of some spans cover a moment, by bisection."""

    def __init__(self, spans: list[tuple[float, float]]) -> None:
        self.starts = sorted(lo for lo, _ in spans)
        self.ends = sorted(hi for _, hi in spans)

    def count(self, t_ms: float) -> int:
        return bisect.bisect_right(self.starts, t_ms) - bisect.bisect_left(self.ends, t_ms)


def _slow(fault: _Fault, spans: _Spans, slowing: _Cover, ops: list[Op], by_invoke: list[int],
          baseline: Baseline) -> None:
    """Slow is judged over the requests sent while it was on: their median, against the quiet
    p99; over those sent while no other fault that can slow requests was on, when there are
    enough of them (its own sign), else over all (a shared one)."""
    if "slow" not in SHOWS.get(fault.window.kind, ()):
        return
    lo, hi = spans.on
    sent = [op for op in _within(ops, by_invoke, lo, hi) if op.http_status is not None]
    alone = [op for op in sent if slowing.count(op.invoke_ms) == 1]
    for group, into in ((alone, fault.signs), (sent, fault.shared)):
        if len(group) >= SLOW_OPS_MIN:
            if stats_lib.median(op.complete_ms - op.invoke_ms for op in group) > baseline.slow_ms:
                into["slow"] = into.get("slow", 0) + len(group)
            return


def _chances(fault: _Fault, spans: _Spans, ops: list[Op], by_invoke: list[int],
             acks: dict[str, _Acks]) -> dict[str, int]:
    needs = NEEDS.get(fault.window.kind, ())
    out: dict[str, int] = {}
    lo, hi = spans.on
    if "requests" in needs:
        out["requests"] = len(_within(ops, by_invoke, lo, hi))
    if "lag" in needs:
        out["lag"] = _lag_chances(spans, ops, by_invoke, acks)
    if "reads" in needs:
        out["reads"] = sum(1 for op in _within(ops, by_invoke, *spans.after)
                           if op.f == "display" and str(op.account_id) in acks
                           and acks[str(op.account_id)].ack_ms[0] < lo)
    return out


def _lag_chances(spans: _Spans, ops: list[Op], by_invoke: list[int],
                 acks: dict[str, _Acks]) -> int:
    """Reads that would have been a lag sign had the fault acted: after a write sent and
    acknowledged while it was on, later than the lag bound (so behind by more than it) and,
    for a fault that holds events back a while, early enough that it still held that write."""
    lo, hi = spans.on
    bound = spans.lag_ms
    if spans.hold_ms and spans.hold_ms * 0.8 <= bound:
        return 0  # it holds events back less than the service's own lag: nothing to tell
    count = 0
    for op in _within(ops, by_invoke, lo, hi):
        account = acks.get(str(op.account_id))
        if op.f != "display" or account is None:
            continue
        n = account.latest_before(op.invoke_ms - bound)
        if n is None or account.invoke_ms[n] < lo or account.ack_ms[n] > hi:
            continue
        if spans.hold_ms and op.invoke_ms - account.ack_ms[n] >= spans.hold_ms * 0.8:
            continue
        count += 1
    return count


# -- verdicts -----------------------------------------------------------------------------------

def _row(fault: _Fault) -> dict:
    window = fault.window
    effect, why = _verdict(fault)
    row = {"fault_id": window.fault_id, "kind": window.kind, "label": window.describe(),
           "provider": fault.provider, "start_ms": window.start_ms, "end_ms": window.end_ms,
           "effect": effect, "signs": dict(fault.signs), "why": why}
    if fault.shared:
        row["shared_signs"] = dict(fault.shared)
    if fault.chances:
        row["chances"] = dict(fault.chances)
    return row


def _verdict(fault: _Fault) -> tuple[str, str]:
    kind = fault.window.kind
    if sum(fault.signs.values()) >= SIGNS_MIN:
        words = ", ".join(f"{n} {_SIGN_WORDS[s]}" for s, n in sorted(fault.signs.items()))
        worst = f" (up to {fault.worst_lag_ms:,} ms behind)" if "lag" in fault.signs else ""
        return "observed", f"{words}{worst}"
    if fault.signs:
        sign = next(iter(fault.signs))
        return "undetermined", f"a single sign ({_SIGN_WORDS[sign]}): too few to tell from noise"
    if fault.shared:
        words = ", ".join(f"{n} {_SIGN_WORDS[s]}" for s, n in sorted(fault.shared.items()))
        return "undetermined", (f"{words}, each while another fault that could explain it was "
                                f"on")
    needs = NEEDS.get(kind, ())
    if kind == "maintenance_reset" and fault.window.params.get("mode", "clear") != "clear":
        needs = ()
    if not needs:
        return "undetermined", _UNPROVABLE.get(kind, "its absence proves nothing")
    missing = [need for need in needs if not fault.chances.get(need)]
    if missing:
        return "undetermined", "no chance to show it: " + "; ".join(_NO_CHANCE[m] for m in missing)
    chances = "; ".join(_CHANCE_WORDS[need].format(fault.chances[need]) for need in needs)
    return "not_observed", f"no effect observed: {chances}"


def _vouched(rows: list[dict]) -> list[dict]:
    """An injection that showed nothing is ineffective only if no other of its kind by the same
    provider was seen to act: a provider that works once is not misrouted, and one fault can be
    repaired before anyone looks (a wiped display rebuilt at once)."""
    acted = {(r["kind"], r["provider"]) for r in rows if r["effect"] == "observed"}
    for row in rows:
        if row["effect"] == "not_observed" and (row["kind"], row["provider"]) in acted:
            row["effect"] = "undetermined"
            row["why"] = (f"other {row['kind']} faults by the {row['provider']} provider acted; "
                          f"this one showed nothing although clients had chances "
                          f"({row['why'].removeprefix('no effect observed: ')})")
    return rows


_SIGN_WORDS = {"lag": "reads behind", "unavailable": "503 reads", "no_answer": "unanswered "
               "requests", "server_error": "5xx answers", "slow": "slow requests (median)"}
_UNPROVABLE = {"drop_events": "it drops events by chance; its absence proves nothing",
               "duplicate_events": "a correct service ignores duplicates: nothing to see",
               "reorder_events": "it reorders events by chance; its absence proves nothing",
               "maintenance_reset": "a restored snapshot may be what was shown already"}
_NO_CHANCE = {"requests": "no request went out while it was on",
              "lag": "no read came after a write made while it was on, late enough to tell",
              "reads": "no display of an account written before it was read after it"}
_CHANCE_WORDS = {"requests": "{} requests went out while it was on and none failed or slowed",
                 "lag": "{} reads after writes made while it was on were all current",
                 "reads": "{} reads after it neither failed nor went back"}


def _refused(history: History) -> list[dict]:
    out = []
    for op in history.ops:
        if op.f == "fault_add" and op.outcome == "fail" and isinstance(op.request, dict):
            answer = op.response if isinstance(op.response, dict) else {}
            out.append({"fault_id": None, "kind": str(op.request.get("kind")),
                        "label": str(op.request.get("kind")),
                        "provider": str(answer.get("provider") or CHAOS_API),
                        "start_ms": op.invoke_ms, "end_ms": op.complete_ms, "effect": "refused",
                        "signs": {}, "why": str(answer.get("detail") or op.error
                                                or f"status {op.http_status}")})
    return out


EFFECTS = ("observed", "not_observed", "undetermined", "refused")


def _summary(rows: list[dict], baseline: Baseline) -> dict:
    rows.sort(key=lambda r: (r["start_ms"], str(r["fault_id"])))
    counts = {effect: sum(1 for r in rows if r["effect"] == effect) for effect in EFFECTS}
    by_provider: dict[str, dict[str, int]] = {}
    for row in rows:
        mine = by_provider.setdefault(row["provider"], dict.fromkeys(EFFECTS, 0))
        mine[row["effect"]] += 1
    ineffective = [r for r in rows if r["effect"] == "not_observed"]
    listed = ineffective + [r for r in rows if r["effect"] != "not_observed"]
    return {
        "injected": len(rows) - counts["refused"],
        **counts,
        "by_provider": by_provider,
        "baseline": {"lag_ms": baseline.lag_ms, "slow_ms": baseline.slow_ms,
                     "quiet_reads": baseline.quiet_reads,
                     "quiet_requests": baseline.quiet_requests},
        "ineffective": [{k: r[k] for k in ("fault_id", "kind", "label", "provider", "start_ms",
                                           "why")} for r in ineffective],
        "faults": sorted(listed[:FAULTS_LISTED_MAX], key=lambda r: (r["start_ms"],
                                                                    str(r["fault_id"]))),
    }
