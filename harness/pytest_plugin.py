"""pytest plugin: write tests against a credit-limit service the way the harness judges it.

Installed with the package (entry point `limit_harness`), so any test suite in the environment
gets:

Options
    --limit-target URL   the service under test (http(s)://..., or py:MODULE:CLASS for an
                         adapter); default: the embedded reference service, simulated clock
    --limit-sla-ms MS    the service level the display must converge within (default 1000)
    --limit-header 'NAME: VALUE'  a header for every request (repeatable; VALUE may be $VAR)
    --limit-ca-bundle FILE, --limit-insecure, --limit-timeout-s S   TLS trust and timeout
    --limit-max-run-s S  wall-clock bound on each test that uses `limit_target` (default 300):
                         past it, the test fails with one line naming the phase

Fixtures
    limit_target    a fresh target per test (embedded: seeded from the test's node id)
    limit_recorder  a `harness.client.Recorder` over it; its `.history` holds every op
    limit_ids       unique ids for this test: `limit_ids.account()`, `limit_ids.request()`
    chaos           faults through the recorder: `chaos.inject(kind, **params)`,
                    `with chaos.fault("drop_events", probability=0.5): ...`; all cleared at
                    teardown
    reconcile       `reconcile()`: convergence phase + every checker; fails the test with a
                    readable diff on any critical or major finding; returns the Verdict

Markers
    @pytest.mark.limit_bug("name", ...)    the embedded target runs with these seeded bugs
    @pytest.mark.limit_chaos("kind", ...)  the test needs these fault kinds (skipped if the
                                           target does not support them)

Imports of the harness happen inside the fixtures: this module is loaded by every pytest run in
the environment and must cost nothing to suites that do not use it.
"""

from __future__ import annotations

import argparse
import itertools
import time
import zlib
from contextlib import contextmanager

import pytest

# harness.convergence.HARNESS; kept literal because this module imports nothing of the harness
# at load time (it loads in every pytest session of an environment that has the package).
HARNESS = 0

DEFAULT_SLA_MS = 1000
DEFAULT_MAX_RUN_S = 300.0
_SUPPORTED = pytest.StashKey[list]()


def _positive_ms(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of milliseconds") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
    return value


def _positive_s(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number above 0")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("limit-harness", "credit-limit service harness")
    group.addoption("--limit-target", dest="limit_target", default=None, metavar="URL",
                    help="service under test: http(s)://HOST:PORT or py:MODULE:CLASS "
                         "(default: the embedded reference service under a simulated clock)")
    group.addoption("--limit-sla-ms", dest="limit_sla_ms", type=_positive_ms,
                    default=DEFAULT_SLA_MS, metavar="MS",
                    help=f"display convergence service level for `reconcile` "
                         f"(default {DEFAULT_SLA_MS})")
    group.addoption("--limit-header", dest="limit_headers", action="append", default=[],
                    metavar="'NAME: VALUE'", help="send this header with every request "
                    "(repeatable); VALUE may be $VAR, read from the environment")
    group.addoption("--limit-ca-bundle", dest="limit_ca_bundle", default=None, metavar="FILE",
                    help="trust the CAs in this PEM file for https://")
    group.addoption("--limit-insecure", dest="limit_insecure", action="store_true",
                    help="do not verify the service's TLS certificate")
    group.addoption("--limit-timeout-s", dest="limit_timeout_s", type=float, default=None,
                    metavar="S", help="seconds to wait for each answer (default 5)")
    group.addoption("--limit-max-run-s", dest="limit_max_run_s", type=_positive_s,
                    default=DEFAULT_MAX_RUN_S, metavar="S",
                    help=f"wall-clock bound on each test using the target; past it the test "
                         f"fails, naming the phase (default {DEFAULT_MAX_RUN_S:g})")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "limit_bug(name, ...): run this test's embedded target with these seeded "
                   "bugs of the reference service (`limit-harness serve --list-bugs`); skipped "
                   "when --limit-target points elsewhere")
    config.addinivalue_line(
        "markers", "limit_chaos(kind, ...): the test injects faults of these kinds (none: any); "
                   "skipped when the target does not support them")


# -- fixtures -------------------------------------------------------------------------------------

@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """A test cut short by --limit-max-run-s fails with its one line, not a traceback."""
    try:
        return (yield)
    except Exception as exc:
        if type(exc).__name__ != "DeadlineExceeded" or type(exc).__module__ != "harness.deadline":
            raise
        cut_short = str(exc)
    pytest.fail(cut_short, pytrace=False)  # outside the handler: no "during handling" chain


@pytest.fixture
def limit_target(request: pytest.FixtureRequest):
    """A fresh target for this test: the embedded reference service (seeded from the test's
    node id, with the bugs of its `limit_bug` markers) or the --limit-target service, probed.
    Every request it sends checks the test's wall-clock bound (--limit-max-run-s)."""
    from pathlib import Path

    from harness.deadline import Deadline, bounded
    from harness.errors import HarnessError
    from harness.http_options import TIMEOUT_S_DEFAULT, HttpOptions
    from harness.service import bugs as catalogue
    from harness.targets import open_target, probe

    spec = request.config.getoption("limit_target")
    embedded = spec in (None, "embedded")
    bugs = [name for marker in request.node.iter_markers("limit_bug") for name in marker.args]
    if bugs and not embedded:
        pytest.skip(f"limit_bug({', '.join(bugs)}) needs the embedded reference service; "
                    f"this run targets {spec}")
    try:
        catalogue.check(bugs)
        option = request.config.getoption
        bundle = option("limit_ca_bundle")
        http = HttpOptions.parse(option("limit_headers"), Path(bundle) if bundle else None,
                                 option("limit_insecure"),
                                 option("limit_timeout_s") or TIMEOUT_S_DEFAULT)
        # A stable seed per test: the same test meets the same fault dice on every run.
        deadline = Deadline("test", request.config.getoption("limit_max_run_s"),
                            option="--limit-max-run-s")
        deadline.enter("setup")
        target = bounded(open_target(spec, seed=zlib.crc32(request.node.nodeid.encode()),
                                     bugs=bugs, http=http), deadline)
    except HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        try:
            supported = probe(target)
        except HarnessError as exc:
            pytest.fail(str(exc), pytrace=False)
        request.node.stash[_SUPPORTED] = supported
        for marker in request.node.iter_markers("limit_chaos"):
            missing = [k for k in marker.args if k not in supported]
            if missing or not supported:
                pytest.skip(f"target {target.name} does not support fault "
                            f"{', '.join(missing) or 'injection'}")
        deadline.enter("body")
        yield target
    finally:
        target.close()


@pytest.fixture
def limit_recorder(limit_target, request: pytest.FixtureRequest):
    """A Recorder over `limit_target`; every op of the test goes into `limit_recorder.history`."""
    from harness.client import Recorder, ledger_head_seq
    from harness.history import new_history

    history = new_history(limit_target.name, limit_target.simulated,
                          request.config.getoption("limit_sla_ms"), test=request.node.nodeid)
    return Recorder(limit_target, history, ledger_after_seq=0 if limit_target.simulated
                    else ledger_head_seq(limit_target))


class LimitIds:
    """Ids that no other test (or earlier run, on a real service) has used."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self._accounts = itertools.count(1)
        self._requests = itertools.count(1)

    def account(self, name: str = "acct") -> str:
        return f"{self.tag}{name}-{next(self._accounts)}"[-64:]

    def request(self) -> str:
        return f"{self.tag}r{next(self._requests)}"[-64:]


@pytest.fixture
def limit_ids(limit_target, request: pytest.FixtureRequest) -> LimitIds:
    """`limit_ids.account("name")` and `limit_ids.request()`: short on the embedded service
    (fresh per test), prefixed per test and run on a real one (which outlives the test)."""
    if limit_target.simulated:
        return LimitIds("")
    node = zlib.crc32(request.node.nodeid.encode()) % 10**6
    return LimitIds(f"t{int(time.time() * 1000) % 10**8}n{node}-")


class Chaos:
    """Fault injection through the recorder, so every fault is in the history the checkers
    judge. Only kinds the target lists as supported are injected; others skip the test."""

    def __init__(self, recorder, supported: list[str]) -> None:
        self.recorder = recorder
        self.supported = list(supported)
        self.injected = False

    def inject(self, kind: str, **params) -> str:
        """Inject a fault; returns its fault_id."""
        if kind not in self.supported:
            pytest.skip(f"target {self.recorder.target.name} does not support fault {kind}")
        self.injected = True
        op = self.recorder.add_fault(HARNESS, {"kind": kind, **params})
        if op.outcome != "ok":
            pytest.fail(f"the target did not accept fault {kind}({params}): "
                        f"{op.error or op.http_status} {op.response}", pytrace=False)
        return op.response["fault_id"]

    def remove(self, fault_id: str) -> None:
        self.recorder.remove_fault(HARNESS, fault_id)

    def clear(self) -> None:
        self.recorder.remove_fault(HARNESS, None)

    @contextmanager
    def fault(self, kind: str, **params):
        """`with chaos.fault("delay_sync", delay_ms=300) as fault_id: ...`: on inside the
        block, removed after it (a one-shot maintenance_reset has nothing to remove)."""
        fault_id = self.inject(kind, **params)
        try:
            yield fault_id
        finally:
            if kind != "maintenance_reset":
                self.remove(fault_id)


@pytest.fixture
def chaos(limit_recorder, request: pytest.FixtureRequest):
    """Inject and remove faults through the recorder; every fault is cleared at teardown."""
    handle = Chaos(limit_recorder, request.node.stash.get(_SUPPORTED, []))
    yield handle
    if handle.injected:
        # A real service outlives the test; leave it as we found it.
        handle.clear()


@pytest.fixture
def reconcile(limit_recorder, request: pytest.FixtureRequest):
    """`reconcile(fail=True)`: remove every fault, wait out the service level (plus the largest
    injected delay), read every account's display twice, fetch the ledger and run every
    checker. Any critical or major finding fails the test with a readable diff; returns the
    `harness.checkers.Verdict` (findings and stats)."""
    from harness.convergence import converge_and_check
    from harness.findings import describe_findings, failing

    sla_ms = request.config.getoption("limit_sla_ms")

    deadline = getattr(limit_recorder.target, "deadline", None)

    def reconcile_now(fail: bool = True):
        _, verdict = converge_and_check(limit_recorder, sla_ms, on_phase=None if deadline is None
                                        else deadline.enter)
        bad = failing(verdict.findings)
        request.node.user_properties.append(("limit_findings", len(verdict.findings)))
        if fail and bad:
            pytest.fail(describe_findings(bad, f"against {limit_recorder.target.name}"),
                        pytrace=False)
        return verdict

    return reconcile_now
