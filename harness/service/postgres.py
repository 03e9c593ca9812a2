"""A PostgreSQL ledger store (psycopg 3): the same five methods as the SQLite store, one
transaction per `commit`, committed (`synchronous_commit = on`, whatever the server's default)
before `commit` returns, so before the write is answered.

Acceptance under a row lock: the core judges a write against the account's state as of its last
entry, and `commit` re-checks that judgement under the account's row lock, in the same
transaction that appends the entries: `accounts.last_seq` must still be the seq this store last
wrote (or read) for the account. A second writer on the same ledger (another API process) that
changed the account in between makes the commit raise `LedgerConflict` and roll back, so a write
judged on a state that is no longer the ledger's is never committed (it is answered 500, never
acknowledged). One writer per ledger is the reference service's deployment; the lock is what
keeps a second one from overdrawing an account.

URL: `postgresql://[user[:password]@]host[:port]/dbname[?schema=NAME&table_prefix=PREFIX&...]`.
`schema` (default `limit_harness`) and `table_prefix` (default empty) are ours and are taken out
of the URL; every other query parameter goes to libpq unchanged. The schema and the tables are
created when absent, so pointing two services at one database needs only two schema names.

`reason` is stored as UTF-8 in a BYTEA column: the contract allows any 1 to 64 characters, and a
PostgreSQL TEXT column cannot hold NUL, so TEXT would turn a valid request into a server error
(SQLite and the memory store keep NUL; this store must behave the same).
"""

from __future__ import annotations

import re
from typing import Iterator, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from ..contract import ENTRY_COLUMNS, ENTRY_COMMON_FIELDS
from ..errors import UsageError
from ..secrets import url_shown
from .group_commit import GroupCommit
from .storage import Answers

try:  # psycopg is an optional dependency (the `test` extra); `open_ledger` reports its absence
    import psycopg
    from psycopg import sql
except ImportError:  # pragma: no cover - exercised only where psycopg is not installed
    psycopg = None

DEFAULT_SCHEMA = "limit_harness"
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
SEQ_COLUMN = ENTRY_COLUMNS.index("seq")
# The entries table's column types, in ENTRY_COLUMNS's order. `reason` is BYTEA (see above).
COLUMN_TYPES = {"seq": "bigint", "entry_id": "text", "request_id": "text", "account_id": "text",
                "type": "text", "at": "text", "product": "text", "credit_line": "bigint",
                "amount": "bigint", "status": "text", "reason": "bytea"}
assert tuple(COLUMN_TYPES) == ENTRY_COLUMNS
ENTRIES_BATCH = 5000  # rows per round trip when `entries` streams the whole ledger
CONNECT_TIMEOUT_S = 5


def parse_url(url: str) -> tuple[str, str, str]:
    """(libpq conninfo URL, schema, table prefix) from a `postgresql://` ledger URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise UsageError(f"not a PostgreSQL URL: {url_shown(url)!r}")
    ours = {"schema": DEFAULT_SCHEMA, "table_prefix": ""}
    rest = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ours:
            ours[key] = value
        else:
            rest.append((key, value))
    if not any(key == "connect_timeout" for key, _ in rest):
        rest.append(("connect_timeout", str(CONNECT_TIMEOUT_S)))
    schema, prefix = ours["schema"], ours["table_prefix"]
    if not IDENTIFIER.fullmatch(schema):
        raise UsageError(f"schema {schema!r} must match {IDENTIFIER.pattern}")
    if prefix and not IDENTIFIER.fullmatch(prefix):
        raise UsageError(f"table_prefix {prefix!r} must match {IDENTIFIER.pattern}")
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), ""))
    return conninfo, schema, prefix


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)


class LedgerConflict(RuntimeError):
    """Another writer changed the account since this store last saw it: the judgement the
    commit carries no longer holds, so nothing was written."""


class Commit(NamedTuple):
    """One `commit`, ready for a transaction: rows, the answer, and for each account the seq
    this store believed was its last (None: a new account) and the seq it moves to."""
    rows: list[tuple]
    request_id: str
    status: int
    answer: bytes
    moves: list[tuple[str, int | None, int]]


class PostgresLedger:
    def __init__(self, url: str) -> None:
        conninfo, schema, prefix = parse_url(url)
        if psycopg is None:
            raise UsageError("a postgresql:// ledger needs psycopg 3: "
                             "pip install 'psycopg[binary]'")
        self.schema, self.table_prefix = schema, prefix
        self._url, self._conninfo = url, conninfo
        self._db = self._connect()
        entries = sql.Identifier(schema, prefix + "entries")
        answers = sql.Identifier(schema, prefix + "answers")
        by_account = sql.Identifier(prefix + "entries_by_account")
        accounts = sql.Identifier(schema, prefix + "accounts")
        try:
            with self._db.transaction():
                # Two processes starting on one new ledger (the API and the projector) would
                # race each other's CREATEs: the first to come creates, the other waits.
                self._db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                                 (f"limit-harness ledger {schema}.{prefix}",))
                self._db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(schema)))
                self._db.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                    entries, sql.SQL(", ").join(map(_column_definition, ENTRY_COLUMNS))))
                self._db.execute(sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {} ON {} (account_id, seq)").format(
                        by_account, entries))
                self._db.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " request_id TEXT PRIMARY KEY, status INTEGER NOT NULL,"
                    " body BYTEA NOT NULL)").format(answers))
                self._tails = self._account_tails(accounts, entries)
        except psycopg.Error as exc:
            self._db.close()
            raise UsageError(f"cannot create the ledger tables in schema {schema!r} at "
                             f"{url_shown(url)!r}: {_first_line(exc)}") from None
        columns = sql.SQL(", ").join(map(sql.Identifier, ENTRY_COLUMNS))
        # A whole batch's rows in one statement each: one array per column.
        self._insert = sql.SQL("INSERT INTO {} ({}) SELECT * FROM unnest({})").format(
            entries, columns, sql.SQL(", ").join(
                sql.SQL("%s::{}[]").format(sql.SQL(COLUMN_TYPES[c])) for c in ENTRY_COLUMNS))
        # Last answer wins, as in the other stores (the retry_duplicates_draw bug answers twice;
        # `_write_batch` keeps a batch's last answer per request, as one statement must).
        self._remember = sql.SQL(
            "INSERT INTO {} (request_id, status, body) "
            "SELECT * FROM unnest(%s::text[], %s::integer[], %s::bytea[]) "
            "ON CONFLICT (request_id) DO UPDATE SET status = EXCLUDED.status, "
            "body = EXCLUDED.body").format(answers)
        # The row lock: the UPDATE locks each account's row until COMMIT, and re-reads a row
        # another transaction changed meanwhile, where the stale `last_seq` matches nothing.
        # Each statement fails (a division by zero, CONFLICT_SQLSTATE) unless every account
        # matched: the failure aborts the transaction on the server, so the whole batch goes
        # in one round trip, with no answer to wait for before COMMIT.
        self._move = sql.SQL(
            "WITH moved AS (UPDATE {} AS a SET last_seq = m.last_seq "
            "FROM unnest(%s::text[], %s::bigint[], %s::bigint[]) AS m(account_id, was, last_seq) "
            "WHERE a.account_id = m.account_id AND a.last_seq = m.was RETURNING 1) "
            "SELECT 1 / ((SELECT count(*) FROM moved) = %s)::int").format(accounts)
        self._claim = sql.SQL(
            "WITH claimed AS (INSERT INTO {} (account_id, last_seq) "
            "SELECT * FROM unnest(%s::text[], %s::bigint[]) "
            "ON CONFLICT (account_id) DO NOTHING RETURNING 1) "
            "SELECT 1 / ((SELECT count(*) FROM claimed) = %s)::int").format(accounts)
        self._recall = sql.SQL("SELECT status, body FROM {} WHERE request_id = %s").format(
            answers)
        self._all_answers = sql.SQL("SELECT request_id, status, body FROM {}").format(answers)
        self._page = sql.SQL("SELECT {} FROM {} WHERE seq > %s ORDER BY seq LIMIT %s").format(
            columns, entries)
        self._account = sql.SQL(
            "SELECT {} FROM {} WHERE account_id = %s AND seq > %s ORDER BY seq").format(
                columns, entries)
        self._answers: Answers | None = None  # in memory once group commits start
        self._group: GroupCommit | None = None
        self._writer_db = None
        self._durable_seq = 0  # the last seq on disk, while commits are grouped

    def _connect(self):
        try:
            # autocommit: reads are single statements; each commit opens its own transaction.
            db = psycopg.connect(self._conninfo, autocommit=True)
            # The write is answered after its commit: it must be on disk by then, whatever the
            # server's default says.
            db.execute("SET synchronous_commit TO on")
            return db
        except psycopg.Error as exc:
            raise UsageError(f"cannot reach the PostgreSQL ledger at {url_shown(self._url)!r}: "
                             f"{_first_line(exc)}") from None

    def _account_tails(self, accounts, entries) -> dict[str, int]:
        """Each account's last seq, from the accounts table; created (and filled from the
        entries, for a ledger written before it existed) when absent."""
        db = self._db
        exists = db.execute("SELECT to_regclass(%s)", (accounts.as_string(db),)).fetchone()[0]
        if exists is None:
            db.execute(sql.SQL("CREATE TABLE {} (account_id TEXT PRIMARY KEY,"
                               " last_seq BIGINT NOT NULL)").format(accounts))
            db.execute(sql.SQL("INSERT INTO {} SELECT account_id, max(seq) FROM {} "
                               "GROUP BY account_id").format(accounts, entries))
        return dict(db.execute(sql.SQL("SELECT account_id, last_seq FROM {}").format(accounts)))

    # -- group commit (the server's mode; group_commit.py) ----------------------------------
    def group_commits(self, on_failure) -> None:
        """From now on `commit` queues, and a writer thread commits the queue in batches on a
        connection of its own; `pending()` says what the edge must wait for before answering.
        Answers are served from memory from now on (a queued one is not in the table yet)."""
        assert self._group is None, "group commits already started"
        self._answers = Answers()
        for request_id, status, body in self._db.execute(self._all_answers):
            self._answers.remember(request_id, status, orjson.loads(body))
        self._writer_db = self._connect()
        self._group = GroupCommit(self._write_batch, on_failure)

    def pending(self):
        """None when every commit so far is durable, else an awaitable for when it is."""
        return None if self._group is None else self._group.pending()

    def durable_seq(self) -> int | None:
        """The last seq on disk; None when every commit is (commits are not grouped). What
        leaves the process about an entry (its event on the bus) waits for this."""
        return None if self._group is None else self._durable_seq

    # -- the store -----------------------------------------------------------------------------
    def commit(self, entries: list[dict], request_id: str, status: int, body: dict) -> None:
        rows = [tuple(_column_value(c, e.get(c)) for c in ENTRY_COLUMNS) for e in entries]
        lasts = {e["account_id"]: e["seq"] for e in entries}  # its last seq per account
        tails = self._tails
        moves = [(account_id, tails.get(account_id), last) for account_id, last in lasts.items()]
        item = Commit(rows, request_id, status, orjson.dumps(body), moves)
        if self._group is None:
            self._write_batch([item], self._db)
        else:
            self._group.queue(item)
            self._answers.remember(request_id, status, body)
        tails.update(lasts)

    def _write_batch(self, batch: list[Commit], db=None) -> None:
        """One transaction for the batch, sent in one round trip: each account's row locked and
        moved from the seq this store believed was its last, or LedgerConflict and nothing
        written."""
        db = self._writer_db if db is None else db
        first: dict[str, int | None] = {}
        last: dict[str, int] = {}
        for item in batch:
            for account_id, was, seq in item.moves:
                first.setdefault(account_id, was)
                last[account_id] = seq
        moved = [a for a, was in first.items() if was is not None]
        claimed = [a for a, was in first.items() if was is None]
        rows = [row for item in batch for row in item.rows]
        try:
            with db.pipeline(), db.transaction(), db.cursor() as cur:
                if moved:
                    cur.execute(self._move, (moved, [first[a] for a in moved],
                                             [last[a] for a in moved], len(moved)))
                if claimed:
                    cur.execute(self._claim, (claimed, [last[a] for a in claimed], len(claimed)))
                if rows:
                    cur.execute(self._insert, [list(column) for column in zip(*rows)])
                answers = {item.request_id: item for item in batch}  # the last one wins
                cur.execute(self._remember, ([a.request_id for a in answers.values()],
                                             [a.status for a in answers.values()],
                                             [a.answer for a in answers.values()]))
        except psycopg.errors.DivisionByZero:
            raise LedgerConflict(f"an account of {sorted(first)[:3]} changed in the ledger "
                                 f"since this service read it: another writer; nothing was "
                                 f"committed") from None
        if rows:  # committed: entries are appended in seq order, so the last is the largest
            self._durable_seq = rows[-1][SEQ_COLUMN]

    def recall(self, request_id: str) -> tuple[int, dict] | None:
        if self._answers is not None:
            return self._answers.recall(request_id)
        row = self._db.execute(self._recall, (request_id,)).fetchone()
        return (row[0], orjson.loads(row[1])) if row else None

    def page(self, after_seq: int, limit: int) -> list[dict]:
        return [_entry(row) for row in self._db.execute(self._page, (after_seq, limit))]

    def account_entries(self, account_id: str, after_seq: int = 0) -> list[dict]:
        return [_entry(row) for row in self._db.execute(self._account, (account_id, after_seq))]

    def entries(self) -> Iterator[dict]:
        # Keyset pages rather than one huge result: the ledger may not fit in memory twice.
        after = -(2**63)
        while True:
            batch = self.page(after, ENTRIES_BATCH)
            yield from batch
            if len(batch) < ENTRIES_BATCH:
                return
            after = batch[-1]["seq"]

    def close(self) -> None:
        if self._group is not None:
            self._group.close()  # what is queued is made durable first
            self._writer_db.close()
        self._db.close()


def _column_definition(column: str) -> sql.Composable:
    constraint = " PRIMARY KEY" if column == "seq" else \
        " NOT NULL" if column in ENTRY_COMMON_FIELDS else ""
    return sql.SQL("{} {}{}").format(sql.Identifier(column), sql.SQL(COLUMN_TYPES[column].upper()),
                                     sql.SQL(constraint))


def _column_value(column: str, value):
    if column == "reason" and value is not None:
        return value.encode("utf-8")
    return value


def _entry(row: tuple) -> dict:
    entry = {}
    for column, value in zip(ENTRY_COLUMNS, row):
        if value is None:
            continue
        if column == "reason":
            value = bytes(value).decode("utf-8")
        entry[column] = value
    return entry
