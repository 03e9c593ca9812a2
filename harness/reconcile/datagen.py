"""A seeded generator of exported data: a ledger that keeps every contract rule, a display that
matches it, and a known number of planted mismatches, written as ledger.parquet and
display.parquet. A reconcile over the files must find exactly what `generate` returns.

Speed comes from simulating all accounts at once: the ledger is built round by round (round k
holds every account's k-th entry, in a fresh random account order, so accounts interleave in
seq order as in a real ledger), each round a handful of numpy operations over all accounts.
Planted ledger defects follow a short script per account (a few Python steps each, there are
only a few); display defects edit the finished display rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from .. import oracle

STATUSES = ("active", "frozen", "overdue", "closed")
ACTIVE, FROZEN, OVERDUE, CLOSED = range(4)
OPEN, DRAW, REPAY, LIMIT, STATUS, CURE = range(6)
TYPE_NAMES = ("open", "draw", "repay", "limit", "status", "status")
LINE_MIN_FEN, LINE_MAX_FEN = 1_000_00, 50_000_00
BASE_AT_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z: entries are 10 ms apart from here
STEP_AT_US = 10_000

# Planted defects: name -> (finding kind, severity, entries its script needs).
LEDGER_DEFECTS = {
    "overdraw": ("ledger_rule_violation", "critical", 3),
    "negative_outstanding": ("ledger_rule_violation", "critical", 3),
    "draw_on_frozen": ("ledger_rule_violation", "critical", 3),
    "close_with_balance": ("ledger_rule_violation", "major", 3),
    "missing_cure": ("ledger_rule_violation", "major", 4),
    "extra_cure": ("ledger_rule_violation", "major", 2),
}
DISPLAY_DEFECTS = {
    "display_above": ("inconsistent_display", "critical"),
    "display_below": ("inconsistent_display", "major"),
    "future_seq": ("inconsistent_display", "major"),
    "missing_row": ("display_divergence", "major"),
    "unknown_account": ("inconsistent_display", "critical"),
    "null_seq_wrong": ("display_divergence", "critical"),
}
DEFECTS = tuple(LEDGER_DEFECTS) + tuple(DISPLAY_DEFECTS)


@dataclass(frozen=True)
class Planted:
    account_id: str
    defect: str
    kind: str
    severity: str


@dataclass
class Generated:
    ledger_path: Path
    display_path: Path
    planted: list[Planted]
    entries: int
    accounts: int


def account_name(n: np.ndarray | int) -> pl.Series | str:
    if isinstance(n, (int, np.integer)):
        return f"acct-{int(n):08d}"
    return pl.select(pl.format("acct-{}", pl.Series(n).cast(pl.Utf8).str.zfill(8))).to_series()


def generate(accounts: int, entries_per_account: int, seed: int, out_dir: str | Path,
             mismatches: int = 0) -> Generated:
    """Write ledger.parquet and display.parquet under `out_dir`; return what was planted."""
    assert accounts >= 1 and entries_per_account >= 1, "at least one account with one entry"
    rng = np.random.default_rng(seed)
    kinds = _defect_plan(mismatches, entries_per_account, accounts)
    chosen = rng.choice(accounts, size=len(kinds), replace=False) if kinds else np.empty(0, int)
    scripted = {int(a): d for a, d in zip(chosen, kinds) if d in LEDGER_DEFECTS}
    display_edits = {int(a): d for a, d in zip(chosen, kinds) if d in DISPLAY_DEFECTS}
    sim = _simulate(rng, accounts, entries_per_account, scripted)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ledger_path, display_path = out / "ledger.parquet", out / "display.parquet"
    # LZ4: a codec every Parquet reader knows, and the quickest of them to decode, as an export
    # meant to be read again soon would choose.
    sim.ledger_frame().write_parquet(ledger_path, compression="lz4", statistics=False)
    _display_frame(rng, sim, display_edits).write_parquet(display_path, compression="lz4",
                                                          statistics=False)
    planted = [Planted(_planted_account(a, d), d, *_expected(d)) for a, d in zip(chosen, kinds)]
    return Generated(ledger_path, display_path, planted, accounts * entries_per_account, accounts)


def _defect_plan(mismatches: int, entries_per_account: int, accounts: int) -> list[str]:
    fits = [d for d in DEFECTS
            if d not in LEDGER_DEFECTS or LEDGER_DEFECTS[d][2] <= entries_per_account]
    assert mismatches <= accounts, "one planted mismatch per account at most"
    return [fits[n % len(fits)] for n in range(mismatches)]


def _expected(defect: str) -> tuple[str, str]:
    if defect in LEDGER_DEFECTS:
        return LEDGER_DEFECTS[defect][:2]
    return DISPLAY_DEFECTS[defect]


def _planted_account(account: int, defect: str) -> str:
    # The unknown account lives only in the display: a name no ledger account has.
    return f"ghost-{account:08d}" if defect == "unknown_account" else account_name(account)


# -- the ledger -----------------------------------------------------------------------------------

class _Sim:
    """Every account's state and the ledger's columns, filled round by round."""

    def __init__(self, accounts: int, rounds: int) -> None:
        self.accounts, self.rounds = accounts, rounds
        rows = accounts * rounds
        self.account = np.empty(rows, np.int64)
        self.kind = np.empty(rows, np.int8)
        self.value = np.zeros(rows, np.int64)  # amount, credit line or status code
        self.cure_of = np.full(rows, -1, np.int64)  # the repay's seq, on a cure entry
        self.credit_line = np.zeros(accounts, np.int64)
        self.outstanding = np.zeros(accounts, np.int64)
        self.status = np.zeros(accounts, np.int8)
        self.last_seq = np.zeros(accounts, np.int64)
        self.old_view: dict[str, np.ndarray] = {}

    def ledger_frame(self) -> pl.DataFrame:
        rows = len(self.kind)
        seq = pl.Series("seq", np.arange(1, rows + 1, dtype=np.int64))
        seq_text = seq.cast(pl.Utf8)
        kind = pl.Series(self.kind)
        cures = np.flatnonzero(self.cure_of >= 0)
        cure_ids = pl.select(pl.format("r{}:cure", pl.Series(self.cure_of[cures]))).to_series()
        request_id = ("r" + seq_text).scatter(cures, cure_ids)
        is_line = kind.is_in([OPEN, LIMIT])
        is_money = kind.is_in([DRAW, REPAY])
        value = pl.Series(self.value)
        # Small vocabularies are gathered from a table, not formatted row by row.
        reason = pl.Series([None, None, None, "review", "review", "cured"], dtype=pl.Utf8)
        status = pl.Series([*STATUSES, None], dtype=pl.Utf8)
        status_index = np.where((self.kind == STATUS) | (self.kind == CURE), self.value, 4)
        return pl.DataFrame({
            "seq": seq,
            "entry_id": "e" + seq_text,
            "request_id": request_id,
            "account_id": account_name(np.arange(self.accounts)).gather(self.account),
            "type": pl.Series(TYPE_NAMES).gather(kind.cast(pl.UInt32)),
            "at": (seq * STEP_AT_US + BASE_AT_US).cast(pl.Datetime("us", "UTC")),
            "product": pl.Series(["huabei", "jiebei", None]).gather(
                np.where(self.kind == OPEN, self.account % 2, 2)),
            "credit_line": value.zip_with(is_line, pl.Series([None], dtype=pl.Int64)),
            "amount": value.zip_with(is_money, pl.Series([None], dtype=pl.Int64)),
            "reason": reason.gather(kind.cast(pl.UInt32)),
            "status": status.gather(status_index),
        })


def _simulate(rng: np.random.Generator, accounts: int, rounds: int,
              scripted: dict[int, str]) -> _Sim:
    sim = _Sim(accounts, rounds)
    pending = np.full(accounts, -1, np.int64)  # seq of a repay whose cure is due next
    snapshot_round = np.where(rng.random(accounts) < 0.1, rng.integers(0, rounds, accounts),
                              rounds - 1)
    scripts = {a: _script(d, rounds) for a, d in scripted.items()}
    for k in range(rounds):  # bounded: one pass per entry of an account
        order = rng.permutation(accounts)
        rows = slice(k * accounts, (k + 1) * accounts)
        seq_of = np.empty(accounts, np.int64)
        seq_of[order] = np.arange(k * accounts + 1, (k + 1) * accounts + 1)
        kind, value = _round(rng, sim, k, rounds, pending)
        cure_of = np.where(kind == CURE, pending, -1)
        pending = np.where((kind == REPAY) & (sim.status == OVERDUE)
                           & (value == sim.outstanding), seq_of, -1)
        for account, script in scripts.items():  # bounded: the planted accounts
            step_kind, step_value, step_cure = script[k]
            kind[account], value[account] = step_kind, step_value
            # A cure-shaped id naming an entry that was no repay of this account.
            cure_of[account] = seq_of[account] - 1 if step_cure else -1
            pending[account] = -1
        # _apply is the oracle's apply over every account: it never judges, so scripted
        # defects land in the state exactly as the oracle would replay them.
        _apply(sim, kind, value)
        sim.account[rows], sim.kind[rows] = order, kind[order]
        sim.value[rows], sim.cure_of[rows] = value[order], cure_of[order]
        sim.last_seq = seq_of
        _keep_snapshot(sim, snapshot_round == k, seq_of)
    return sim


def _round(rng: np.random.Generator, sim: _Sim, k: int, rounds: int,
           pending: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each account's next entry (kind, value), every one allowed by the oracle."""
    n = sim.accounts
    if k == 0:
        line = rng.integers(LINE_MIN_FEN // 100, LINE_MAX_FEN // 100, n) * 100
        return np.full(n, OPEN, np.int8), line
    status, outstanding = sim.status, sim.outstanding
    available = np.where(status == ACTIVE, np.maximum(0, sim.credit_line - outstanding), 0)
    kind = np.searchsorted(np.array([0.45, 0.75, 0.85]), rng.random(n)).astype(np.int8) + DRAW
    assert (DRAW, REPAY, LIMIT, STATUS) == (1, 2, 3, 4)
    kind[(kind == DRAW) & (available <= 0)] = STATUS
    kind[(kind == REPAY) & ((status == CLOSED) | (outstanding <= 0))] = STATUS
    kind[(kind == LIMIT) & (status == CLOSED)] = STATUS
    draw = _uniform_from_one(rng, available)
    full = rng.random(n) < 0.3
    repay = np.where(full, outstanding, _uniform_from_one(rng, outstanding))
    line = rng.integers(LINE_MIN_FEN // 100, LINE_MAX_FEN // 100, n) * 100
    # Closing is allowed only without a balance; otherwise mostly back to active.
    new_status = np.searchsorted([0.5, 0.65, 0.85], rng.random(n)).astype(np.int64)
    new_status[(new_status == CLOSED) & (outstanding != 0)] = ACTIVE
    value = np.where(kind == DRAW, draw, np.where(kind == REPAY, repay,
                                                  np.where(kind == LIMIT, line, new_status)))
    if k == rounds - 1:
        # A cure needs one more entry than the last round has: clear no overdue balance here.
        clears = (kind == REPAY) & (status == OVERDUE) & (value == outstanding)
        value[clears & (outstanding > 1)] -= 1
        kind[clears & (outstanding <= 1)] = LIMIT
        value[clears & (outstanding <= 1)] = line[clears & (outstanding <= 1)]
    kind[pending >= 0] = CURE
    value[pending >= 0] = ACTIVE
    return kind, value


def _uniform_from_one(rng: np.random.Generator, highest: np.ndarray) -> np.ndarray:
    """A whole number from 1 to `highest` (1 where highest < 1) per element: scaling one
    uniform draw, several times faster than Generator.integers with an array bound; values stay
    far below 2^53, where doubles are exact."""
    top = np.maximum(highest, 1)
    return np.minimum((rng.random(len(top)) * top).astype(np.int64) + 1, top)


def _apply(sim: _Sim, kind: np.ndarray, value: np.ndarray) -> None:
    sim.outstanding += np.where(kind == DRAW, value, 0) - np.where(kind == REPAY, value, 0)
    sim.credit_line = np.where((kind == LIMIT) | (kind == OPEN), value, sim.credit_line)
    sim.status = np.where(kind == OPEN, ACTIVE,
                          np.where((kind == STATUS) | (kind == CURE), value, sim.status)
                          ).astype(np.int8)


def _keep_snapshot(sim: _Sim, mask: np.ndarray, seq_of: np.ndarray) -> None:
    """The state after this round for the accounts whose display is as of this round."""
    available = np.where(sim.status == ACTIVE, np.maximum(0, sim.credit_line - sim.outstanding), 0)
    fields = {"credit_line": sim.credit_line, "outstanding": sim.outstanding,
              "available": available, "status": sim.status.astype(np.int64),
              "as_of_seq": seq_of}
    for name, values in fields.items():
        kept = sim.old_view.setdefault(name, np.zeros(sim.accounts, np.int64))
        kept[mask] = values[mask]


# -- planted ledger defects -----------------------------------------------------------------------

def _script(defect: str, rounds: int) -> list[tuple[int, int, bool]]:
    """(kind, value, is the cure of the entry before) per round; the defect, then filler status
    entries, which are allowed in every state they meet."""
    line = 10_000_00
    steps = {
        "overdraw": [(OPEN, line, False), (DRAW, line // 2, False), (DRAW, line, False)],
        "negative_outstanding": [(OPEN, line, False), (DRAW, 500_00, False),
                                 (REPAY, 600_00, False)],
        "draw_on_frozen": [(OPEN, line, False), (STATUS, FROZEN, False), (DRAW, 100, False)],
        "close_with_balance": [(OPEN, line, False), (DRAW, 300_00, False),
                               (STATUS, CLOSED, False)],
        "missing_cure": [(OPEN, line, False), (DRAW, 300_00, False), (STATUS, OVERDUE, False),
                         (REPAY, 300_00, False)],
        "extra_cure": [(OPEN, line, False), (CURE, ACTIVE, True)],
    }[defect]
    filler = [(STATUS, FROZEN if n % 2 else ACTIVE, False) for n in range(rounds)]
    return (steps + filler)[:rounds]


# -- the display ----------------------------------------------------------------------------------

def _display_frame(rng: np.random.Generator, sim: _Sim, edits: dict[int, str]) -> pl.DataFrame:
    view = {name: values.copy() for name, values in sim.old_view.items()}
    n = sim.accounts
    null_seq = rng.random(n) < 0.05
    for account, defect in edits.items():  # bounded: the planted accounts
        # The ghost of an unknown account is a new row; the real account's row stays as it is.
        if defect != "unknown_account":
            null_seq[account] = defect == "null_seq_wrong"
    # A null as_of_seq is judged against the final state, so those rows show it.
    final_available = np.where(sim.status == ACTIVE,
                               np.maximum(0, sim.credit_line - sim.outstanding), 0)
    final = {"credit_line": sim.credit_line, "outstanding": sim.outstanding,
             "available": final_available, "status": sim.status.astype(np.int64)}
    for name, values in final.items():
        view[name][null_seq] = values[null_seq]
    keep = np.ones(n, bool)
    ghosts = []
    for account, defect in edits.items():  # bounded: the planted accounts
        if defect == "null_seq_wrong":
            view["available"][account] += 1 + int(rng.integers(0, 500))
        elif defect == "display_above":
            view["available"][account] += 1 + int(rng.integers(0, 500))
        elif defect == "display_below":
            view["outstanding"][account] += 1 + int(rng.integers(0, 500))
        elif defect == "future_seq":
            view["as_of_seq"][account] = sim.last_seq[account] + 1 + int(rng.integers(0, 5))
            for name, values in final.items():
                view[name][account] = values[account]
        elif defect == "missing_row":
            keep[account] = False
        elif defect == "unknown_account":
            ghosts.append(account)
    frame = pl.DataFrame({
        "account_id": account_name(np.arange(n)),
        "credit_line": view["credit_line"],
        "outstanding": view["outstanding"],
        "available": view["available"],
        "status": pl.Series(STATUSES).gather(view["status"]),
        "usable": view["available"] > 0,
        "as_of_seq": pl.Series(view["as_of_seq"]).set(pl.Series(null_seq), None),
    }).filter(pl.Series(keep))
    if ghosts:
        frame = pl.concat([frame, _ghost_rows(ghosts, int(sim.last_seq.max()))])
    return frame


def _ghost_rows(accounts: list[int], as_of_seq: int) -> pl.DataFrame:
    state = oracle.opened(5_000_00).view()
    return pl.DataFrame({
        "account_id": [_planted_account(a, "unknown_account") for a in accounts],
        "credit_line": [state["credit_line"]] * len(accounts),
        "outstanding": [state["outstanding"]] * len(accounts),
        "available": [state["available"]] * len(accounts),
        "status": [state["status"]] * len(accounts),
        "usable": [state["usable"]] * len(accounts),
        "as_of_seq": pl.Series([as_of_seq] * len(accounts), dtype=pl.Int64),
    })
