"""The conformance probe: every check passes on the correct reference service, the check for a
rule fails when a seeded bug breaks that rule, garbage answers fail with expected-vs-actual,
and the probe leaves nothing behind but its own prefixed accounts.
"""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET

import orjson
import pytest

from harness.conform import CHECK_NAMES, Check, conform, summary_lines, to_json, to_junit
from harness.errors import TargetError, UsageError
from harness.http_options import HttpOptions
from harness.targets import EmbeddedTarget, HttpTarget, Reply, open_target

# Rules of the HTTP edge: the embedded target takes parsed JSON of any size.
HTTP_ONLY = {"input.malformed_json", "input.too_large"}


def outcomes(checks: list[Check]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {"pass": set(), "fail": set(), "skip": set()}
    for check in checks:
        found[check.outcome].add(check.name)
    return found


def failures(checks: list[Check]) -> str:
    return "\n".join(c.line() for c in checks if c.outcome == "fail")


@pytest.fixture
def embedded():
    target = EmbeddedTarget()
    yield target
    target.close()


def all_entries(target) -> list[dict]:
    reply = target.request("GET", "/v1/ledger", query={"after_seq": "0", "limit": "10000"})
    assert reply.status == 200 and len(reply.body["entries"]) < 10_000, reply
    return reply.body["entries"]


# -- the correct service -------------------------------------------------------------------------
def test_every_check_passes_on_the_reference_service(embedded):
    checks = conform(embedded)
    assert [c.name for c in checks] == list(CHECK_NAMES)
    found = outcomes(checks)
    assert not found["fail"], failures(checks)
    assert found["skip"] == HTTP_ONLY
    assert all(c.why for c in checks if c.outcome == "skip")


@pytest.mark.http
def test_every_check_passes_over_http_none_skipped(start_service):
    served = start_service()
    target = open_target(served.url)
    try:
        checks = conform(target, chaos=True)
    finally:
        target.close()
    found = outcomes(checks)
    assert not found["fail"], failures(checks)
    assert not found["skip"]


# -- seeded bugs ---------------------------------------------------------------------------------
BUG_FAILS = {
    "no_cure": {"cure"},
    "retry_duplicates_draw": {"idempotency.draw", "idempotency.rejection"},
    "exact_available_rejected": {"draw.exact_available"},
    "overpay_accepted": {"repay.overpayment"},
    "close_with_balance": {"status.outstanding_balance"},
    "frozen_draw_allowed": {"draw.frozen"},
    "negative_available": {"display.honest", "display.catches_up"},
    "limit_cut_hidden": {"display.honest", "display.catches_up"},
}


@pytest.mark.parametrize("bug", sorted(BUG_FAILS))
def test_a_seeded_bug_fails_the_check_for_its_rule_and_only_that(bug):
    target = open_target(None, bugs=(bug,))
    try:
        checks = conform(target)
    finally:
        target.close()
    assert outcomes(checks)["fail"] == BUG_FAILS[bug], failures(checks)
    for check in checks:
        if check.outcome == "fail":
            assert check.expected and check.actual and check.why
            assert check.expected != check.actual


def test_a_failing_line_says_expected_and_got_on_one_line():
    target = open_target(None, bugs=("frozen_draw_allowed",))
    try:
        [check] = [c for c in conform(target) if c.outcome == "fail"]
    finally:
        target.close()
    line = check.line()
    assert "\n" not in line
    assert line.startswith("FAIL draw.frozen: expected 423")
    assert "got 201" in line


# -- garbage answers -----------------------------------------------------------------------------
class FakeTarget:
    """A service that answers health and nothing else the way the contract says."""

    simulated = True
    name = "fake"

    def __init__(self, answer) -> None:
        self.answer = answer
        self.calls: list[tuple[str, str]] = []
        self.clock_ms = 0

    def request(self, method, path, body=None, query=None) -> Reply:
        self.calls.append((method, path))
        if (method, path) == ("GET", "/v1/health"):
            return Reply(200, {"status": "ok"})
        return self.answer(method, path, body)

    def now_ms(self) -> int:
        return self.clock_ms

    def wait_ms(self, duration_ms: int) -> None:
        self.clock_ms += duration_ms

    def close(self) -> None:
        pass


def test_garbage_answers_fail_every_check_with_expected_and_actual():
    target = FakeTarget(lambda method, path, body: Reply(500, ["garbage", {"x": 1}]))
    checks = conform(target)
    found = outcomes(checks)
    assert found["pass"] == {"health"}
    assert found["fail"] == set(CHECK_NAMES) - {"health", "chaos.add_remove"} - HTTP_ONLY
    # The listing is garbage, so no kind is known to be supported: nothing gets injected.
    assert found["skip"] == {"chaos.add_remove"} | HTTP_ONLY
    by_name = {c.name: c for c in checks}
    assert by_name["open.created"].expected.startswith("201 ")
    assert by_name["open.created"].actual.startswith('500 ["garbage"')
    assert by_name["draw.insufficient_limit"].actual.startswith("500")  # setup: the open
    assert "open the account" in by_name["draw.insufficient_limit"].why
    assert by_name["ledger.after_seq_negative"].expected == "400 {error: bad_request, detail}"


def test_a_yes_man_service_fails_every_refusal():
    """Accepts everything with a well-formed receipt and serves a well-formed empty ledger."""
    seqs = iter(range(1, 10_000))

    def answer(method, path, body):
        if path == "/v1/ledger":
            return Reply(200, {"entries": [], "next_seq": 0})
        seq = next(seqs)
        return Reply(201, {"entry_id": f"e-{seq}", "seq": seq})

    checks = conform(FakeTarget(answer), chaos=False)
    by_name = {c.name: c for c in checks}
    for name in ("open.exists", "draw.insufficient_limit", "repay.overpayment",
                 "status.outstanding_balance", "draw.frozen", "draw.closed",
                 "not_found.write", "input.bool_amount"):
        assert by_name[name].outcome == "fail", by_name[name]
        assert by_name[name].actual.startswith("201 {"), by_name[name]
    assert by_name["draw.receipt"].outcome == "pass"
    assert by_name["ledger.entries"].outcome == "fail"
    assert "0 entries for 5 writes" in by_name["ledger.entries"].actual
    assert {c.name for c in checks if c.outcome == "skip"} >= {"chaos.listing", "sync.shape"}


def test_a_target_that_does_not_answer_is_a_target_error():
    target = FakeTarget(lambda *_: Reply(None, None, "refused"))
    target.request = lambda *args, **kwargs: Reply(None, None, "ConnectionRefused")
    with pytest.raises(TargetError, match="does not answer"):
        conform(target)


def test_an_unreachable_url_is_a_target_error():
    with socket.socket() as sock:  # a port nothing listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = HttpTarget(f"http://127.0.0.1:{port}", http=HttpOptions(timeout_s=1.0))
    with pytest.raises(TargetError, match=f"127.0.0.1:{port}"):
        conform(target)


def test_a_bad_tag_is_a_usage_error(embedded):
    with pytest.raises(UsageError, match="tag"):
        conform(embedded, tag="has space")


# -- leaving the service clean -------------------------------------------------------------------
def test_the_probe_leaves_no_fault_and_only_prefixed_accounts(embedded):
    checks = conform(embedded, tag="mine")
    assert not outcomes(checks)["fail"], failures(checks)
    assert embedded.request("GET", "/v1/chaos").body["active"] == []
    entries = all_entries(embedded)
    assert entries
    assert all(e["account_id"].startswith("mine-") for e in entries)
    assert all(e["request_id"].startswith("mine-") for e in entries)


def test_the_probe_keeps_other_faults_and_removes_its_own(embedded):
    theirs = embedded.request("POST", "/v1/chaos/faults", {"kind": "delay_sync", "delay_ms": 2})
    checks = {c.name: c for c in conform(embedded)}
    assert checks["chaos.add_remove"].outcome == "pass"
    assert checks["chaos.clear_all"].outcome == "skip"
    assert embedded.request("GET", "/v1/chaos").body["active"] == [theirs.body]


class FlakyRemoval(EmbeddedTarget):
    """The first removal of a single fault answers 500 and removes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = False

    def request(self, method, path, body=None, query=None) -> Reply:
        if method == "DELETE" and path.startswith("/v1/chaos/faults/") and not self.refused:
            self.refused = True
            return Reply(500, {"error": "internal", "detail": "flaky"})
        return super().request(method, path, body, query)


def test_a_fault_the_probe_added_is_removed_even_when_its_check_fails():
    target = FlakyRemoval()
    theirs = target.request("POST", "/v1/chaos/faults", {"kind": "reorder_events", "window": 2})
    try:
        checks = {c.name: c for c in conform(target)}
        assert checks["chaos.add_remove"].outcome == "fail"
        assert target.request("GET", "/v1/chaos").body["active"] == [theirs.body]
    finally:
        target.close()


# -- rendering -----------------------------------------------------------------------------------
NASTY = 'a <b> & "c" \x00\x1b ]]> 花呗'
CHECKS = [Check("health", "pass", "200", "200", ""),
          Check("draw.frozen", "fail", "423 <x>", NASTY, "fix & retry"),
          Check("input.too_large", "skip", "", "", "HTTP only")]


def test_junit_is_well_formed_xml_with_one_case_per_check():
    root = ET.fromstring(to_junit(CHECKS))
    suite = root.find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "1")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["health", "draw.frozen", "input.too_large"]
    assert cases[1].get("classname") == "conform.draw"
    failure = cases[1].find("failure")
    assert '<b> & "c"' in failure.get("message") and "花呗" in failure.get("message")
    assert "\x00" not in failure.get("message")
    assert "fix & retry" in failure.text
    assert cases[2].find("skipped").get("message") == "HTTP only"


def test_json_holds_every_check_and_the_totals():
    report = orjson.loads(to_json(CHECKS))
    assert (report["passed"], report["failed"], report["skipped"]) == (1, 1, 1)
    assert report["checks"][1] == {"name": "draw.frozen", "outcome": "fail",
                                   "expected": "423 <x>", "actual": NASTY, "why": "fix & retry"}


def test_summary_is_one_line_per_check_then_the_totals():
    lines = summary_lines(CHECKS)
    assert lines[0] == "PASS health"
    assert lines[1].startswith("FAIL draw.frozen: expected 423 <x>; got a <b>")
    assert lines[2] == "SKIP input.too_large: HTTP only"
    assert lines[3].startswith("conform: 1 passed, 1 failed, 1 skipped")
    assert all("\n" not in line for line in lines)


# -- the command --------------------------------------------------------------------------------

def _conform_cli(tmp_path, *args):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "harness.cli", "conform", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.http
def test_the_command_exits_1_naming_the_failed_rule_against_a_broken_service(start_service,
                                                                           tmp_path):
    served = start_service("--bug", "no_cure")
    done = _conform_cli(tmp_path, "--target", served.url, "--report-dir", "out")
    assert done.returncode == 1, done.stdout + done.stderr
    assert any(line.startswith("FAIL") and "cure" in line for line in done.stdout.splitlines())
    checks = json.loads((tmp_path / "out" / "conform.json").read_text())
    assert checks and (tmp_path / "out" / "junit.xml").is_file()


def test_the_command_exits_2_in_one_line_when_nothing_answers(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = _conform_cli(tmp_path, "--target", f"http://127.0.0.1:{port}", "--timeout-s", "1")
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
