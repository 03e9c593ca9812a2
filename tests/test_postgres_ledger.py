"""The PostgreSQL ledger store passes the same store behaviour tests as the local stores.

Needs PostgreSQL at postgresql://127.0.0.1:5432/test (trust auth, as the OS user or `postgres`;
LIMIT_HARNESS_POSTGRES_URL overrides). Each run works in its own schema, dropped at the end, and
each test in its own table prefix inside it. Without a server or without psycopg the whole
module is skipped, unless LIMIT_HARNESS_REQUIRE_POSTGRES=1 (CI), where every test fails with the
reason instead: a CI job that silently skipped its database tests would prove nothing.
"""

from __future__ import annotations

import itertools
import os
import uuid

import pytest

from harness.errors import UsageError
from harness.service.storage import open_ledger
from service_sim import Sim
from test_core_properties import Runner
from test_storage import Backend, DurabilityContract, StoreContract
from conftest import postgres_probe

pytestmark = pytest.mark.postgres

REQUIRED = "1" in (os.environ.get("LIMIT_HARNESS_REQUIRE_SERVICES"),
                   os.environ.get("LIMIT_HARNESS_REQUIRE_POSTGRES"))


_probe = postgres_probe  # one probe for every PostgreSQL test (conftest.py)


SERVER_URL, WHY_NOT = _probe()
if SERVER_URL is None and not REQUIRED:
    pytest.skip(WHY_NOT, allow_module_level=True)

SCHEMA = f"lh_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
_prefixes = itertools.count(1)


def ledger_url(prefix: str, schema: str = SCHEMA) -> str:
    return f"{SERVER_URL}?schema={schema}&table_prefix={prefix}"


@pytest.fixture(scope="module")
def schema():
    if SERVER_URL is None:  # LIMIT_HARNESS_REQUIRE_POSTGRES=1: fail loudly, test by test
        pytest.fail(f"LIMIT_HARNESS_REQUIRE_POSTGRES=1 but {WHY_NOT}", pytrace=False)
    yield SCHEMA
    import psycopg
    with psycopg.connect(SERVER_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')


@pytest.fixture
def pg_backend(schema) -> Backend:
    import psycopg
    url = ledger_url(f"t{next(_prefixes)}_")  # a fresh, empty pair of tables per test
    return Backend("postgres", lambda: open_ledger(url), url, (psycopg.IntegrityError,))


class TestPostgresLedger(StoreContract, DurabilityContract):
    @pytest.fixture
    def backend(self, pg_backend):
        return pg_backend


def test_schema_and_tables_are_created_when_absent_and_reused_when_present(schema):
    import psycopg
    other = f"{SCHEMA}_fresh"
    url = ledger_url("x_", schema=other)
    try:
        first = open_ledger(url)
        first.commit([{"seq": 1, "entry_id": "e-1", "request_id": "r-1", "account_id": "a",
                       "type": "open", "at": "t", "product": "huabei", "credit_line": 5}],
                     "r-1", 201, {"seq": 1})
        first.close()
        second = open_ledger(url)  # CREATE ... IF NOT EXISTS: the data is still there
        assert [e["seq"] for e in second.entries()] == [1]
        second.close()
        with psycopg.connect(SERVER_URL) as conn:
            tables = {row[0] for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                (other,))}
        assert tables == {"x_entries", "x_answers", "x_accounts"}
    finally:
        with psycopg.connect(SERVER_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{other}" CASCADE')


def test_two_table_prefixes_in_one_schema_do_not_see_each_other(schema):
    left, right = open_ledger(ledger_url("left_")), open_ledger(ledger_url("right_"))
    try:
        left.commit([], "r-1", 409, {"error": "exists"})
        assert left.recall("r-1") == (409, {"error": "exists"})
        assert right.recall("r-1") is None
    finally:
        left.close()
        right.close()


def test_the_service_core_keeps_every_ledger_rule_on_postgres(schema):
    # The same interpreter the property tests use, over PostgreSQL: writes judged by the
    # oracle, retries replayed, a cure, faults, a wipe, and convergence at the end.
    program = [("open", "a0", "huabei", 1000), ("open", "a1", "jiebei", 300),
               ("draw", "a0", 600), ("retry", 2), ("draw", "a0", "all"), ("draw", "a0", 1),
               ("fault", {"kind": "drop_events", "probability": 1.0}),
               ("overdue_and_repay_all", "a0"), ("malformed", "a1", "zero_amount"),
               ("retry", 7), ("status", "a1", "closed"), ("status", "a1", "active"),
               ("fault", {"kind": "maintenance_reset", "mode": "clear"}), ("read", "a0"),
               ("tick", 300), ("read", "a1")]
    sim = Sim(ledger=ledger_url(f"t{next(_prefixes)}_"))
    try:
        runner = Runner(sim, honesty=True, ledger_rules=True)
        runner.run(program)
        runner.converge()
        assert any(e.get("reason") == "cured" for e in runner.entries)
    finally:
        sim.close()


def test_an_unreachable_server_is_a_one_line_usage_error():
    with pytest.raises(UsageError) as caught:
        open_ledger("postgresql://127.0.0.1:1/test?schema=x")
    assert "\n" not in str(caught.value) and "cannot reach" in str(caught.value)
