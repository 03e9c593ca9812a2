"""Property tests of the reference service's sans-IO core under the simulated clock.

Hypothesis generates a *program*: a list of operations (writes, idempotent retries, malformed
writes, display reads, time passing) and faults (all six kinds with random parameters, injected
and removed at random points). `Runner` interprets it against a fresh `Sim` and checks, as it
goes, the property each test names. The oracle (harness.oracle) over the service's own ledger
is the only source of truth; the tests keep no model of the display at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import contract, oracle
from service_sim import Sim

ACCOUNTS = ("a0", "a1", "a2")
CONVERGENCE_MS = 1000

# A 2-core CI machine runs these next to other suites: a slow example is not a failing one, and
# each example is a whole simulated run (hundreds of `advance` calls), so neither the per-example
# deadline nor the too_slow health check says anything about the property under test.
PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=False,
    print_blob=True,
)

# -- the program ---------------------------------------------------------------------------------

accounts = st.sampled_from(ACCOUNTS[:1] * 2 + ACCOUNTS[1:])  # a0 is always opened: favour it
lines = st.one_of(st.sampled_from([0, 1, 500, 1000, 3000]), st.integers(0, 5000))
# "all" is resolved at run time to the exact available (draw) or outstanding (repay), so the
# boundary `amount == available` and the cure rule (repay to zero) are hit often.
amounts = st.one_of(st.integers(1, 1500), st.just("all"))

faults = st.one_of(
    # Any delay up to 5 s, and the contract's maximum (600 000 ms), which leaves events in
    # flight for the whole run so that only repair can converge.
    st.builds(lambda d: {"kind": "delay_sync", "delay_ms": d},
              st.one_of(st.integers(0, 5000), st.just(contract.DELAY_MS_MAX))),
    st.builds(lambda p: {"kind": "drop_events", "probability": p},
              st.one_of(st.floats(0, 1), st.sampled_from([0, 1]))),
    st.builds(lambda p: {"kind": "duplicate_events", "probability": p},
              st.one_of(st.floats(0, 1), st.sampled_from([0, 1]))),
    st.builds(lambda w: {"kind": "reorder_events", "window": w}, st.integers(1, 12)),
    st.just({"kind": "pause_sync"}),
    st.builds(lambda m: {"kind": "maintenance_reset", "mode": m},
              st.sampled_from(contract.RESET_MODES)),
)


def weighted(*choices):
    """One of the strategies, picked with the given integer weights."""
    return st.sampled_from([i for i, (weight, _) in enumerate(choices) for _ in range(weight)]
                           ).flatmap(lambda i: choices[i][1])


operations = weighted(
    (1, st.tuples(st.just("open"), accounts, st.sampled_from(contract.PRODUCTS), lines)),
    (4, st.tuples(st.just("draw"), accounts, amounts)),
    (2, st.tuples(st.just("repay"), accounts, amounts)),
    (1, st.tuples(st.just("limit"), accounts, lines)),
    (1, st.tuples(st.just("status"), accounts, st.sampled_from(contract.STATUSES))),
    # Overdue, then repay everything: the cure rule's case, rare from independent ops.
    (1, st.tuples(st.just("overdue_and_repay_all"), accounts)),
    # Repeat an earlier write exactly (its request_id and body); a malformed one is resent fixed.
    (2, st.tuples(st.just("retry"), st.integers(0, 10**6))),
    (1, st.tuples(st.just("malformed"), accounts, st.sampled_from(["zero_amount", "no_reason"]))),
    (2, st.tuples(st.just("read"), accounts)),
    (3, st.tuples(st.just("tick"), st.integers(1, 2500))),
    (3, st.tuples(st.just("fault"), faults)),
    (1, st.tuples(st.just("unfault"), st.integers(0, 10**6))),
    (1, st.tuples(st.just("unfault_all"))),
)

# A run opens some accounts first (as the harness's setup phase does), then mixes everything;
# opens stay possible later, so writes to not-yet-opened accounts (404) are covered too.
programs = st.builds(
    lambda line, setup, rest: [("open", ACCOUNTS[0], "huabei", line)] + setup + rest,
    lines,
    st.lists(st.tuples(st.just("open"), st.sampled_from(ACCOUNTS[1:]),
                       st.sampled_from(contract.PRODUCTS), lines),
             max_size=len(ACCOUNTS) - 1, unique_by=lambda op: op[1]),
    st.lists(operations, min_size=15, max_size=80))

# -- the interpreter -----------------------------------------------------------------------------


class Runner:
    """Runs a program on a `Sim`, keeping a copy of the ledger (read through the API) and the
    oracle's timeline per account. `honesty` checks every display after every op and every
    10 ms step; `ledger_rules` checks every write against `oracle.judge` at commit."""

    def __init__(self, sim: Sim, *, honesty: bool = False, ledger_rules: bool = False) -> None:
        self.sim = sim
        self.honesty = honesty
        self.ledger_rules = ledger_rules
        self.entries: list[dict] = []
        self.timelines: dict[str, list[tuple[int, oracle.State]]] = {}
        self.answers: dict[str, tuple[int, dict]] = {}  # remembered (non-400) outcomes
        self.writes: list[tuple[str, dict, str]] = []  # (path, body a retry sends, request_id)
        self.fault_ids: list[str] = []
        self.transcript: list[bytes] = []  # every answer, for the determinism property
        self.n = 0

    # -- helpers -------------------------------------------------------------------------------
    def request_id(self) -> str:
        self.n += 1
        return f"q{self.n}"

    def state(self, account_id: str) -> oracle.State | None:
        timeline = self.timelines.get(account_id)
        return timeline[-1][1] if timeline else None

    def call(self, method, path, body=None, query=None):
        status, reply = self.sim.call(method, path, body, query)
        self.transcript.append(orjson.dumps([method, path, status, reply]))
        return status, reply

    def sync_ledger(self) -> list[dict]:
        """Fetch the entries committed since the last look; check seq strictly increases."""
        last = self.entries[-1]["seq"] if self.entries else 0
        new = self.sim.ledger(after_seq=last)
        for entry in new:
            assert entry["seq"] > last, f"seq not strictly increasing: {entry} after {last}"
            last = entry["seq"]
            timeline = self.timelines.setdefault(entry["account_id"], [])
            before = timeline[-1][1] if timeline else None
            timeline.append((entry["seq"], oracle.apply(before, entry)))
        self.entries.extend(new)
        return new

    # -- operations ----------------------------------------------------------------------------
    def run(self, program) -> None:
        for op in program:
            getattr(self, "op_" + op[0])(*op[1:])
            self.check_displays()

    def op_open(self, account_id, product, credit_line):
        body = {"account_id": account_id, "product": product, "credit_line": credit_line,
                "request_id": self.request_id()}
        self.write("/v1/accounts", body, body)

    def op_draw(self, account_id, amount):
        self.amount_write(account_id, "draws", amount, lambda s: s.available)

    def op_repay(self, account_id, amount):
        self.amount_write(account_id, "repayments", amount, lambda s: s.outstanding)

    def amount_write(self, account_id, action, amount, everything):
        if amount == "all":
            state = self.state(account_id)
            amount = max(1, everything(state)) if state else 1
        body = {"amount": amount, "request_id": self.request_id()}
        self.write(f"/v1/accounts/{account_id}/{action}", body, body)

    def op_limit(self, account_id, credit_line):
        body = {"credit_line": credit_line, "reason": "review", "request_id": self.request_id()}
        self.write(f"/v1/accounts/{account_id}/limit", body, body)

    def op_status(self, account_id, status):
        body = {"status": status, "reason": "ops", "request_id": self.request_id()}
        self.write(f"/v1/accounts/{account_id}/status", body, body)

    def op_overdue_and_repay_all(self, account_id):
        self.op_status(account_id, "overdue")
        self.op_repay(account_id, "all")

    def op_malformed(self, account_id, how):
        request_id = self.request_id()
        if how == "zero_amount":
            path = f"/v1/accounts/{account_id}/draws"
            bad, fixed = ({"amount": 0, "request_id": request_id},
                          {"amount": 1, "request_id": request_id})
        else:
            path = f"/v1/accounts/{account_id}/status"
            bad, fixed = ({"status": "frozen", "request_id": request_id},
                          {"status": "frozen", "reason": "ops", "request_id": request_id})
        self.write(path, bad, fixed)

    def op_retry(self, k):
        if self.writes:
            path, body, _ = self.writes[k % len(self.writes)]
            self.write(path, body, body, retry=True)

    def op_read(self, account_id):
        self.check_display(account_id, *self.call("GET", f"/v1/accounts/{account_id}/display"))

    def op_tick(self, ms):
        self.sim.tick(ms, on_step=self.check_displays)

    def op_fault(self, fault):
        status, reply = self.call("POST", "/v1/chaos/faults", dict(fault))
        assert status == 201, (fault, status, reply)
        assert all(reply[k] == v for k, v in fault.items()), (fault, reply)  # echoes its params
        if fault["kind"] != "maintenance_reset":
            self.fault_ids.append(reply["fault_id"])
        elif fault["mode"] == "clear" and self.honesty:
            # Right after a wipe nothing is known: every account must answer 503, not a value.
            for account_id in self.timelines:
                status, reply = self.call("GET", f"/v1/accounts/{account_id}/display")
                assert (status, reply.get("error")) == (503, "display_unavailable"), (
                    f"{account_id} right after maintenance_reset clear", status, reply)

    def op_unfault(self, k):
        if self.fault_ids:
            fault_id = self.fault_ids.pop(k % len(self.fault_ids))
            assert self.call("DELETE", f"/v1/chaos/faults/{fault_id}")[0] == 204

    def op_unfault_all(self):
        assert self.call("DELETE", "/v1/chaos/faults")[0] == 204
        self.fault_ids.clear()

    # -- writes and the ledger rules -----------------------------------------------------------
    def write(self, path: str, body: dict, retry_body: dict, retry: bool = False) -> None:
        request_id = body["request_id"]
        if not retry:
            self.writes.append((path, retry_body, request_id))
        expected = self.expect(path, body) if self.ledger_rules else None
        status, reply = self.call("POST", path, body)
        new = self.sync_ledger()
        if status != 400:
            self.answers.setdefault(request_id, (status, reply))
        if expected is not None:
            self.check_write(path, body, expected, status, reply, new)

    def expect(self, path: str, body: dict):
        """What the contract says this request must get: ("replay", answer), ("bad",),
        ("reject", code) or ("accept", kind, value, cure_due)."""
        request_id = body["request_id"]
        if request_id in self.answers:
            return ("replay", self.answers[request_id])
        if path == "/v1/accounts":
            parse, kind = contract.parse_open, "open"
        else:
            action = path.rsplit("/", 1)[1]
            parse, kind = {"draws": (contract.parse_amount, "draw"),
                           "repayments": (contract.parse_amount, "repay"),
                           "limit": (contract.parse_limit, "limit"),
                           "status": (contract.parse_status, "status")}[action]
        try:
            parse(body)
        except contract.BadRequest:
            return ("bad",)
        if kind == "open":
            if body["account_id"] in self.timelines:
                return ("reject", "exists")
            return ("accept", "open", body["credit_line"], False)
        account_id = path.split("/")[3]
        state = self.state(account_id)
        if state is None:
            return ("reject", "not_found")
        value = body[oracle.VALUE_FIELD[kind]]
        error = oracle.judge(state, kind, value)
        if error is not None:
            return ("reject", error)
        return ("accept", kind, value, oracle.cures(state, kind, value))

    def check_write(self, path, body, expected, status, reply, new) -> None:
        what = f"{path} {body}"
        if expected[0] == "replay":
            assert (status, reply) == expected[1], f"retry of {what} answered differently"
            assert new == [], f"retry of {what} wrote {new}"
        elif expected[0] == "bad":
            assert status == 400 and reply["error"] == "bad_request", (what, status, reply)
            assert new == [], f"malformed {what} wrote {new}"
        elif expected[0] == "reject":
            code = expected[1]
            assert (status, reply.get("error")) == (contract.ERRORS[code], code), (
                f"{what}: oracle.judge says {code}", status, reply)
            assert new == [], f"rejected {what} wrote {new}"
        else:
            _, kind, value, cure = expected
            assert status == 201, f"{what}: oracle.judge allows it but got {status} {reply}"
            assert len(new) == (2 if cure else 1), (
                f"{what}: accepted write must add exactly one entry"
                f"{' plus its cure' if cure else ''}", new)
            entry = new[0]
            account_id = body.get("account_id") or path.split("/")[3]
            assert entry["type"] == kind and entry["account_id"] == account_id
            assert entry["request_id"] == body["request_id"]
            assert entry["at"] == self.sim.clock.iso(self.sim.now_ms())
            assert entry[oracle.VALUE_FIELD[kind]] == value
            if "reason" in body:
                assert entry["reason"] == body["reason"]
            assert reply["entry_id"] == entry["entry_id"] and reply["seq"] == entry["seq"]
            if kind == "open":
                assert entry["product"] == body["product"]
                assert reply == {"account_id": account_id, "product": body["product"],
                                 **oracle.opened(value).view(),
                                 "entry_id": entry["entry_id"], "seq": entry["seq"]}
            if cure:
                assert {k: new[1][k] for k in ("type", "account_id", "status", "reason",
                                               "request_id")} == {
                    "type": "status", "account_id": account_id, "status": "active",
                    "reason": contract.CURE_REASON,
                    "request_id": body["request_id"] + contract.CURE_SUFFIX}
                assert self.state(account_id).status == "active"

    # -- display honesty -----------------------------------------------------------------------
    def check_displays(self) -> None:
        if self.honesty:
            for account_id in ACCOUNTS:
                self.check_display(account_id,
                                   *self.sim.service.call(
                                       "GET", f"/v1/accounts/{account_id}/display", None, None))

    def check_display(self, account_id: str, status: int, reply) -> None:
        timeline = self.timelines.get(account_id)
        if timeline is None:
            assert (status, reply["error"]) == (404, "not_found"), (account_id, status, reply)
            return
        if status == 503:
            assert reply["error"] == "display_unavailable", reply
            return
        assert status == 200, (account_id, status, reply)
        if not self.honesty:
            return
        as_of = reply["as_of_seq"]
        assert type(as_of) is int, f"{account_id}: a 200 display without as_of_seq: {reply}"
        assert as_of <= self.entries[-1]["seq"], f"as_of_seq from the future: {reply}"
        then = oracle.state_at(timeline, as_of)
        assert then is not None, f"{account_id}: as_of_seq {as_of} is before its open: {reply}"
        expected = {**then.view(), "account_id": account_id, "as_of_seq": as_of}
        assert reply == expected, (
            f"{account_id} at t={self.sim.now_ms()} ms: display claims as_of_seq {as_of} but "
            f"the oracle over entries <= {as_of} says {expected}")

    # -- convergence ---------------------------------------------------------------------------
    def converge(self) -> None:
        self.op_unfault_all()
        self.sim.tick(CONVERGENCE_MS, on_step=self.check_displays)
        for account_id, timeline in self.timelines.items():
            status, reply = self.call("GET", f"/v1/accounts/{account_id}/display")
            expected = {**timeline[-1][1].view(), "account_id": account_id,
                        "as_of_seq": timeline[-1][0]}
            assert (status, reply) == (200, expected), (
                f"{account_id}: {CONVERGENCE_MS} ms after the last fault was removed the "
                f"display is {status} {reply}, the oracle over the ledger says {expected}")


def run(program, *, seed: int = 0, **checks) -> Runner:
    runner = Runner(Sim(seed=seed), **checks)
    runner.run(program)
    return runner


# -- the properties ------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(program=programs, seed=st.integers(0, 2**16))
def test_display_converges_to_the_oracle_once_faults_are_removed(program, seed):
    runner = run(program, seed=seed)
    runner.converge()


@PROPERTY_SETTINGS
@given(program=programs, seed=st.integers(0, 2**16))
def test_every_200_display_is_honest_about_its_as_of_seq(program, seed):
    # Every display of every account is read after every op and every 10 ms step, faults on or
    # off, and must equal the oracle over exactly the entries its as_of_seq claims.
    runner = run(program, seed=seed, honesty=True)
    runner.converge()


@PROPERTY_SETTINGS
@given(program=programs, seed=st.integers(0, 2**16))
def test_ledger_takes_exactly_the_writes_oracle_judge_allows(program, seed):
    runner = run(program, seed=seed, ledger_rules=True)
    # The whole ledger once more, end to end: seqs strictly increasing, entry ids unique, every
    # accepted request id exactly once, every rejected one absent, cures exactly where due.
    ledger = runner.sim.ledger()
    assert ledger == runner.entries
    seqs = [e["seq"] for e in ledger]
    assert seqs == sorted(set(seqs))
    assert len({e["entry_id"] for e in ledger}) == len(ledger)
    by_request: dict[str, int] = {}
    for entry in ledger:
        by_request[entry["request_id"]] = by_request.get(entry["request_id"], 0) + 1
    for request_id, (status, _) in runner.answers.items():
        assert by_request.get(request_id, 0) == (1 if status == 201 else 0), request_id
    assert set(by_request) <= set(runner.answers) | {
        r + contract.CURE_SUFFIX for r, (s, _) in runner.answers.items() if s == 201}
    assert all(n == 1 for n in by_request.values())


@PROPERTY_SETTINGS
@given(program=programs, seed=st.integers(0, 2**16))
def test_same_seed_and_program_give_byte_identical_ledger_and_answers(program, seed):
    def one_run() -> tuple[bytes, list[bytes]]:
        runner = run(program, seed=seed)
        runner.converge()
        return orjson.dumps(runner.sim.ledger()), runner.transcript

    first, second = one_run(), one_run()
    assert first[0] == second[0], "ledgers differ"
    assert first[1] == second[1], "answers differ"


def test_the_seed_reaches_the_fault_path_so_determinism_is_not_vacuous():
    # The determinism property compares runs with the same seed; it would hold trivially if the
    # seed never influenced anything. With a 50% drop fault two seeds must see different
    # displays for the same program.
    program = [("open", "a0", "huabei", 5000), ("tick", 100),
               ("fault", {"kind": "drop_events", "probability": 0.5})]
    program += [("draw", "a0", 10), ("tick", 30), ("read", "a0")] * 20
    transcripts = {tuple(run(program, seed=seed).transcript) for seed in range(4)}
    assert len(transcripts) > 1


@pytest.mark.parametrize("mode", contract.RESET_MODES)
def test_reset_during_pause_answers_503_or_honest_and_converges_after(mode):
    # A fixed example of the hardest corner the generators reach only sometimes: a wipe while
    # the pipeline is paused (anti-entropy is off then), writes during the pause, resume.
    program = [("open", "a0", "huabei", 1000), ("open", "a1", "jiebei", 500), ("tick", 2100),
               ("draw", "a0", 300), ("fault", {"kind": "pause_sync"}), ("draw", "a0", 200),
               ("fault", {"kind": "maintenance_reset", "mode": mode}), ("read", "a0"),
               ("repay", "a0", 100), ("tick", 500), ("read", "a0"), ("read", "a1")]
    runner = run(program, honesty=True, ledger_rules=True)
    runner.converge()


# -- pinned examples -----------------------------------------------------------------------------

# Regression: draws every 150 ms under a ~900 ms delay, the last event dropped, then every fault
# removed. The projector used to restart an account's lateness clock on every in-order event, so
# events still in flight from the removed delay postponed the repair past 1000 ms. Lateness is
# now dated from the commit of the first missing entry.
LONG_DELAY_THEN_DROP = (
    [("open", "a0", "huabei", 10_000), ("fault", {"kind": "delay_sync", "delay_ms": 900})]
    + [("draw", "a0", 1), ("tick", 150)] * 7
    + [("fault", {"kind": "drop_events", "probability": 1.0}), ("draw", "a0", 1)])


def test_convergence_after_removing_a_long_delay_is_bounded_by_1000_ms():
    runner = run(LONG_DELAY_THEN_DROP, honesty=True, ledger_rules=True)
    runner.converge()


def test_convergence_after_removing_a_long_delay_is_bounded_by_sla_plus_that_delay():
    # What the harness's runner relies on (it waits sla_ms + the largest injected delay): the
    # same example does converge within 1000 + 900 ms, and stays honest meanwhile.
    runner = run(LONG_DELAY_THEN_DROP, honesty=True, ledger_rules=True)
    runner.op_unfault_all()
    runner.sim.tick(900, on_step=runner.check_displays)
    runner.converge()


def test_same_program_is_byte_identical_across_processes_with_different_hash_seeds():
    # Same seed, same program, but a different PYTHONHASHSEED per process: any iteration over a
    # set or a str-keyed hash order that leaked into delivery order would show up here.
    script = (
        "import hashlib, orjson, test_core_properties as t\n"
        "program = [('open', 'a0', 'huabei', 3000), ('open', 'a1', 'jiebei', 800),"
        " ('open', 'a2', 'huabei', 50), ('fault', {'kind': 'reorder_events', 'window': 5}),"
        " ('fault', {'kind': 'duplicate_events', 'probability': 0.5}),"
        " ('fault', {'kind': 'drop_events', 'probability': 0.3})]\n"
        "program += [('draw', a, 7) for a in ('a0', 'a1', 'a2')] * 6 + [('tick', 2100)]\n"
        "program += [('fault', {'kind': 'maintenance_reset', 'mode': 'snapshot'}),"
        " ('read', 'a0'), ('read', 'a1'), ('tick', 120), ('read', 'a2')]\n"
        "r = t.run(program, seed=7); r.converge()\n"
        "print(hashlib.sha256(orjson.dumps(r.sim.ledger()) + b''.join(r.transcript)).hexdigest())\n"
    )
    here = Path(__file__).parent
    digests = set()
    for hash_seed in ("0", "1", "12345"):
        out = subprocess.run([sys.executable, "-c", script], cwd=here, check=True,
                             capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": hash_seed,
                                  "PYTHONPATH": str(here)})
        digests.add(out.stdout.strip())
    assert len(digests) == 1, digests
