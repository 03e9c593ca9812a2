"""Symptoms: what users feel, measured. "I repaid and my limit did not come back" is a complaint
about time, so for every acknowledged write this measures how long until a display first showed
it, per symptom:

- `restore`: a repayment until the available it gives back is shown;
- `limit_shown`: a limit change until the new credit line is shown;
- `usable`: a cure (a repay whose ledger entries include the cure status entry) until the account
  is shown active (usable) again;
- `draw_shown`: a draw until the reduced available is shown.

The wait of a write is measured from its acknowledgement to the completion of the first display
read of its account that was sent at or after that acknowledgement and whose `as_of_seq` is at or
beyond the write's entry (for a repay that cured, its cure entry: until the cure shows, the
account is overdue and its available 0, so nothing came back yet). It is conservative: the user
waited at least until the acknowledgement and the read had answered by its completion, so the
wait is never shorter than the truth for a user reading as the workload did; it is longer by at
most the read's own latency and the gap since the previous read of the account.

A display with `as_of_seq` null cannot tell what it reflects, so it shows nothing here. A write
no such read showed before the run ended is counted as `never_shown` (censored), never dropped:
in the percentiles it ranks after every shown write, and a percentile that lands on one is null
(its wait is longer than the run could see). Writes the ledger does not vouch for (lost or
duplicated: the writes checker's findings) have no entry to wait for and are not timed.

Pure: no I/O, no clock; the same analysis gives the same numbers.
"""

from __future__ import annotations

import bisect
import math
import operator
from typing import TYPE_CHECKING, NamedTuple

from . import contract
from . import statistics as numbers
from .entries import is_cure_entry
from .history import FaultIndex, History, kinds_of
from .write_groups import entry_owner

if TYPE_CHECKING:
    from .analysis import AccountIndex, Analysis


class Symptom(NamedTuple):
    words: str      # what the user waits for, for reports and gate reasons
    writes: str     # the writes it is measured over, plural


SYMPTOMS: dict[str, Symptom] = {
    "restore": Symptom("repayment until the available is restored", "repayments"),
    "limit_shown": Symptom("limit change until the credit line is shown", "limit changes"),
    "usable": Symptom("cure until the account is usable again", "cures"),
    "draw_shown": Symptom("draw until the reduced available is shown", "draws"),
}
# The bucket of writes in flight while no fault was on.
NO_FAULT = "none"
_BY_SEND = operator.attrgetter("invoke_ms", "index")


class Wait(NamedTuple):
    """One acknowledged write and when a display first showed it."""

    symptom: str
    account_id: str
    request_id: str
    seq: int                 # the entry a display must reflect to show it
    ack_ms: int
    shown_ms: int | None     # completion of the first read that showed it; None: never
    wait_ms: int | None      # shown_ms - ack_ms; None: never shown
    faults: tuple[str, ...]  # kinds on at any moment from its first send to its acknowledgement


def symptom_statistics(a: "Analysis") -> dict:
    """{symptom: numbers, with `by_fault` {kind or "none": numbers}}, every symptom present
    (count 0 when the run made no such write); numbers as in `summary`."""
    by_symptom: dict[str, list[Wait]] = {name: [] for name in SYMPTOMS}
    for wait in waits(a):
        by_symptom[wait.symptom].append(wait)
    return {name: {**summary(found), "by_fault": by_fault(found)}
            for name, found in by_symptom.items()}


def by_fault(found: list[Wait]) -> dict[str, dict]:
    """`summary` per fault kind on while the write was in flight ("none" for none); a write
    under several kinds counts under each."""
    groups: dict[str, list[Wait]] = {}
    for wait in found:
        for kind in wait.faults or (NO_FAULT,):
            groups.setdefault(kind, []).append(wait)
    return {kind: summary(groups[kind]) for kind in sorted(groups)}


def summary(found: list[Wait]) -> dict:
    """`count` writes, `never_shown` of them; p50, p90, p99 over all of them, a never-shown write
    ranked after every shown one (null when the rank lands on one); `max` the longest wait that
    ended."""
    shown = sorted(filter(_is_shown, map(_WAIT_MS, found)))
    never = len(found) - len(shown)
    ranked: list[float] = [*shown, *[math.inf] * never]
    out = numbers.percentiles(ranked)  # type: ignore[arg-type]
    assert out["count"] == len(found)
    return {"count": len(found), "never_shown": never,
            **{p: _finite(out[p]) for p in ("p50", "p90", "p99")},
            "max": shown[-1] if shown else None}


_WAIT_MS = operator.attrgetter("wait_ms")


def _is_shown(wait_ms: int | None) -> bool:
    return wait_ms is not None


def _finite(value: float | None) -> int | None:
    return None if value is None or value == math.inf else int(value)


# -- the waits ------------------------------------------------------------------------------

def waits(a: "Analysis") -> list[Wait]:
    """Every acknowledged write of a symptom, in ledger order per account, accounts in the
    order the ledger first names them."""
    reads = _reads_by_account(a.history)
    in_flight = _InFlight(a.faults)
    out: list[Wait] = []
    for account_id, account in a.accounts.items():
        shows = _Shows(reads.get(account_id, []))
        for symptom, n, seq in _targets(account):
            ack_ms = account.acks_ms[n]
            assert ack_ms is not None
            group, _ = entry_owner(account.entries[n]["request_id"], a.groups)
            assert group is not None, "an acknowledgement vouches only for its own write's entry"
            shown_ms = shows.first_showing(ack_ms, seq)
            out.append(Wait(symptom, account_id, group.request_id, seq, ack_ms, shown_ms,
                            None if shown_ms is None else shown_ms - ack_ms,
                            in_flight.kinds(group.first_invoke_ms, ack_ms)))
    return out


class _InFlight:
    """The fault kinds on at any moment from `lo_ms` to `hi_ms`: those on at `lo_ms` (computed
    once per stretch by the index), unless a window starts within the span, which a write's
    short flight rarely meets."""

    def __init__(self, faults: FaultIndex) -> None:
        self._faults = faults
        self._starts_ms = sorted(w.start_ms for w in faults.windows)

    def kinds(self, lo_ms: int, hi_ms: int) -> tuple[str, ...]:
        starts_ms = self._starts_ms
        if bisect.bisect_right(starts_ms, hi_ms) == bisect.bisect_right(starts_ms, lo_ms):
            return self._faults.kinds_at(lo_ms)
        return tuple(kinds_of(self._faults.overlapping(lo_ms, max(lo_ms, hi_ms))))


def _targets(account: "AccountIndex") -> list[tuple[str, int, int]]:
    """(symptom, index of the entry, seq a display must reflect) for each entry an
    acknowledgement vouches for."""
    entries = account.entries
    cure_seq = {contract.cured_request_id(e["request_id"]): e["seq"]
                for e in entries if is_cure_entry(e)}
    out = []
    for n, (entry, ack_ms) in enumerate(zip(entries, account.acks_ms)):
        if ack_ms is None:
            continue
        kind = entry["type"]
        if kind == "draw":
            out.append(("draw_shown", n, entry["seq"]))
        elif kind == "limit":
            out.append(("limit_shown", n, entry["seq"]))
        elif kind == "repay":
            # A cure commits with its repay, so it is always the later of the two.
            out.append(("restore", n, max(entry["seq"], cure_seq.get(entry["request_id"], 0))))
        elif kind == "status" and is_cure_entry(entry):
            out.append(("usable", n, entry["seq"]))
    return out


def _reads_by_account(history: History) -> dict[str, list]:
    """Each account's answered display reads that say what they reflect, in order of sending."""
    out: dict[str, list] = {}
    for op in history.ops:
        if op.f == "display" and op.outcome == "ok" and op.complete_ms is not None \
                and isinstance(op.response, dict) and type(op.response.get("as_of_seq")) is int:
            out.setdefault(str(op.account_id), []).append(op)
    for reads in out.values():
        reads.sort(key=_BY_SEND)
    return out


class _Shows:
    """The reads of one account, indexed for "the first read sent at or after t that reflects
    seq": `_higher[j]` is the next read whose as_of_seq exceeds read j's, so a search jumps over
    every read that cannot reflect more than the one it stands on. Each jump climbs to a newer
    as_of_seq, so a search takes at most as many jumps as the account has entries."""

    def __init__(self, reads: list) -> None:
        self._sent_ms = [op.invoke_ms for op in reads]
        self._as_of = [op.response["as_of_seq"] for op in reads]
        self._done_ms = [op.complete_ms for op in reads]
        count = len(reads)
        self._higher = [count] * count
        rising: list[int] = []  # indices awaiting a later read with a larger as_of_seq
        for j, as_of in enumerate(self._as_of):
            while rising and self._as_of[rising[-1]] < as_of:
                self._higher[rising.pop()] = j
            rising.append(j)

    def first_showing(self, after_ms: int, seq: int) -> int | None:
        """When the first read sent at or after `after_ms` with as_of_seq >= `seq` answered."""
        j = bisect.bisect_left(self._sent_ms, after_ms)
        count = len(self._as_of)
        while j < count and self._as_of[j] < seq:
            assert self._higher[j] > j
            j = self._higher[j]
        return self._done_ms[j] if j < count else None
