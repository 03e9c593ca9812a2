"""Requests for one account at once: the reference service stays correct under every
interleaving of its await points, the seeded bugs only concurrency shows are caught by `run`
(simulated, replayed bit for bit, and over real HTTP), and a sequential client never sees them."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

from harness import contract, oracle
from harness.packaged import fixture
from harness.runner import RunConfig, execute
from harness.service.bugs import CATALOGUE
from harness.targets import EmbeddedTarget

# Neither shown by a sequential client nor needing a crash (those are test_durability.py's).
CONCURRENCY_BUGS = sorted(name for name, bug in CATALOGUE.items()
                          if not bug.sequential and not bug.crash)
SEED = 7
OPS = 5_000


def _run(**kw):
    return execute(RunConfig(quiet=True, seed=SEED, ops=OPS, **kw))


def _kinds(result) -> set[str]:
    return {f["kind"] for f in result.report["findings"]}


@pytest.fixture(scope="module")
def sequential_personas(tmp_path_factory) -> str:
    """The shipped personas with no races: one request per user at a time."""
    shipped = fixture("personas.toml").read_text()
    assert "race_p = 0.04" in shipped
    path = tmp_path_factory.mktemp("personas") / "sequential.toml"
    path.write_text(shipped.replace("race_p = 0.04", "race_p = 0"))
    return str(path)


# -- the core: every interleaving commits as some sequential order would -------------------------

LINE = 1_000
ACCOUNT = "a"
PATHS = {"draw": "draws", "repay": "repayments", "limit": "limit", "status": "status"}

setups = st.tuples(st.sampled_from([0, 300, 600, 1_000]),
                   st.sampled_from(["active", "overdue", "frozen"]))
writes = st.one_of(
    st.tuples(st.just("draw"), st.sampled_from([1, 400, 600, 1_000])),
    st.tuples(st.just("repay"), st.sampled_from([1, 300, 600])),
    st.tuples(st.just("limit"), st.sampled_from([0, 500, 2_000])),
    st.tuples(st.just("status"), st.sampled_from(contract.STATUSES)),
)
# A few request ids for many writes: the same id twice is a retry racing its original.
races = st.lists(st.tuples(writes, st.sampled_from(["r1", "r2", "r3"])), min_size=2, max_size=3)
interleavings = st.lists(st.integers(0, 5), min_size=6, max_size=6)


def _request(write, request_id: str) -> tuple[str, str, dict]:
    kind, value = write
    body = {oracle.VALUE_FIELD[kind]: value, "request_id": request_id}
    if kind in ("limit", "status"):
        body["reason"] = "back-office"
    return "POST", f"/v1/accounts/{ACCOUNT}/{PATHS[kind]}", body


def _service(bugs, setup) -> EmbeddedTarget:
    outstanding, status = setup
    target = EmbeddedTarget(bugs=bugs, ledger="memory://")
    target.request("POST", "/v1/accounts", {"account_id": ACCOUNT, "product": "huabei",
                                           "credit_line": LINE, "request_id": "open"})
    if outstanding:
        target.request("POST", f"/v1/accounts/{ACCOUNT}/draws",
                       {"amount": outstanding, "request_id": "setup-draw"})
    if status != "active":
        target.request("POST", f"/v1/accounts/{ACCOUNT}/status",
                       {"status": status, "reason": "setup", "request_id": "setup-status"})
    return target


def _outcome(target: EmbeddedTarget, answers: list) -> tuple:
    """What a client and an auditor can tell apart: each answer's status and error, and the
    entries written after the setup, without their seqs and times."""
    seen = [(status, (body or {}).get("error")) for status, body in answers]
    entries = [(e["type"], oracle.entry_value(e), e.get("reason"), e["request_id"])
               for e in target.service.store.page(0, 1_000)
               if not e["request_id"].startswith(("open", "setup-"))]
    return seen, entries


def _concurrent(bugs, setup, race, interleaving) -> tuple:
    target = _service(bugs, setup)
    answers: dict[int, tuple] = {}
    picks = iter(interleaving)
    target.request_at_once([_request(*r) for r in race],
                           lambda n, reply: answers.__setitem__(n, (reply.status, reply.body)),
                           lambda steps: next(picks) % steps)
    result = _outcome(target, [answers[n] for n in range(len(race))])
    same_id = {}
    for (_, request_id), answer in zip(race, (answers[n] for n in range(len(race)))):
        same_id.setdefault(request_id, []).append(answer)
    return result, same_id


def _sequential(setup, race):
    """The outcome of each order of the same requests sent one after the other."""
    for order in itertools.permutations(range(len(race))):
        target = _service((), setup)
        answers: dict[int, tuple] = {}
        for n in order:
            reply = target.request(*_request(*race[n]))
            answers[n] = (reply.status, reply.body)
        yield _outcome(target, [answers[n] for n in range(len(race))])


def _serializable(bugs, setup, race, interleaving) -> bool:
    (result, same_id) = _concurrent(bugs, setup, race, interleaving)
    # The same request id answers the same, whoever commits it; and the whole is what some
    # sequential order of the same requests gives.
    return (all(answer == answers[0] for answers in same_id.values() for answer in answers)
            and any(result == outcome for outcome in _sequential(setup, race)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setup=setups, race=races, interleaving=interleavings)
def test_the_correct_core_commits_every_interleaving_as_some_sequential_order(
        setup, race, interleaving):
    assert _serializable((), setup, race, interleaving)


@pytest.mark.parametrize("bug", CONCURRENCY_BUGS)
def test_each_concurrency_bug_breaks_that_property(bug):
    # The property can fail: hypothesis finds an interleaving where each bug's service commits
    # what no sequential order would.
    setup, race, interleaving = find(
        st.tuples(setups, races, interleavings),
        lambda case: not _serializable((bug,), *case),
        # The first one found will do: shrinking it would only cost time here. Derandomized:
        # the same examples every run (random ones missed cure_decided_before_risk in 2,000
        # tries once in a while).
        settings=settings(max_examples=2_000, deadline=None, database=None, derandomize=True,
                          phases=[Phase.generate]))
    assert not _serializable((bug,), setup, race, interleaving)


def test_there_are_at_least_three_bugs_only_concurrency_shows():
    assert len(CONCURRENCY_BUGS) >= 3, CONCURRENCY_BUGS


# -- `run`, simulated: shown by races, never by a sequential client, replayed bit for bit -------

@pytest.mark.parametrize("bug", CONCURRENCY_BUGS)
def test_a_sequential_run_passes_with_the_bug(bug, sequential_personas):
    result = _run(bugs=(bug,), personas=sequential_personas)
    writes = [op for op in result.history.ops if op.is_write and op.f != "open"]
    assert len(writes) > 1_000
    assert not _overlapping_writes(result.history), "a sequential run sent writes at once"
    assert result.report["verdict"] == "pass", _kinds(result)


@pytest.mark.parametrize("bug", CONCURRENCY_BUGS)
def test_a_concurrent_run_fails_with_the_bugs_finding_and_replays_bit_for_bit(bug):
    result = _run(bugs=(bug,))
    assert result.report["verdict"] == "fail"
    assert CATALOGUE[bug].finding_kind in _kinds(result), _kinds(result)
    again = _run(bugs=(bug,))
    assert again.report["history_sha256"] == result.report["history_sha256"]
    assert again.report["findings"] == result.report["findings"]


def _overlapping_writes(history) -> list:
    """Pairs of writes to one account, each invoked before the other completed."""
    writes = [op for op in history.ops if op.is_write and op.account_id is not None]
    return [(a.index, b.index) for a, b in zip(writes, writes[1:])
            if a.account_id == b.account_id and b.invoke_ms <= a.complete_ms
            and a.invoke_ms <= b.complete_ms and b.index == a.index + 1]


def test_a_run_records_races_as_overlapping_writes_of_every_story():
    result = _run()
    pairs = _overlapping_writes(result.history)
    ops = result.history.ops
    assert len(pairs) > 50
    kinds = {(ops[a].f, ops[b].f) for a, b in pairs}
    retries = [b for _, b in pairs if ops[b].retry_of is not None]
    assert ("draw", "draw") in kinds and ("draw", "repay") in kinds and retries
    assert ("repay", "status") in kinds or ("draw", "limit") in kinds  # the back office
    for a, b in pairs:  # both invoked before either completed
        assert ops[a].invoke_ms <= ops[b].invoke_ms <= ops[a].complete_ms


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_the_correct_service_passes_concurrent_runs_under_every_fault(seed):
    result = execute(RunConfig(quiet=True, seed=seed, ops=3_000, faults="all"))
    assert _overlapping_writes(result.history)
    assert result.report["verdict"] == "pass", [
        (f["kind"], f["explanation"][:200]) for f in result.report["findings"][:3]]


def test_the_property_machine_finds_a_race_and_shrinks_it():
    from harness import prop
    from harness.prop import PropConfig

    result = prop.search(PropConfig(bugs=("retry_races_original",), examples=50, steps=30,
                                    seed=0))
    assert result.failed and result.steps <= 4, "\n".join(result.program)
    assert any("send_two_at_once" in line for line in result.program)


# -- `run` over real HTTP: the edge really awaits, so the races really race ----------------------

def _http_run(url: str, report_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "run", "--target", url, "--duration", "4",
         "--accounts", "12", "--seed", "4", "--quiet", "--report-dir", str(report_dir)],
        capture_output=True, text=True, timeout=120)


@pytest.mark.http
@pytest.mark.slow
@pytest.mark.parametrize("bug", CONCURRENCY_BUGS)
def test_an_http_run_against_the_served_bug_fails_with_its_finding(bug, start_service, tmp_path):
    served = start_service("--bug", bug, "--ledger", "memory://")
    done = _http_run(served.url, tmp_path / "report")
    assert done.returncode == 1, done.stdout + done.stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert CATALOGUE[bug].finding_kind in {f["kind"] for f in report["findings"]}
