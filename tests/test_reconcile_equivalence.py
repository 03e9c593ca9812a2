"""The columnar engine finds what the row-by-row reference finds: hypothesis builds ledgers and
displays, clean and with every defect reconcile knows (overdraw, negative outstanding, missing
cure, extra cure, close with balance, display off by some fen, display claiming a future seq,
stale display, missing display row, unknown account, malformed entries), and both engines must
report the same (kind, severity, account_id, seq) findings."""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from unittest import mock

import polars as pl
from hypothesis import HealthCheck, given, settings, strategies as st

from harness import contract, oracle
from harness.checkers import CheckConfig, check
from harness.history import History
from harness.reconcile import ReconcileConfig, reconcile, seq_of, sources
from harness.reconcile.rows import entry_problem, state_view
from test_reconcile import AT, DISPLAY_SCHEMA, LEDGER_SCHEMA, write_rows

ACCOUNTS = ("a0", "a1", "a2", "a3")
OPS = ("open", "draw", "draw", "overdraw", "repay", "repay_all", "overpay", "limit", "status",
       "close", "cure_cycle", "cure_cycle", "fake_cure", "wrong_cure", "malformed")
DISPLAY_CHOICES = ("current", "current", "old", "off", "future", "null", "null_off", "missing",
                   "before_open")


class _Builder:
    """Entries made one at a time, each account's oracle state kept alongside."""

    def __init__(self, draw) -> None:
        self.draw = draw
        self.entries: list[dict] = []
        self.states: dict[str, oracle.State | None] = {}
        self.seq = 0

    def add(self, account_id: str, kind: str, request_id: str | None = None, **fields) -> dict:
        self.seq += self.draw(st.sampled_from((1, 1, 2)))  # gaps are allowed
        entry = {"seq": self.seq, "entry_id": f"e{self.seq}",
                 "request_id": request_id or f"r{self.seq}", "account_id": account_id,
                 "type": kind, "at": AT, **fields}
        self.entries.append(entry)
        state = self.states.get(account_id)
        if entry_problem(entry) is None and (state is not None or kind == "open"):
            self.states[account_id] = oracle.apply(state, entry)
        return entry

    def op(self, account_id: str, name: str) -> None:
        state = self.states.get(account_id)
        amount = st.integers(1, 300_00)
        if name == "open" or (state is None and self.draw(st.booleans())):
            self.add(account_id, "open", product="jiebei", credit_line=self.draw(amount))
        elif name in ("draw", "overdraw"):
            headroom = _available(state)
            extra = self.draw(st.integers(1, 50_00)) if name == "overdraw" else 0
            self.add(account_id, "draw", amount=max(1, min(headroom, self.draw(amount)) + extra))
        elif name in ("repay", "repay_all", "overpay"):
            owed = state.outstanding if state else 0
            value = {"repay": self.draw(amount), "repay_all": owed,
                     "overpay": owed + self.draw(st.integers(1, 50_00))}[name]
            repay = self.add(account_id, "repay", amount=max(1, value))
            self._maybe_cure(account_id, state, repay)
        elif name == "limit":
            self.add(account_id, "limit", credit_line=self.draw(st.integers(0, 300_00)),
                     reason="review")
        elif name in ("status", "close"):
            status = "closed" if name == "close" else self.draw(st.sampled_from(contract.STATUSES))
            self.add(account_id, "status", status=status, reason="risk")
        elif name == "fake_cure":
            self.add(account_id, "status", status="active", reason="cured",
                     request_id=f"r{self.seq}:cure")
        elif name in ("cure_cycle", "wrong_cure"):
            # Overdue with a balance, then repaid in full: the cure rule's case.
            if state is None or state.outstanding <= 0:
                self.add(account_id, "draw", amount=self.draw(st.integers(1, 50_00)))
            self.add(account_id, "status", status="overdue", reason="risk")
            before = self.states.get(account_id)
            repay = self.add(account_id, "repay", amount=max(1, before.outstanding
                                                             if before else 1))
            if name == "cure_cycle":
                self._maybe_cure(account_id, before, repay)
            else:
                self.add(account_id, "status", status="frozen", reason="cured",
                         request_id=repay["request_id"] + ":cure")
        else:
            self.add(account_id, "draw", amount=self.draw(st.sampled_from((0, -3))))

    def _maybe_cure(self, account_id: str, before: oracle.State | None, repay: dict) -> None:
        # Due cures are usually written, sometimes forgotten (a missing cure).
        clears_overdue = (before is not None and before.status == "overdue"
                          and 0 < before.outstanding == repay["amount"])
        if clears_overdue and self.draw(st.sampled_from((True, True, True, False))):
            self.add(account_id, "status", status="active", reason="cured",
                     request_id=repay["request_id"] + ":cure")


def _available(state: oracle.State | None) -> int:
    return state_view(state)["available"] if state is not None else 0


@st.composite
def exports(draw) -> tuple[list[dict], list[dict], int | None]:
    builder = _Builder(draw)
    accounts = ACCOUNTS[:draw(st.integers(1, len(ACCOUNTS)))]
    for account_id in accounts:
        if draw(st.integers(0, 9)):  # now and then an account starts without its open
            builder.op(account_id, "open")
    for _ in range(draw(st.integers(0, 24))):
        builder.op(draw(st.sampled_from(accounts)), draw(st.sampled_from(OPS)))
    display = [row for account_id in accounts
               for row in _display_rows(draw, builder, account_id)]
    if draw(st.integers(0, 4)) == 0:
        display.append({"account_id": "ghost", "credit_line": 100, "outstanding": 0,
                        "available": draw(st.sampled_from((0, 100))), "status": "active",
                        "usable": True, "as_of_seq": draw(st.sampled_from((None, 1)))})
    cut = draw(st.one_of(st.none(), st.integers(0, builder.seq + 2), st.just(builder.seq)))
    return builder.entries, display, cut


def _display_rows(draw, builder: _Builder, account_id: str) -> list[dict]:
    mine = [e for e in builder.entries if e["account_id"] == account_id]
    if not mine:
        return []
    choice = draw(st.sampled_from(DISPLAY_CHOICES))
    if choice == "missing":
        return []
    last_seq = mine[-1]["seq"]
    as_of_seq = {"old": draw(st.sampled_from([e["seq"] for e in mine])),
                 "future": last_seq + draw(st.integers(1, 3)),
                 "before_open": mine[0]["seq"] - 1}.get(choice, last_seq)
    view = _view_at(builder.entries, account_id, min(as_of_seq, last_seq))
    if choice in ("off", "null_off"):
        view["available"] += draw(st.sampled_from((-7, 1, 250)))
    return [{"account_id": account_id, **view,
             "as_of_seq": None if choice.startswith("null") else as_of_seq}]


def _view_at(entries: list[dict], account_id: str, seq: int) -> dict:
    good = [e for e in entries if e["account_id"] == account_id and entry_problem(e) is None
            and e["seq"] <= seq]
    opens = [n for n, e in enumerate(good) if e["type"] == "open"]
    if not opens:
        return {"credit_line": 0, "outstanding": 0, "available": 0, "status": "frozen",
                "usable": False}
    return state_view(oracle.replay(good[opens[0]:])[-1][1])


def _findings(ledger: str, display: str, engine: str, cut: int | None) -> Counter:
    result = reconcile(ReconcileConfig(ledger, display, engine=engine, as_of_seq=cut))
    crashed = [f.explanation for f in result.findings if f.kind == "checker_error"]
    assert not crashed, f"the reference's ledger checker crashed: {crashed[0]}"
    return Counter((f.kind, f.severity, f.account_id, seq_of(f)) for f in result.findings)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exports())
def test_both_engines_find_the_same(export):
    entries, display, cut = export
    with tempfile.TemporaryDirectory() as directory, \
            mock.patch.object(sources, "BATCH_ROWS", 4):
        # Row groups of 3, slices of about 4 rows: the columnar engine reads the ledger a slice
        # at a time and reads single rows back for the words, across many slice boundaries.
        ledger = write_rows(entries, LEDGER_SCHEMA, Path(directory) / "ledger.parquet",
                            row_group_size=3)
        shown = write_rows(display, DISPLAY_SCHEMA, Path(directory) / "display.parquet")
        reference = _findings(ledger, shown, "rows", cut)
        columnar = _findings(ledger, shown, "columnar", cut)
    assert columnar == reference


@settings(max_examples=150, deadline=None)
@given(st.fixed_dictionaries({
    "seq": st.sampled_from((1, -1, 0)),
    "entry_id": st.sampled_from(("e1", "", "e 1", "é", "x" * 65)),
    "request_id": st.sampled_from(("r1", "r1:cure", "x" * 64 + ":cure", "x" * 65, "a b")),
    "account_id": st.sampled_from(("a1", "a/1", "")),
    "type": st.sampled_from(contract.ENTRY_TYPES + ("refund",)),
    "at": st.sampled_from((AT, "2025-01-01T00:00:00", "2024-02-29T23:59:59.5+05:30",
                           "2023-02-29T00:00:00Z", "2025-13-01T00:00:00Z", "nonsense")),
    "product": st.sampled_from(("huabei", "jiebei", "other", None)),
    "credit_line": st.sampled_from((0, 1, -1, contract.FEN_MAX + 1, None)),
    "amount": st.sampled_from((1, 0, contract.FEN_MAX, None)),
    "reason": st.sampled_from(("r", "", "x" * 65, None)),
    "status": st.sampled_from(contract.STATUSES + ("gone", None)),
}))
def test_the_restated_entry_format_is_the_checkers(entry):
    entry = {k: v for k, v in entry.items() if v is not None}
    findings = check(History(), [entry], CheckConfig()).findings
    malformed = [f for f in findings if f.kind == "contract_violation"]
    assert bool(malformed) == (entry_problem(entry) is not None), (entry, findings)


def test_the_equivalence_covers_every_finding_kind():
    """A guard on the generator above: a fixed export with each defect gives each kind."""
    entries = [
        {"seq": 1, "entry_id": "e1", "request_id": "r1", "account_id": "a0", "type": "open",
         "at": AT, "product": "huabei", "credit_line": 100},
        {"seq": 2, "entry_id": "e2", "request_id": "r2", "account_id": "a0", "type": "draw",
         "at": AT, "amount": 500},
        {"seq": 3, "entry_id": "e3", "request_id": "r3", "account_id": "a0", "type": "draw",
         "at": AT, "amount": 0},
        {"seq": 4, "entry_id": "e4", "request_id": "r4", "account_id": "a1", "type": "open",
         "at": AT, "product": "huabei", "credit_line": 100},
    ]
    display = [{"account_id": "a0", "credit_line": 100, "outstanding": 0, "available": 100,
                "status": "active", "usable": True, "as_of_seq": 1},
               {"account_id": "zz", "credit_line": 1, "outstanding": 0, "available": 1,
                "status": "active", "usable": True, "as_of_seq": None}]
    with tempfile.TemporaryDirectory() as directory:
        ledger = write_rows(entries, LEDGER_SCHEMA, Path(directory) / "l.parquet")
        shown = write_rows(display, DISPLAY_SCHEMA, Path(directory) / "d.parquet")
        kinds = set()
        for cut in (None, 4):
            reference = _findings(ledger, shown, "rows", cut)
            assert _findings(ledger, shown, "columnar", cut) == reference
            kinds |= {kind for kind, *_ in reference}
    assert kinds == {
        "ledger_rule_violation", "contract_violation", "inconsistent_display",
        "display_divergence", "stale_display"}
    assert pl.__version__  # polars is what the columnar engine runs on
