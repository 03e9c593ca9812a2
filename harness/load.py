"""`limit-harness load`: locust drives the target with the harness's personas, every request goes
into a history, and the same convergence phase, checkers, reports and gate as `run` judge it.

Three parts, each used by the one after it:

- the worker side (`OpLog`): a locust process records its users' operations and ships them to
  the master in bounded chunks while the test runs, plus a final chunk when it stops;
- the master side (`Collector`, `merge`, `LoadRun`): the chunks become one history (process ids
  made unique per worker, indexes renumbered in invocation order, `retry_of` kept), the
  nemesis's faults and the convergence reads are added, the checkers and the gate judge it;
- the command (`LoadConfig`, `run_load`): locust headless as a subprocess, with the reference
  service started on a free port when no target is given, the result read from report.json.

loadtests/locustfile.py is the locust glue between them. Nothing here imports locust or gevent,
so the CLI and the tests can use it in a plain process. The judging half (gate, checkers,
reports) is imported where it is used, never at import: locust imports this module before it
forks its `--processes` workers, and the checkers pull in deepdiff, which starts polars' runtime
thread; a forked copy of it hangs a worker at exit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import heapq
import math
import operator
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

import orjson

from .client import Recorder, ledger_head_seq
from .clock import rfc3339
from .contract import ENTRY_FIELDS_BY_TYPE, WRITE_KINDS, cured_request_id
from .deadline import Deadline, DeadlineExceeded, bounded
from .driver import (PROBE_ACCOUNTS_MAX, PROBE_SCAN_OPS_MAX, _nemesis_move, dice,
                     recently_written)
from .errors import HarnessError, UsageError, exit_code
from .history import FS, History, Op, new_history
from .http_options import HttpOptions
from .nemesis import Nemesis, load_profile
from .secrets import url_shown
from .targets import HttpTarget, probe

# -- bounds ------------------------------------------------------------------------------------
CHUNK_OPS_MAX = 2_000          # op rows (new ops + completions) in one message to the master
SHIP_INTERVAL_S = 0.5          # how often a worker ships; also the most a vanished one can lose
RECORDED_OPS_MAX = 5_000_000   # per worker: past this its users stop (the master holds them all)
PROCESS_STRIDE = 100_000       # worker slot k owns process ids k*STRIDE+1 .. k*STRIDE+STRIDE-1
FLUSH_WAIT_S = 15.0            # how long the master waits for the workers' final chunks
REQUEST_TIMEOUT_S = 5.0        # the same as an HTTP `run`'s
HARNESS = 0                    # the master's own ops (faults, phases, convergence reads)

# -- what passes between `run_load`, the locust processes and the report ------------------------
ENV_SEED = "LIMIT_SEED"
ENV_SLA_MS = "LIMIT_SLA_MS"
ENV_FAULTS = "LIMIT_FAULTS"
# Locust run by hand is a plain load test unless asked for faults (a fault can hide a bug for the
# few seconds of a short run); `limit-harness load` passes --faults, whose default is "all".
FAULTS_BY_HAND = "none"
ENV_POLICY = "LIMIT_POLICY"
ENV_REPORT_DIR = "LIMIT_REPORT_DIR"
ENV_HEADERS = "LIMIT_HEADERS"      # JSON {name: value as given}: `$VAR` is read where it is sent
ENV_CA_BUNDLE = "LIMIT_CA_BUNDLE"
ENV_INSECURE = "LIMIT_INSECURE"    # "1": do not verify the target's certificate
ENV_TIMEOUT_S = "LIMIT_TIMEOUT_S"
ENV_RECORD = "LIMIT_RECORD"        # "0": no history, no judging (to measure what recording costs)
ENV_THINK_MS = "LIMIT_THINK_MS"    # "MIN,MAX": overrides the personas' think time (benchmarks)
ENV_REPLAY = "LIMIT_REPLAY"
ENV_CONFIG = "LIMIT_CONFIG"
ENV_DURATION_S = "LIMIT_DURATION_S"  # how long the load runs: the nemesis plans its cycle in it
ENV_CHAOS_URL = "LIMIT_CHAOS_URL"  # where the harness answers the chaos routes (a deployment's)
# A chaos call may restart a process and wait until it is ready (deployment.START_TIMEOUT_S).
CHAOS_TIMEOUT_S = 60.0

SERVED_LEDGER = "sqlite://"        # the reference service's store when `load` starts it itself
START_MARGIN_S = 60.0              # locust start-up, worker connection, spawning
FINISH_MARGIN_S = 90.0             # flush, convergence, check, reports (plus duration_s again)
LOG_LINE_CHARS_MAX = 300           # of the log line quoted in a one-line error


# == the command ===============================================================================

@dataclass(frozen=True)
class LoadConfig:
    """What `limit-harness load` was asked to do; one field per flag."""

    target: str | None = None
    users: int = 32
    spawn_rate: float = 8.0
    duration_s: float = 30.0
    processes: int = 1
    faults: str = "all"
    policy: Path | None = None
    report_dir: Path | None = None
    seed: int = 0
    sla_ms: int = 1000
    headers: dict[str, str] = field(default_factory=dict)
    # TLS trust and the time to wait for each answer, as for `run` (http_options.py).
    ca_bundle: Path | None = None
    insecure: bool = False
    timeout_s: float = REQUEST_TIMEOUT_S
    max_run_s: float | None = None  # the whole command's bound; None: START_MARGIN_S + timeout_s()
    target_cmd: str | None = None  # --target-cmd: the harness starts the target itself
    deployment: str | None = None  # --deployment FILE (docs/deployments.md)

    def __post_init__(self) -> None:
        if self.users < 1 or self.users >= PROCESS_STRIDE:
            raise UsageError(f"--users must be between 1 and {PROCESS_STRIDE - 1}")
        for name in ("spawn_rate", "duration_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"--{name.removesuffix('_s').replace('_', '-')} must be a "
                                 f"positive number")
        if self.processes < 1:
            raise UsageError("--processes must be at least 1 (1: one local process)")
        if self.sla_ms < 1 or self.seed < 0:
            raise UsageError("--sla-ms must be positive and --seed not negative")

    def replay_argv(self) -> list[str]:
        """The command that runs this load test again (no header value: they are secrets)."""
        argv = ["limit-harness", "load"]
        if self.target:
            argv += ["--target", url_shown(self.target)]
        argv += ["--users", str(self.users), "--spawn-rate", f"{self.spawn_rate:g}",
                 "--duration", f"{self.duration_s:g}s", "--processes", str(self.processes),
                 "--faults", self.faults, "--seed", str(self.seed), "--sla-ms", str(self.sla_ms)]
        if self.policy:
            argv += ["--policy", str(self.policy)]
        if self.target_cmd:
            argv += ["--target-cmd", self.target_cmd]
        if self.deployment:
            argv += ["--deployment", str(self.deployment)]
        # $VAR as given, else <redacted>; TLS and timeout as given
        return argv + http_options(self.headers, **self.tls()).argv()

    def tls(self) -> dict:
        return {"ca_bundle": self.ca_bundle, "insecure": self.insecure,
                "timeout_s": self.timeout_s}

    def to_dict(self) -> dict:
        """What report.json keeps of the config: header names only, never their values."""
        return {"target": url_shown(self.target) if self.target else None,
                "users": self.users, "spawn_rate": self.spawn_rate,
                "duration_s": self.duration_s, "processes": self.processes,
                "faults": self.faults, "policy": str(self.policy) if self.policy else None,
                "seed": self.seed, "sla_ms": self.sla_ms, "headers": sorted(self.headers),
                "target_cmd": self.target_cmd,
                "deployment": str(self.deployment) if self.deployment else None}


@dataclass
class LoadResult:
    report: dict
    report_dir: Path
    exit_code: int


_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?")


def parse_duration_s(text: str) -> float:
    """`30s`, `2m`, `1h30m`, `90` (seconds) -> seconds; UsageError otherwise."""
    stripped = text.strip()
    try:
        value = float(stripped)
    except ValueError:
        match = _DURATION.fullmatch(stripped)
        if not stripped or match is None:
            raise UsageError(f"duration {text!r} is not like 30s, 2m or 1h30m") from None
        hours, minutes, seconds = match.groups()
        value = int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"duration {text!r} must be more than 0 s (like 30s or 2m)")
    return value


def parse_header(text: str) -> tuple[str, str]:
    """`NAME: VALUE` -> (NAME, VALUE as given: `$VAR` is read later, where it is sent)."""
    return HttpOptions.parse([text]).headers[0]


def run_load(config: LoadConfig) -> LoadResult:
    """Run the load test to its verdict; HarnessError (exit 2) when it could not be judged."""
    policy_path = str(config.policy) if config.policy else None
    from . import gate  # here, not at the top: see import_judging
    gate.load_policy(policy_path)     # a bad policy or fault profile fails before anything starts
    load_profile(config.faults)
    report_dir = config.report_dir or default_report_dir(config.seed)
    _fresh_report_dir(report_dir)
    log_path = report_dir / "locust.log"
    deadline = Deadline("load", config.max_run_s or START_MARGIN_S + timeout_s(config))
    deadline.enter("start")
    with _served(config) as (url, chaos_url):
        probe(bounded(http_target(url, config.headers, LoadClock(), **config.tls()), deadline))
        settings = LoadSettings(seed=config.seed, sla_ms=config.sla_ms, faults=config.faults,
                                policy=policy_path, report_dir=report_dir, chaos_url=chaos_url,
                                duration_s=config.duration_s,
                                headers=dict(config.headers), **config.tls(),
                                replay=shlex.join(config.replay_argv()),
                                config=config.to_dict())
        deadline.enter("locust")  # the load, then the convergence phase and the check, in locust
        try:
            returncode = _run_locust(locust_argv(config, url), settings.to_env(), log_path,
                                     timeout_s=deadline.remaining_s())
        except _TimedOut:
            try:
                deadline.check()
            except DeadlineExceeded as exc:
                exc.saved = str(log_path)
                raise
            raise HarnessError(f"the load test did not finish in time and was killed; see "
                               f"{log_path}") from None
    deadline.enter("report")
    report = _read_verdict(report_dir, log_path)
    code = exit_code(report["verdict"] == "pass")
    if returncode != code:
        raise HarnessError(f"locust exited with {returncode} but report.json says "
                           f"{report['verdict']}; see {log_path}")
    return LoadResult(report, report_dir, code)


def default_report_dir(seed: int) -> Path:
    return Path.cwd() / "reports" / run_id_of(dt.datetime.now(dt.timezone.utc), seed)


def run_id_of(started: dt.datetime, seed: int) -> str:
    from .reports import document

    return document.run_id(started, f"load-seed{seed}")


def timeout_s(config: LoadConfig) -> float:
    """How long the locust subprocess may take before it is killed."""
    spawn_s = config.users / config.spawn_rate
    return config.duration_s * 2 + spawn_s + START_MARGIN_S + FINISH_MARGIN_S


def locust_argv(config: LoadConfig, url: str) -> list[str]:
    argv = [sys.executable, "-m", "locust", "-f", str(locustfile_path()), "--headless",
            "--only-summary", "-u", str(config.users), "-r", f"{config.spawn_rate:g}",
            # locust takes whole seconds; never less than asked for
            "-t", f"{max(1, math.ceil(config.duration_s))}s", "--host", url]
    if config.processes > 1:
        argv += ["--processes", str(config.processes)]
    return argv


def locustfile_path() -> Path:
    """The packaged locustfile (harness/loadtests/ in a wheel), else the repository's."""
    with contextlib.suppress(ModuleNotFoundError, TypeError):
        packaged = resources.files("harness.loadtests") / "locustfile.py"
        if packaged.is_file():
            return Path(str(packaged))
    here = Path(__file__).resolve().parent
    for candidate in (here / "loadtests" / "locustfile.py",
                      here.parent / "loadtests" / "locustfile.py"):
        if candidate.is_file():
            return candidate
    raise UsageError("cannot find the load test's locustfile.py (neither harness/loadtests/ nor "
                     "loadtests/ next to the package); reinstall limit-harness")


def _fresh_report_dir(report_dir: Path) -> None:
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        # An old report.json must never be read as this run's verdict.
        (report_dir / "report.json").unlink(missing_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot use report directory {report_dir}: "
                         f"{exc.strerror or exc}") from None


@contextlib.contextmanager
def _served(config: LoadConfig) -> Iterator[tuple[str, str | None]]:
    """The target's URL, and where its chaos routes are answered when a deployment carries out
    faults (None: the target's own chaos API). Without a target, the reference service on a
    free port for the test; with --target-cmd or --deployment, the deployment, started here and
    stopped at the end whatever happens, its faults answered by a ChaosServer for the master."""
    target = config.target
    if config.target_cmd is not None or config.deployment is not None:
        with _deployed(config) as served:
            yield served
        return
    if target is not None:
        http_target(target, {}, LoadClock())  # a malformed URL is a UsageError before anything
        yield target, None
        return
    from .service import process

    with tempfile.TemporaryDirectory(prefix="limit-load-") as workdir:
        served = process.spawn(Path(workdir), "--ledger", SERVED_LEDGER)
        try:
            yield served.url, None
        finally:
            served.stop()


@contextlib.contextmanager
def _deployed(config: LoadConfig) -> Iterator[tuple[str, str]]:
    from .deployment import open_run_target
    from .faults.routing import ChaosServer

    routed = open_run_target(config.target, target_cmd=config.target_cmd,
                             deployment=config.deployment, seed=config.seed,
                             pool_size=2, http=http_options(config.headers, **config.tls()))
    try:
        server = ChaosServer(routed)
        try:
            yield routed.owner.url or str(config.target), server.url
        finally:
            server.stop()
    finally:
        routed.close()  # stops the deployment


class _TimedOut(Exception):
    """Locust ran past the time it was given and was killed."""


def _run_locust(argv: list[str], env: dict[str, str], log_path: Path, timeout_s: float) -> int:
    """Run locust to its end; kill its whole process group (master and workers) on timeout
    (_TimedOut)."""
    package_root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, **env,
           "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH"))
                                         if p)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            return proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise _TimedOut() from None
        except BaseException:
            _kill_group(proc)
            raise


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _read_verdict(report_dir: Path, log_path: Path) -> dict:
    from .reports import load_report

    path = report_dir / "report.json"
    if not path.exists():
        raise HarnessError(f"the load test wrote no report.json ({_why(log_path)}); "
                           f"see {log_path}")
    return load_report(path)


def _why(log_path: Path) -> str:
    """The locustfile's own error line, else locust's last error, from its log."""
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    lines = text.splitlines()
    for marker in ("limit-harness load: error:", "ERROR", "Error", "Traceback"):
        found = [line.strip() for line in lines if marker in line]
        if found:
            return found[-1][:LOG_LINE_CHARS_MAX]
    return "locust said nothing about why"


# == settings shared by run_load and the locust processes =======================================

@dataclass(frozen=True)
class LoadSettings:
    """The load test's settings as the locustfile reads them from its environment."""

    seed: int = 0
    sla_ms: int = 1000
    faults: str = FAULTS_BY_HAND
    policy: str | None = None
    report_dir: Path | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # TLS trust and the time to wait for each answer, as for `run` (http_options.py).
    ca_bundle: Path | None = None
    insecure: bool = False
    timeout_s: float = REQUEST_TIMEOUT_S
    record: bool = True
    think_ms: tuple[int, int] | None = None
    replay: str | None = None
    config: dict | None = None
    chaos_url: str | None = None  # the chaos routes, when a deployment carries out faults
    duration_s: float | None = None  # None: by hand, a length the nemesis assumes

    def to_env(self) -> dict[str, str]:
        env = {ENV_SEED: str(self.seed), ENV_SLA_MS: str(self.sla_ms), ENV_FAULTS: self.faults,
               ENV_RECORD: "1" if self.record else "0", ENV_TIMEOUT_S: str(self.timeout_s),
               ENV_INSECURE: "1" if self.insecure else "0"}
        optional = {ENV_POLICY: self.policy,
                    ENV_REPORT_DIR: str(self.report_dir) if self.report_dir else None,
                    ENV_HEADERS: orjson.dumps(self.headers).decode() if self.headers else None,
                    ENV_CA_BUNDLE: str(self.ca_bundle) if self.ca_bundle else None,
                    ENV_THINK_MS: ",".join(map(str, self.think_ms)) if self.think_ms else None,
                    ENV_REPLAY: self.replay,
                    ENV_CONFIG: orjson.dumps(self.config).decode() if self.config else None,
                    ENV_CHAOS_URL: self.chaos_url,
                    ENV_DURATION_S: None if self.duration_s is None else str(self.duration_s)}
        env.update({k: v for k, v in optional.items() if v is not None})
        return env

    @classmethod
    def from_env(cls, env) -> "LoadSettings":
        try:
            return cls(seed=int(env.get(ENV_SEED, "0")), sla_ms=int(env.get(ENV_SLA_MS, "1000")),
                       faults=env.get(ENV_FAULTS, FAULTS_BY_HAND), policy=env.get(ENV_POLICY) or None,
                       report_dir=Path(env[ENV_REPORT_DIR]) if env.get(ENV_REPORT_DIR) else None,
                       headers=_headers_of(env.get(ENV_HEADERS)),
                       ca_bundle=Path(env[ENV_CA_BUNDLE]) if env.get(ENV_CA_BUNDLE) else None,
                       insecure=env.get(ENV_INSECURE) == "1",
                       timeout_s=float(env.get(ENV_TIMEOUT_S, REQUEST_TIMEOUT_S)),
                       record=env.get(ENV_RECORD, "1") != "0",
                       think_ms=_think_of(env.get(ENV_THINK_MS)),
                       replay=env.get(ENV_REPLAY) or None,
                       config=orjson.loads(env[ENV_CONFIG]) if env.get(ENV_CONFIG) else None,
                       chaos_url=env.get(ENV_CHAOS_URL) or None,
                       duration_s=float(env[ENV_DURATION_S]) if env.get(ENV_DURATION_S) else None)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"bad LIMIT_* environment variable ({type(exc).__name__}); check "
                             f"{ENV_SEED}, {ENV_SLA_MS}, {ENV_THINK_MS}, {ENV_CONFIG}") from None


def _headers_of(raw: str | None) -> dict[str, str]:
    if not raw:
        return {}
    headers = orjson.loads(raw)
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in headers.items()):
        raise UsageError(f"{ENV_HEADERS} must be a JSON object of strings")
    return headers


def _think_of(raw: str | None) -> tuple[int, int] | None:
    if not raw:
        return None
    low, high = (int(part) for part in raw.split(","))
    if not 0 <= low <= high:
        raise ValueError(f"{ENV_THINK_MS} needs 0 <= MIN <= MAX")
    return low, high


# == time =======================================================================================

def epoch_ms() -> int:
    return time.time_ns() // 1_000_000


class LoadClock:
    """Wall-clock milliseconds minus `origin_ms` that never step back: anchored to the wall clock
    once, then moved by the monotonic clock. Workers on other machines agree with the master as
    far as their wall clocks do (run NTP)."""

    def __init__(self, origin_ms: int = 0) -> None:
        self._anchor_ns = time.time_ns() - time.monotonic_ns()
        self.origin_ms = origin_ms
        self.base = dt.datetime.fromtimestamp(origin_ms / 1000, dt.timezone.utc)

    def now_ms(self) -> int:
        return (self._anchor_ns + time.monotonic_ns()) // 1_000_000 - self.origin_ms

    def iso(self, ms: int) -> str:
        return rfc3339(self.base + dt.timedelta(milliseconds=ms))


def http_options(headers: dict[str, str], ca_bundle: Path | None = None, insecure: bool = False,
                 timeout_s: float = REQUEST_TIMEOUT_S) -> HttpOptions:
    """`--header` values as given (`$VAR` or typed in), checked and registered as secrets; TLS
    trust and timeout."""
    return HttpOptions.parse([f"{name}: {value}" for name, value in headers.items()],
                             ca_bundle, insecure, timeout_s)


def http_target(url: str, headers: dict[str, str], clock: LoadClock, **tls) -> HttpTarget:
    """The master's client of the target: the same HttpTarget as `run`, on the load test's clock."""
    target = HttpTarget(url, pool_size=4, http=http_options(headers, **tls))
    target.clock = clock
    return target


# == the worker side: recording and shipping =====================================================

_OP_FIELDS = tuple(f.name for f in dataclasses.fields(Op))  # a row is Op(*row)
_DONE_FIELDS = ("index", "complete_ms", "outcome", "http_status", "response", "error")
_op_row = operator.attrgetter(*_OP_FIELDS)  # C speed: a worker builds one row per request
_done_row = operator.attrgetter(*_DONE_FIELDS)


class OpLog:
    """One locust process's operations, shipped to the master in chunks of at most
    CHUNK_OPS_MAX rows: every op invoked since the last chunk (complete or still in flight), and
    the completions of ops an earlier chunk shipped in flight. It keeps only what it has not
    shipped yet, so its memory is bounded by the shipping interval, not the test's length."""

    def __init__(self, run: str | None, tag: str, clock: LoadClock, about: dict,
                 ops_max: int = RECORDED_OPS_MAX) -> None:
        self.run, self.tag, self.clock, self.about = run, tag, clock, dict(about)
        self.ops_max = ops_max
        self.next_index = 0
        self.closed = False  # the final chunk is out
        self._unshipped: list[Op] = []
        self._in_flight: dict[int, Op] = {}  # shipped before they completed
        self._completed: list[Op] = []       # of those, completed since the last chunk
        self._seq = 0

    @property
    def full(self) -> bool:
        return self.next_index >= self.ops_max

    def invoke(self, process: int, f: str, account_id: str | None, request: dict | None,
               retry_of: int | None = None) -> Op:
        assert f in FS and not self.full and not self.closed, (f, self.full, self.closed)
        assert 0 < process < PROCESS_STRIDE, process
        op = Op(self.next_index, process, f, account_id, request, self.clock.now_ms(),
                retry_of=retry_of)
        self.next_index += 1
        self._unshipped.append(op)
        return op

    def complete(self, op: Op, outcome: str, status: int | None, body: Any,
                 error: str | None) -> None:
        History.complete(op, outcome, self.clock.now_ms(), status, body, error)
        if self._in_flight.pop(op.index, None) is not None:
            self._completed.append(op)

    def chunks(self, final: bool) -> list[dict]:
        """The chunks to send now, in order (none when there is nothing new, unless `final`).
        Built in one go with no yield, so two callers never interleave their sequence numbers."""
        cut_ms = self.clock.now_ms()  # every op invoked before this is in these chunks
        new, self._unshipped = self._unshipped, []
        done, self._completed = self._completed, []
        for op in new:
            if op.outcome is None:
                self._in_flight[op.index] = op
        # Completions first: each refers to an op an earlier chunk carried.
        done_rows, op_rows = list(map(_done_row, done)), list(map(_op_row, new))
        before = len(done_rows)  # rows [0, before) are completions, the rest new ops
        count = max(1 if final else 0, math.ceil((before + len(op_rows)) / CHUNK_OPS_MAX))
        out = []
        for n in range(count):
            low, high = n * CHUNK_OPS_MAX, (n + 1) * CHUNK_OPS_MAX
            out.append({"run": self.run, "tag": self.tag, "seq": self._seq, "cut_ms": cut_ms,
                        "final": final and n == count - 1, "full": self.full, **self.about,
                        "done": done_rows[low:high],
                        "ops": op_rows[max(0, low - before):max(0, high - before)]})
            self._seq += 1
        if final:
            self.closed = True
        assert all(len(c["done"]) + len(c["ops"]) <= CHUNK_OPS_MAX for c in out)
        return out


# == the master side: collecting and merging ======================================================

@dataclass
class WorkerLog:
    """What the master heard from one worker, in the master's time (ms since the test began)."""

    worker_id: str
    slot: int
    ops: list[Op] = field(default_factory=list)
    tag: str | None = None
    about: dict = field(default_factory=dict)  # pid, host, index: to name it in the report
    seq: int = 0               # the next chunk expected
    cut_ms: int = 0            # every op it invoked before this was shipped
    final: bool = False
    full: bool = False
    problems: list[str] = field(default_factory=list)
    unshipped_writes: int = 0  # recovered from the ledger after it vanished

    def name(self) -> str:
        about = self.about
        if "pid" not in about:
            return f"worker {self.worker_id}"
        return f"worker {about.get('index', self.slot)} ({about.get('host')} pid {about['pid']})"


class Collector:
    """The chunks of one load test from every worker, checked as they arrive."""

    def __init__(self, run: str, origin_ms: int) -> None:
        self.run, self.origin_ms = run, origin_ms
        self.logs: dict[str, WorkerLog] = {}
        self.stale_chunks = 0  # from an earlier test of the same locust process (web UI)

    def log(self, worker_id: str) -> WorkerLog:
        found = self.logs.get(worker_id)
        if found is None:
            found = self.logs[worker_id] = WorkerLog(worker_id, slot=len(self.logs) + 1)
        return found

    def receive(self, worker_id: str, chunk: Any) -> None:
        if not isinstance(chunk, dict) or chunk.get("run") not in (self.run, None):
            self.stale_chunks += 1
            return
        log = self.log(worker_id)
        if log.final:
            return  # a second answer to a flush: nothing new
        if chunk.get("seq") != log.seq:
            log.problems.append(f"chunk {log.seq} never arrived (got {chunk.get('seq')!r}): "
                                f"some of its ops are missing from the history")
            log.seq = chunk.get("seq") if type(chunk.get("seq")) is int else log.seq
        log.seq += 1
        log.tag = chunk.get("tag") if isinstance(chunk.get("tag"), str) else log.tag
        log.about = {k: chunk[k] for k in ("pid", "host", "index") if k in chunk}
        log.full = log.full or chunk.get("full") is True
        try:
            self._apply(log, chunk)
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            log.problems.append(f"sent a malformed chunk ({type(exc).__name__}: {exc})")
        log.final = chunk.get("final") is True

    def _apply(self, log: WorkerLog, chunk: dict) -> None:
        if len(chunk["ops"]) + len(chunk["done"]) > CHUNK_OPS_MAX:
            raise ValueError(f"a chunk of more than {CHUNK_OPS_MAX} rows")
        for row in chunk["done"]:
            done = dict(zip(_DONE_FIELDS, row, strict=True))
            op = log.ops[done["index"]]
            if op.outcome is None:
                History.complete(op, done["outcome"], self._shifted(done["complete_ms"], op),
                                 done["http_status"], done["response"], done["error"])
        for row in chunk["ops"]:
            op = Op(*row)
            if op.index != len(log.ops) or op.f not in FS or not 0 < op.process < PROCESS_STRIDE:
                raise ValueError(f"op {op.index} out of order or not an operation")
            op.process += log.slot * PROCESS_STRIDE
            op.invoke_ms = max(0, op.invoke_ms - self.origin_ms)
            if op.complete_ms is not None:
                op.complete_ms = self._shifted(op.complete_ms, op)
            log.ops.append(op)
        log.cut_ms = max(log.cut_ms, chunk["cut_ms"] - self.origin_ms)

    def _shifted(self, complete_ms: int, op: Op) -> int:
        return max(op.invoke_ms, complete_ms - self.origin_ms)


def merge(master: History, logs: list[WorkerLog], end_ms: int) -> History:
    """One history of the master's ops and every worker's, in invocation order, indexes 0..n-1,
    `retry_of` pointing at the same op as before. An op whose outcome never arrived completes as
    `info`: when its worker stopped, or at `end_ms` for a worker that vanished. Takes ownership
    of the ops (renumbers them in place): a merge of a long test must not copy it twice."""
    sources = [(master.ops, end_ms, "the load test stopped")]
    for log in logs:
        gone_ms = log.cut_ms if log.final else end_ms
        why = "stopped" if log.final else "vanished"
        sources.append((log.ops, gone_ms, f"{log.name()} {why}"))
    for ops, _, _ in sources:
        assert all(a.invoke_ms <= b.invoke_ms for a, b in zip(ops, ops[1:])), "not in order"
    merged = History(meta=dict(master.meta))
    renumbered: dict[tuple[int, int], int] = {}
    ordered = heapq.merge(*([(op.invoke_ms, rank, op.index, op) for op in ops]
                            for rank, (ops, _, _) in enumerate(sources)))
    for index, (_, rank, local, op) in enumerate(ordered):
        renumbered[rank, local] = index
        op.index = index
        if op.retry_of is not None:
            op.retry_of = renumbered.get((rank, op.retry_of))
        if op.outcome is None:
            _, gone_ms, why = sources[rank]
            History.complete(op, "info", max(op.invoke_ms, gone_ms), None, None,
                             f"in flight when {why}: its outcome never arrived")
        merged.ops.append(op)
    assert [op.index for op in merged.ops] == list(range(len(merged.ops)))
    return merged


def recover_unshipped_writes(log: WorkerLog, ledger: list, known: set[str], end_ms: int) -> int:
    """A vanished worker's writes sent after its last chunk are in the ledger but in no op: add
    each as a write of unknown outcome (invoked after the last chunk, never answered), so the
    checkers neither call it a phantom nor learn anything from it. Returns how many."""
    if log.tag is None:
        return 0
    prefix, added = f"{log.tag}-", 0
    for entry in ledger:
        if not isinstance(entry, dict) or not str(entry.get("account_id", "")).startswith(prefix):
            continue
        request_id, kind = entry.get("request_id"), entry.get("type")
        if (type(request_id) is not str or request_id in known or kind not in WRITE_KINDS
                or cured_request_id(request_id) is not None):
            continue  # a cure entry belongs to its repay, which is recovered on its own
        request = {name: entry.get(name) for name in ENTRY_FIELDS_BY_TYPE[kind]}
        request["request_id"] = request_id
        if kind == "open":
            request["account_id"] = entry["account_id"]
        op = Op(len(log.ops), log.slot * PROCESS_STRIDE + PROCESS_STRIDE - 1, kind,
                entry["account_id"], request, log.cut_ms)
        History.complete(op, "info", max(log.cut_ms, end_ms), None, None,
                         f"sent by {log.name()} after its last chunk; recovered from the ledger")
        log.ops.append(op)
        known.add(request_id)
        added += 1
    log.unshipped_writes += added
    return added


# == the master's run: the nemesis, then the judgment =============================================

def import_judging() -> None:
    """Import the judging half now, in a process that will judge: an import is seconds of CPU
    that would otherwise stall the test's start, and locust's clock, in the middle of a run.
    (Never before locust forks its workers: see this module's docstring.)"""
    from . import convergence, gate, reports  # noqa: F401

@dataclass
class Judged:
    report: dict
    history: History
    ledger: list[dict]


class LoadRun:
    """The master's side of one load test: its clock, the nemesis and its history, and the
    workers' chunks; `finish` merges them and judges the result."""

    def __init__(self, settings: LoadSettings, host: str) -> None:
        self.settings = settings
        self.origin_ms = epoch_ms()
        self.started = dt.datetime.fromtimestamp(self.origin_ms / 1000, dt.timezone.utc)
        self.run_id = run_id_of(self.started, settings.seed)
        self.clock = LoadClock(self.origin_ms)
        from . import gate  # here, not at the top: see import_judging
        self.policy = gate.load_policy(settings.policy)
        self.target = http_target(host, settings.headers, self.clock, ca_bundle=settings.ca_bundle,
                                  insecure=settings.insecure, timeout_s=settings.timeout_s)
        if settings.chaos_url:  # a deployment's providers, held by the harness that started it
            from .faults.routing import ChaosElsewhere

            chaos = http_target(settings.chaos_url, {}, self.clock, timeout_s=CHAOS_TIMEOUT_S)
            self.target = ChaosElsewhere(self.target, chaos)
        supported = probe(self.target)
        profile = load_profile(settings.faults).restricted_to(supported)
        self.history = new_history(self.target.name, False, settings.sla_ms, seed=settings.seed,
                                   faults=list(profile.kinds), supported=supported)
        self.history.meta.update(mode="load", started_at=rfc3339(self.started))
        # A shared service's earlier entries are not this test's: read the ledger after them.
        self.ledger_after_seq = ledger_head_seq(self.target)
        self.recorder = Recorder(self.target, self.history, self.ledger_after_seq)
        self.recorder.phase("setup")   # each user opens its accounts as it starts
        self.recorder.phase("safety")
        self.nemesis = Nemesis(profile, dice(settings.seed, 2), self.clock.now_ms(),
                               length_ms=None if settings.duration_s is None else
                               int(settings.duration_s * 1000))
        self.collector = Collector(self.run_id, self.origin_ms)
        self.stopping = False  # set when the test stops: the nemesis makes no further move

    def nemesis_step(self) -> float:
        """Make the nemesis's move when due; seconds until the next one (inf: no faults)."""
        now_ms = self.clock.now_ms()
        if self.nemesis.due(now_ms):
            _nemesis_move(self.recorder, self.nemesis, now_ms, self._recently_written)
        if not self.nemesis.profile.kinds:
            return math.inf
        return max(0.0, (self.nemesis.next_ms - self.clock.now_ms()) / 1000)

    def _recently_written(self) -> list[str]:
        """The accounts the users wrote last: the master's own history holds only the
        nemesis's ops; the users' are in the chunks their workers have shipped so far."""
        latest = sorted((op for log in self.collector.logs.values()
                         for op in log.ops[-PROBE_SCAN_OPS_MAX:]), key=lambda op: op.invoke_ms)
        return recently_written(latest, PROBE_ACCOUNTS_MAX)

    def finish(self, expected_workers: set[str], locust_stats: dict, config: dict) -> Judged:
        """Merge, converge, check and judge. Call once the nemesis has stopped and the workers'
        final chunks are in (or FLUSH_WAIT_S has passed)."""
        from .convergence import converge_and_check
        from .reports import document

        for worker_id in sorted(expected_workers - set(self.collector.logs)):
            self.collector.log(worker_id)  # connected, never shipped: vanished at the start
        logs = list(self.collector.logs.values())
        end_ms = self.clock.now_ms()
        merge_started = time.perf_counter()
        self._recover(logs, end_ms)
        history = merge(self.history, logs, end_ms)
        merge_s = time.perf_counter() - merge_started
        marks: dict[str, float] = {}
        recorder = Recorder(self.target, history, self.ledger_after_seq)
        ledger, verdict = converge_and_check(recorder, self.settings.sla_ms,
                                             on_phase=lambda name: marks.setdefault(
                                                 name, time.perf_counter()))
        check_s = time.perf_counter() - marks["check"]
        stats = self._stats(history, verdict.stats, locust_stats, logs, merge_s, check_s)
        report = document.build(
            run_id=self.run_id, seed=self.settings.seed, target=self.target.name, mode="load",
            started=self.started, duration_s=(epoch_ms() - self.origin_ms) / 1000,
            config=config, stats=stats, findings=verdict.findings,
            replay=self.settings.replay or "locust -f loadtests/locustfile.py (a load test is "
                                            "reproducible in intent, not bit for bit)",
            policy=self.policy, history_sha256=document.history_digest(history))
        return Judged(report, history, ledger)

    def _recover(self, logs: list[WorkerLog], end_ms: int) -> None:
        vanished = [log for log in logs if not log.final and log.tag is not None]
        if not vanished:
            return
        # A scratch read: it only tells which writes were sent unseen, and is not judged itself.
        ledger = Recorder(self.target, History()).ledger(HARNESS, self.ledger_after_seq)
        known = {op.request_id for log in logs for op in log.ops if op.request_id}
        for log in vanished:
            recover_unshipped_writes(log, ledger, known, end_ms)

    def _stats(self, history: History, checked: dict, locust_stats: dict, logs: list[WorkerLog],
               merge_s: float, check_s: float) -> dict:
        stats = dict(checked)
        safety_ms = history.phase_start_ms("safety") or 0
        convergence_ms = history.phase_start_ms("convergence") or safety_ms
        safety_ops = sum(1 for op in history.ops if op.f != "phase"
                         and safety_ms <= op.invoke_ms < convergence_ms)
        stats["client_ops"] = sum(1 for op in history.ops if op.f != "phase")
        stats["ops_per_s"] = round(safety_ops * 1000 / max(convergence_ms - safety_ms, 1), 1)
        stats["run_ms"] = history.ops[-1].complete_ms if history.ops else 0
        faults: dict[str, int] = {}
        for op in history.ops:
            if op.f == "fault_add" and op.outcome == "ok":
                faults[op.request["kind"]] = faults.get(op.request["kind"], 0) + 1
        stats["faults_injected"] = faults
        stats["load"] = {**locust_stats, "merge_s": round(merge_s, 3),
                         "check_s": round(check_s, 3),
                         "workers": [_worker_stats(log) for log in logs]}
        return stats


def _worker_stats(log: WorkerLog) -> dict:
    return {"worker": log.name(), "status": "finished" if log.final else "vanished",
            "ops": len(log.ops), "chunks": log.seq, "last_heard_ms": log.cut_ms,
            "unshipped_writes": log.unshipped_writes,
            "problems": list(log.problems) + ([
                f"recorded {RECORDED_OPS_MAX:,} ops and stopped its users early; shorten "
                f"--duration or lower --users"] if log.full else [])}


def save(judged: Judged, report_dir: Path) -> Path:
    """The four reports, and history.jsonl and ledger.jsonl so `check` can judge the run again."""
    from .reports import write_file, write_reports

    write_reports(judged.report, judged.history, report_dir)
    write_file(report_dir / "history.jsonl", judged.history.dumps())
    write_file(report_dir / "ledger.jsonl",
               b"".join(orjson.dumps(entry) + b"\n" for entry in judged.ledger))
    return report_dir


__all__ = ["Collector", "LoadConfig", "LoadResult", "LoadRun", "LoadSettings",
           "OpLog", "WorkerLog", "merge", "parse_duration_s", "parse_header",
           "run_load"]
