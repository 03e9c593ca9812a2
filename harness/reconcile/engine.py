"""The columnar engine: the oracle over a whole exported ledger as array operations.

The ledger is read a slice at a time (`Table.batches`: half a million rows of a Parquet file,
the next slice read on the other core meanwhile). Polars turns each slice into a few compact
columns (the first format problem of each entry, its type and value as small integers, hashes
of its ids) and the slice's text is let go: the text of 10^7 entries is never held at once.
Numpy does the rest. Accounts are made contiguous by one sort of a 64-bit key (the top bits of
the account's hash, the row's position below them), so within an account rows stay in seq
order and every per-account quantity is a scan over the sorted arrays:

- outstanding after each entry: a cumulative sum of signed amounts, restarted at each open;
- credit line and status after each entry: the value of the latest open/limit (open/status)
  entry carried forward over its segment;
- the state before an entry: the row above, unless the row starts its account;
- every acceptance rule, the cure rule and "first entry an open" as boolean conditions on those.

Only the flagged rows (a handful in a healthy ledger) are explained in Python, in the words of
`harness/checkers/ledger.py` (for the ledger) and `rows.display_finding` (for the display);
their entries are read back from the source (`Table.fetch`).

Exactness: integer arithmetic throughout. Text is compared by hash: accounts are told apart by
the top (64 - log2 n) bits of one 64-bit hash and all 64 of a second, independent one (two
accounts merge only if both collide: about n^2 / 2^105, below 10^-17 for 10^7 accounts), display
rows are matched to accounts by the same pair, and a cure's request_id is matched to its
repay's by a 64-bit hash (a wrong cure passes only if its id collides with its repay's: 2^-64
per cure). Repeated entry_ids are found by hash and confirmed on the text.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import polars as pl

from .. import contract
from ..progress import QUIET, Progress
from ..findings import Finding, entry_words, fen
from . import budget
from . import partition as partitions
from .rows import PROBLEM_KINDS, DisplayCase, display_finding, entry_dict, is_rfc3339
from .sources import NotInSeqOrder, Table

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
ID_CLASS = "A-Za-z0-9._:-"
ID_LEN_MAX = 64
assert contract.ID_PATTERN.pattern == f"[{ID_CLASS}]{{1,{ID_LEN_MAX}}}", "the id rule moved"
BAD_ID_CHARACTER = f"[^{ID_CLASS}]"
# Timestamps this matches are RFC 3339 for certain (days up to 28 exist in every month); the
# few it does not match are judged one by one with the checker's own parse.
SURE_AT_REGEX = (r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3])"
                 r":[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")
SEEDS = (0x5EED_0001, 0x5EED_0002)


def run(ledger: Table, display: Table, cut_seq: int | None,
        partition: tuple[int, int] | None, progress: Progress = QUIET,
        findings_max: int = budget.FINDINGS_MAX) -> tuple[list[Finding], dict]:
    """Findings and stats (seconds per stage: read, derive, check, compare, classify)."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    shape = _shaped(ledger, partition, progress)
    progress.phase("grouping accounts and deriving the oracle")
    _mark_reused(ledger, shape)
    accounts = _group(shape)
    state = _derive(accounts)
    seconds["read"] = shape.read_s
    seconds["derive"] = _lap(started) - shape.read_s
    progress.phase("checking the ledger rules")
    started = time.perf_counter()
    flags = _judge(accounts, state, shape)
    seconds["check"] = _lap(started)
    progress.phase("comparing the display")
    started = time.perf_counter()
    display_frame = _partitioned_display(display.frame, partition)
    # Counted before any is explained (see budget.py).
    counted = {"ledger_rule_violation": flags.count(),
               "contract_violation": len(np.unique(shape.problem[shape.problem != 0]))}
    cases = _compare(display_frame, ledger, shape, accounts, state, cut_seq,
                     lambda display_counts: budget.check({**counted, **display_counts},
                                                         findings_max))
    seconds["compare"] = _lap(started)
    progress.phase("explaining the findings")
    started = time.perf_counter()
    malformed = _malformed(ledger, shape, partition)
    findings = (_structure_findings(malformed)
                + _rule_findings(ledger, shape, accounts, state, flags)
                + [display_finding(case) for case in cases])
    seconds["classify"] = _lap(started)
    stats = {"accounts": len(accounts.starts),
             "ledger_entries": len(accounts.order) + len(malformed),
             "display_rows": display_frame.height}
    return findings, {**stats, "seconds": seconds}


def _lap(started: float) -> float:
    return time.perf_counter() - started


def _shaped(ledger: Table, partition: tuple[int, int] | None, progress: Progress) -> _Shape:
    progress.phase("reading the ledger", total=ledger.rows_max)
    try:
        return _shape(ledger.batches(), ledger.rows_max, partition, progress)
    except NotInSeqOrder:  # an export out of seq order: read whole, sorted
        progress.phase("reading the ledger whole (it is not in seq order)")
        return _shape(iter([ledger.frame]), ledger.frame.height, partition, progress)


# -- 1. the format of each entry, a slice of the ledger at a time ---------------------------------

# Bits of a row's kind code above the entry type (TYPE_CODES, below 8).
CURE_BIT = 16  # a status entry whose request_id ends with the cure suffix
SUFFIX_BIT = 32  # any entry whose request_id ends with the cure suffix
CURED_BIT = 64  # reason is the cure's reason
ACCOUNT_PROBLEM = PROBLEMS.index("bad_account_id") + 1
REUSED_PROBLEM = len(PROBLEMS) + 1  # an entry_id seen at a lower seq: left out like the rest


@dataclass
class _Shape:
    """Per ledger row, in seq order (`position`): the first format problem (0: none) and the
    compact columns the rules need. The text itself is not kept: the words of a finding read
    their rows back from the source (`Table.fetch`)."""

    seq: np.ndarray  # int64
    problem: np.ndarray  # uint8, index into PROBLEMS + 1, or REUSED_PROBLEM
    # kind, value and hashes are let go once grouped (`_Accounts` has them in account order).
    kind: np.ndarray | None  # uint8: TYPE_CODES | CURE_BIT | SUFFIX_BIT | CURED_BIT
    value: np.ndarray | None  # int64: amount, credit line or status code, by kind
    hashes: tuple[np.ndarray, np.ndarray] | None  # two independent uint64 hashes of account_id
    entry_id_hash: np.ndarray | None  # uint64; dropped when no two entry_ids share a hash
    hashes_twice: np.ndarray  # the entry_id hash values more than one row has
    request_id_hash: np.ndarray  # uint64
    # The rows whose request_id ends with the cure suffix (usually a few per cent), and the hash
    # of their request_id without it: a cure names its repay by that.
    suffixed: np.ndarray  # positions, sorted
    suffixed_base_hash: np.ndarray  # uint64
    rows: np.ndarray | None  # the source row of each position; None when they are the same
    malformed: pl.DataFrame  # the rows with a format problem: their columns and `_problem`
    read_s: float  # of the time, how much went into reading the slices


# The per-row arrays a slice adds to the whole, and their types.
SLICE_COLUMNS = {"row": np.int64, "seq": np.int64, "problem": np.uint8, "kind": np.uint8,
                 "value": np.int64, "h1": np.uint64, "h2": np.uint64,
                 "entry_id_hash": np.uint64, "request_id_hash": np.uint64}


def _shape(batches: Iterator[pl.DataFrame], rows_max: int,
           partition: tuple[int, int] | None, progress: Progress) -> _Shape:
    # Each slice is copied into arrays made once for the whole ledger (`rows_max`, trimmed to
    # what the cut keeps), so a slice's own buffers go as soon as it is done.
    whole = {name: np.empty(rows_max, dtype) for name, dtype in SLICE_COLUMNS.items()
             if name != "row"}  # a partition keeps fewer: trimmed below
    rows: np.ndarray | None = None  # made only when a slice's rows are not its positions
    suffixed, suffixed_base_hash, malformed = [], [], []
    read_s, started, position, rows_read = 0.0, time.perf_counter(), 0, 0
    for frame in batches:  # bounded by the ledger's slices
        read_s += time.perf_counter() - started
        rows_read += frame.height
        progress.update(rows_read)
        assert position + frame.height <= rows_max
        part = _shape_slice(frame, position, partition)
        kept = len(part["row"])
        for name in whole:  # bounded: eight columns
            whole[name][position:position + kept] = part[name]
        if rows is None and not _counts_up(part["row"], position):
            rows = np.arange(rows_max, dtype=np.int64)  # every slice before was
        if rows is not None:
            rows[position:position + kept] = part["row"]
        suffixed.append(part["suffixed"])
        suffixed_base_hash.append(part["suffixed_base_hash"])
        malformed.append(part["malformed"])
        position += kept
        del part
        started = time.perf_counter()
    read_s += time.perf_counter() - started
    whole = {name: values[:position] for name, values in whole.items()}
    entry_id_hash = whole.pop("entry_id_hash")
    twice = _hashes_seen_twice(entry_id_hash)
    return _Shape(whole["seq"], whole["problem"], whole["kind"], whole["value"],
                  (whole["h1"], whole["h2"]), entry_id_hash if len(twice) else None, twice,
                  whole["request_id_hash"], _joined(suffixed), _joined(suffixed_base_hash),
                  None if rows is None else rows[:position],
                  pl.concat(malformed, how="vertical_relaxed"),
                  read_s)


def _counts_up(rows: np.ndarray, first: int) -> bool:
    """The source rows are the positions first, first + 1, ...: a slice of a file in order."""
    return not len(rows) or (rows[0] == first and rows[-1] == first + len(rows) - 1
                             and bool((np.diff(rows) == 1).all()))


def _joined(arrays: list[np.ndarray]) -> np.ndarray:
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def _shape_slice(frame: pl.DataFrame, first: int, partition: tuple[int, int] | None) -> dict:
    """The compact columns of one slice, whose first row is at position `first` of the whole.
    With a partition, only the slice's rows in it (a part's work is its share of the rest)."""
    if partition is not None:
        frame = frame.filter(_in_partition_column(frame["account_id"], partition))
    # The codes first, on their own: an expression used several times in one select may be
    # evaluated several times.
    codes = frame.select(_codes("type", contract.ENTRY_TYPES).alias("kind"),
                         _codes("status", contract.STATUSES).alias("status_code"))
    frame = frame.with_columns(codes)  # shares the columns' memory
    kind, status = pl.col("kind"), pl.col("status_code")
    is_open, is_limit, is_status = kind == OPEN, kind == LIMIT, kind == STATUS
    has_line, is_money = kind.is_in([OPEN, LIMIT]), kind.is_in([DRAW, REPAY])
    money_ok = (pl.when(has_line).then(pl.col("credit_line").is_between(0, contract.FEN_MAX))
                .otherwise(pl.col("amount").is_between(1, contract.FEN_MAX)).fill_null(False))
    suffix = pl.col("request_id").str.ends_with(contract.CURE_SUFFIX).fill_null(False)
    # The first failing check wins, in the ledger checker's order (PROBLEMS).
    checks = [pl.col("seq") < 0, ~_is_id("entry_id"), ~_is_request_id(suffix),
              ~_is_id("account_id"), kind == BAD_CODE, ~_at_ok(frame),
              is_open & ~pl.col("product").is_in(list(contract.PRODUCTS)).fill_null(False),
              has_line & ~money_ok, is_money & ~money_ok, is_status & (status == BAD_CODE),
              (is_limit | is_status) & ~_reason_ok(frame)]
    assert len(checks) == len(PROBLEMS)
    # One int64 per row for what the entry changes, built by polars: numpy copies of the
    # nullable money columns would cost two more arrays of the slice.
    value = (pl.when(has_line).then(pl.col("credit_line"))
             .when(is_money).then(pl.col("amount"))
             .otherwise(status.cast(pl.Int64)).fill_null(0))
    bits = [(is_status & suffix, CURE_BIT), (suffix, SUFFIX_BIT),
            ((pl.col("reason") == contract.CURE_REASON).fill_null(False), CURED_BIT)]
    packed = kind
    for condition, bit in bits:  # bounded: three bits
        packed = packed | pl.when(condition).then(pl.lit(bit, pl.UInt8)).otherwise(
            pl.lit(0, pl.UInt8))
    # Lazy, so polars runs the columns in parallel and shares what they have in common.
    # The checks are separate columns (a when/then chain over them runs one after another).
    base = frame.lazy().select(
        pl.col("row"), pl.col("seq"),
        *(check.alias(f"_check{code}") for code, check in enumerate(checks, 1)),
        packed.alias("kind"), value.alias("value"),
        _at_unsure(frame).alias("at_unsure"),
        pl.col("account_id").hash(SEEDS[0]).alias("h1"),
        pl.col("account_id").hash(SEEDS[1]).alias("h2"),
        pl.col("entry_id").hash(SEEDS[0]).alias("entry_id_hash"),
        pl.col("request_id").hash(SEEDS[0]).alias("request_id_hash"),
    ).collect()
    out = {name: base[name].to_numpy() for name in
           ("row", "seq", "kind", "value", "h1", "h2", "entry_id_hash", "request_id_hash")}
    out["problem"] = _first_problem(base, len(checks))  # written to by the check below
    _confirm_at(frame, base["at_unsure"], out["problem"])
    suffixed = np.flatnonzero(out["kind"] & SUFFIX_BIT)
    out["suffixed"] = suffixed.astype(np.int64) + first
    out["suffixed_base_hash"] = (frame["request_id"].gather(suffixed)
                                 .str.strip_suffix(contract.CURE_SUFFIX).hash(SEEDS[0])
                                 .to_numpy())
    bad = np.flatnonzero(out["problem"])
    out["malformed"] = frame.drop("kind", "status_code")[bad].with_columns(
        pl.Series("_problem", out["problem"][bad]))
    return out


def _first_problem(base: pl.DataFrame, checks: int) -> np.ndarray:
    """Per row, the code of the first check that fails (0: none): written last to first, so
    the first wins."""
    problem = np.zeros(base.height, np.uint8)
    for code in range(checks, 0, -1):  # bounded: one per problem
        failed = base[f"_check{code}"].fill_null(False)  # null seq: never failed
        if failed.any():
            problem[failed.to_numpy()] = code
    return problem


def _codes(column: str, names: tuple[str, ...]) -> pl.Expr:
    """The index of the value in `names`, BAD_CODE when it is none of them (or null): a cast to
    an enum, which maps each distinct text (or category) once, not each row."""
    assert len(names) < 8
    return (pl.col(column).cast(pl.Enum(list(names)), strict=False).to_physical()
            .cast(pl.UInt8).fill_null(BAD_CODE))


def _is_id(column: str) -> pl.Expr:
    """The contract's id rule (1 to 64 of [A-Za-z0-9._:-]): the class is ASCII, so bytes are
    characters; looking for one character outside it is a plain scan, much cheaper than
    matching a counted repetition."""
    text = pl.col(column)
    return (text.str.len_bytes().is_between(1, ID_LEN_MAX)
            & ~text.str.contains(BAD_ID_CHARACTER)).fill_null(False)


def _is_request_id(suffix: pl.Expr) -> pl.Expr:
    """An id, or an id of up to 64 followed by the cure suffix (the suffix is itself of the
    class, so only the length limit differs)."""
    text = pl.col("request_id")
    length = text.str.len_bytes()
    longest = ID_LEN_MAX + len(contract.CURE_SUFFIX)
    return ((length.is_between(1, ID_LEN_MAX)
             | (length.is_between(ID_LEN_MAX + 1, longest) & suffix))
            & ~text.str.contains(BAD_ID_CHARACTER)).fill_null(False)


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
    if unsure.len() != len(problem) or not unsure.any():  # a literal: typed timestamps
        return
    rows = np.flatnonzero(unsure.to_numpy())
    at_code = PROBLEMS.index("bad_at") + 1
    texts = frame["at"].gather(rows).to_list()
    for row, text in zip(rows, texts):  # bounded by the unusual timestamps
        if (problem[row] == 0 or problem[row] > at_code) and not is_rfc3339(text):
            problem[row] = at_code


def _hashes_seen_twice(hashes: np.ndarray) -> np.ndarray:
    """The entry_id hash values that occur more than once among all rows (a superset of the
    judged rows' duplicates, which is all `_mark_reused` needs): neighbours in a sorted copy
    (numpy's vectorised sort takes half the time of polars' parallel distinct count here)."""
    ordered = np.sort(hashes)
    repeated = ordered[1:][ordered[1:] == ordered[:-1]]
    return np.unique(repeated)


def _judged(shape: _Shape) -> np.ndarray:
    """Per position: the rules judge the row (well formed; only a partition's rows are
    shaped at all)."""
    return shape.problem == 0


def _mark_reused(ledger: Table, shape: _Shape) -> None:
    """Rows whose entry_id a judged row before them (lower seq) already has: the checker leaves
    those out. Hash-equal candidates (rare) are compared as text, read back."""
    if shape.entry_id_hash is None:
        return
    candidates = np.flatnonzero(_judged(shape) & np.isin(shape.entry_id_hash,
                                                         shape.hashes_twice))
    shape.entry_id_hash = None
    if not len(candidates):
        return
    texts = ledger.fetch(_source_rows(shape, candidates))["entry_id"].to_list()
    seen: set[str] = set()
    for position, entry_id in zip(candidates.tolist(), texts):  # bounded by the candidates
        if entry_id in seen:
            shape.problem[position] = REUSED_PROBLEM
        seen.add(entry_id)


def _source_rows(shape: _Shape, positions: np.ndarray) -> np.ndarray:
    return positions if shape.rows is None else shape.rows[positions]


# -- 2. accounts made contiguous ------------------------------------------------------------------

@dataclass
class _Accounts:
    """The rules' rows grouped by account: `order[i]` is the seq-order position (into `good`) of
    the i-th row in account order; the other per-row arrays are in account order. Accounts are
    known by (the top bits of one hash, a second hash), and sorted by that pair."""

    good: np.ndarray | None  # positions the rules judge (None: all of them)
    seq: np.ndarray  # seq of the good rows, seq order
    order: np.ndarray  # int64
    first: np.ndarray  # bool: the row starts its account
    kind: np.ndarray  # uint8, TYPE_CODES
    bits: np.ndarray  # uint8: CURE_BIT | SUFFIX_BIT | CURED_BIT
    value: np.ndarray  # int64
    hashes: tuple[np.ndarray, np.ndarray]  # per account, in account order: (prefix, h2)
    shift: np.uint64  # prefix = h1 >> shift

    @functools.cached_property
    def starts(self) -> np.ndarray:
        return np.flatnonzero(self.first)

    @functools.cached_property
    def ends(self) -> np.ndarray:
        return np.append(self.starts[1:], len(self.first))

    @property
    def cure_shape(self) -> np.ndarray:
        return (self.bits & CURE_BIT) != 0

    def position(self, at: np.ndarray | int) -> np.ndarray | int:
        """The seq-order position (into the shape's arrays) of account-order row(s)."""
        at = self.order[at]
        return at if self.good is None else self.good[at]


def _take(values: np.ndarray, good: np.ndarray | None) -> np.ndarray:
    return values if good is None else values[good]


def _group(shape: _Shape) -> _Accounts:
    judged = _judged(shape)
    good = None if judged.all() else np.flatnonzero(judged)
    h1, h2 = shape.hashes
    shape.hashes = None  # 160 MB at 10 million entries, not needed again
    h1 = _take(h1, good)
    shift = _bits(len(h1))
    order, prefix = _account_order(h1, shift)
    del h1
    rows = order if good is None else good[order]
    # The columns in account order: one gather by polars on every core (1.5x faster than
    # numpy's takes one after another here).
    columns = pl.DataFrame({"h2": h2, "kind": shape.kind, "value": shape.value}).select(
        pl.all().gather(pl.Series(rows)))
    del h2
    shape.kind = shape.value = None  # in account order from here on
    h2s, kind, value = (columns[name].to_numpy() for name in ("h2", "kind", "value"))
    del columns
    order, h2s, kind, value = _untangle(prefix, order, h2s, kind, value)
    first = _starts(prefix, h2s)
    hashes = (prefix[first], h2s[first])
    del prefix, h2s
    return _Accounts(good, _take(shape.seq, good), order, first, kind & np.uint8(7),
                     kind & ~np.uint8(7), value, hashes, shift)


def _bits(n: int) -> np.uint64:
    bits = max(1, (n - 1).bit_length())
    assert bits <= 40, "over 2^40 ledger entries"
    return np.uint64(bits)


def _account_order(h1: np.ndarray, shift: np.uint64) -> tuple[np.ndarray, np.ndarray]:
    """(a permutation grouping rows by the top bits of h1, seq order kept within a group; the
    top bits in that order)."""
    # One sort of a single uint64, in place (numpy's vectorised sort: 0.05 s for 10^7 here,
    # polars' on both cores 0.13 s); the row position in the low bits keeps seq order within a
    # hash prefix.
    key = h1 >> shift
    key <<= shift
    key |= np.arange(len(h1), dtype=np.uint64)
    key.sort()
    prefix = key >> shift
    key &= np.uint64((1 << int(shift)) - 1)  # now the positions, below 2^40: int64 as they are
    return key.view(np.int64), prefix


def _untangle(prefix: np.ndarray, order: np.ndarray, h2s: np.ndarray,
              *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    """(order, h2s, *columns), put right: accounts sharing a hash prefix come out interleaved;
    each such run is sorted by the second hash (seq order kept within an account), the other
    columns in account order with it. With 64 - log2(n) prefix bits this touches a run or two
    per million accounts; only then are read-only columns copied."""
    tangled = prefix[1:] == prefix[:-1]
    tangled &= h2s[1:] != h2s[:-1]
    runs = np.unique(prefix[:-1][tangled])
    arrays = (order, h2s, *columns)
    if not len(runs):
        return arrays
    arrays = tuple(a if a.flags.writeable else a.copy() for a in arrays)
    for run in runs:  # bounded by the runs that need it
        lo = int(np.searchsorted(prefix, run, "left"))
        hi = int(np.searchsorted(prefix, run, "right"))
        local = np.lexsort((arrays[0][lo:hi], arrays[1][lo:hi]))
        for column in arrays:  # bounded: a few columns
            column[lo:hi] = column[lo:hi][local]
    return arrays


def _starts(prefix: np.ndarray, h2s: np.ndarray) -> np.ndarray:
    first = np.ones(len(prefix), bool)
    np.not_equal(prefix[1:], prefix[:-1], out=first[1:])
    first[1:] |= h2s[1:] != h2s[:-1]
    return first


# -- 3. the oracle, every entry at once -----------------------------------------------------------

@dataclass
class _State:
    """The state after each row (account order), as the oracle would replay it."""

    opened: np.ndarray  # bool: an open entry at or before this row, in this account
    outstanding: np.ndarray
    credit_line: np.ndarray
    status: np.ndarray  # int8

    def available(self, at: np.ndarray | slice = slice(None)) -> np.ndarray:
        return _available(self.credit_line[at], self.outstanding[at], self.status[at])


def _available(credit_line: np.ndarray, outstanding: np.ndarray,
               status: np.ndarray) -> np.ndarray:
    return np.where(status == ACTIVE, np.maximum(0, credit_line - outstanding), 0)


# What each kind does to the outstanding balance.
SIGN = np.zeros(256, np.int8)
SIGN[DRAW], SIGN[REPAY] = 1, -1


def _derive(accounts: _Accounts) -> _State:
    """Every quantity is a value carried forward from the latest row that set it (a segment),
    or, for the balance, a running sum restarted at each segment: one pass each."""
    kind, value, first = accounts.kind, accounts.value, accounts.first
    is_open = kind == OPEN
    outstanding = np.multiply(value, SIGN[kind], dtype=np.int64)
    # Each open starts the account afresh (as does the account's first row, before any open).
    restart = np.flatnonzero(first | is_open)
    if len(restart):
        # One running sum over the whole ledger, each restart row first lowered by the sum of
        # the segment before it: the sum then comes back to 0 there.
        segment_sums = np.add.reduceat(outstanding, restart)
        outstanding[restart[1:]] -= segment_sums[:-1]
    np.cumsum(outstanding, out=outstanding)
    opened = _carried(restart, is_open[restart].view(np.uint8), len(kind)).view(bool)
    # Rows before an account's first open keep a line and status of 0 / active: they are
    # never read, as nothing is opened there.
    line_set = np.flatnonzero(first | is_open | (kind == LIMIT))
    line = np.where(first[line_set] & ~is_open[line_set] & (kind[line_set] != LIMIT), 0,
                    value[line_set])
    credit_line = _carried(line_set, line, len(kind))
    status_set = np.flatnonzero(first | is_open | (kind == STATUS))
    code = np.where(kind[status_set] == STATUS, value[status_set], ACTIVE).astype(np.int8)
    status = _carried(status_set, code, len(kind))
    return _State(opened, outstanding, credit_line, status)


def _carried(starts: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """values[j] on every row from starts[j] (sorted, starting at 0) to the next start, the
    last to `n`: the changes placed at the starts, then a running sum (np.repeat with millions
    of counts is ten times slower). Exact: integer sums, and wrapping cancels."""
    out = np.zeros(n, values.dtype)
    out[starts] = values
    out[starts[1:]] -= values[:-1]
    np.cumsum(out, out=out, dtype=out.dtype)
    return out


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

    def count(self) -> int:
        return (sum(len(p) for p in self.errors.values()) + len(self.second_open)
                + len(self.no_open) + len(self.cure_not_due) + len(self.cure_wrong)
                + len(self.missing_cure))


def _judge(accounts: _Accounts, state: _State, shape: _Shape) -> _Flags:
    # The state before row i is the state after row i - 1, read through views shifted by one
    # (no copies of the ledger-long arrays): the masks below cover rows 1..n-1 and their
    # positions are shifted back at the end. A row that starts its account has no state before
    # it; every rule that reads that state also needs an open before the row (opened_b), which
    # is false there, and row 0 always starts its account.
    first = accounts.first
    kind, value, now = accounts.kind[1:], accounts.value[1:], first[1:]
    opened_b = state.opened[:-1] & ~now
    out_b, status_b, line_b = state.outstanding[:-1], state.status[:-1], state.credit_line[:-1]
    cure_due = np.zeros(len(first), bool)
    cure_due[1:] = ((kind == REPAY) & opened_b & (status_b == OVERDUE) & (out_b > 0)
                    & (value == out_b))
    consumed, cure_due = _cures_taken(accounts, cure_due, shape)
    taken, cure_shape = consumed[1:], accounts.cure_shape[1:]
    is_open = kind == OPEN
    plain = ~taken & ~is_open & opened_b & ~cure_shape
    draw, repay = plain & (kind == DRAW), plain & (kind == REPAY)
    active = status_b == ACTIVE
    inactive_draw = draw & ~active
    closed_repay = repay & (status_b == CLOSED)
    # A draw on an active account may take what the line leaves over the balance.
    headroom = line_b - out_b
    np.maximum(headroom, 0, out=headroom)
    errors = {
        "account_not_active": inactive_draw | closed_repay
                              | (plain & (kind == LIMIT) & (status_b == CLOSED)),
        "insufficient_limit": draw & active & (value > headroom),
        "overpayment": repay & ~closed_repay & (value > out_b),
        "outstanding_balance": plain & (kind == STATUS) & (value == CLOSED) & (out_b != 0),
    }
    next_taken = np.zeros(len(first), bool)
    next_taken[:-1] = consumed[1:] & ~now
    # Row 0 starts its account: of the rules, only "no open yet" can hold there.
    no_open = np.flatnonzero(~taken & ~is_open & ~opened_b) + 1
    if len(first) and accounts.kind[0] != OPEN:
        no_open = np.concatenate(([0], no_open))
    return _Flags(
        errors={error: np.flatnonzero(mask) + 1 for error, mask in errors.items()},
        second_open=np.flatnonzero(~taken & is_open & opened_b) + 1,
        no_open=no_open,
        cure_not_due=np.flatnonzero(~taken & ~is_open & opened_b & cure_shape) + 1,
        cure_wrong=_wrong_cures(accounts, consumed),
        missing_cure=np.flatnonzero(cure_due & ~next_taken),
    )


def _cures_taken(accounts: _Accounts, cure_due: np.ndarray,
                 shape: _Shape) -> tuple[np.ndarray, np.ndarray]:
    """(rows taken as the cure of the repay above, cure_due without those rows): a row is its
    repay's cure when its request_id is the repay's plus ":cure" (compared by hash: the row's
    id without the suffix against the repay's id); a row so taken is not judged, and so cannot
    itself make a cure due."""
    consumed = np.zeros(len(cure_due), bool)
    candidates = np.flatnonzero(cure_due[:-1] & ~accounts.first[1:]) + 1
    candidates = candidates[(accounts.bits[candidates] & SUFFIX_BIT) != 0]
    if not len(candidates) or not len(shape.suffixed):
        return consumed, cure_due
    here = accounts.position(candidates)
    at = np.minimum(np.searchsorted(shape.suffixed, here), len(shape.suffixed) - 1)
    assert (shape.suffixed[at] == here).all(), "a suffixed row without its base hash"
    above = shape.request_id_hash[accounts.position(candidates - 1)]
    taken = candidates[shape.suffixed_base_hash[at] == above]
    cure_due = cure_due.copy()
    consumed[taken] = True
    if consumed[taken - 1].any():
        # A taken row that is itself the repay of the next one: once taken it makes no cure
        # due, so the next is not taken. Rare: resolved one by one, in order.
        consumed[taken] = False
        for position in taken.tolist():  # bounded by the taken rows
            if cure_due[position - 1]:
                consumed[position], cure_due[position] = True, False
        return consumed, cure_due
    cure_due[taken] = False
    return consumed, cure_due


def _wrong_cures(accounts: _Accounts, consumed: np.ndarray) -> np.ndarray:
    positions = np.flatnonzero(consumed)
    right = ((accounts.kind[positions] == STATUS) & (accounts.value[positions] == ACTIVE)
             & ((accounts.bits[positions] & CURED_BIT) != 0))
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
    final = _views(state, last)
    final["opened"] &= known
    # A display row that is current (most are) sees the final state: only the rows behind
    # are looked up again.
    behind = np.flatnonzero(at != last)
    view_at = {name: values.copy() for name, values in final.items()}
    for name, values in _views(state, np.maximum(at[behind], 0)).items():  # bounded: 6 fields
        view_at[name][behind] = values
    view_at["opened"] &= (at >= 0) & known
    return _Oracle(group, known, has_seq, as_of_seq, last, last_seq, at, view_at, final)


def _compare(display: pl.DataFrame, ledger: Table, shape: _Shape, accounts: _Accounts,
             state: _State, cut_seq: int | None,
             counted: Callable[[dict[str, int]], None]) -> list[DisplayCase]:
    """The display's cases; `counted` hears how many of each kind there will be, first."""
    if not len(accounts.order):
        counted({"inconsistent_display": display.height})
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
    seen = np.zeros(len(accounts.starts), bool)
    seen[o.group[known]] = True
    missing = np.flatnonzero(~seen)
    counts = {"display_divergence": len(missing)}
    for problem, mask in problems:  # bounded: five problems
        kind = PROBLEM_KINDS[problem]
        counts[kind] = counts.get(kind, 0) + int(np.count_nonzero(mask))
    counted(counts)
    cases = []
    for problem, mask in problems:  # bounded: five problems
        for row in np.flatnonzero(mask):  # bounded by the flagged rows
            cases.append(_display_case(problem, display, int(row), context))
    ends = accounts.ends
    last_rows = _source_rows(shape, accounts.position(ends[missing] - 1))
    names = ledger.fetch(last_rows)["account_id"].to_list() if len(missing) else []
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
    shape = _shaped(ledger, None, QUIET)
    _mark_reused(ledger, shape)
    accounts = _group(shape)
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
    """For each display row, its account's index in account order, or -1. Accounts are sorted
    by (prefix, h2): a binary search on the prefix finds the account, for the display's rows
    in prefix order (the searches then walk the accounts in order: 5x faster than in the
    display's order, and than a join)."""
    prefix, h2 = accounts.hashes
    hashed = display.select(pl.col("account_id").hash(SEEDS[0]).alias("h1"),
                            pl.col("account_id").hash(SEEDS[1]).alias("h2"))
    wanted_prefix = hashed["h1"].to_numpy() >> accounts.shift
    wanted_h2 = hashed["h2"].to_numpy()
    by_prefix = np.argsort(wanted_prefix)
    at = np.empty(len(by_prefix), np.int64)
    at[by_prefix] = np.searchsorted(prefix, wanted_prefix[by_prefix])
    inside = np.minimum(at, len(prefix) - 1)
    same_prefix = prefix[inside] == wanted_prefix
    group = np.where(same_prefix & (h2[inside] == wanted_h2), inside, -1)
    # Accounts sharing a prefix (a run or two per million) are sorted by h2 within their run.
    for row in np.flatnonzero(same_prefix & (group < 0)).tolist():  # bounded by those rows
        lo = int(at[row])
        hi = int(np.searchsorted(prefix, wanted_prefix[row], "right"))
        k = lo + int(np.searchsorted(h2[lo:hi], wanted_h2[row]))
        if k < hi and h2[k] == wanted_h2[row]:
            group[row] = k
    return group


def _position_at(accounts: _Accounts, group: np.ndarray, as_of_seq: np.ndarray,
                 last: np.ndarray, last_seq: np.ndarray) -> np.ndarray:
    """Per display row: the account-order position of its account's last entry with seq <=
    as_of_seq, or -1 when there is none."""
    at = last.copy()  # a display that is current needs no search
    behind = np.flatnonzero(as_of_seq < last_seq)
    if not len(behind):
        return at
    # A binary search within each behind row's own account, all rows at once: an account's
    # rows are in seq order. Only the searched rows are touched, never the whole ledger.
    start = accounts.starts[group[behind]]
    lo, hi = start.copy(), last[behind] + 1
    target = as_of_seq[behind]
    for _ in range(64):  # bounded: each step halves every range
        open_ = lo < hi
        if not open_.any():
            break
        middle = (lo + hi) >> 1
        seq = accounts.seq[accounts.order[np.minimum(middle, len(accounts.order) - 1)]]
        right = open_ & (seq <= target)
        lo = np.where(right, middle + 1, lo)
        hi = np.where(open_ & ~right, middle, hi)
    assert (lo >= hi).all()
    at[behind] = np.where(lo > start, lo - 1, -1)
    return at


def _views(state: _State, at: np.ndarray) -> dict[str, np.ndarray]:
    # Each field read once at the (scattered) positions; available from what was read.
    credit_line, outstanding, status = (state.credit_line[at], state.outstanding[at],
                                        state.status[at])
    available = _available(credit_line, outstanding, status)
    return {"opened": state.opened[at], "credit_line": credit_line,
            "outstanding": outstanding, "available": available,
            "status": status, "usable": available > 0}


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

def _malformed(ledger: Table, shape: _Shape,
               partition: tuple[int, int] | None) -> list[tuple[str, dict]]:
    """(problem code, entry) for each row the rules leave out, in seq order."""
    reused = np.flatnonzero(shape.problem == REUSED_PROBLEM)
    frames = [shape.malformed]
    if len(reused):
        frames.append(ledger.fetch(_source_rows(shape, reused)).with_columns(
            pl.lit(REUSED_PROBLEM, pl.UInt8).alias("_problem")))
    rows = pl.concat(frames, how="vertical_relaxed").sort("seq", maintain_order=True)
    out = []
    for record in rows.iter_rows(named=True):  # bounded by the malformed rows
        entry = entry_dict(record)
        if partition is not None and not _in_partition(entry.get("account_id"), partition):
            continue
        code = record["_problem"]
        out.append((REUSED if code == REUSED_PROBLEM else PROBLEMS[code - 1], entry))
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


def _in_partition_column(account_ids: pl.Series, partition: tuple[int, int]) -> pl.Series:
    """Per row, as `_in_partition` says of one: rows without an account_id go to part 1."""
    k, n = partition
    crc = partitions.crc32_column(account_ids)
    return pl.Series(np.where(account_ids.is_null().to_numpy(), k == 1, crc % n == k - 1))


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


def _rule_findings(ledger: Table, shape: _Shape, accounts: _Accounts, state: _State,
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
    neighbours = np.unique(np.concatenate([positions, np.minimum(positions + 1,
                                                                  len(accounts.order) - 1)]))
    source_rows = _source_rows(shape, accounts.position(neighbours))
    records = ledger.fetch(source_rows).iter_rows(named=True)
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
