"""Sources: an exported ledger or display, from JSON lines, CSV, Parquet or PostgreSQL, as one
polars frame with the contract's column names and types, sorted by seq for a ledger.

What stops a row from being read at all (a missing column, a value of the wrong type, money
that is not a whole number of fen, no seq, a seq twice, a display row without a valid status)
is a UsageError naming the source and the line or row. Everything that can be read but breaks
the contract's entry format (a bad id, an unknown entry type, a missing amount, a bad `at`) is
left in the frame: judging it is the engines' job, as the ledger checker judges a live ledger.
Every frame carries `row`, the row's 0-based position in the source, for those messages.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
import orjson
import polars as pl

from .. import contract
from ..errors import UsageError
from ..secrets import url_shown

LEDGER_COLUMNS = ("seq", "entry_id", "request_id", "account_id", "type", "at", "product",
                  "credit_line", "amount", "reason", "status")
DISPLAY_COLUMNS = ("account_id", "credit_line", "outstanding", "available", "status", "usable",
                   "as_of_seq")
INT_COLUMNS = ("seq", "as_of_seq")
MONEY_COLUMNS = ("credit_line", "amount", "outstanding", "available")
BOOL_COLUMNS = ("usable",)
# Ledger columns of a few distinct values: read from Parquet as polars Categorical, which holds
# 10 million of them in 40 MB instead of 160 MB of string views, and compares them as integers.
VOCABULARY_COLUMNS = ("type", "status", "reason", "product")
MONEY_UNITS = ("fen", "yuan")
SUFFIX_FORMS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
                ".parquet": "parquet", ".pq": "parquet"}
INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,18}")
YUAN_TEXT = re.compile(r"[+-]?[0-9]{1,15}(\.[0-9]{1,2})?")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
PG_FETCH_ROWS = 10_000
CONNECT_TIMEOUT_S = 5
VALUE_WORDS_MAX = 60


@dataclass(frozen=True)
class Source:
    """Where a table comes from: `label` is what messages say (a URL without its password)."""

    spec: str
    label: str
    form: str  # jsonl, csv, parquet or postgresql

    def where(self, row: int) -> str:
        """Row `row` (0-based) as a reader finds it: a line of a text file, else a row."""
        if self.form == "csv":
            return f"{self.label} line {row + 2}"  # line 1 is the header
        if self.form == "jsonl":
            return f"{self.label} line {row + 1}"
        return f"{self.label} row {row + 1}"


class Table:
    """A source's rows in the contract's columns. `frame` is the whole table; a Parquet ledger
    can also be read a slice at a time (`batches`), which holds only the slice in memory, and
    single rows read back (`fetch`) for the words of a finding."""

    def __init__(self, frame: pl.DataFrame | None, source: Source,
                 slices: _ParquetSlices | None = None) -> None:
        assert frame is not None or slices is not None
        self._frame, self.source, self._slices = frame, source, slices
        self._at: np.ndarray | None = None

    @property
    def frame(self) -> pl.DataFrame:
        if self._frame is None:
            self._frame = self._slices.whole()
        return self._frame

    @property
    def rows_max(self) -> int:
        """How many rows `batches` yields at most."""
        if self._frame is not None or self._slices is None:
            return self.frame.height
        return self._slices.bounds[-1][1]

    def batches(self) -> Iterator[pl.DataFrame]:
        """The table in seq order, a slice at a time (the whole frame when it is in memory).
        NotInSeqOrder when the slices are not: the caller then reads `frame`, which sorts."""
        if self._frame is not None or self._slices is None:
            yield self.frame
            return
        yield from self._slices.batches()

    def fetch(self, rows: Iterable[int]) -> pl.DataFrame:
        """The rows whose `row` (position in the source) is given, in that order."""
        rows = [int(r) for r in rows]
        if self._frame is None and self._slices is not None:
            return self._slices.fetch(rows)
        frame = self.frame
        if not rows:
            return frame.clear()
        if self._at is None:  # where each source row is in the frame (it may be sorted)
            self._at = np.full(int(frame["row"].max()) + 1, -1, np.int64)
            self._at[frame["row"].to_numpy()] = np.arange(frame.height)
        at = self._at[rows]
        assert (at >= 0).all(), "a row left out of the table"
        return frame[at]


class NotInSeqOrder(Exception):
    """A ledger read a slice at a time turned out not to be sorted by seq."""


def describe(spec: str) -> Source:
    """The source behind a path or a postgresql:// URL."""
    if type(spec) is not str or not spec:
        raise UsageError("a source must be a file path or a postgresql:// URL")
    try:
        scheme = urlsplit(spec).scheme
    except ValueError as exc:  # `postgresql://u:pw@[::1/db`
        raise UsageError(f"{redact(spec)!r} is not a URL or a path ({exc})") from None
    if scheme in ("postgresql", "postgres"):
        return Source(spec, redact(spec), "postgresql")
    form = SUFFIX_FORMS.get(Path(spec).suffix.lower())
    if form is None:
        raise UsageError(f"cannot tell the format of {spec!r}: name it .jsonl, .csv or .parquet, "
                         f"or give a postgresql://HOST/DB?table=NAME URL")
    if not Path(spec).is_file():
        raise UsageError(f"{spec}: no such file; check the path")
    return Source(spec, spec, form)


def redact(url: str) -> str:
    """A URL for messages (`harness.secrets.url_shown`: its passwords replaced)."""
    return url_shown(url)


def column_names(columns: dict | None, side: str) -> dict[str, str]:
    """The source's name for each contract column of `side` ('ledger' or 'display').

    `columns` is either one mapping for both sides ({contract name: source name}) or
    {"ledger": {...}, "display": {...}}."""
    wanted = LEDGER_COLUMNS if side == "ledger" else DISPLAY_COLUMNS
    mapping = dict(columns or {})
    if set(mapping) & {"ledger", "display"}:
        unknown = set(mapping) - {"ledger", "display"}
        if unknown:
            raise UsageError(f"columns mixes per-side and flat names ({sorted(unknown)}); give "
                             f"either {{'ledger': {{...}}, 'display': {{...}}}} or one mapping")
        per_side = mapping.get(side) or {}
        if not isinstance(per_side, dict):
            raise UsageError(f"columns {side!r} must map contract names to column names")
        mapping = dict(per_side)
    known = set(LEDGER_COLUMNS) | set(DISPLAY_COLUMNS)
    for name, source_name in mapping.items():
        if name not in known:
            raise UsageError(f"columns maps {name!r}, which is no contract column; the columns "
                             f"are {', '.join(sorted(known))}")
        if type(source_name) is not str or not source_name:
            raise UsageError(f"columns maps {name!r} to {source_name!r}; give a column name")
    return {name: mapping.get(name, name) for name in wanted}


# -- reading --------------------------------------------------------------------------------------

def read_ledger(spec: str, columns: dict | None = None, money_unit: str = "fen",
                as_of_seq: int | None = None) -> Table:
    """The ledger, sorted by seq, cut at `as_of_seq` when given. A Parquet file is only opened
    here (its columns checked): it is read when the table's frame or batches are asked for."""
    source = describe(spec)
    names = column_names(columns, "ledger")
    if source.form == "parquet":
        return Table(None, source, _ParquetSlices(source, names, money_unit, as_of_seq))
    frame = _canonical(source, _raw(source, names), names, money_unit)
    return Table(_in_seq_order(source, frame, as_of_seq), source)


def _in_seq_order(source: Source, frame: pl.DataFrame, as_of_seq: int | None,
                  sort: bool = True) -> pl.DataFrame:
    """The ledger frame checked (every seq present and unique), cut and sorted by seq."""
    _require_present(source, frame, "seq", "every entry needs a seq")
    if as_of_seq is not None:
        frame = frame.filter(pl.col("seq") <= as_of_seq)
    if not frame["seq"].is_sorted():
        if not sort:
            raise NotInSeqOrder(source.label)
        frame = frame.sort("seq", maintain_order=True)
    duplicated = frame["seq"].diff() == 0
    if duplicated.any():
        n = int(duplicated.arg_true()[0])
        _seq_twice(source, frame["seq"][n], frame["row"][n - 1], frame["row"][n])
    return frame


def _seq_twice(source: Source, seq: int, first: int, again: int) -> None:
    raise UsageError(f"{source.where(again)}: seq {seq} appears twice (also "
                     f"{source.where(first)}); a ledger's seqs are unique, so this export is "
                     f"damaged or joined twice")


class _ParquetSlices:
    """A Parquet ledger read a slice of rows at a time (whole row groups, about BATCH_ROWS
    rows): each slice is converted and checked as the whole file would be, in file order, so
    a file sorted by seq (as exports are) never has to be in memory at once."""

    def __init__(self, source: Source, names: dict[str, str], money_unit: str,
                 as_of_seq: int | None) -> None:
        self.source, self.names, self.money_unit = source, names, money_unit
        self.as_of_seq = as_of_seq
        self.bounds = _slice_bounds(source, names)

    def whole(self) -> pl.DataFrame:
        raw = _read_parquet(self.source, self.names)
        frame = _canonical(self.source, raw, self.names, self.money_unit)
        return _in_seq_order(self.source, frame, self.as_of_seq)

    def batches(self) -> Iterator[pl.DataFrame]:
        last: tuple[int, int] | None = None  # (seq, row) of the previous slice's last row
        # The next slices are read on another thread while the caller works on this one:
        # polars reads without the GIL, so the two cores share the work.
        with ThreadPoolExecutor(1) as pool:
            ahead = deque(pool.submit(self.read, *bounds)
                          for bounds in self.bounds[:READ_AHEAD])
            for n in range(len(self.bounds)):  # bounded by the file's slices
                frame = ahead.popleft().result()
                if n + READ_AHEAD < len(self.bounds):
                    ahead.append(pool.submit(self.read, *self.bounds[n + READ_AHEAD]))
                last = self._check_boundary(frame, last)
                yield frame

    def _check_boundary(self, frame: pl.DataFrame,
                        last: tuple[int, int] | None) -> tuple[int, int] | None:
        """Seq order and unique seqs across the cut between two slices. (No stop at the cut:
        a later row may still be at or below it, in a file out of order; only reading on
        tells.)"""
        if frame.height and last is not None:
            seq, row = int(frame["seq"][0]), int(frame["row"][0])
            if seq < last[0]:
                raise NotInSeqOrder(self.source.label)
            if seq == last[0]:
                _seq_twice(self.source, seq, last[1], row)
        return (int(frame["seq"][-1]), int(frame["row"][-1])) if frame.height else last

    def read(self, start: int, stop: int) -> pl.DataFrame:
        """Rows start..stop of the file, converted, checked and cut."""
        raw = _read_parquet(self.source, self.names, (start, stop - start))
        frame = _canonical(self.source, raw, self.names, self.money_unit, first_row=start)
        return _in_seq_order(self.source, frame, self.as_of_seq, sort=False)

    def read_rows(self, rows: list[int]) -> pl.DataFrame:
        """Single rows, each converted and checked as in `read`; read at once, in parallel."""
        parts = _read_parquet_parts(self.source, self.names, [(row, 1) for row in rows])
        return pl.concat([
            _in_seq_order(self.source, _canonical(self.source, raw, self.names,
                                                  self.money_unit, first_row=row),
                          self.as_of_seq, sort=False)
            for row, raw in zip(rows, parts)])  # bounded: FETCH_ONE_BY_ONE_MAX

    def fetch(self, rows: list[int]) -> pl.DataFrame:
        """Single rows, each read on its own (a Parquet reader skips to the page that holds
        it); past FETCH_ONE_BY_ONE_MAX rows one pass over the file is cheaper."""
        if len(rows) > FETCH_ONE_BY_ONE_MAX:
            wanted = pl.Series(sorted(set(rows)), dtype=pl.UInt32)
            found = pl.concat([frame.filter(pl.col("row").is_in(wanted))
                               for frame in self.batches()])
        else:
            found = self.read_rows(sorted(set(rows))) if rows else self.read(0, 0)
        at = {row: n for n, row in enumerate(found["row"].to_list())}
        return found[[at[row] for row in rows]]


BATCH_ROWS = 500_000
READ_AHEAD = 2  # slices read ahead of the one being worked on (1 left a core idle at times)
FETCH_ONE_BY_ONE_MAX = 256  # read in parallel, 2 to 3 ms each: 256 cost about one pass


def _slice_bounds(source: Source, names: dict[str, str]) -> list[tuple[int, int]]:
    """[start, stop) row ranges of whole row groups, about BATCH_ROWS rows each; the columns
    are checked here, so a missing one is reported before any reading."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.ParquetFile(source.spec).metadata
        _missing_columns(source, metadata.schema.to_arrow_schema().names, names)
    except UsageError:
        raise
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise UsageError(f"{source.label}: not a readable Parquet file ({_first_line(exc)})") \
            from None
    bounds, start, stop = [], 0, 0
    for group in range(metadata.num_row_groups):  # bounded by the row groups
        stop += metadata.row_group(group).num_rows
        if stop - start >= BATCH_ROWS:
            bounds.append((start, stop))
            start = stop
    if stop > start or not bounds:
        bounds.append((start, stop))
    return bounds


def read_display(spec: str, columns: dict | None = None, money_unit: str = "fen") -> Table:
    source = describe(spec)
    names = column_names(columns, "display")
    frame = _canonical(source, _raw(source, names), names, money_unit)
    frame = frame.with_columns(pl.col("status").cast(pl.Utf8))
    for name in DISPLAY_COLUMNS:
        if name != "as_of_seq":
            _require_present(source, frame, name, "a display row shows every field")
    bad = ~frame["status"].is_in(list(contract.STATUSES))
    if bad.any():
        n = int(bad.arg_true()[0])
        raise UsageError(f"{source.where(frame['row'][n])}: status {frame['status'][n]!r} is "
                         f"not one of {', '.join(contract.STATUSES)}")
    return Table(frame, source)


def _require_present(source: Source, frame: pl.DataFrame, name: str, why: str) -> None:
    if not frame[name].null_count():
        return
    missing = frame[name].is_null()
    if missing.any():
        row = frame["row"][int(missing.arg_true()[0])]
        raise UsageError(f"{source.where(row)}: no {name} ({why}); fix the export")


def _raw(source: Source, names: dict[str, str]) -> dict[str, pl.Series | list]:
    """Each contract column as the source holds it: a typed series or a list of values."""
    readers: dict[str, Callable[[Source, dict[str, str]], dict]] = {
        "parquet": _read_parquet, "csv": _read_csv, "jsonl": _read_jsonl,
        "postgresql": _read_postgresql}
    return readers[source.form](source, names)


def _missing_columns(source: Source, present: Iterable[str], names: dict[str, str]) -> None:
    present = set(present)
    absent = [(c, n) for c, n in names.items() if n not in present]
    if absent:
        words = ", ".join(f"{n!r}" + (f" (for {c})" if n != c else "") for c, n in absent)
        raise UsageError(f"{source.label}: no column {words}; the columns are "
                         f"{', '.join(sorted(present)) or 'none'}; map yours with columns=")


def _read_parquet(source: Source, names: dict[str, str],
                  rows: tuple[int, int] | None = None) -> dict[str, pl.Series]:
    """The columns, or `rows` = (offset, length) of them. The whole file: a ledger's few-valued
    columns as categoricals; a slice: as they are, it is soon dropped."""
    # Streaming for the whole file: the text of a vocabulary column becomes codes a batch at a
    # time.
    return _read_parquet_parts(source, names, [rows],
                               "streaming" if rows is None else "auto")[0]


def _read_parquet_parts(source: Source, names: dict[str, str],
                        parts: list[tuple[int, int] | None],
                        engine: str = "auto") -> list[dict[str, pl.Series]]:
    """Several `rows` of `_read_parquet` at once: polars reads them on all its threads."""
    try:
        schema = pl.read_parquet_schema(source.spec)
        _missing_columns(source, schema, names)
        scan = pl.scan_parquet(source.spec)
        # Each part its own plan: shared, the slices would not be pushed into the reads.
        frames = pl.collect_all([_parquet_part(scan, schema, names, rows) for rows in parts],
                                engine=engine,
                                optimizations=pl.QueryOptFlags(comm_subplan_elim=False))
    except UsageError:
        raise
    except Exception as exc:  # polars raises many types for a damaged file
        raise UsageError(f"{source.label}: not a readable Parquet file ({_first_line(exc)})") \
            from None
    return [{c: frame[n] for c, n in names.items()} for frame in frames]


def _parquet_part(scan: pl.LazyFrame, schema: dict, names: dict[str, str],
                  rows: tuple[int, int] | None) -> pl.LazyFrame:
    vocabulary = {names[c] for c in VOCABULARY_COLUMNS
                  if c in names and "seq" in names and rows is None}
    wanted = [pl.col(n).cast(pl.Categorical) if n in vocabulary and schema[n] == pl.Utf8
              else pl.col(n) for n in dict.fromkeys(names.values())]
    return scan.select(wanted) if rows is None else scan.slice(*rows).select(wanted)


def _read_csv(source: Source, names: dict[str, str]) -> dict[str, pl.Series]:
    try:
        header = pl.read_csv(source.spec, n_rows=0, infer_schema=False).columns
        _missing_columns(source, header, names)
        frame = pl.read_csv(source.spec, infer_schema=False,
                            columns=list(dict.fromkeys(names.values())))
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"{source.label}: not a readable CSV file ({_first_line(exc)})") \
            from None
    return {c: frame[n] for c, n in names.items()}


def _read_jsonl(source: Source, names: dict[str, str]) -> dict[str, list]:
    # Read line by line rather than with a bulk reader: a bad line is then named exactly, and a
    # key that no line has is told apart from one left out where it does not apply.
    values: dict[str, list] = {c: [] for c in names}
    seen: set[str] = set()
    try:
        handle = open(source.spec, "rb")
    except OSError as exc:
        raise UsageError(f"{source.label}: cannot read ({exc.strerror})") from None
    with handle:
        for number, line in enumerate(handle):  # bounded by the file's lines
            if not line.strip():
                raise UsageError(f"{source.label} line {number + 1}: empty line; JSON lines "
                                 f"holds one object per line")
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise UsageError(f"{source.label} line {number + 1}: not JSON ({exc})") from None
            if type(obj) is not dict:
                raise UsageError(f"{source.label} line {number + 1}: not a JSON object")
            seen.update(obj)
            for name, key in names.items():
                values[name].append(obj.get(key))
    if not next(iter(values.values())):
        return values  # an empty export: nothing to miss
    # A key absent from every line is a column the export lacks; the fields an entry has only
    # for some types, and a display's as_of_seq, may be left out where they are null.
    optional = {"product", "credit_line", "amount", "reason", "status"} if "seq" in names \
        else {"as_of_seq"}
    _missing_columns(source, seen | {n for c, n in names.items() if c in optional}, names)
    return values


def _read_postgresql(source: Source, names: dict[str, str]) -> dict[str, list]:
    try:
        import psycopg
    except ImportError:
        raise UsageError("reading from PostgreSQL needs psycopg: pip install 'psycopg[binary]'") \
            from None
    conninfo, statement = _pg_statement(source)
    try:
        with psycopg.connect(conninfo) as conn:
            with conn.cursor() as cursor:
                cursor.execute(statement)
                present = [d.name for d in cursor.description or []]
                _missing_columns(source, present, names)
                index = {c: present.index(n) for c, n in names.items()}
                values: dict[str, list] = {c: [] for c in names}
                while True:  # bounded by the result's rows, a batch at a time
                    batch = cursor.fetchmany(PG_FETCH_ROWS)
                    if not batch:
                        break
                    for name, position in index.items():
                        values[name].extend(row[position] for row in batch)
    except UsageError:
        raise
    except psycopg.Error as exc:
        message = _first_line(exc)
        password = urlsplit(source.spec).password
        if password:
            message = message.replace(password, "***")
        raise UsageError(f"{source.label}: PostgreSQL said: {message}") from None
    return values


def _pg_statement(source: Source) -> tuple[str, Any]:
    """(libpq URL without our parameters, the statement that reads the rows)."""
    from psycopg import sql

    parts = urlsplit(source.spec)
    rest, table, query = [], None, None
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "table":
            table = value
        elif key == "query":
            query = value
        else:
            rest.append((key, value))
    if (table is None) == (query is None):
        raise UsageError(f"{source.label}: add ?table=NAME or ?query=SQL (one of them) to say "
                         f"which rows to read")
    if not any(key == "connect_timeout" for key, _ in rest):
        rest.append(("connect_timeout", str(CONNECT_TIMEOUT_S)))
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))
    if query is not None:
        return conninfo, query
    pieces = table.split(".")
    if len(pieces) > 2 or not all(IDENTIFIER.fullmatch(p) for p in pieces):
        raise UsageError(f"table {table!r} must be NAME or SCHEMA.NAME of letters, digits and _")
    return conninfo, sql.SQL("SELECT * FROM {}").format(sql.Identifier(*pieces))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- types ----------------------------------------------------------------------------------------

def _canonical(source: Source, raw: dict[str, pl.Series | list], names: dict[str, str],
               money_unit: str, first_row: int = 0) -> pl.DataFrame:
    if money_unit not in MONEY_UNITS:
        raise UsageError(f"money unit {money_unit!r} must be fen or yuan")
    columns = {}
    for name, values in raw.items():
        what = name if names[name] == name else f"{name} (column {names[name]!r})"
        column = _Column(source, name, what, money_unit, first_row)
        if isinstance(values, pl.Series):
            columns[name] = column.from_series(values)
        else:
            columns[name] = column.from_values(values)
    rows = len(next(iter(columns.values()))) if columns else 0
    frame = pl.DataFrame(columns).with_row_index("row", offset=first_row)
    assert frame.height == rows
    return frame


@dataclass
class _Column:
    """One column's conversion to its contract type, and the message when a value won't go."""

    source: Source
    name: str
    what: str
    money_unit: str
    first_row: int = 0  # the source row of the column's first value

    def fail(self, row: int, value: Any, need: str) -> UsageError:
        shown = repr(value)
        if len(shown) > VALUE_WORDS_MAX:
            shown = shown[:VALUE_WORDS_MAX - 3] + "..."
        return UsageError(f"{self.source.where(self.first_row + row)}: {self.what} {shown} "
                          f"{need}")

    @property
    def kind(self) -> str:
        if self.name in INT_COLUMNS:
            return "int"
        if self.name in MONEY_COLUMNS:
            return "money"
        if self.name in BOOL_COLUMNS:
            return "bool"
        if self.name == "at":
            return "at"
        return "text"

    # - typed series (Parquet, CSV) -

    def from_series(self, series: pl.Series) -> pl.Series:
        kind, dtype = self.kind, series.dtype
        series = series.alias(self.name)
        if dtype == pl.Null:
            return series.cast(_dtype(kind))
        if kind == "text" or (kind == "at" and not dtype.is_temporal()):
            return self._text_series(series)
        if kind == "at":
            if dtype == pl.Date:
                return series.cast(pl.Utf8)  # a date has no time and no offset: a bad `at`
            return series
        if kind == "bool":
            return self._bool_series(series)
        if dtype == pl.Utf8:
            return self._number_text(series)
        if dtype.is_integer():
            return self._integer_series(series)
        if dtype.is_decimal():
            text = series.cast(pl.Utf8)
            if self.money_unit == "fen" or kind == "int":
                # A decimal type may carry a scale: 100.00 is a whole 100 fen.
                text = text.str.replace(r"\.0+$", "")
            return self._number_text(text)
        if dtype.is_float() and kind == "money" and self.money_unit == "yuan":
            return self._yuan_floats(series)
        return self._first_bad(series, series.is_not_null(), self._need())

    def _need(self) -> str:
        if self.kind == "int":
            return "is not an integer"
        if self.money_unit == "yuan":
            return "is not an amount of yuan with at most 2 decimals"
        return "is not an integer number of fen (money is never a fraction of a fen)"

    def _first_bad(self, series: pl.Series, bad: pl.Series, need: str) -> pl.Series:
        bad = bad.fill_null(False)
        if not bad.any():
            return series
        row = int(bad.arg_true()[0])
        raise self.fail(row, series[row], need)

    def _text_series(self, series: pl.Series) -> pl.Series:
        dtype = series.dtype
        if dtype == pl.Categorical and self.name in VOCABULARY_COLUMNS:
            return series
        if dtype in (pl.Utf8, pl.Categorical) or isinstance(dtype, pl.Enum):
            return series.cast(pl.Utf8)
        if dtype == pl.Binary:
            text = series.cast(pl.Utf8, strict=False)  # invalid UTF-8 becomes null
            return self._first_bad(text, text.is_null() & series.is_not_null(),
                                   "is not UTF-8 text")
        return self._first_bad(series, series.is_not_null(), "is not text")

    def _bool_series(self, series: pl.Series) -> pl.Series:
        if series.dtype == pl.Boolean:
            return series
        if series.dtype == pl.Utf8:
            lowered = series.str.to_lowercase()
            bad = series.is_not_null() & ~lowered.is_in(["true", "false"])
            self._first_bad(series, bad, "is not true or false")
            return (lowered == "true").alias(self.name)
        return self._first_bad(series, series.is_not_null(), "is not true or false")

    def _integer_series(self, series: pl.Series) -> pl.Series:
        if series.dtype == pl.Int64 and not (self.kind == "money" and self.money_unit == "yuan"):
            return series  # already what the contract says: no pass over the values
        wide = series.cast(pl.Int64, strict=False)
        self._first_bad(series, wide.is_null() & series.is_not_null(), "is too large")
        if self.kind == "money" and self.money_unit == "yuan":
            return self._yuan_scaled(wide * 100, wide)
        return wide

    def _number_text(self, series: pl.Series) -> pl.Series:
        text = series.str.strip_chars()
        if self.kind == "money" and self.money_unit == "yuan":
            self._first_bad(series, ~text.str.contains(f"^{YUAN_TEXT.pattern}$"), self._need())
            negative = text.str.starts_with("-").fill_null(False)
            parts = text.str.strip_chars_start("+-").str.split_exact(".", 1)
            whole = parts.struct.field("field_0").cast(pl.Int64)
            cents = parts.struct.field("field_1").str.pad_end(2, "0").cast(pl.Int64).fill_null(0)
            magnitude = whole * 100 + cents
            return magnitude.zip_with(~negative, -magnitude).alias(self.name)
        self._first_bad(series, ~text.str.contains(f"^{INTEGER_TEXT.pattern}$"), self._need())
        return text.cast(pl.Int64).alias(self.name)

    def _yuan_floats(self, series: pl.Series) -> pl.Series:
        fen = (series * 100).round(0)
        # Exact when the fen value divided back gives the very same double: 0.29 passes,
        # 0.291 or 1e-9 do not.
        bad = ((fen / 100) != series) | (fen.abs() > 2.0 ** 53)
        self._first_bad(series, bad, self._need())
        return fen.cast(pl.Int64).alias(self.name)

    def _yuan_scaled(self, fen: pl.Series, yuan: pl.Series) -> pl.Series:
        self._first_bad(yuan, yuan.abs() > 10**15, "is too large")
        return fen.alias(self.name)

    # - Python values (JSON lines, PostgreSQL) -

    def from_values(self, values: list) -> pl.Series:
        convert = {"int": self._int_value, "money": self._money_value, "bool": self._bool_value,
                   "text": self._text_value, "at": self._at_value}[self.kind]
        out = [None if v is None else convert(row, v) for row, v in enumerate(values)]
        return pl.Series(self.name, out, dtype=_dtype(self.kind))

    def _int_value(self, row: int, value: Any) -> int:
        if type(value) is int and -2**63 <= value < 2**63:
            return value
        raise self.fail(row, value, self._need())

    def _money_value(self, row: int, value: Any) -> int:
        if self.money_unit == "fen":
            if type(value) is decimal.Decimal and value.is_finite() \
                    and value == value.to_integral_value():
                return self._int_value(row, int(value))  # NUMERIC holding whole fen
            return self._int_value(row, value)
        if type(value) is bool:
            raise self.fail(row, value, self._need())
        if type(value) is float:
            text = repr(value)  # the shortest text that reads back as this double
        elif type(value) in (int, decimal.Decimal, str):
            text = str(value).strip()
        else:
            raise self.fail(row, value, self._need())
        try:
            fen = decimal.Decimal(text) * 100
        except decimal.InvalidOperation:
            raise self.fail(row, value, self._need()) from None
        if not fen.is_finite() or fen != fen.to_integral_value() or abs(fen) > 10**17:
            raise self.fail(row, value, self._need())
        return int(fen)

    def _bool_value(self, row: int, value: Any) -> bool:
        if type(value) is bool:
            return value
        raise self.fail(row, value, "is not true or false")

    def _text_value(self, row: int, value: Any) -> str:
        if type(value) is str:
            return value
        if type(value) in (bytes, memoryview):
            try:
                return bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail(row, value, "is not UTF-8 text") from None
        raise self.fail(row, value, "is not text")

    def _at_value(self, row: int, value: Any) -> str:
        if isinstance(value, dt.datetime):
            return value.isoformat()  # naive stays without an offset, and is judged bad
        return self._text_value(row, value)


def _dtype(kind: str) -> pl.DataType:
    return {"int": pl.Int64, "money": pl.Int64, "bool": pl.Boolean, "text": pl.Utf8,
            "at": pl.Utf8}[kind]
