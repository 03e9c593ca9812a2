"""A PostgreSQL ledger store (psycopg 3): the same five methods as the SQLite store, one
transaction per `commit`.

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
from typing import Iterator
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from ..contract import ENTRY_COLUMNS
from ..errors import UsageError

try:  # psycopg is an optional dependency (the `test` extra); `open_ledger` reports its absence
    import psycopg
    from psycopg import sql
except ImportError:  # pragma: no cover - exercised only where psycopg is not installed
    psycopg = None

DEFAULT_SCHEMA = "limit_harness"
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
ENTRIES_BATCH = 5000  # rows per round trip when `entries` streams the whole ledger
CONNECT_TIMEOUT_S = 5


def parse_url(url: str) -> tuple[str, str, str]:
    """(libpq conninfo URL, schema, table prefix) from a `postgresql://` ledger URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise UsageError(f"not a PostgreSQL URL: {redact(url)!r}")
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


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)


class PostgresLedger:
    def __init__(self, url: str) -> None:
        conninfo, schema, prefix = parse_url(url)
        if psycopg is None:
            raise UsageError("a postgresql:// ledger needs psycopg 3: "
                             "pip install 'psycopg[binary]'")
        self.schema, self.table_prefix = schema, prefix
        try:
            # autocommit: reads are single statements; each `commit` opens its own transaction.
            self._db = psycopg.connect(conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise UsageError(f"cannot reach the PostgreSQL ledger at {redact(url)!r}: "
                             f"{_first_line(exc)}") from None
        entries = sql.Identifier(schema, prefix + "entries")
        answers = sql.Identifier(schema, prefix + "answers")
        by_account = sql.Identifier(prefix + "entries_by_account")
        try:
            with self._db.transaction():
                self._db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(schema)))
                self._db.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " seq BIGINT PRIMARY KEY, entry_id TEXT NOT NULL, request_id TEXT NOT NULL,"
                    " account_id TEXT NOT NULL, type TEXT NOT NULL, at TEXT NOT NULL,"
                    " product TEXT, credit_line BIGINT, amount BIGINT, status TEXT,"
                    " reason BYTEA)").format(entries))
                self._db.execute(sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {} ON {} (account_id, seq)").format(
                        by_account, entries))
                self._db.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " request_id TEXT PRIMARY KEY, status INTEGER NOT NULL,"
                    " body BYTEA NOT NULL)").format(answers))
        except psycopg.Error as exc:
            self._db.close()
            raise UsageError(f"cannot create the ledger tables in schema {schema!r} at "
                             f"{redact(url)!r}: {_first_line(exc)}") from None
        columns = sql.SQL(", ").join(map(sql.Identifier, ENTRY_COLUMNS))
        self._insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            entries, columns, sql.SQL(", ").join(sql.Placeholder() * len(ENTRY_COLUMNS)))
        # Last answer wins, as in the other stores (the retry_duplicates_draw bug answers twice).
        self._remember = sql.SQL(
            "INSERT INTO {} (request_id, status, body) VALUES (%s, %s, %s) "
            "ON CONFLICT (request_id) DO UPDATE SET status = EXCLUDED.status, "
            "body = EXCLUDED.body").format(answers)
        self._recall = sql.SQL("SELECT status, body FROM {} WHERE request_id = %s").format(
            answers)
        self._page = sql.SQL("SELECT {} FROM {} WHERE seq > %s ORDER BY seq LIMIT %s").format(
            columns, entries)
        self._account = sql.SQL(
            "SELECT {} FROM {} WHERE account_id = %s AND seq > %s ORDER BY seq").format(
                columns, entries)

    def commit(self, entries: list[dict], request_id: str, status: int, body: dict) -> None:
        rows = [tuple(_column_value(c, e.get(c)) for c in ENTRY_COLUMNS) for e in entries]
        answer = orjson.dumps(body)
        with self._db.transaction():  # rolls back and re-raises on any error inside
            with self._db.cursor() as cur:
                if rows:
                    cur.executemany(self._insert, rows)
                cur.execute(self._remember, (request_id, status, answer))

    def recall(self, request_id: str) -> tuple[int, dict] | None:
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
        self._db.close()


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
