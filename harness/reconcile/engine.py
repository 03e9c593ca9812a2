"""The columnar engine: the oracle over a whole exported ledger as array operations.

Polars checks each entry's format and hashes its ids (one parallel pass over the frame); numpy
does the rest. Accounts are made contiguous by one sort of a 64-bit key (the top bits of the
account's hash, the row's position below them), so within an account rows stay in seq order and
every per-account quantity is a scan over the sorted arrays:

- outstanding after each entry: a cumulative sum of signed amounts, restarted at each open;
- credit line and status after each entry: the value of the latest open/limit (open/status)
  entry, found by a running maximum of row positions (a forward fill);
- the state before an entry: the row above, unless the row starts its account;
- every acceptance rule, the cure rule and "first entry an open" as boolean conditions on those.

Only the flagged rows (a handful in a healthy ledger) are explained in Python, in the words of
`harness/checkers/ledger.py` (for the ledger) and `rows.display_finding` (for the display).

Exactness: accounts are told apart by two independent 64-bit hashes of the account_id, and the
display is matched to the ledger by the same pair and then compared as text, so two accounts are
merged only if both hashes collide (odds about n^2 / 2^129: below 10^-24 for 10^7 accounts).
Everything else is exact integer arithmetic.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from .. import contract
from ..findings import Finding, entry_words, fen
from . import partition as partitions
from .rows import DisplayCase, display_finding, entry_dict, is_rfc3339
from .sources import Table

CHECKER = "ledger"  # ledger-rule findings speak for the ledger checker, as the reference's do
OPEN, DRAW, REPAY, LIMIT, STATUS = range(5)
ACTIVE, FROZEN, OVERDUE, CLOSED = range(4)
BAD_CODE = 255
TYPE_CODES = {name: code for code, name in enumerate(contract.ENTRY_TYPES)}
STATUS_CODES = {name: code for code, name in enumerate(contract.STATUSES)}
assert TYPE_CODES["status"] == STATUS and STATUS_CODES["closed"] == CLOSED
# The entry-format problems in the order the ledger checker tests them; code = index + 1.
PROBLEMS = ("bad_seq", "bad_entry_id", "bad_request_id", "bad_account_id", "bad_type", "bad_at",
            "bad_product", "bad_credit_line", "bad_amount", "bad_status", "bad_reason")
REUSED = "entry_id_reused"
EXAMPLES_MAX = 3
ID_CLASS = "[A-Za-z0-9._:-]"
ID_REGEX = f"^{ID_CLASS}{{1,64}}$"
REQUEST_ID_REGEX = f"^{ID_CLASS}{{1,64}}({re.escape(contract.CURE_SUFFIX)})?$"
# Timestamps this matches are RFC 3339 for certain (days up to 28 exist in every month); the
# few it does not match are judged one by one with the checker's own parse.
SURE_AT_REGEX = (r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3])"
                 r":[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")
SEEDS = (0x5EED_0001, 0x5EED_0002)


def run(ledger: Table, display: Table, cut_seq: int | None,
        partition: tuple[int, int] | None) -> tuple[list[Finding], dict]:
    """Findings and stats (seconds per stage: derive, check, compare, classify)."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    shape = _shape(ledger.frame)
    accounts = _group(ledger.frame, shape, partition)
    state = _derive(accounts)
    seconds["derive"] = _lap(started)
    started = time.perf_counter()
    flags = _judge(accounts, state, ledger.frame)
    seconds["check"] = _lap(started)
    started = time.perf_counter()
    display_frame = _partitioned_display(display.frame, partition)
    cases = _compare(display_frame, accounts, state, cut_seq)
    seconds["compare"] = _lap(started)
    started = time.perf_counter()
    malformed = _malformed(ledger.frame, shape, accounts, partition)
    findings = (_structure_findings(malformed)
                + _rule_findings(ledger.frame, accounts, state, flags)
                + [display_finding(case) for case in cases])
    seconds["classify"] = _lap(started)
    stats = {"accounts": len(accounts.starts),
             "ledger_entries": len(accounts.order) + len(malformed),
             "display_rows": display_frame.height}
    return findings, {**stats, "seconds": seconds}


def _lap(started: float) -> float:
    return time.perf_counter() - started


# -- 1. the format of each entry ------------------------------------------------------------------

@dataclass
class _Shape:
    """Per source row, in seq order: the first format problem (0: none) and the compact
    columns the rules need. The account_id's own format is judged per account later (a tenth
    of the work), see `_bad_account_ids`."""

    problem: np.ndarray  # uint8, index into PROBLEMS + 1
    kind: np.ndarray  # uint8: TYPE_CODES, + CURE_BIT for a status entry with a cure's id
    value: np.ndarray  # int64: amount, credit line or status code, by kind
    account_hashes: tuple[np.ndarray, np.ndarray] | None  # two independent uint64 hashes
    entry_id_hash: np.ndarray | None  # uint64


CURE_BIT = 16
ACCOUNT_PROBLEM = PROBLEMS.index("bad_account_id") + 1


def _shape(frame: pl.DataFrame) -> _Shape:
    # One parallel pass over the text columns; each column is read by one expression only (a
    # column used twice in one polars select may be scanned twice).
    # The codes first, on their own: an expression used several times in one select may be
    # evaluated several times.
    codes = frame.select(_codes("type", contract.ENTRY_TYPES).alias("kind"),
                         _codes("status", contract.STATUSES).alias("status_code"))
    frame = frame.with_columns(codes)  # shares the columns' memory
    kind_code = pl.col("kind")
    has_line = kind_code.is_in([OPEN, LIMIT])
    money_range = (pl.when(has_line).then(pl.col("credit_line").is_between(0, contract.FEN_MAX))
                   .otherwise(pl.col("amount").is_between(1, contract.FEN_MAX)).fill_null(False))
    # One int64 per row for what the entry changes: built here, not from numpy copies of the
    # nullable money columns, which would cost two more 80 MB arrays at 10^7 entries.
    value = (pl.when(has_line).then(pl.col("credit_line"))
             .when(kind_code.is_in([DRAW, REPAY])).then(pl.col("amount"))
             .otherwise(pl.col("status_code").cast(pl.Int64)).fill_null(0))
    base = frame.select(
        kind_code,
        value.alias("value"),
        money_range.alias("money_ok"),
        pl.col("status_code").alias("status"),
        pl.col("entry_id").str.contains(ID_REGEX).fill_null(False).alias("entry_id_ok"),
        pl.col("request_id").str.contains(REQUEST_ID_REGEX).fill_null(False)
        .alias("request_id_ok"),
        pl.col("request_id").str.ends_with(contract.CURE_SUFFIX).fill_null(False).alias("cure"),
        pl.col("product").is_in(list(contract.PRODUCTS)).fill_null(False).alias("product_ok"),
        _reason_ok(frame).alias("reason_ok"),
        _at_ok(frame).alias("at_ok"),
        _at_unsure(frame).alias("at_unsure"),
        pl.col("account_id").hash(SEEDS[0]).alias("h1"),
        pl.col("account_id").hash(SEEDS[1]).alias("h2"),
        pl.col("entry_id").hash(SEEDS[0]).alias("entry_id_hash"),
    )
    kind = base["kind"].to_numpy()
    status = base["status"].to_numpy()
    is_open, is_limit, is_status = kind == OPEN, kind == LIMIT, kind == STATUS
    is_money = (kind == DRAW) | (kind == REPAY)
    has_line = is_open | is_limit
    money_bad = ~base["money_ok"].to_numpy()
    checks = [
        lambda: frame["seq"].to_numpy() < 0,
        lambda: ~base["entry_id_ok"].to_numpy(),
        lambda: ~base["request_id_ok"].to_numpy(),
        lambda: frame["account_id"].is_null().to_numpy(),  # the text is judged per account
        lambda: kind == BAD_CODE,
        lambda: ~base["at_ok"].to_numpy(),
        lambda: is_open & ~base["product_ok"].to_numpy(),
        lambda: has_line & money_bad,
        lambda: is_money & money_bad,
        lambda: is_status & (status == BAD_CODE),
        lambda: (is_limit | is_status) & ~base["reason_ok"].to_numpy(),
    ]
    assert len(checks) == len(PROBLEMS)
    problem = np.zeros(len(kind), np.uint8)
    for code in range(len(checks), 0, -1):  # bounded: one per problem; the first one wins
        failed = checks[code - 1]()
        if failed.any():
            problem[failed] = code
    _confirm_at(frame, base["at_unsure"], problem)
    packed = kind | np.where(is_status & base["cure"].to_numpy(), CURE_BIT, 0).astype(np.uint8)
    return _Shape(problem, packed, base["value"].to_numpy(),
                  (base["h1"].to_numpy(), base["h2"].to_numpy()),
                  base["entry_id_hash"].to_numpy())


def _codes(column: str, names: tuple[str, ...]) -> pl.Expr:
    """The index of the value in `names`, BAD_CODE when it is none of them (or null). A chain of
    equalities: a short text or a category compares as one machine word, which beats a hash
    lookup per row."""
    code = pl.lit(BAD_CODE, pl.UInt8)
    for index in range(len(names) - 1, -1, -1):  # bounded by the names
        code = pl.when(pl.col(column) == names[index]).then(pl.lit(index, pl.UInt8)) \
            .otherwise(code)
    return code


def _reason_ok(frame: pl.DataFrame) -> pl.Expr:
    reason = pl.col("reason")
    length = (reason.cat.len_chars() if frame.schema["reason"] == pl.Categorical
              else reason.cast(pl.Utf8).str.len_chars())
    return length.is_between(1, contract.REASON_LEN_MAX).fill_null(False)


def _at_ok(frame: pl.DataFrame) -> pl.Expr:
    dtype = frame.schema["at"]
    if isinstance(dtype, pl.Datetime):
        # A typed timestamp is RFC 3339 by construction when it has a zone; without one it
        # names no moment, as the checker says of a zoneless text.
        return pl.col("at").is_not_null() if dtype.time_zone else pl.lit(False)
    return pl.col("at").str.contains(SURE_AT_REGEX).fill_null(False) | _at_unsure(frame)


def _at_unsure(frame: pl.DataFrame) -> pl.Expr:
    """Text timestamps the quick pattern cannot vouch for: judged one by one after."""
    if isinstance(frame.schema["at"], pl.Datetime):
        return pl.lit(False)
    return pl.col("at").is_not_null() & ~pl.col("at").str.contains(SURE_AT_REGEX)


def _confirm_at(frame: pl.DataFrame, unsure: pl.Series, problem: np.ndarray) -> None:
    """The checker's own parse for the timestamps the pattern left open: they were assumed good,
    so a row whose only problem could be `at` becomes bad_at when the parse refuses it."""
    rows = np.flatnonzero(unsure.to_numpy())
    at_code = PROBLEMS.index("bad_at") + 1
    texts = frame["at"].gather(rows).to_list() if len(rows) else []
    for row, text in zip(rows, texts):  # bounded by the unusual timestamps
        if (problem[row] == 0 or problem[row] > at_code) and not is_rfc3339(text):
            problem[row] = at_code


# -- 2. accounts made contiguous ------------------------------------------------------------------

@dataclass
class _Accounts:
    """The rules' rows grouped by account: `order[i]` is the seq-order position (into `good`) of
    the i-th row in account order; the other per-row arrays are in account order."""

    good: np.ndarray | None  # source rows the rules judge (None: all of them)
    seq: np.ndarray  # seq of the good rows, seq order
    order: np.ndarray  # int64
    first: np.ndarray  # bool: the row starts its account
    kind: np.ndarray  # uint8, TYPE_CODES
    cure_shape: np.ndarray  # bool
    value: np.ndarray  # int64
    hashes: tuple[np.ndarray, np.ndarray]  # per account, in account order
    names: pl.Series  # per account, in account order
    reused: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # source rows

    @property
    def starts(self) -> np.ndarray:
        return np.flatnonzero(self.first)

    @property
    def ends(self) -> np.ndarray:
        return np.append(self.starts[1:], len(self.first))

    def source_row(self, position: np.ndarray | int) -> np.ndarray | int:
        """The source frame row of account-order position(s)."""
        at = self.order[position]
        return at if self.good is None else self.good[at]


def _take(values: np.ndarray, good: np.ndarray | None) -> np.ndarray:
    return values if good is None else values[good]


def _group(frame: pl.DataFrame, shape: _Shape, partition: tuple[int, int] | None) -> _Accounts:
    # The entry_id duplicate search sorts 10^7 hashes; numpy lets go of the GIL to sort, so it
    # runs on the other core while this one sorts the accounts.
    with ThreadPoolExecutor(1) as pool:
        twice = pool.submit(_hashes_seen_twice, shape.entry_id_hash)
        accounts = _accounts(frame, shape)
        keep = _bad_account_ids(shape, accounts)
        if partition is not None:
            keep &= _in_partition_rows(accounts, partition)
        accounts = _keep(accounts, keep)
        positions, accounts.reused = _reused(frame, shape, accounts, twice.result())
    shape.entry_id_hash = None
    if len(positions):
        keep = np.ones(len(accounts.order), bool)
        keep[positions] = False
        reused, accounts = accounts.reused, _keep(accounts, keep)
        accounts.reused = reused
    return accounts


def _accounts(frame: pl.DataFrame, shape: _Shape) -> _Accounts:
    good = np.flatnonzero(shape.problem == 0) if shape.problem.any() else None
    h1, h2 = (_take(h, good) for h in shape.account_hashes)
    shape.account_hashes = None  # 160 MB at 10 million entries, not needed again
    order = _account_order(h1)
    h1s, h2s = np.take(h1, order), np.take(h2, order)
    del h1, h2
    _untangle(order, h1s, h2s)
    first = _starts(h1s, h2s)
    hashes = (h1s[first], h2s[first])
    del h1s, h2s
    rows = order if good is None else good[order]
    kind = np.take(shape.kind, rows)
    value = np.take(shape.value, rows)
    names = frame["account_id"].gather(rows[first])
    return _Accounts(good, _take(frame["seq"].to_numpy(), good), order, first,
                     kind & ~np.uint8(CURE_BIT), kind >= CURE_BIT, value, hashes, names)


def _bad_account_ids(shape: _Shape, accounts: _Accounts) -> np.ndarray:
    """Rows to keep (account order): an account_id that is no contract id makes every row of
    the account a bad_account_id problem (unless an earlier problem of the row came first,
    which only rows already left out can have)."""
    bad_account = ~accounts.names.str.contains(ID_REGEX).fill_null(False).to_numpy()
    lengths = np.diff(np.append(accounts.starts, len(accounts.order)))
    keep = ~np.repeat(bad_account, lengths)
    if not keep.all():
        shape.problem[accounts.source_row(np.flatnonzero(~keep))] = ACCOUNT_PROBLEM
    return keep


def _global(accounts: _Accounts) -> np.ndarray:
    return accounts.order if accounts.good is None else accounts.good[accounts.order]


def _bits(n: int) -> np.uint64:
    bits = max(1, (n - 1).bit_length())
    assert bits <= 40, "over 2^40 ledger entries"
    return np.uint64(bits)


def _account_order(h1: np.ndarray) -> np.ndarray:
    """A permutation grouping rows by the top bits of h1, seq order kept within a group."""
    n = len(h1)
    shift = _bits(n)
    # One sort of a single uint64: numpy sorts these with SIMD, several times faster than any
    # argsort; the row position in the low bits keeps seq order within a hash prefix.
    key = h1 >> shift
    key <<= shift
    key |= np.arange(n, dtype=np.uint64)
    key.sort()
    key &= np.uint64((1 << int(shift)) - 1)
    return key.astype(np.int64)


def _untangle(order: np.ndarray, h1s: np.ndarray, h2s: np.ndarray) -> None:
    """Accounts sharing a hash prefix come out interleaved; sort each such run by the full
    hashes. With 64 - log2(n) prefix bits this touches a run or two per million accounts."""
    shift = _bits(len(order))
    prefix = h1s >> shift
    tangled = prefix[1:] == prefix[:-1]
    tangled &= (h1s[1:] != h1s[:-1]) | (h2s[1:] != h2s[:-1])
    for value in np.unique(prefix[:-1][tangled]):  # bounded by the runs that need it
        lo = int(np.searchsorted(prefix, value, "left"))
        hi = int(np.searchsorted(prefix, value, "right"))
        local = np.lexsort((order[lo:hi], h2s[lo:hi], h1s[lo:hi]))
        order[lo:hi], h1s[lo:hi], h2s[lo:hi] = \
            order[lo:hi][local], h1s[lo:hi][local], h2s[lo:hi][local]


def _starts(h1s: np.ndarray, h2s: np.ndarray) -> np.ndarray:
    first = np.ones(len(h1s), bool)
    np.not_equal(h1s[1:], h1s[:-1], out=first[1:])
    first[1:] |= h2s[1:] != h2s[:-1]
    return first


def _keep(accounts: _Accounts, keep_rows: np.ndarray) -> _Accounts:
    """`accounts` restricted to the rows where `keep_rows` (account order) holds."""
    if keep_rows.all():
        return accounts
    account_of = np.cumsum(accounts.first) - 1
    kept_account = account_of[keep_rows]
    first = np.ones(len(kept_account), bool)
    first[1:] = kept_account[1:] != kept_account[:-1]
    alive = np.bincount(kept_account, minlength=len(accounts.names)) > 0
    return _Accounts(accounts.good, accounts.seq, accounts.order[keep_rows], first,
                     accounts.kind[keep_rows], accounts.cure_shape[keep_rows],
                     accounts.value[keep_rows], tuple(h[alive] for h in accounts.hashes),
                     accounts.names.filter(pl.Series(alive)))


def _in_partition_rows(accounts: _Accounts, partition: tuple[int, int]) -> np.ndarray:
    """Per account-order row: its account is in the partition (one CRC-32 per account)."""
    k, n = partition
    in_part = partitions.crc32_column(accounts.names) % n == k - 1
    return np.repeat(in_part, np.diff(np.append(accounts.starts, len(accounts.order))))


def _hashes_seen_twice(hashes: np.ndarray) -> np.ndarray:
    """The entry_id hash values that occur more than once among all rows (a superset of the
    judged rows' duplicates, which is all `_reused` needs)."""
    ordered = np.sort(hashes)
    return np.unique(ordered[1:][ordered[1:] == ordered[:-1]])


def _reused(frame: pl.DataFrame, shape: _Shape, accounts: _Accounts,
            twice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(account-order positions, source rows) of the rows whose entry_id a row before them
    (lower seq) among the judged ones already has: the checker leaves those out."""
    none = np.zeros(0, np.int64)
    if not len(twice):
        return none, none
    judged = np.zeros(len(shape.problem), bool)
    judged[_global(accounts)] = True
    candidates = np.flatnonzero(judged & np.isin(shape.entry_id_hash, twice))  # seq order
    seen: set[str] = set()
    reused = []
    for row, entry_id in zip(candidates, frame["entry_id"].gather(candidates).to_list()):
        if entry_id in seen:  # bounded by the candidates
            reused.append(row)
        seen.add(entry_id)
    if not reused:
        return none, none
    position_of = np.full(len(shape.problem), -1, np.int64)
    position_of[_global(accounts)] = np.arange(len(accounts.order))
    source_rows = np.asarray(reused, np.int64)
    return np.sort(position_of[source_rows]), source_rows


# -- 3. the oracle, every entry at once -----------------------------------------------------------

@dataclass
class _State:
    """The state after each row (account order), as the oracle would replay it."""

    opened: np.ndarray  # bool: an open entry at or before this row, in this account
    outstanding: np.ndarray
    credit_line: np.ndarray
    status: np.ndarray  # int8

    def available(self, at: np.ndarray | slice = slice(None)) -> np.ndarray:
        headroom = np.maximum(0, self.credit_line[at] - self.outstanding[at])
        return np.where(self.status[at] == ACTIVE, headroom, 0)


def _derive(accounts: _Accounts) -> _State:
    kind, value, first = accounts.kind, accounts.value, accounts.first
    n = len(kind)
    # Positions fit 32 bits below 2^31 rows: half the memory traffic of the running maxima.
    index_type = np.int32 if n < 2**31 else np.int64
    position = np.arange(n, dtype=index_type)
    is_open = kind == OPEN
    delta = np.where(kind == DRAW, value, 0)
    delta -= np.where(kind == REPAY, value, 0)
    outstanding = np.cumsum(delta)
    # Each open starts the account afresh (as does the account's first row, before any open):
    # subtract the running total as it stood just before the latest restart (in place).
    restart = np.maximum.accumulate(np.where(first | is_open, position, 0))
    before_restart = outstanding[restart]
    before_restart -= delta[restart]
    outstanding -= before_restart
    del delta, restart, before_restart
    account_start = np.maximum.accumulate(np.where(first, position, 0))
    opened = np.maximum.accumulate(np.where(is_open, position, -1)) >= account_start
    del account_start
    line_at = np.maximum.accumulate(np.where(is_open | (kind == LIMIT), position, 0))
    credit_line = value[line_at]
    del line_at
    status_at = np.maximum.accumulate(np.where(is_open | (kind == STATUS), position, 0))
    status = np.where(kind[status_at] == OPEN, ACTIVE, value[status_at]).astype(np.int8)
    return _State(opened, outstanding, credit_line, status)


# -- 4. the ledger rules --------------------------------------------------------------------------

@dataclass
class _Flags:
    """Account-order positions breaking each rule, and the error the contract gives."""

    errors: dict[str, np.ndarray]  # contract error code -> positions
    second_open: np.ndarray
    no_open: np.ndarray
    cure_not_due: np.ndarray
    cure_wrong: np.ndarray
    missing_cure: np.ndarray


def _before(values: np.ndarray, first: np.ndarray, fill) -> np.ndarray:
    out = np.empty_like(values)
    out[1:] = values[:-1]
    out[first] = fill
    return out


def _judge(accounts: _Accounts, state: _State, frame: pl.DataFrame) -> _Flags:
    kind, value, first = accounts.kind, accounts.value, accounts.first
    opened_b = _before(state.opened, first, False)
    out_b = _before(state.outstanding, first, 0)
    status_b = _before(state.status, first, ACTIVE)
    available_b = np.where(status_b == ACTIVE,
                           np.maximum(0, _before(state.credit_line, first, 0) - out_b), 0)
    cure_due = (kind == REPAY) & opened_b & (status_b == OVERDUE) & (out_b > 0) & (value == out_b)
    consumed, cure_due = _cures_taken(accounts, cure_due, frame)
    is_open = kind == OPEN
    plain = ~consumed & ~is_open & opened_b & ~accounts.cure_shape
    draw, repay = plain & (kind == DRAW), plain & (kind == REPAY)
    inactive_draw = draw & (status_b != ACTIVE)
    closed_repay = repay & (status_b == CLOSED)
    errors = {
        "account_not_active": np.flatnonzero(
            inactive_draw | closed_repay | (plain & (kind == LIMIT) & (status_b == CLOSED))),
        "insufficient_limit": np.flatnonzero(draw & ~inactive_draw & (value > available_b)),
        "overpayment": np.flatnonzero(repay & ~closed_repay & (value > out_b)),
        "outstanding_balance": np.flatnonzero(
            plain & (kind == STATUS) & (value == CLOSED) & (out_b != 0)),
    }
    next_taken = np.zeros(len(kind), bool)
    next_taken[:-1] = consumed[1:] & ~first[1:]
    return _Flags(
        errors=errors,
        second_open=np.flatnonzero(~consumed & is_open & opened_b),
        no_open=np.flatnonzero(~consumed & ~is_open & ~opened_b),
        cure_not_due=np.flatnonzero(~consumed & ~is_open & opened_b & accounts.cure_shape),
        cure_wrong=_wrong_cures(accounts, consumed, frame),
        missing_cure=np.flatnonzero(cure_due & ~next_taken),
    )


def _cures_taken(accounts: _Accounts, cure_due: np.ndarray,
                 frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(rows taken as the cure of the repay above, cure_due without those rows): a row is its
    repay's cure when its request_id is the repay's plus ":cure"; a row so taken is not judged,
    and so cannot itself make a cure due."""
    consumed = np.zeros(len(cure_due), bool)
    candidates = np.flatnonzero(cure_due[:-1] & ~accounts.first[1:]) + 1
    if not len(candidates):
        return consumed, cure_due
    cure_due = cure_due.copy()
    request_ids = frame["request_id"]
    above = request_ids.gather(accounts.source_row(candidates - 1)).to_list()
    here = request_ids.gather(accounts.source_row(candidates)).to_list()
    for position, repay_id, request_id in zip(candidates, above, here):  # bounded: cures due
        if cure_due[position - 1] and request_id == repay_id + contract.CURE_SUFFIX:
            consumed[position] = True
            cure_due[position] = False
    return consumed, cure_due


def _wrong_cures(accounts: _Accounts, consumed: np.ndarray, frame: pl.DataFrame) -> np.ndarray:
    positions = np.flatnonzero(consumed)
    if not len(positions):
        return positions
    reasons = frame["reason"].gather(accounts.source_row(positions)).to_list()
    right = ((accounts.kind[positions] == STATUS) & (accounts.value[positions] == ACTIVE)
             & np.array([r == contract.CURE_REASON for r in reasons], bool))
    return positions[~right]


# -- 5. the display -------------------------------------------------------------------------------

def _partitioned_display(display: pl.DataFrame,
                         partition: tuple[int, int] | None) -> pl.DataFrame:
    if partition is None:
        return display
    k, n = partition
    crc = partitions.crc32_column(display["account_id"])
    return display.filter(pl.Series(crc % n == k - 1))


@dataclass
class _Oracle:
    """Per display row: its account (-1: none in the ledger) and the oracle there."""

    group: np.ndarray
    known: np.ndarray
    has_seq: np.ndarray
    as_of_seq: np.ndarray  # 0 where null
    last: np.ndarray  # account-order position of the account's last entry
    last_seq: np.ndarray
    at: np.ndarray  # position of the last entry with seq <= as_of_seq (the last when null)
    view_at: dict[str, np.ndarray]  # the oracle's view at `at` ("opened" False: no state)
    final: dict[str, np.ndarray]  # the oracle's view after the account's last entry


def _oracle_per_row(display: pl.DataFrame, accounts: _Accounts, state: _State) -> _Oracle:
    group = _display_groups(display, accounts)
    known = group >= 0
    g = np.where(known, group, 0)
    last = accounts.ends[g] - 1
    last_seq = accounts.seq[accounts.order[last]]
    as_of = display["as_of_seq"]
    has_seq = as_of.is_not_null().to_numpy()
    as_of_seq = as_of.fill_null(0).to_numpy()
    at = _position_at(accounts, g, np.where(has_seq, as_of_seq, last_seq), last, last_seq)
    view_at = _views(state, np.maximum(at, 0))
    view_at["opened"] &= (at >= 0) & known
    final = _views(state, last)
    final["opened"] &= known
    return _Oracle(group, known, has_seq, as_of_seq, last, last_seq, at, view_at, final)


def _compare(display: pl.DataFrame, accounts: _Accounts, state: _State,
             cut_seq: int | None) -> list[DisplayCase]:
    if not len(accounts.order):
        nothing = _Context({}, {}, np.zeros(0), np.zeros(0), cut_seq)
        return [_display_case("unknown_account", display, row, nothing)
                for row in range(display.height)]  # bounded by the display
    o = _oracle_per_row(display, accounts, state)
    shown = _shown(display)
    known, has_seq = o.known, o.has_seq
    future = known & has_seq & (o.as_of_seq > o.last_seq)
    wrong = known & has_seq & ~future & ~_equal(shown, o.view_at)
    diverges = known & ~has_seq & ~_equal(shown, o.final)
    stale = (known & has_seq & ~future & ~wrong & (o.as_of_seq < o.last_seq)
             if cut_seq is not None else np.zeros(len(known), bool))
    context = _Context(o.view_at, o.final, o.last_seq, o.last - o.at, cut_seq)
    problems = (("unknown_account", ~known), ("null_diverges", diverges), ("future_seq", future),
                ("inconsistent", wrong), ("stale", stale))
    cases = []
    for problem, mask in problems:  # bounded: five problems
        for row in np.flatnonzero(mask):  # bounded by the flagged rows
            cases.append(_display_case(problem, display, int(row), context))
    seen = np.zeros(len(accounts.names), bool)
    seen[o.group[known]] = True
    missing = np.flatnonzero(~seen)
    names = accounts.names.gather(missing).to_list()
    ends = accounts.ends
    for account, account_id in zip(missing, names):  # bounded by the accounts without a row
        position = int(ends[account] - 1)
        cases.append(DisplayCase("missing_row", account_id, None, None, None,
                                 _view_dict(state, position),
                                 int(accounts.seq[accounts.order[position]]), cut_seq))
    return cases


def expected_display(ledger: Table, display: Table) -> pl.DataFrame:
    """What each display row should show by the oracle (at its as_of_seq, or the final state
    when null): the expected table a generic table comparer is given in the benchmark. Nulls
    where the ledger gives no state."""
    shape = _shape(ledger.frame)
    accounts = _group(ledger.frame, shape, None)
    state = _derive(accounts)
    o = _oracle_per_row(display.frame, accounts, state)
    opened = o.view_at["opened"]
    columns = {name: pl.Series(name, o.view_at[name]).zip_with(
        pl.Series(opened), pl.Series([None], dtype=pl.Int64 if name != "usable"
                                     else pl.Boolean))
               for name in ("credit_line", "outstanding", "available", "usable")}
    status = pl.Series(list(contract.STATUSES)).gather(o.view_at["status"].astype(np.int64))
    return pl.DataFrame({
        "account_id": display.frame["account_id"], **columns,
        "status": status.zip_with(pl.Series(opened), pl.Series([None], dtype=pl.Utf8)),
        "as_of_seq": display.frame["as_of_seq"]})


@dataclass
class _Context:
    """What the words of a flagged display row need, per display row."""

    view_at: dict[str, np.ndarray]
    final: dict[str, np.ndarray]
    last_seq: np.ndarray
    behind: np.ndarray
    cut_seq: int | None


def _display_groups(display: pl.DataFrame, accounts: _Accounts) -> np.ndarray:
    """For each display row, its account's index in account order, or -1."""
    h1, h2 = accounts.hashes
    hashes = display.select(pl.col("account_id").hash(SEEDS[0]).alias("h1"),
                            pl.col("account_id").hash(SEEDS[1]).alias("h2"))
    d1, d2 = hashes["h1"].to_numpy(), hashes["h2"].to_numpy()
    by_h1 = np.argsort(h1)
    sorted_h1 = h1[by_h1]
    if (sorted_h1[1:] == sorted_h1[:-1]).any():
        return _display_groups_joined(h1, h2, d1, d2)  # two accounts share h1: use both keys
    by_d1 = np.argsort(d1)  # sorted keys keep the binary searches in cache
    at = np.empty(len(d1), np.int64)
    at[by_d1] = np.minimum(np.searchsorted(sorted_h1, d1[by_d1]), len(h1) - 1)
    group = by_h1[at]
    group = np.where((sorted_h1[at] == d1) & (h2[group] == d2), group, -1)
    # Matched by hashes; the names themselves must agree, or two ids collided in 128 bits.
    matched = np.flatnonzero(group >= 0)
    names = accounts.names.gather(group[matched])
    assert (names == display["account_id"].gather(matched)).all(), \
        "two account ids share both 64-bit hashes"
    return group


def _display_groups_joined(h1: np.ndarray, h2: np.ndarray, d1: np.ndarray,
                           d2: np.ndarray) -> np.ndarray:
    keys = pl.DataFrame({"h1": h1, "h2": h2, "group": np.arange(len(h1), dtype=np.int64)})
    rows = pl.DataFrame({"h1": d1, "h2": d2})
    joined = rows.join(keys, on=["h1", "h2"], how="left", maintain_order="left")
    return joined["group"].fill_null(-1).to_numpy()


def _position_at(accounts: _Accounts, group: np.ndarray, as_of_seq: np.ndarray,
                 last: np.ndarray, last_seq: np.ndarray) -> np.ndarray:
    """Per display row: the account-order position of its account's last entry with seq <=
    as_of_seq, or -1 when there is none."""
    at = last.copy()  # a display that is current needs no search
    behind = np.flatnonzero(as_of_seq < last_seq)
    if not len(behind):
        return at
    n = len(accounts.seq)  # the range of `order`, which may skip rows left out
    account_of = np.cumsum(accounts.first) - 1
    # Within an account, positions in seq order increase with `order`, so one composite key
    # (account, seq-order position) is sorted over the whole array: one binary search each,
    # with the searched keys sorted too, which keeps the searches in cache.
    composite = account_of * n + accounts.order
    del account_of
    seq_position = np.searchsorted(accounts.seq, as_of_seq[behind], "right") - 1
    wanted = group[behind] * n + seq_position
    by_key = np.argsort(wanted)
    found = np.empty(len(behind), np.int64)
    found[by_key] = np.searchsorted(composite, wanted[by_key], "right") - 1
    starts = accounts.starts[group[behind]]
    at[behind] = np.where(found >= starts, found, -1)
    return at


def _views(state: _State, at: np.ndarray) -> dict[str, np.ndarray]:
    available = state.available(at)
    return {"opened": state.opened[at].copy(), "credit_line": state.credit_line[at],
            "outstanding": state.outstanding[at], "available": available,
            "status": state.status[at], "usable": available > 0}


def _shown(display: pl.DataFrame) -> dict[str, np.ndarray]:
    status = display["status"].replace_strict(STATUS_CODES, return_dtype=pl.Int8)
    return {"credit_line": display["credit_line"].to_numpy(),
            "outstanding": display["outstanding"].to_numpy(),
            "available": display["available"].to_numpy(), "status": status.to_numpy(),
            "usable": display["usable"].to_numpy()}


def _equal(shown: dict, view: dict) -> np.ndarray:
    same = view["opened"].copy()
    for name in ("credit_line", "outstanding", "available", "status", "usable"):
        same &= shown[name] == view[name]
    return same


def _view_dict(state: _State, position: int) -> dict | None:
    if position < 0 or not state.opened[position]:
        return None
    available = int(state.available(np.array([position]))[0])
    return {"credit_line": int(state.credit_line[position]),
            "outstanding": int(state.outstanding[position]), "available": available,
            "status": contract.STATUSES[state.status[position]], "usable": available > 0}


def _display_case(problem: str, display: pl.DataFrame, row: int,
                  context: _Context) -> DisplayCase:
    values = display.row(row, named=True)
    shown = {name: values[name] for name in ("credit_line", "outstanding", "available",
                                              "status", "usable")}
    if problem == "unknown_account":
        return DisplayCase(problem, values["account_id"], shown, values["as_of_seq"], None,
                           None, None, context.cut_seq)
    return DisplayCase(problem, values["account_id"], shown, values["as_of_seq"],
                       _dict_of(context.view_at, row), _dict_of(context.final, row),
                       int(context.last_seq[row]), context.cut_seq, int(context.behind[row]))


def _dict_of(views: dict[str, np.ndarray], row: int) -> dict | None:
    if not views["opened"][row]:
        return None
    return {"credit_line": int(views["credit_line"][row]),
            "outstanding": int(views["outstanding"][row]),
            "available": int(views["available"][row]),
            "status": contract.STATUSES[views["status"][row]],
            "usable": bool(views["usable"][row])}


# -- 6. findings ----------------------------------------------------------------------------------

def _malformed(frame: pl.DataFrame, shape: _Shape, accounts: _Accounts,
               partition: tuple[int, int] | None) -> list[tuple[str, dict]]:
    """(problem code, entry) for each row the rules leave out, in seq order."""
    bad = np.flatnonzero(shape.problem)
    if not len(bad) and not len(accounts.reused):
        return []
    rows = np.sort(np.concatenate([bad, accounts.reused]))
    reused = set(accounts.reused.tolist())
    out = []
    records = frame.drop("row").gather(rows).iter_rows(named=True)
    for row, record in zip(rows.tolist(), records):  # bounded by the malformed rows
        entry = entry_dict(record)
        if partition is not None and not _in_partition(entry.get("account_id"), partition):
            continue
        code = REUSED if row in reused else PROBLEMS[shape.problem[row] - 1]
        if shape.problem[row] > ACCOUNT_PROBLEM and not contract.is_id(entry.get("account_id")):
            code = PROBLEMS[ACCOUNT_PROBLEM - 1]  # the checker tests the account before these
        out.append((code, entry))
    return out


def _structure_findings(malformed: list[tuple[str, dict]]) -> list[Finding]:
    """One contract_violation per kind of malformation, worded as the ledger checker does."""
    by_code: dict[str, list[tuple[str, dict]]] = {}
    for code, entry in malformed:  # bounded by the malformed rows
        by_code.setdefault(code, []).append((_problem_words(code, entry), entry))
    findings = []
    for code, cases in by_code.items():  # bounded by the problem kinds
        words, entry = cases[0]
        account_id = entry.get("account_id")
        more = f"; {len(cases)} entries are malformed this way" if len(cases) > 1 else ""
        findings.append(Finding(
            kind="contract_violation", severity="major",
            account_id=account_id if contract.is_id(account_id) else None, first_seen_ms=None,
            expected=None, actual=[e for _, e in cases[:EXAMPLES_MAX]], checker=CHECKER,
            explanation=f"The ledger breaks the contract's entry format: {words}{more}. Such "
                        f"entries are left out of the rule checks."))
    return findings


def _in_partition(account_id: str | None, partition: tuple[int, int]) -> bool:
    k, n = partition
    if account_id is None:
        return k == 1
    return partitions.crc32_text(account_id) % n == k - 1 if type(account_id) is str \
        else k == 1


def _problem_words(code: str, entry: dict) -> str:
    seq = entry.get("seq")
    if code == "bad_seq":
        return f"seq {seq!r} is not a non-negative integer"
    if code == REUSED:
        return f"entry_id {entry['entry_id']!r} appears twice (again at seq {seq})"
    if code == "bad_at":
        return f"entry seq={seq} has `at` {entry.get('at')!r}, not an RFC 3339 timestamp"
    if code == "bad_type":
        return f"entry seq={seq} has unknown type {entry.get('type')!r}"
    name = code[len("bad_"):]
    if code in ("bad_entry_id", "bad_request_id", "bad_account_id"):
        return f"entry seq={seq} has {name} {entry.get(name)!r}"
    return f"{entry['type']} entry seq={seq} has {name} {entry.get(name)!r}"


def _rule_findings(frame: pl.DataFrame, accounts: _Accounts, state: _State,
                   flags: _Flags) -> list[Finding]:
    """The flagged rows in the ledger checker's words."""
    cases: list[tuple[int, str, object, str]] = []  # (position, severity, expected, words)
    for error, positions in flags.errors.items():  # bounded: four errors
        for position in positions:
            cases.append((position, _error_severity(accounts, position, error),
                          {"error": error}, error))
    cases += [(p, "major", None, "second_open") for p in flags.second_open]
    cases += [(p, "major", {"type": "open"}, "no_open") for p in flags.no_open]
    cases += [(p, "major", None, "cure_not_due") for p in flags.cure_not_due]
    cases += [(p, "major", {"type": "status", "status": "active",
                            "reason": contract.CURE_REASON}, "cure_wrong")
              for p in flags.cure_wrong]
    cases += [(p, "major", None, "missing_cure") for p in flags.missing_cure]
    if not cases:
        return []
    positions = np.array([c[0] for c in cases], np.int64)
    neighbours = np.concatenate([positions, np.minimum(positions + 1, len(accounts.order) - 1)])
    source_rows = accounts.source_row(neighbours)
    records = frame.drop("row").gather(source_rows).iter_rows(named=True)
    entries = dict(zip(neighbours.tolist(), (entry_dict(r) for r in records)))
    findings = []
    for position, severity, expected, reason in cases:  # bounded by the flagged rows
        entry = entries[int(position)]
        if reason == "missing_cure":
            expected = {"next_request_id": entry["request_id"] + contract.CURE_SUFFIX}
        words = _rule_words(reason, accounts, state, int(position), entries)
        findings.append(Finding(
            kind="ledger_rule_violation", severity=severity, account_id=entry["account_id"],
            first_seen_ms=None, expected=expected, actual=entry, checker=CHECKER,
            explanation=f"Account {entry['account_id']!r}, ledger seq={entry['seq']} "
                        f"({entry_words(entry)}, request_id {entry['request_id']!r}): {words}"))
    return findings


def _error_severity(accounts: _Accounts, position: int, error: str) -> str:
    return "critical" if accounts.kind[position] == DRAW or error == "overpayment" else "major"


def _rule_words(reason: str, accounts: _Accounts, state: _State, position: int,
                entries: dict[int, dict]) -> str:
    entry = entries[position]
    if reason == "second_open":
        return ("a second open entry for an account that is already open; it resets the "
                "account's line and balance.")
    if reason == "no_open":
        return ("the account's first entry must be its open; this entry has no account to "
                "apply to.")
    if reason == "cure_not_due":
        return (f"a cure entry where none is due: the entry before it did not clear an overdue "
                f"balance (state before: {_state_before(state, position)}).")
    if reason == "cure_wrong":
        return ("the cure entry of the repay before it does not set the status to 'active' "
                "with reason 'cured'.")
    if reason == "missing_cure":
        last = position + 1 >= len(accounts.first) or accounts.first[position + 1]
        follows = ("no entry follows it" if last else
                   f"the next entry is seq={entries[position + 1]['seq']} "
                   f"({entry_words(entries[position + 1])})")
        status = contract.STATUSES[state.status[position]]
        return (f"this repay cleared an overdue balance, so its cure entry (status 'active', "
                f"reason 'cured') must follow in the same transaction, but {follows}: the fully "
                f"repaid account stays {status} and unusable.")
    return _error_words(entry, state, position - 1, reason, _state_before(state, position))


def _state_before(state: _State, position: int) -> str:
    at = position - 1
    available = int(state.available(np.array([at]))[0]) if at >= 0 else 0
    return (f"credit line {fen(int(state.credit_line[at]))}, outstanding "
            f"{fen(int(state.outstanding[at]))}, available {fen(available)}, "
            f"{contract.STATUSES[state.status[at]]}")


def _error_words(entry: dict, state: _State, at: int, error: str, before: str) -> str:
    before = f"state before: {before}"
    if error == "insufficient_limit":
        available = int(state.available(np.array([at]))[0])
        return (f"a draw of {fen(entry['amount'])} was committed when only {fen(available)} "
                f"was available ({before}): an overdraw.")
    if error == "overpayment":
        return (f"a repay of {fen(entry['amount'])} was committed against an outstanding of "
                f"{fen(int(state.outstanding[at]))}, taking it below zero ({before}).")
    if error == "account_not_active":
        return (f"a {entry['type']} was committed on a "
                f"{contract.STATUSES[state.status[at]]} account ({before}).")
    return (f"the account was closed with {fen(int(state.outstanding[at]))} still outstanding "
            f"({before}).")
