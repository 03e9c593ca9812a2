"""reconcile's sources: JSON lines, CSV, Parquet and PostgreSQL read to the same table; column
mapping; yuan; and every unreadable row a one-line UsageError naming the source and the line.

PostgreSQL: 127.0.0.1:5432, database `test`, trust auth as root or postgres; each test makes
uniquely named tables and drops them. Without a server the PostgreSQL tests are skipped, unless
LIMIT_HARNESS_REQUIRE_SERVICES=1 (CI), where they fail: a silent skip would prove nothing."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from pathlib import Path

import polars as pl
import pytest

from harness.errors import UsageError
from harness.reconcile import ReconcileConfig, reconcile, seq_of, sources
from test_reconcile import DISPLAY_SCHEMA, LEDGER_SCHEMA, Export, clean_export, write_rows
from conftest import postgres_probe

REQUIRED = (os.environ.get("LIMIT_HARNESS_REQUIRE_SERVICES") == "1"
            or os.environ.get("LIMIT_HARNESS_REQUIRE_POSTGRES") == "1")


def defective_export() -> Export:
    x = clean_export()
    x.draw("a2", 1)  # an overdraw: a2's line is all drawn
    x.show("a1", as_of_seq=4)
    x.show("a2", available=3)
    x.add("a3", "draw", amount=0)  # malformed
    return x


def keys(result) -> set[tuple]:
    return {(f.kind, f.severity, f.account_id, seq_of(f)) for f in result.findings}


def one_line_error(ledger: str, display: str, **options) -> str:
    with pytest.raises(UsageError) as caught:
        reconcile(ReconcileConfig(ledger, display, **options))
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# -- formats ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["jsonl", "csv", "parquet"])
def test_each_format_reads_the_same_table_and_findings(tmp_path, form):
    x = defective_export()
    ledger, display = x.write(tmp_path, form)
    read = sources.read_ledger(ledger).frame
    expected = pl.DataFrame(x.entries, schema=LEDGER_SCHEMA)
    assert read.drop("row").with_columns(pl.col(pl.Categorical).cast(pl.Utf8)).equals(expected)
    assert read["row"].to_list() == list(range(len(x.entries)))
    shown = sources.read_display(display).frame.drop("row")
    assert shown.equals(pl.DataFrame(x.display, schema=DISPLAY_SCHEMA))
    whole = keys(reconcile(ReconcileConfig(ledger, display)))
    assert whole == {("ledger_rule_violation", "critical", "a2", 13),
                     ("inconsistent_display", "critical", "a2", 13),
                     ("contract_violation", "major", "a3", 14)}


def test_a_ledger_out_of_seq_order_is_read_in_seq_order(tmp_path):
    x = clean_export()
    x.show_all()
    x.entries.reverse()
    ledger, display = x.write(tmp_path, "csv")
    assert sources.read_ledger(ledger).frame["seq"].to_list() == list(range(1, 13))
    assert reconcile(ReconcileConfig(ledger, display)).findings == []


def _sliced(entries: list[dict], tmp_path: Path) -> str:
    """A Parquet ledger in row groups of 3, read in slices of about 4 rows."""
    return write_rows(entries, LEDGER_SCHEMA, tmp_path / "sliced.parquet", row_group_size=3)


def test_a_parquet_ledger_is_read_a_slice_at_a_time_and_rows_read_back(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "BATCH_ROWS", 4)
    x = clean_export()
    x.show_all()
    table = sources.read_ledger(_sliced(x.entries, tmp_path))
    slices = list(table.batches())
    assert [frame.height for frame in slices] == [6, 6]
    assert [r for frame in slices for r in frame["row"].to_list()] == list(range(12))
    assert table.fetch([11, 0, 5])["seq"].to_list() == [12, 1, 6]
    # The same table as read whole, and the same findings as from one slice.
    assert pl.concat(slices).equals(table.frame)
    whole = write_rows(x.entries, LEDGER_SCHEMA, tmp_path / "whole.parquet")
    _, display = x.write(tmp_path, "jsonl")
    assert keys(reconcile(ReconcileConfig(table.source.spec, display))) == \
        keys(reconcile(ReconcileConfig(whole, display))) == set()


def test_slices_out_of_seq_order_are_read_whole_and_sorted(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "BATCH_ROWS", 4)
    x = clean_export()
    x.show_all()
    ledger = _sliced(x.entries[6:] + x.entries[:6], tmp_path)  # each slice sorted, not the whole
    _, display = x.write(tmp_path, "jsonl")
    assert reconcile(ReconcileConfig(ledger, display)).findings == []


def test_a_seq_twice_across_slices_names_both_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "BATCH_ROWS", 4)
    x = clean_export()
    x.show_all()
    entries = [dict(e) for e in x.entries]
    entries[6]["seq"] = entries[5]["seq"]  # the first row of the second slice
    ledger = _sliced(entries, tmp_path)
    _, display = x.write(tmp_path, "jsonl")
    message = one_line_error(ledger, display)
    assert f"row 7: seq {entries[5]['seq']} appears twice (also" in message
    assert "row 6)" in message


def test_a_bad_value_in_a_later_slice_names_its_row(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "BATCH_ROWS", 4)
    x = clean_export()
    x.show_all()
    # Money as text: every value is read and judged, and one in the second slice is no fen.
    frame = pl.DataFrame(x.entries, schema=LEDGER_SCHEMA).with_columns(
        pl.when(pl.col("seq") == 9).then(pl.lit("1.5")).otherwise(pl.col("amount").cast(pl.Utf8))
        .alias("amount"))
    frame.write_parquet(tmp_path / "text.parquet", row_group_size=3)
    _, display = x.write(tmp_path, "jsonl")
    message = one_line_error(str(tmp_path / "text.parquet"), display)
    assert message.startswith(f"{tmp_path / 'text.parquet'} row 9: amount '1.5' is not an "
                              f"integer number of fen"), message


def test_typed_parquet_timestamps_and_categoricals(tmp_path):
    x = clean_export()
    x.show_all()
    frame = pl.DataFrame(x.entries, schema=LEDGER_SCHEMA).with_columns(
        pl.col("at").str.to_datetime(time_zone="UTC"), pl.col("type").cast(pl.Categorical))
    frame.write_parquet(tmp_path / "ledger.parquet")
    (tmp_path / "d").mkdir()
    _, display = x.write(tmp_path / "d", "parquet")
    for engine in ("rows", "columnar"):
        result = reconcile(ReconcileConfig(str(tmp_path / "ledger.parquet"), display,
                                           engine=engine))
        assert result.findings == []
    # A timestamp without a zone names no moment: every entry is malformed, for both engines.
    frame.with_columns(pl.col("at").dt.replace_time_zone(None)).write_parquet(
        tmp_path / "naive.parquet")
    for engine in ("rows", "columnar"):
        result = reconcile(ReconcileConfig(str(tmp_path / "naive.parquet"), display,
                                           engine=engine))
        # ... so the ledger has no account, and each display row is of an unknown one.
        assert {f.kind for f in result.findings} == {"contract_violation",
                                                     "inconsistent_display"}


# -- columns and units -----------------------------------------------------------------------------

def test_column_names_are_mapped(tmp_path):
    x = defective_export()
    renamed = {"seq": "ledger_seq", "amount": "amt", "account_id": "acct"}
    frame = pl.DataFrame(x.entries, schema=LEDGER_SCHEMA).rename(renamed)
    frame.write_csv(tmp_path / "ledger.csv")
    pl.DataFrame(x.display, schema=DISPLAY_SCHEMA).rename({"account_id": "user"}) \
        .write_csv(tmp_path / "display.csv")
    ledger, display = str(tmp_path / "ledger.csv"), str(tmp_path / "display.csv")
    per_side = {"ledger": renamed, "display": {"account_id": "user"}}
    (tmp_path / "plain").mkdir()
    assert keys(reconcile(ReconcileConfig(ledger, display, columns=per_side))) == \
        keys(reconcile(ReconcileConfig(*x.write(tmp_path / "plain"))))
    message = one_line_error(ledger, display)
    assert message.startswith(f"{ledger}: no column 'seq'") and "columns=" in message
    message = one_line_error(ledger, display, columns={"ledger": renamed})
    assert message.startswith(f"{display}: no column 'account_id'")
    assert "no contract column" in one_line_error(ledger, display, columns={"sequence": "x"})


def test_yuan_convert_exactly_to_fen(tmp_path):
    x = Export()
    x.open("a1", 1000_00)
    x.draw("a1", 12_34)
    x.draw("a1", 29)
    x.show("a1")
    for form in ("csv", "jsonl", "parquet"):
        directory = tmp_path / form
        directory.mkdir()
        yuan = [{**e, **{k: e[k] / 100 for k in ("credit_line", "amount") if k in e}}
                for e in x.entries]
        shown = [{**r, **{k: r[k] / 100 for k in ("credit_line", "outstanding", "available")}}
                 for r in x.display]
        schema = {**LEDGER_SCHEMA, "credit_line": pl.Float64, "amount": pl.Float64}
        display_schema = {**DISPLAY_SCHEMA, "credit_line": pl.Float64,
                          "outstanding": pl.Float64, "available": pl.Float64}
        ledger = write_rows(yuan, schema, directory / f"ledger.{form}")
        display = write_rows(shown, display_schema, directory / f"display.{form}")
        read = sources.read_ledger(ledger, money_unit="yuan").frame
        assert read["amount"].to_list() == [None, 12_34, 29]
        assert reconcile(ReconcileConfig(ledger, display, money_unit="yuan")).findings == []
    text = tmp_path / "bad.csv"
    text.write_text("seq,entry_id,request_id,account_id,type,at,product,credit_line,amount,"
                    "reason,status\n1,e1,r1,a1,open,2025-01-01T00:00:00Z,huabei,10.00,,,\n"
                    "2,e2,r2,a1,draw,2025-01-01T00:00:00Z,,,0.123,,\n")
    message = one_line_error(str(text), display, money_unit="yuan")
    assert message.startswith(f"{text} line 3: amount '0.123' is not an amount of yuan")
    message = one_line_error(str(text), display)  # in fen, 10.00 is no whole number of fen
    assert message.startswith(f"{text} line 2: credit_line '10.00' is not an integer number")


# -- rows that cannot be read ----------------------------------------------------------------------

HEADER = "seq,entry_id,request_id,account_id,type,at,product,credit_line,amount,reason,status\n"
GOOD_ROW = "1,e1,r1,a1,open,2025-01-01T00:00:00Z,huabei,100,,,\n"


@pytest.mark.parametrize("row, words", [
    ("x,e2,r2,a1,draw,2025-01-01T00:00:00Z,,,5,,\n", "line 3: seq 'x' is not an integer"),
    ("2,e2,r2,a1,draw,2025-01-01T00:00:00Z,,,5.5,,\n", "line 3: amount '5.5' is not an integer"),
    (",e2,r2,a1,draw,2025-01-01T00:00:00Z,,,5,,\n", "line 3: no seq"),
    ("1,e2,r2,a1,draw,2025-01-01T00:00:00Z,,,5,,\n", "line 3: seq 1 appears twice (also "),
])
def test_an_unreadable_csv_row_is_named_by_its_line(tmp_path, row, words):
    ledger = tmp_path / "ledger.csv"
    ledger.write_text(HEADER + GOOD_ROW + row)
    x = clean_export()
    x.show_all()
    _, display = x.write(tmp_path)
    assert one_line_error(str(ledger), display).startswith(f"{ledger} {words}")


@pytest.mark.parametrize("line, words", [
    (b'{"seq": 2, "amount": 1.5, "account_id": "a1"}', "line 2: amount 1.5 is not an integer"),
    (b'{"seq": "2", "account_id": "a1"}', "line 2: seq '2' is not an integer"),
    (b'{"seq": 2, "account_id": 7}', "line 2: account_id 7 is not text"),
    (b'{"seq": 2,', "line 2: not JSON"),
    (b'[1, 2]', "line 2: not a JSON object"),
    (b'', "line 2: empty line"),
])
def test_an_unreadable_json_line_is_named(tmp_path, line, words):
    ledger = tmp_path / "ledger.jsonl"
    first = (b'{"seq": 1, "entry_id": "e1", "request_id": "r1", "account_id": "a1", '
             b'"type": "open", "at": "2025-01-01T00:00:00Z", "product": "huabei", '
             b'"credit_line": 100}\n')
    ledger.write_bytes(first + line + b"\n")
    x = clean_export()
    x.show_all()
    _, display = x.write(tmp_path)
    assert one_line_error(str(ledger), display).startswith(f"{ledger} {words}")


def test_an_unreadable_display_row_is_named(tmp_path):
    x = clean_export()
    x.show_all()
    x.display[1]["status"] = "sleeping"
    ledger, display = x.write(tmp_path, "csv")
    assert one_line_error(ledger, display) == \
        f"{display} line 3: status 'sleeping' is not one of active, frozen, overdue, closed"
    x.display[1].update(status="active", usable="maybe")
    write_rows(x.display, {**DISPLAY_SCHEMA, "usable": pl.Utf8}, Path(display))
    assert "line 3: usable 'maybe' is not true or false" in one_line_error(ledger, display)


@pytest.mark.parametrize("name, content, words", [
    ("missing.parquet", None, "no such file"),
    ("ledger.txt", b"x", "cannot tell the format"),
    ("ledger.parquet", b"not parquet at all", "not a readable Parquet file"),
])
def test_an_unreadable_file_is_one_line(tmp_path, name, content, words):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    x = clean_export()
    x.show_all()
    (tmp_path / "good").mkdir()
    _, display = x.write(tmp_path / "good")
    assert words in one_line_error(str(path), display)


# -- PostgreSQL ------------------------------------------------------------------------------------

_probe = postgres_probe  # one probe for every PostgreSQL test (conftest.py)


@pytest.fixture(scope="module")
def pg_url():
    url, why_not = _probe()
    if url is None:
        if REQUIRED:
            pytest.fail(f"LIMIT_HARNESS_REQUIRE_SERVICES=1 but {why_not}", pytrace=False)
        pytest.skip(why_not)
    return url


@pytest.fixture
def pg_tables(pg_url):
    import psycopg

    names = [f"lh_reconcile_{side}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
             for side in ("ledger", "display")]
    yield pg_url, names
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP TABLE IF EXISTS "{name}"')


def test_postgresql_tables_and_queries_read_like_files(tmp_path, pg_tables):
    import psycopg

    url, (ledger_table, display_table) = pg_tables
    x = defective_export()
    with psycopg.connect(url, autocommit=True) as conn:
        # The reference service's own column types: reason as BYTEA, `at` here as timestamptz.
        conn.execute(f'CREATE TABLE "{ledger_table}" (seq BIGINT PRIMARY KEY, entry_id TEXT, '
                     f'request_id TEXT, account_id TEXT, type TEXT, at TIMESTAMPTZ, product '
                     f'TEXT, credit_line BIGINT, amount BIGINT, status TEXT, reason BYTEA)')
        conn.execute(f'CREATE TABLE "{display_table}" (account_id TEXT, credit_line NUMERIC, '
                     f'outstanding BIGINT, available BIGINT, status TEXT, usable BOOLEAN, '
                     f'as_of_seq BIGINT)')
        with conn.cursor() as cursor:
            cursor.executemany(
                f'INSERT INTO "{ledger_table}" VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, '
                f'%s)', [(e["seq"], e["entry_id"], e["request_id"], e["account_id"], e["type"],
                          dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc), e.get("product"),
                          e.get("credit_line"), e.get("amount"), e.get("status"),
                          e["reason"].encode() if "reason" in e else None) for e in x.entries])
            cursor.executemany(
                f'INSERT INTO "{display_table}" VALUES (%s, %s, %s, %s, %s, %s, %s)',
                [tuple(r[c] for c in DISPLAY_SCHEMA) for r in x.display])
    files = keys(reconcile(ReconcileConfig(*x.write(tmp_path))))
    by_table = ReconcileConfig(f"{url}?table={ledger_table}", f"{url}?table={display_table}")
    assert keys(reconcile(by_table)) == files
    query = f"SELECT * FROM \"{ledger_table}\" WHERE seq <= 12"
    by_query = ReconcileConfig(f"{url}?query={query}", f"{url}?table={display_table}",
                               engine="rows")
    # Without the overdraw and the malformed draw only the display defect is left.
    assert keys(reconcile(by_query)) == {("inconsistent_display", "critical", "a2", 13)}
    message = one_line_error(f"{url}?table=no_such_{uuid.uuid4().hex[:6]}",
                             f"{url}?table={display_table}")
    assert "PostgreSQL said:" in message and "does not exist" in message


def test_a_password_never_appears_in_a_message(tmp_path):
    x = clean_export()
    x.show_all()
    _, display = x.write(tmp_path)
    for url in ("postgresql://someone:s3cret-pw@127.0.0.1:1/test?table=ledger",
                "postgresql://someone@127.0.0.1:1/test?table=ledger&password=s3cret-pw",
                "postgresql://someone:s3cret-pw@127.0.0.1:1/test"):
        message = one_line_error(url, display)
        assert "s3cret-pw" not in message and "<redacted>" in message
    assert sources.redact("postgresql://u:p%40ss@h:5/db?table=t") == \
        "postgresql://u:<redacted>@h:5/db?table=t"
