"""`limit-harness prop`: hypothesis searches for a program of limit-service operations and faults
that the checkers fail, shrinks it, and prints it with the findings.

    limit-harness prop [--target URL] [--examples N] [--steps N] [--seed N] [--sla-ms MS]
                       [--report-dir DIR] [--bug NAME]...

`search(config)` runs it and returns a `PropResult`; `save(result)` writes a failing program as
`program.txt` and `findings.json` in the report directory (default `./reports/prop-<seed>/`).

The same seed gives the same search: hypothesis is seeded from --seed and its example database
is off, so nothing from earlier runs steers it (and no `.hypothesis` directory is written).
"""

from __future__ import annotations

import re
import shlex
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from hypothesis import seed as hypothesis_seed
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.reporting import with_reporter
from hypothesis.stateful import run_state_machine_as_test

from .deadline import Deadline, DeadlineExceeded, OutOfTime, bounded
from .errors import UsageError
from .findings import Finding, FindingsError
from .progress import Progress
from .service import bugs as catalogue
from .stateful import MachineStats, machine_for
from .http_options import HttpOptions
from .reports import write_file
from .targets import open_target

_STEP = re.compile(r"^(?:[\w, ]+ = )?state\.(\w+)\(")
# The search's wall-clock bound without --max-run-s (seconds): a base, then per program (as
# many again for shrinking) its steps and its convergence phase, at rates far below what a
# healthy target needs (200 embedded programs of 30 steps take about 6 s).
MAX_RUN_BASE_S = 120.0
SHRINK_FACTOR = 2
STEP_S = {True: 0.02, False: 0.2}  # embedded, HTTP
PROGRAM_S = {True: 0.1, False: 1.0}  # plus the service level, for HTTP


@dataclass(frozen=True)
class PropConfig:
    target: str | None = None
    examples: int = 200
    steps: int = 30
    seed: int = 0
    sla_ms: int = 1000
    report_dir: Path | None = None
    bugs: tuple[str, ...] = ()
    http: HttpOptions = HttpOptions()
    max_run_s: float | None = None  # None: default_max_run_s
    target_cmd: str | None = None  # --target-cmd: the service, started once for the search
    deployment: str | None = None  # --deployment FILE (docs/deployments.md)

    @property
    def embedded(self) -> bool:
        return (self.target in (None, "embedded") and self.target_cmd is None
                and self.deployment is None)

    def replay_argv(self) -> list[str]:
        argv = ["limit-harness", "prop", "--seed", str(self.seed), "--examples",
                str(self.examples), "--steps", str(self.steps), "--sla-ms", str(self.sla_ms)]
        if self.max_run_s is not None:
            argv += ["--max-run-s", f"{self.max_run_s:g}"]
        if self.target:
            argv += ["--target", self.target]
        if self.target_cmd:
            argv += ["--target-cmd", self.target_cmd]
        if self.deployment:
            argv += ["--deployment", self.deployment]
        if not self.embedded:
            argv += self.http.argv()
        for bug in self.bugs:
            argv += ["--bug", bug]
        return argv


@dataclass
class PropResult:
    config: PropConfig
    target: str
    failed: bool
    program: list[str] = field(default_factory=list)  # the shrunk program, as hypothesis prints it
    message: str = ""  # the failure's readable diff
    findings: list[Finding] = field(default_factory=list)
    examples: int = 0  # programs run until the first failure, or in all when none failed
    runs: int = 0  # programs run in all, shrinking included
    seconds: float = 0.0
    time_to_find_s: float | None = None
    flaky: bool = False  # the failure did not reproduce when hypothesis replayed it

    @property
    def steps(self) -> int:
        """Rule calls in the shrunk program (the account opened first counts, teardown not)."""
        return sum(1 for line in self.program
                   if (m := _STEP.match(line)) and m.group(1) != "teardown")


def default_max_run_s(config: PropConfig) -> float:
    embedded = config.embedded
    program_s = PROGRAM_S[embedded] + (0 if embedded else config.sla_ms / 1000)
    return MAX_RUN_BASE_S + config.examples * SHRINK_FACTOR * (
        config.steps * STEP_S[embedded] + program_s)


def search(config: PropConfig, progress: Progress | None = None) -> PropResult:
    """Run the machine against the configured target; never writes to disk. Past its bound
    (--max-run-s) the search is cut short: DeadlineExceeded, naming the phase (search or
    shrinking), since a half-shrunk program cannot be had from hypothesis. With --target-cmd
    or --deployment the deployment is started once for the whole search, every program's
    target has its faults routed to the deployment's providers, and it is stopped at the end."""
    if config.target_cmd is None and config.deployment is None:
        return _search(config, progress)
    from .deployment import deployment_for
    from .faults.routing import RoutedTarget

    catalogue.require_embedded("a deployment", config.bugs)
    started = deployment_for(config.target, config.target_cmd, config.deployment)
    started.start(seed=config.seed)
    try:
        url, routes = started.url or str(config.target), started.routed()
        return _search(config, progress, url, lambda: RoutedTarget(
            open_target(url, http=config.http), routes, chaos_api=started.chaos_api))
    finally:
        started.stop()


def _search(config: PropConfig, progress: Progress | None, url: str | None = None,
            factory=None) -> PropResult:
    catalogue.check(config.bugs)
    catalogue.require_embedded(url or config.target, config.bugs)
    deadline = Deadline("prop", config.max_run_s or default_max_run_s(config))
    deadline.enter("search")
    bugs = tuple(dict.fromkeys(config.bugs))  # the order given, as the replay command says
    embedded = config.embedded
    if factory is None and not embedded:
        factory = lambda: open_target(config.target, http=config.http)  # noqa: E731
    machine = machine_for(
        factory, sla_ms=config.sla_ms, bugs=bugs,
        max_examples=config.examples, stateful_step_count=config.steps,
        database=None,                # nothing from earlier runs steers the search
        derandomize=False,            # --seed decides, even under hypothesis's CI profile
        report_multiple_bugs=False,   # one failure, shrunk, is what the user reads
        print_blob=False)
    stats: MachineStats = machine.stats
    # Every program's target checks the bound; it escapes hypothesis as OutOfTime, which is no
    # failure to shrink.
    unbounded = machine.target_factory
    machine.target_factory = staticmethod(lambda: bounded(unbounded(), deadline, escape=True))
    stats.on_program = _phase_hook(deadline, None if progress is None else
                                   _progress_hook(progress, config.examples))
    if progress is not None:
        progress.phase("search", total=config.examples)
    target_name = ("embedded" + (f" (bugs: {', '.join(bugs)})" if bugs else "")) if embedded \
        else str(url or config.target)
    started = time.monotonic()
    result = PropResult(config, target_name, failed=False)
    reported: list[str] = []
    with tempfile.TemporaryDirectory(prefix="limit-harness-hypothesis-") as home:
        # Hypothesis caches things under ./.hypothesis even with the database off; a CLI must
        # not leave that in the user's working directory.
        set_hypothesis_home_dir(home)
        try:
            with with_reporter(reported.append):
                run_state_machine_as_test(hypothesis_seed(config.seed)(machine),
                                          settings=machine.TestCase.settings)
        except OutOfTime:
            raise _cut_short(deadline, stats) from None
        except Exception as exc:  # noqa: BLE001 - only findings are ours to report; see below
            if deadline.cut is not None:  # hypothesis reports an interrupted shrink its own way
                raise _cut_short(deadline, stats) from None
            found = _findings_error(exc)
            if found is None:
                raise  # a harness error (exit 2) or a bug in the harness: not a finding
            result.failed = True
            result.flaky = found is not exc
            result.program = _program(found) or _program(exc) or reported
            result.message = str(found)
            result.findings = found.findings
        finally:
            set_hypothesis_home_dir(None)
            if progress is not None:
                progress.done()
    result.seconds = time.monotonic() - started
    result.runs = stats.finished
    result.examples = stats.examples_to_failure if result.failed and \
        stats.examples_to_failure is not None else stats.finished
    result.time_to_find_s = stats.first_failure_s
    return result


def save(result: PropResult) -> Path:
    config = result.config
    report_dir = config.report_dir or Path.cwd() / "reports" / f"prop-{config.seed}"
    replay = shlex.join(config.replay_argv())
    program = "\n".join([f"# {result.target}, seed {config.seed}: a failing program, shrunk",
                         f"# replay: {replay}", *result.program, ""])
    document = {
        "seed": config.seed, "target": result.target, "examples": result.examples,
        "runs": result.runs, "steps": result.steps, "seconds": round(result.seconds, 3),
        "time_to_find_s": None if result.time_to_find_s is None else
        round(result.time_to_find_s, 3),
        "flaky": result.flaky, "replay": replay, "program": result.program,
        "message": result.message, "findings": [f.to_dict() for f in result.findings]}
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write reports to {report_dir}: {exc.strerror}") from None
    write_file(report_dir / "program.txt", program.encode("utf-8"))
    write_file(report_dir / "findings.json",
               orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    return report_dir


# -- helpers ------------------------------------------------------------------------------

def _findings_error(exc: BaseException) -> FindingsError | None:
    """The FindingsError behind what hypothesis raised: itself, or inside the exception group
    hypothesis raises when a failure was flaky."""
    if isinstance(exc, FindingsError):
        return exc
    for inner in getattr(exc, "exceptions", ()) or ():
        found = _findings_error(inner)
        if found is not None:
            return found
    return None


def _program(exc: BaseException) -> list[str]:
    """The program hypothesis attached to the exception: from `state = ...` to teardown."""
    notes = [line for note in getattr(exc, "__notes__", ()) for line in str(note).splitlines()]
    for n, line in enumerate(notes):
        if line.startswith("state = "):
            out = []
            for step in notes[n:]:
                out.append(step)
                if step.strip() == "state.teardown()":
                    break
            return out
    return []


def _cut_short(deadline: Deadline, stats: MachineStats) -> DeadlineExceeded:
    error = deadline.cut
    assert error is not None
    error.note = (f"{stats.finished} programs run" if stats.examples_to_failure is None
                  else f"a failure was found after {stats.examples_to_failure} examples and "
                       f"not yet shrunk; give it more time to see it")
    return error


def _phase_hook(deadline: Deadline, then):
    """After each program: the shrinking phase once a failure was found; then `then`."""
    def on_program(stats: MachineStats) -> None:
        try:
            deadline.enter("search" if stats.first_failure_s is None else "shrinking")
        except DeadlineExceeded as exc:
            raise OutOfTime(exc) from None
        if then is not None:
            then(stats)
    return on_program


def _progress_hook(progress: Progress, examples: int):
    def on_program(stats: MachineStats) -> None:
        if stats.first_failure_s is None:
            progress.update(stats.finished)
        else:
            if progress.name != "shrinking":
                progress.phase("shrinking")
            progress.update(stats.finished, found_after=stats.examples_to_failure,
                            runs=stats.finished)
    return on_program

