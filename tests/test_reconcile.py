"""reconcile: each ledger and display rule on a small hand-made export, judged by both engines;
the seeded generator's planted mismatches found exactly; partitions that add up.

`Export` builds a ledger entry by entry and displays from the oracle, and the other reconcile
test modules use it too."""

from __future__ import annotations

import zlib
from pathlib import Path

import orjson
import polars as pl
import pytest

from harness import oracle
from harness.errors import UsageError
from harness.reconcile import ReconcileConfig, datagen, partition, reconcile, seq_of
from harness.reconcile.rows import well_formed

AT = "2025-01-01T00:00:00Z"
LEDGER_SCHEMA = {"seq": pl.Int64, "entry_id": pl.Utf8, "request_id": pl.Utf8,
                 "account_id": pl.Utf8, "type": pl.Utf8, "at": pl.Utf8, "product": pl.Utf8,
                 "credit_line": pl.Int64, "amount": pl.Int64, "reason": pl.Utf8,
                 "status": pl.Utf8}
DISPLAY_SCHEMA = {"account_id": pl.Utf8, "credit_line": pl.Int64, "outstanding": pl.Int64,
                  "available": pl.Int64, "status": pl.Utf8, "usable": pl.Boolean,
                  "as_of_seq": pl.Int64}
ENGINES = ("rows", "columnar")


class Export:
    """A ledger written entry by entry, and display rows computed from it by the oracle."""

    def __init__(self) -> None:
        self.entries: list[dict] = []
        self.display: list[dict] = []

    @property
    def last_seq(self) -> int:
        return self.entries[-1]["seq"] if self.entries else 0

    def add(self, account_id: str, kind: str, *, request_id: str | None = None,
            seq: int | None = None, **fields) -> dict:
        seq = self.last_seq + 1 if seq is None else seq
        entry = {"seq": seq, "entry_id": f"e{seq}", "request_id": request_id or f"r{seq}",
                 "account_id": account_id, "type": kind, "at": AT, **fields}
        self.entries.append(entry)
        return entry

    def open(self, account_id: str, credit_line: int = 1000_00) -> dict:
        return self.add(account_id, "open", product="huabei", credit_line=credit_line)

    def draw(self, account_id: str, amount: int) -> dict:
        return self.add(account_id, "draw", amount=amount)

    def repay(self, account_id: str, amount: int) -> dict:
        return self.add(account_id, "repay", amount=amount)

    def limit(self, account_id: str, credit_line: int) -> dict:
        return self.add(account_id, "limit", credit_line=credit_line, reason="review")

    def status(self, account_id: str, status: str, **fields) -> dict:
        return self.add(account_id, "status", status=status, reason=fields.pop("reason", "risk"),
                        **fields)

    def cure(self, account_id: str, repay: dict) -> dict:
        return self.status(account_id, "active", reason="cured",
                           request_id=repay["request_id"] + ":cure")

    def view(self, account_id: str, as_of_seq: int | None = None) -> dict:
        """The oracle's display of the account as of `as_of_seq` (its last entry by default)."""
        mine = [e for e in well_formed(self.entries) if e["account_id"] == account_id]
        states = oracle.replay(mine[next(n for n, e in enumerate(mine) if e["type"] == "open"):])
        seq = mine[-1]["seq"] if as_of_seq is None else as_of_seq
        state = oracle.state_at(states, seq)
        available = max(0, state.credit_line - state.outstanding) \
            if state.status == "active" else 0
        return {"account_id": account_id, "credit_line": state.credit_line,
                "outstanding": state.outstanding, "available": available,
                "status": state.status, "usable": available > 0, "as_of_seq": seq}

    def show(self, account_id: str, as_of_seq: int | None | str = "last", **changes) -> dict:
        """A display row; as_of_seq None shows the final state with a null as_of_seq."""
        row = {**self.view(account_id, None if as_of_seq in ("last", None) else as_of_seq),
               **changes}
        if as_of_seq is None:
            row["as_of_seq"] = None
        self.display.append(row)
        return row

    def show_all(self) -> None:
        for account_id in dict.fromkeys(e["account_id"] for e in self.entries):
            self.show(account_id)

    def write(self, directory: Path, form: str = "parquet") -> tuple[str, str]:
        ledger = write_rows(self.entries, LEDGER_SCHEMA, directory / f"ledger.{form}")
        display = write_rows(self.display, DISPLAY_SCHEMA, directory / f"display.{form}")
        return ledger, display


def write_rows(rows: list[dict], schema: dict, path: Path,
               row_group_size: int | None = None) -> str:
    frame = pl.DataFrame([{name: row.get(name) for name in schema} for row in rows],
                         schema=schema)
    if path.suffix == ".parquet":
        frame.write_parquet(path, row_group_size=row_group_size)
    elif path.suffix == ".csv":
        frame.write_csv(path)
    else:
        path.write_bytes(b"".join(orjson.dumps({k: v for k, v in row.items() if v is not None})
                                  + b"\n" for row in rows))
    return str(path)


def found(export: Export, directory: Path, engine: str, **options) -> set[tuple]:
    """(kind, severity, account_id, seq) of each finding."""
    ledger, display = export.write(directory)
    result = reconcile(ReconcileConfig(ledger, display, engine=engine, **options))
    return {(f.kind, f.severity, f.account_id, seq_of(f)) for f in result.findings}


def run(export: Export, directory: Path, engine: str, **options):
    ledger, display = export.write(directory)
    return reconcile(ReconcileConfig(ledger, display, engine=engine, **options))


@pytest.fixture(params=ENGINES)
def engine(request) -> str:
    return request.param


def clean_export() -> Export:
    x = Export()
    x.open("a1")
    x.draw("a1", 600_00)
    x.status("a1", "overdue")
    repay = x.repay("a1", 600_00)
    x.cure("a1", repay)
    x.limit("a1", 100_00)
    x.draw("a1", 100_00)
    x.repay("a1", 100_00)
    x.status("a1", "closed")
    x.status("a1", "active")  # a closed account may reopen
    x.open("a2", 500)
    x.draw("a2", 500)
    return x


# -- the ledger rules ------------------------------------------------------------------------------

def test_a_ledger_and_display_that_keep_every_rule_have_no_findings(tmp_path, engine):
    x = clean_export()
    x.show_all()
    result = run(x, tmp_path, engine)
    assert result.findings == []
    assert result.stats["accounts"] == 2 and result.stats["ledger_entries"] == 12
    assert result.stats["display_rows"] == 2 and result.stats["engine"] == engine
    assert set(result.stats["seconds"]) == {"read", "derive", "check", "compare", "classify",
                                            "total"}


@pytest.mark.parametrize("defect, severity, words", [
    ("overdraw", "critical", "an overdraw"),
    ("draw_on_frozen", "critical", "on a frozen account"),
    ("overpayment", "critical", "taking it below zero"),
    ("repay_on_closed", "major", "on a closed account"),
    ("limit_on_closed", "major", "on a closed account"),
    ("close_with_balance", "major", "still outstanding"),
])
def test_a_write_the_oracle_forbids_is_a_ledger_rule_violation(tmp_path, engine, defect,
                                                                  severity, words):
    x = Export()
    x.open("a1", 100_00)
    if defect == "overdraw":
        x.draw("a1", 60_00)
        bad = x.draw("a1", 50_00)
    elif defect == "draw_on_frozen":
        x.status("a1", "frozen")
        bad = x.draw("a1", 1)
    elif defect == "overpayment":
        x.draw("a1", 10_00)
        bad = x.repay("a1", 10_01)
    elif defect == "repay_on_closed":
        x.status("a1", "closed")
        bad = x.repay("a1", 1)
    elif defect == "limit_on_closed":
        x.status("a1", "closed")
        bad = x.limit("a1", 5_00)
    else:
        x.draw("a1", 1)
        bad = x.status("a1", "closed")
    x.show_all()
    [finding] = run(x, tmp_path, engine).findings
    assert (finding.kind, finding.severity, finding.account_id) == \
        ("ledger_rule_violation", severity, "a1")
    assert finding.actual["seq"] == bad["seq"] and words in finding.explanation
    assert f"ledger seq={bad['seq']}" in finding.explanation


def test_a_repay_below_zero_leaves_a_negative_outstanding_the_display_must_show(tmp_path,
                                                                               engine):
    x = Export()
    x.open("a1", 100_00)
    x.draw("a1", 10_00)
    x.repay("a1", 15_00)
    x.show("a1")
    assert x.display[0]["outstanding"] == -5_00 and x.display[0]["available"] == 105_00
    assert found(x, tmp_path, engine) == {("ledger_rule_violation", "critical", "a1", 3)}


def test_a_missing_cure_is_reported_on_its_repay(tmp_path, engine):
    x = Export()
    x.open("a1")
    x.draw("a1", 5_00)
    x.status("a1", "overdue")
    repay = x.repay("a1", 5_00)
    x.limit("a1", 9_00)  # where the cure should be
    x.open("a2")
    x.draw("a2", 5_00)
    x.status("a2", "overdue")
    last = x.repay("a2", 5_00)  # and nothing follows
    x.show_all()
    result = run(x, tmp_path, engine)
    assert {(f.kind, f.severity, f.account_id, seq_of(f)) for f in result.findings} == {
        ("ledger_rule_violation", "major", "a1", repay["seq"]),
        ("ledger_rule_violation", "major", "a2", last["seq"])}
    words = {f.account_id: f.explanation for f in result.findings}
    assert "the next entry is seq=5 (limit ¥9.00)" in words["a1"]
    assert "no entry follows it" in words["a2"] and "stays overdue" in words["a2"]


def test_a_cure_where_none_is_due_or_of_the_wrong_shape_is_major(tmp_path, engine):
    x = Export()
    x.open("a1")
    x.draw("a1", 5_00)
    extra = x.status("a1", "active", reason="cured", request_id="r2:cure")
    x.status("a1", "overdue")
    repay = x.repay("a1", 5_00)
    wrong = x.status("a1", "frozen", reason="cured", request_id=repay["request_id"] + ":cure")
    x.show_all()
    assert found(x, tmp_path, engine) == {
        ("ledger_rule_violation", "major", "a1", extra["seq"]),
        ("ledger_rule_violation", "major", "a1", wrong["seq"])}


def test_an_account_must_start_with_one_open(tmp_path, engine):
    x = Export()
    early = x.draw("a1", 1_00)
    x.open("a1")
    again = x.open("a1", 50_00)
    x.show_all()
    assert found(x, tmp_path, engine) == {
        ("ledger_rule_violation", "major", "a1", early["seq"]),
        ("ledger_rule_violation", "major", "a1", again["seq"])}


def test_malformed_entries_are_one_contract_violation_per_kind_and_left_out(tmp_path, engine):
    x = Export()
    x.open("a1", 100_00)
    x.add("a1", "draw", amount=0)  # not a positive amount
    x.add("a1", "draw", amount=-5)
    x.add("a1", "refund", amount=5)
    x.add("a1", "draw", amount=1_00, at="yesterday")
    x.add("a1", "draw", amount=2_00, at="2025-02-30T00:00:00Z")  # no such day
    x.add("a1", "draw", amount=3_00, at="2025-01-31T00:00:00+08:00")  # fine
    reused = x.add("a1", "draw", amount=4_00)
    reused["entry_id"] = "e1"
    x.add("bad id!", "open", credit_line=5)
    x.show("a1")
    result = run(x, tmp_path, engine)
    by_words = {f.explanation.split("format: ", 1)[1].split(". Such")[0].split("; ")[0]: f
                for f in result.findings}
    assert all(f.kind == "contract_violation" and f.severity == "major"
               for f in result.findings)
    assert set(by_words) == {
        "draw entry seq=2 has amount 0", "entry seq=4 has unknown type 'refund'",
        "entry seq=5 has `at` 'yesterday', not an RFC 3339 timestamp",
        "entry_id 'e1' appears twice (again at seq 8)",
        "entry seq=9 has account_id 'bad id!'"}
    assert "2 entries are malformed this way" in by_words["draw entry seq=2 has amount 0"] \
        .explanation
    # Only the well-formed draw counts: the display of a1 is right.
    assert result.stats["accounts"] == 1


# -- the display rules -----------------------------------------------------------------------------

def test_a_display_off_by_a_fen_is_inconsistent_critical_when_it_shows_more(tmp_path, engine):
    x = clean_export()
    row = x.view("a2")
    x.show("a1", available=100_01)  # the oracle says ¥100.00
    x.show("a2", outstanding=row["outstanding"] + 1)
    result = run(x, tmp_path, engine)
    assert {(f.kind, f.severity, f.account_id) for f in result.findings} == {
        ("inconsistent_display", "critical", "a1"), ("inconsistent_display", "major", "a2")}
    [above] = [f for f in result.findings if f.account_id == "a1"]
    assert "a display may be old, never invented" in above.explanation
    assert above.diff == {"values_changed": {"root['available']": {
        "new_value": 100_01, "old_value": x.view("a1")["available"]}}}


def test_an_old_display_is_fine_until_a_cut_makes_it_stale(tmp_path, engine):
    x = clean_export()
    x.show("a1", as_of_seq=2)  # right for seq 2, eight entries behind
    x.show("a2")
    assert found(x, tmp_path, engine) == set()
    # It shows ¥400.00 available where the ledger by seq 12 allows ¥100.00: critical.
    assert found(x, tmp_path, engine, as_of_seq=12) == {("stale_display", "critical", "a1", 2)}
    # Cut before a1's later entries, the same row is current.
    assert found(x, tmp_path, engine, as_of_seq=2) == {
        ("inconsistent_display", "major", "a2", 12)}  # a2's row claims seq 12, past the cut


def test_a_stale_display_showing_more_than_the_ledger_allows_now_is_critical(tmp_path, engine):
    x = Export()
    x.open("a1", 100_00)
    x.show("a1")
    x.draw("a1", 40_00)
    stale = run(x, tmp_path, engine, as_of_seq=2)
    [finding] = stale.findings
    assert (finding.kind, finding.severity) == ("stale_display", "critical")
    assert "1 entry behind" in finding.explanation


def test_a_display_claiming_a_future_seq_is_inconsistent(tmp_path, engine):
    x = clean_export()
    x.show("a1", as_of_seq=40)
    x.show("a2")
    [finding] = run(x, tmp_path, engine).findings
    assert (finding.kind, finding.severity, finding.account_id) == \
        ("inconsistent_display", "major", "a1")
    assert "past the account's last ledger entry seq=10" in finding.explanation


def test_a_null_as_of_seq_is_judged_against_the_final_state(tmp_path, engine):
    x = clean_export()
    x.show("a1", as_of_seq=None)
    x.show("a2", as_of_seq=None, available=7)
    assert found(x, tmp_path, engine) == {("display_divergence", "critical", "a2", None)}


def test_accounts_missing_on_either_side(tmp_path, engine):
    x = clean_export()
    x.show("a1")
    x.display.append({"account_id": "ghost", "credit_line": 5_00, "outstanding": 0,
                      "available": 5_00, "status": "active", "usable": True, "as_of_seq": 3})
    x.display.append({"account_id": "ghost2", "credit_line": 0, "outstanding": 0,
                      "available": 0, "status": "frozen", "usable": False, "as_of_seq": None})
    result = run(x, tmp_path, engine)
    assert {(f.kind, f.severity, f.account_id) for f in result.findings} == {
        ("display_divergence", "major", "a2"), ("inconsistent_display", "critical", "ghost"),
        ("inconsistent_display", "major", "ghost2")}
    [missing] = [f for f in result.findings if f.account_id == "a2"]
    assert "the display has no row for it" in missing.explanation


def test_the_cut_ignores_every_entry_after_it(tmp_path, engine):
    x = Export()
    x.open("a1", 10_00)
    x.show("a1")
    x.draw("a1", 20_00)  # an overdraw, after the cut
    x.open("a2")  # an account opened after the cut needs no display row
    assert found(x, tmp_path, engine, as_of_seq=1) == set()
    # Uncut: the overdraw, and no row for a2; a1's row is old, which is allowed.
    assert found(x, tmp_path, engine) == {("ledger_rule_violation", "critical", "a1", 2),
                                          ("display_divergence", "major", "a2", 3)}


# -- the generator ---------------------------------------------------------------------------------

def test_the_generator_plants_exactly_what_a_reconcile_finds(tmp_path, engine):
    made = datagen.generate(400, 8, seed=3, out_dir=tmp_path, mismatches=36)
    result = reconcile(ReconcileConfig(str(made.ledger_path), str(made.display_path),
                                       engine=engine))
    assert {(f.account_id, f.kind, f.severity) for f in result.findings} == \
        {(p.account_id, p.kind, p.severity) for p in made.planted}
    assert len(result.findings) == 36 and len({p.defect for p in made.planted}) == 12
    assert result.stats["ledger_entries"] == made.entries == 3200


def test_the_generator_is_seeded(tmp_path):
    one = datagen.generate(50, 5, seed=9, out_dir=tmp_path / "one", mismatches=6)
    two = datagen.generate(50, 5, seed=9, out_dir=tmp_path / "two", mismatches=6)
    assert one.planted == two.planted
    assert pl.read_parquet(one.ledger_path).equals(pl.read_parquet(two.ledger_path))
    assert pl.read_parquet(one.display_path).equals(pl.read_parquet(two.display_path))


# -- partitions ------------------------------------------------------------------------------------

def test_the_partitions_findings_add_up_to_the_whole(tmp_path, engine):
    made = datagen.generate(300, 6, seed=5, out_dir=tmp_path, mismatches=40)
    ledger, display = str(made.ledger_path), str(made.display_path)

    def keys(**options) -> list[tuple]:
        result = reconcile(ReconcileConfig(ledger, display, engine=engine, **options))
        return [(f.kind, f.severity, f.account_id, seq_of(f)) for f in result.findings]

    whole = keys()
    parts = [keys(partition=(k, 3)) for k in (1, 2, 3)]
    assert sorted(sum(parts, [])) == sorted(whole) and len(whole) == 40
    assert all(parts)  # each part has some: the hash spreads the accounts
    for k, part in enumerate(parts, 1):
        assert all(partition.partition_of(account_id, 3) == k for _, _, account_id, _ in part)


def test_the_columnar_partition_hash_is_crc32_of_the_utf8_bytes():
    names = ["", "a", "acct-00000001", "账户-7", "x" * 70] + [f"u{n}é" for n in range(500)] + [None]
    expected = [zlib.crc32((name or "").encode("utf-8")) for name in names]
    assert partition.crc32_column(pl.Series(names)).tolist() == expected
    assert partition.crc32_text("acct-00000001") == 349841778  # the same on every machine
    mask = partition.in_partition(pl.Series(names[:-1]), (2, 5)).to_list()
    assert mask == [partition.partition_of(name, 5) == 2 for name in names[:-1]]


def test_partition_text_and_bounds():
    assert partition.parse("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "a/b", "3"):
        with pytest.raises(UsageError, match="K/N|1 <= K <= N"):
            partition.parse(bad)


# -- the API ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, words", [
    ({"engine": "fast"}, "engine 'fast' must be one of columnar, rows"),
    ({"as_of_seq": -1}, "must be a non-negative integer"),
    ({"money_unit": "dollar"}, "must be fen or yuan"),
    ({"partition": (0, 2)}, "1 <= K <= N"),
])
def test_a_bad_option_is_a_one_line_usage_error(tmp_path, options, words):
    x = clean_export()
    x.show_all()
    ledger, display = x.write(tmp_path)
    with pytest.raises(UsageError) as caught:
        reconcile(ReconcileConfig(ledger, display, **options))
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_accounts_sharing_a_hash_prefix_are_untangled():
    """The columnar engine sorts by the top bits of one account hash; accounts that share them
    (told apart by the second hash) come out interleaved and must be put apart, each in seq
    order."""
    import numpy as np

    from harness.reconcile import engine

    n = 8
    shift = engine._bits(n)
    prefix = np.uint64(5) << np.uint64(64 - int(shift))
    other = np.uint64(9) << np.uint64(61)
    # Rows 0..7 in seq order: three accounts, two of them (h2 = 1 and 2) sharing a prefix of
    # h1 though their h1 differ below it, interleaved.
    h1 = np.array([prefix | np.uint64(1), prefix | np.uint64(2), other, prefix | np.uint64(1),
                   prefix | np.uint64(2), prefix | np.uint64(1), other, prefix | np.uint64(2)],
                  np.uint64)
    h2 = np.array([1, 2, 3, 1, 2, 1, 3, 2], np.uint64)
    order, top = engine._account_order(h1, shift)
    h2s = h2[order]
    h2s.flags.writeable = False  # as a column polars gathered
    rows = order.copy()  # a column carried along
    order, h2s, carried = engine._untangle(top, order, h2s, rows)
    first = engine._starts(top, h2s)
    assert sorted(order.tolist()) == list(range(n))
    groups = [group.tolist() for group in np.split(order, np.flatnonzero(first)[1:])]
    assert sorted(groups) == [[0, 3, 5], [1, 4, 7], [2, 6]]
    assert carried.tolist() == order.tolist()


# -- the command --------------------------------------------------------------------------------

def test_the_reconcile_command_passes_fails_and_refuses_with_its_exit_codes(tmp_path):
    import json
    import subprocess
    import sys

    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(
        '{"seq":1,"entry_id":"e1","request_id":"r1","account_id":"a1","type":"open",'
        '"at":"2026-01-01T00:00:00.000Z","product":"huabei","credit_line":10000}\n'
        '{"seq":2,"entry_id":"e2","request_id":"r2","account_id":"a1","type":"draw",'
        '"at":"2026-01-01T00:00:01.000Z","amount":3000}\n')
    row = {"account_id": "a1", "credit_line": 10000, "outstanding": 3000, "available": 7000,
           "status": "active", "usable": True, "as_of_seq": 2}
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text(json.dumps(row) + "\n")
    bad.write_text(json.dumps({**row, "outstanding": 0, "available": 10000}) + "\n")

    def cli(display, *more):
        return subprocess.run([sys.executable, "-m", "harness.cli", "reconcile", "--ledger",
                               str(ledger), "--display", str(display), *more], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    passed = cli(good, "--report-dir", "ok")
    # In a log, progress only once the work has run LOG_EVERY_S: a quick one leaves none.
    assert passed.returncode == 0 and passed.stderr == ""
    failed = cli(bad, "--report-dir", "bad")
    assert failed.returncode == 1 and "inconsistent_display" in failed.stdout
    report = json.loads((tmp_path / "bad" / "report.json").read_text())
    assert [f["kind"] for f in report["findings"]] == ["inconsistent_display"]
    missing = cli(tmp_path / "missing.jsonl")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_reconcile_reports_its_stages_and_the_rows_read(tmp_path, engine):
    import io

    from harness.progress import Progress

    ledger, display = clean_export().write(tmp_path)
    heard = io.StringIO()
    reconcile(ReconcileConfig(ledger, display, engine=engine), Progress("rows", stream=heard))
    lines = heard.getvalue().splitlines()
    first = {"columnar": "reading the ledger...",
             "rows": "judging row by row (the reference engine)..."}[engine]
    assert lines[0] == first, lines
    if engine == "columnar":
        assert "comparing the display..." in lines and "explaining the findings..." in lines
    heard = io.StringIO()
    reconcile(ReconcileConfig(ledger, display, engine=engine),
              Progress("rows", stream=heard, log_after_s=60))
    assert heard.getvalue() == "", "a log hears nothing before log_after_s"


def test_over_findings_max_stops_before_explaining_with_one_line(tmp_path, engine):
    """A display in yuan read as fen makes every row a finding: past the bound, a one-line
    error counting them by kind, not minutes of explanations."""
    x = Export()
    for n in range(4):  # bounded: four accounts
        x.open(f"a{n}")
        x.draw(f"a{n}", 100_00 + n)
    x.show_all()
    for row in x.display:
        row["credit_line"] += 1
    ledger, display = x.write(tmp_path)
    rows = len(x.display)
    result = reconcile(ReconcileConfig(ledger, display, engine=engine, findings_max=rows))
    assert len(result.findings) == rows  # at the bound: all of them
    with pytest.raises(UsageError) as caught:
        reconcile(ReconcileConfig(ledger, display, engine=engine, findings_max=rows - 1))
    words = str(caught.value)
    assert f"{rows:,} findings ({rows:,} inconsistent_display)" in words, words
    assert "--findings-max" in words and "\n" not in words


def test_the_cli_says_the_findings_bound_the_library_has():
    from harness.cli import build_parser
    from harness.reconcile.budget import FINDINGS_MAX

    assert f"(default {FINDINGS_MAX:,})" in build_parser().format_help() or any(
        f"(default {FINDINGS_MAX:,})" in action.help
        for sub in build_parser()._subparsers._group_actions for parser in sub.choices.values()
        for action in parser._actions if action.help)
