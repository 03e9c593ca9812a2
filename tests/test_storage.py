"""Ledger stores behave the same: MemoryLedger, SQLiteLedger in memory and in a file (and the
PostgreSQL store, through test_postgres_ledger.py, which reuses `StoreContract`).

`StoreContract` holds the behaviour every store must have, `DurabilityContract` what a store
whose data outlives its handle must add (a reopened store, a restarted service). A backend
fixture says how to make a handle, the URL `open_ledger` takes for it, and what a unique-key
collision raises.
"""

from __future__ import annotations

import gc
import sqlite3
from dataclasses import dataclass
from typing import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import contract
from harness.errors import UsageError
from harness.service.storage import Answers, MemoryLedger, SQLiteLedger, open_ledger
from service_sim import Sim


@dataclass
class Backend:
    name: str
    make: Callable[[], object]  # a new handle on this backend's (shared, when durable) data
    url: str | None  # for open_ledger / Sim; None when the data dies with the handle
    collision: tuple[type[BaseException], ...]  # what a duplicate seq raises


def entry(seq: int, account_id: str = "a", kind: str = "draw", **fields) -> dict:
    base = {"seq": seq, "entry_id": f"e-{seq}", "request_id": f"r-{seq}",
            "account_id": account_id, "type": kind, "at": "2026-01-01T00:00:00.000Z"}
    defaults = {"open": {"product": "huabei", "credit_line": 1000}, "draw": {"amount": 10},
                "repay": {"amount": 10}, "limit": {"credit_line": 500, "reason": "review"},
                "status": {"status": "frozen", "reason": "ops"}}[kind]
    return {**base, **defaults, **fields}


class StoreContract:
    """Every store: subclasses provide a `backend` fixture."""

    @pytest.fixture
    def store(self, backend):
        store = backend.make()
        yield store
        store.close()

    def test_commit_is_read_back_by_every_reader(self, store):
        opened = entry(1, kind="open")
        body = {"account_id": "a", "product": "huabei", "credit_line": 1000, "seq": 1}
        store.commit([opened], "r-1", 201, body)
        assert store.recall("r-1") == (201, body)
        assert store.page(0, 10) == [opened]
        assert store.account_entries("a") == [opened]
        assert list(store.entries()) == [opened]

    def test_unknown_request_is_not_recalled(self, store):
        assert store.recall("never-seen") is None
        assert store.page(0, 10) == [] and store.account_entries("a") == []
        assert list(store.entries()) == []

    def test_a_rejection_remembers_its_answer_and_writes_no_entry(self, store):
        body = {"error": "insufficient_limit", "detail": "amount 5 exceeds the available 0"}
        store.commit([], "r-9", 409, body)
        assert store.recall("r-9") == (409, body)
        assert list(store.entries()) == []

    def test_page_and_account_entries_with_seq_gaps(self, store):
        # Seqs may have gaps (the contract allows them) and accounts interleave.
        layout = [(1, "a"), (2, "b"), (5, "a"), (9, "b"), (10, "a"), (11, "a")]
        for seq, account_id in layout:
            kind = "open" if seq in (1, 2) else "draw"
            store.commit([entry(seq, account_id, kind)], f"r-{seq}", 201, {"seq": seq})
        seqs = lambda entries: [e["seq"] for e in entries]  # noqa: E731
        assert seqs(store.page(0, 2)) == [1, 2]
        assert seqs(store.page(2, 10)) == [5, 9, 10, 11]
        assert seqs(store.page(3, 1)) == [5]
        assert seqs(store.page(11, 5)) == [] and seqs(store.page(100, 5)) == []
        assert seqs(store.account_entries("a")) == [1, 5, 10, 11]
        assert seqs(store.account_entries("a", 5)) == [10, 11]
        assert seqs(store.account_entries("b")) == [2, 9]
        assert seqs(store.account_entries("c")) == []
        assert seqs(store.entries()) == [1, 2, 5, 9, 10, 11]

    def test_a_two_entry_commit_keeps_both_and_one_answer(self, store):
        # A repay and its cure entry: one transaction, two entries, one remembered answer.
        store.commit([entry(1, kind="open")], "r-1", 201, {})
        repay = entry(2, kind="repay", amount=10)
        cure = entry(3, kind="status", status="active", reason=contract.CURE_REASON,
                     request_id="r-2" + contract.CURE_SUFFIX)
        store.commit([repay, cure], "r-2", 201, {"entry_id": "e-2", "seq": 2})
        assert store.page(1, 10) == [repay, cure]
        assert store.recall("r-2") == (201, {"entry_id": "e-2", "seq": 2})
        assert store.recall("r-2" + contract.CURE_SUFFIX) is None

    def test_values_round_trip_exactly(self, store):
        # The largest amount the service accepts, and a reason with CJK, emoji and a NUL: the
        # contract allows any 1 to 64 characters.
        big = entry(1, kind="open", credit_line=contract.FEN_MAX, product="jiebei")
        odd = entry(2, kind="limit", credit_line=0, reason="风控 下调 🧾 \x00 end")
        body = {"detail": "风控\x00", "nested": {"n": [1, 2.5, None, True]}}
        store.commit([big], "r-1", 201, body)
        store.commit([odd], "r-2", 201, {"seq": 2})
        assert list(store.entries()) == [big, odd]
        assert store.recall("r-1") == (201, body)

    def test_a_later_answer_for_the_same_request_wins(self, store):
        # The retry_duplicates_draw bug answers one request id twice; every store must keep
        # the later answer rather than fail the commit.
        store.commit([entry(1, kind="open")], "r-1", 201, {})
        store.commit([entry(2)], "d", 201, {"seq": 2})
        store.commit([entry(3)], "d", 201, {"seq": 3})
        assert store.recall("d") == (201, {"seq": 3})

    def test_entries_streams_a_long_ledger_in_order(self, store):
        n = 2500  # more than one internal batch in the SQL stores
        for seq in range(1, n + 1, 100):
            store.commit([entry(s, f"acct-{s % 7}", "open" if s <= 7 else "draw")
                          for s in range(seq, min(seq + 100, n + 1))], f"r-{seq}", 201, {})
        assert [e["seq"] for e in store.entries()] == list(range(1, n + 1))
        assert [e["seq"] for e in store.page(2400, 10_000)] == list(range(2401, n + 1))

    def test_a_commit_that_fails_midway_leaves_nothing_behind(self, store, backend, request):
        store.commit([entry(1, kind="open")], "r-1", 201, {"seq": 1})
        # The second entry of the batch reuses seq 1: the batch must fail as a whole.
        with pytest.raises(backend.collision):
            store.commit([entry(2), entry(1)], "r-2", 201, {"seq": 2})
        assert [e["seq"] for e in store.entries()] == [1]
        assert store.account_entries("a") == [entry(1, kind="open")]
        assert store.recall("r-2") is None
        # And the store is still usable: the same commit without the collision goes through.
        store.commit([entry(2)], "r-2", 201, {"seq": 2})
        assert [e["seq"] for e in store.page(0, 10)] == [1, 2]


class DurabilityContract:
    """Stores whose data outlives the handle (a file, a server): subclasses provide `backend`
    with a `url` and a `make` that opens the same data again."""

    def test_a_reopened_store_has_every_entry_and_answer(self, backend):
        first = backend.make()
        first.commit([entry(1, kind="open")], "r-1", 201, {"seq": 1})
        first.commit([], "r-2", 409, {"error": "exists", "detail": "x"})
        first.commit([entry(2), entry(3, kind="repay")], "r-3", 201, {"seq": 2})
        first.close()
        second = backend.make()
        try:
            assert [e["seq"] for e in second.entries()] == [1, 2, 3]
            assert second.recall("r-2") == (409, {"error": "exists", "detail": "x"})
            assert second.recall("r-3") == (201, {"seq": 2})
        finally:
            second.close()

    def test_a_service_reopened_on_the_store_recovers_and_replays(self, backend):
        sim = Sim(ledger=backend.url)
        sim.open("a", 1000)
        sim.open("b", 500, product="jiebei")
        drew = sim.draw("a", 700, request_id="d-1")
        refused = sim.draw("b", 501, request_id="d-2")
        sim.set_status("b", "overdue")
        sim.draw("b", 1)  # refused: overdue accounts cannot draw
        sim.tick(100)
        ledger_before = sim.ledger()
        sim.close()

        # A new process: new clock, empty read model (and fresh request ids for new writes).
        again = Sim(ledger=backend.url, request_prefix="after-restart")
        try:
            # The read model is not rebuilt yet: a 503, never a made-up value.
            status, shown = again.display("a")
            assert (status, shown.get("error")) == (503, "display_unavailable")
            again.tick(200)  # one anti-entropy pass rebuilds every account from the ledger
            for account_id in ("a", "b"):
                status, shown = again.display(account_id)
                assert status == 200
                assert {k: v for k, v in shown.items() if k not in ("account_id", "as_of_seq")} \
                    == again.oracle_view(account_id)
            # Idempotent replays answer the original bodies and write nothing.
            assert again.draw("a", 700, request_id="d-1") == drew
            assert again.draw("b", 501, request_id="d-2") == refused
            assert again.ledger() == ledger_before
            # New writes are judged against the recovered state and continue the seq.
            status, reply = again.draw("a", 301)
            assert (status, reply.get("error")) == (409, "insufficient_limit")
            status, reply = again.draw("a", 300)
            assert status == 201 and reply["seq"] == ledger_before[-1]["seq"] + 1
        finally:
            again.close()


# -- the local stores ------------------------------------------------------------------------------

@pytest.fixture(params=["memory", "sqlite-memory", "sqlite-file"])
def local_backend(request, tmp_path) -> Backend:
    if request.param == "memory":
        return Backend("memory", MemoryLedger, None, (ValueError,))
    if request.param == "sqlite-memory":
        return Backend("sqlite-memory", lambda: SQLiteLedger(":memory:"), None,
                       (sqlite3.IntegrityError,))
    path = tmp_path / "ledger.sqlite"
    return Backend("sqlite-file", lambda: SQLiteLedger(str(path)), f"sqlite:///{path}",
                   (sqlite3.IntegrityError,))


class TestLocalStores(StoreContract):
    @pytest.fixture
    def backend(self, local_backend):
        return local_backend


class TestSQLiteFileDurability(DurabilityContract):
    @pytest.fixture
    def backend(self, tmp_path):
        path = tmp_path / "ledger.sqlite"
        return Backend("sqlite-file", lambda: SQLiteLedger(str(path)), f"sqlite:///{path}",
                       (sqlite3.IntegrityError,))


# -- memory and SQLite answer every read the same way after the same commits ----------------------

commits = st.lists(
    st.tuples(st.integers(0, 3),  # gap before the batch's first seq
              st.lists(st.tuples(st.sampled_from(["a", "b", "c"]),
                                 st.sampled_from(["draw", "repay", "limit", "status"])),
                       max_size=3),
              st.sampled_from([201, 404, 409, 422, 423]),
              st.sampled_from(["q1", "q2", "q3", "q4", "q5"])),  # request ids repeat: last wins
    max_size=25)


@settings(max_examples=100, deadline=None,
          # SQLite commits are disk-bound on a loaded 2-core CI machine: slow is not failing
          suppress_health_check=[HealthCheck.too_slow])
@given(commits=commits, after=st.integers(0, 60), limit=st.integers(1, 12))
def test_memory_and_sqlite_answer_every_read_alike(commits, after, limit):
    # A file-backed SQLiteLedger runs the very same SQL as `:memory:` (the contract tests cover
    # the file); leaving it out keeps a hundred examples from costing seconds of fsync.
    stores = [MemoryLedger(), SQLiteLedger(":memory:")]
    seq = 0
    for gap, drafts, status, request_id in commits:
        batch = []
        for account_id, kind in drafts:
            seq += 1 + gap
            gap = 0
            batch.append(entry(seq, account_id, kind, request_id=request_id))
        body = {"seq": seq, "status": status}
        for store in stores:
            store.commit([dict(e) for e in batch], request_id, status, body)
    reads = [(list(s.entries()), s.page(after, limit),
              [s.account_entries(a, after) for a in ("a", "b", "c", "d")],
              [s.recall(r) for r in ("q1", "q2", "q3", "q4", "q5", "q6")]) for s in stores]
    assert reads[0] == reads[1]
    for store in stores:
        store.close()


# -- open_ledger -----------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["mysql://localhost/x", "sqlite:/relative", "memory:", "",
                                 "file:///tmp/ledger"])
def test_open_ledger_rejects_an_unknown_url(url):
    with pytest.raises(UsageError, match="unknown ledger URL"):
        open_ledger(url)


def test_open_ledger_reports_an_unopenable_sqlite_path(tmp_path):
    with pytest.raises(UsageError, match="cannot open the SQLite ledger"):
        open_ledger(f"sqlite:///{tmp_path}/no/such/dir/ledger.sqlite")


def test_open_ledger_reports_an_unreachable_postgres_in_one_line():
    # Port 1 on loopback refuses at once (no server listens there); psycopg missing would be a
    # UsageError too. Either way: one line, no traceback, no password.
    with pytest.raises(UsageError) as caught:
        open_ledger("postgresql://someone:s3cret@127.0.0.1:1/test")
    message = str(caught.value)
    assert "\n" not in message and "s3cret" not in message
    assert "PostgreSQL" in message or "psycopg" in message


@pytest.mark.parametrize("query", ["schema=bad-name", "schema=1x", "table_prefix=drop;table"])
def test_open_ledger_rejects_a_bad_postgres_schema_or_prefix(query):
    # Checked before connecting: these become SQL identifiers.
    with pytest.raises(UsageError, match="must match"):
        open_ledger(f"postgresql://127.0.0.1:1/test?{query}")


# -- the in-memory answer cache every store keeps ------------------------------------------------
ANSWER_BODIES = [
    {"entry_id": "e-1", "seq": 1},
    {"account_id": "u-1", "product": "jiebei", "credit_line": 10**15, "outstanding": 0,
     "available": 10**15, "status": "active", "usable": True, "entry_id": "e-2", "seq": 2},
    contract.error_body("insufficient_limit", "amount 5 exceeds the available 4 (可用额度)"),
]


def test_answers_give_back_what_was_remembered_and_a_fresh_copy_each_time():
    answers = Answers()
    for n, body in enumerate(ANSWER_BODIES):
        answers.remember(f"r-{n}", 201 + n, body)
    for n, body in enumerate(ANSWER_BODIES):
        status, got = answers.recall(f"r-{n}")
        assert (status, got) == (201 + n, body)
        got["tampered"] = True  # a caller's edit must not reach the next retry
        assert answers.recall(f"r-{n}") == (201 + n, body)
    assert answers.recall("r-unknown") is None
    assert len(answers) == len(ANSWER_BODIES)


def test_answers_hold_nothing_the_garbage_collector_must_walk():
    # Why the class exists: a million remembered answers must not lengthen every collection.
    answers = Answers()
    for n in range(1000):
        answers.remember(f"r-{n}", 201, ANSWER_BODIES[n % len(ANSWER_BODIES)])
    gc.collect()
    assert not gc.is_tracked(answers._status)
    assert not gc.is_tracked(answers._body)
