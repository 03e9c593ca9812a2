"""Faults done to the target's own processes from outside: SIGKILL and start again, SIGSTOP until
removed. `ManagedProcess` is one child the harness started (its own process group, so a signal
reaches whatever it forked); `ProcessProvider` carries out faults on a set of them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import urllib3

from ..errors import TargetError
from . import FaultRefused, RoutedProvider

HOST = "127.0.0.1"  # managed processes are reached over loopback only
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0  # after SIGTERM, before SIGKILL
KILL_WAIT_S = 5.0  # SIGKILL cannot be ignored; this only bounds a wedged kernel
READY_POLL_S = 0.05
UNPROBED_GRACE_S = 0.5  # a process with nothing to probe counts as ready once up this long
SIGNAL_WAIT_S = 1.0
SIGNAL_POLL_S = 0.002
PROBE_TIMEOUT_S = 1.0
LOG_MAX_BYTES = 4 * 1024 * 1024  # per file; one older file is kept, so at most twice this on disk
LOG_TAIL_LINES = 5
LOG_TAIL_CHARS = 400

ACTIONS = ("pause", "restart")
DEFAULT_ACTIONS = {"crash_restart": "restart", "process_pause": "pause"}
DEFAULT_ROUTES = {"crash_restart": "api", "process_pause": "api"}
OWN_COMMAND = "limit-harness"


class ManagedProcess:
    """A child started from `argv_or_cmd` (a list, or a string split like a shell would split it
    but run without one: write `sh -c '...'` for pipes or `&&`). `{port}` in it is replaced by
    `port`, or by a free loopback port chosen here when `port` is None. Ready when a TCP connect
    to the port succeeds, or when `health_url` (absolute, or a path on `url`) answers 200; with
    neither, once it has stayed up UNPROBED_GRACE_S (so a typo in the command is still caught).
    `env` is added to the harness's environment."""

    def __init__(self, name: str, argv_or_cmd: str | Sequence[str], *, port: int | None = None,
                 health_url: str | None = None, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None, start_timeout_s: float = START_TIMEOUT_S,
                 log_dir: str | Path | None = None) -> None:
        argv = shlex.split(argv_or_cmd) if isinstance(argv_or_cmd, str) else list(argv_or_cmd)
        assert argv, f"process {name}: empty command"
        if argv[0] == OWN_COMMAND and shutil.which(OWN_COMMAND) is None:
            # Ours, installed in a virtual environment that is not activated (the shipped
            # deployment file names it): the same installation's interpreter runs it.
            argv[:1] = [sys.executable, "-m", "harness.cli"]
        assert start_timeout_s > 0, f"process {name}: start_timeout_s must be positive"
        if port is None and any("{port}" in arg for arg in argv):
            port = free_port()
        self.name, self.port, self.start_timeout_s = name, port, start_timeout_s
        self.argv = [arg.replace("{port}", str(port)) for arg in argv]
        self.url = None if port is None else f"http://{HOST}:{port}"
        self.health_url = _health(health_url, port, name)
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        # A temp dir is ours to delete on stop; a dir the caller named keeps the log for them.
        self._own_log_dir = log_dir is None
        log_dir = Path(tempfile.mkdtemp(prefix=f"limit-{name}-") if log_dir is None else log_dir)
        self.log = BoundedLog(log_dir / f"{name}.log")
        self._proc: subprocess.Popen | None = None
        try:
            self._start()
        except BaseException:
            self._discard_log()  # nobody can stop() what was never returned
            raise

    # -- state ------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def exit_code(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    # -- faults -----------------------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL the whole group and reap the child."""
        self._signal_group(signal.SIGKILL)
        if self._proc is not None:
            self._proc.wait(KILL_WAIT_S)
        self.log.close()

    def restart(self) -> None:
        """Kill, then start the same command on the same port and wait until it is ready."""
        self.kill()
        self._start()

    def pause(self) -> None:
        """SIGSTOP the group; returns once the child is stopped, so the fault is in effect."""
        self._signal_group(signal.SIGSTOP)
        self._await_stopped(True)

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)
        self._await_stopped(False)

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after STOP_TIMEOUT_S; then whatever is left of the group is killed
        too. Returns the exit code."""
        if self.alive:
            self._signal_group(signal.SIGTERM)
            self._signal_group(signal.SIGCONT)  # a stopped process acts on SIGTERM once continued
            try:
                self._proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        self._discard_log()
        return self.exit_code

    def __enter__(self) -> "ManagedProcess":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- start ------------------------------------------------------------------------------
    def _start(self) -> None:
        try:
            self._proc = subprocess.Popen(
                self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:  # no such program, not executable, no such cwd
            raise TargetError(f"process {self.name} cannot start: {exc.strerror}: "
                              f"{exc.filename!r}; fix its command or cwd") from None
        self.log.drain(self._proc.stdout)
        self._started_s = time.monotonic()
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise

    def _wait_ready(self) -> None:
        deadline_s = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline_s:
            code = self._proc.poll()
            if code is not None:
                self.log.close()  # its last words may still be in the pipe
                raise TargetError(f"process {self.name} exited with code {code} before it was "
                                  f"ready; fix its command (last log lines: {self._tail()})")
            if self._ready():
                return
            time.sleep(READY_POLL_S)
        raise TargetError(f"process {self.name} was not ready within {self.start_timeout_s} s "
                          f"({self._probe()}); raise start_timeout_s or fix its command "
                          f"(last log lines: {self._tail()})")

    def _ready(self) -> bool:
        if self.health_url is not None:
            try:
                return urllib3.request("GET", self.health_url, retries=False,
                                       timeout=PROBE_TIMEOUT_S).status == 200
            except urllib3.exceptions.HTTPError:
                return False
        if self.port is not None:
            try:
                socket.create_connection((HOST, self.port), timeout=PROBE_TIMEOUT_S).close()
                return True
            except OSError:
                return False
        up_s = time.monotonic() - self._started_s
        return up_s >= min(UNPROBED_GRACE_S, self.start_timeout_s / 2)

    def _probe(self) -> str:
        if self.health_url is not None:
            return f"GET {self.health_url} did not answer 200"
        return f"nothing accepted a connection on {HOST}:{self.port}"

    def _tail(self) -> str:
        # A temp dir's log goes with the process; a log dir the caller named is worth naming.
        return self.log.tail() + ("" if self._own_log_dir else f" -- full log: {self.log.path}")

    def _discard_log(self) -> None:
        if self._own_log_dir:
            shutil.rmtree(self.log.path.parent, ignore_errors=True)

    def _await_stopped(self, stopped: bool) -> None:
        # Signals are delivered asynchronously; /proc tells when this one took effect (Linux;
        # elsewhere the signal is trusted as sent).
        stat = Path(f"/proc/{self.pid}/stat")
        deadline_s = time.monotonic() + SIGNAL_WAIT_S
        while time.monotonic() < deadline_s and self.alive:
            try:
                state = stat.read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return
            if (state in ("t", "T")) == stopped:
                return
            time.sleep(SIGNAL_POLL_S)

    def _signal_group(self, sig: int) -> None:
        if self._proc is None:
            return
        try:
            # start_new_session made the child the leader of a group with its own pid
            os.killpg(self._proc.pid, sig)
        except ProcessLookupError:
            pass  # the whole group is gone already


class BoundedLog:
    """A child's output, drained from its pipe by a thread into a file that is rotated at
    LOG_MAX_BYTES (one older file kept): a pipe nobody reads would block the child, and a file it
    writes to directly would grow without bound on a long run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread: threading.Thread | None = None

    def drain(self, pipe) -> None:
        assert self._thread is None or not self._thread.is_alive(), "one drain at a time"
        self._thread = threading.Thread(target=self._copy, args=(pipe,), daemon=True,
                                        name=f"log {self.path.name}")
        self._thread.start()

    def close(self) -> None:
        """Wait (bounded) for the drain to reach the end of the pipe."""
        if self._thread is not None:
            self._thread.join(KILL_WAIT_S)

    def tail(self) -> str:
        """The last lines, on one line."""
        text = b""
        for path in (self.path.with_suffix(".log.1"), self.path):
            if path.exists():
                text += path.read_bytes()[-LOG_TAIL_CHARS * 4:]
        lines = [" ".join(line.split()) for line in text.decode(errors="replace").splitlines()]
        joined = " | ".join([line for line in lines if line][-LOG_TAIL_LINES:])
        return joined[-LOG_TAIL_CHARS:] or "(empty)"

    def _copy(self, pipe) -> None:
        out = open(self.path, "ab")
        try:
            for chunk in iter(lambda: pipe.read1(65536), b""):
                if out.tell() + len(chunk) > LOG_MAX_BYTES:
                    out.close()
                    os.replace(self.path, self.path.with_suffix(".log.1"))
                    out = open(self.path, "ab")
                    chunk = chunk[-LOG_MAX_BYTES:]  # one huge write: its end is what explains
                out.write(chunk)
                out.flush()
        finally:
            out.close()
            pipe.close()


class ProcessProvider(RoutedProvider):
    """Faults on managed processes. `routes` maps a kind to the process it acts on (default:
    crash_restart and process_pause on "api"); a fault may name another with a `process` param.
    `actions` maps a kind to "restart" (one shot) or "pause" (until removed); crash_restart and
    process_pause have theirs by default, any other kind (e.g. pause_sync) must be given one.
    Pauses of one process nest: it runs again when the last is removed. `own`: `close` stops
    the processes."""

    name = "process"
    thing = "process"

    def __init__(self, processes: dict[str, ManagedProcess], routes: dict[str, str] | None = None,
                 *, actions: dict[str, str] | None = None, own: bool = False) -> None:
        super().__init__(DEFAULT_ROUTES if routes is None else routes, actions, DEFAULT_ACTIONS,
                         ACTIONS)
        self.processes = processes
        self.own = own

    def inject(self, fault: dict) -> dict:
        kind, params, target = self._routed(fault)
        with self._lock:
            process = self._running(target)
            done = self._carried_out(kind, params, target)
            if self.actions[kind] == "restart":
                self._restart(target, process)
            else:
                if not self._paused_by_faults(target):
                    process.pause()
                self._active[done["fault_id"]] = done
            return done

    def remove(self, fault_id: str) -> None:
        """Undo a pause; an unknown or one-shot fault id has nothing to undo."""
        with self._lock:
            fault = self._active.pop(fault_id, None)
            if fault is not None:
                self._resume_if_free(fault["process"])

    def clear(self) -> None:
        with self._lock:
            targets = {fault["process"] for fault in self._active.values()}
            self._active.clear()
            for target in targets:
                self._resume_if_free(target)

    def close(self) -> None:
        self.clear()
        if self.own:
            for process in reversed(self.processes.values()):
                process.stop()

    def _running(self, target: str) -> ManagedProcess:
        process = self.processes.get(target)
        if process is None:
            raise FaultRefused(f"no managed process named {target!r}; "
                               f"known: {', '.join(self.processes) or 'none'}")
        if not process.alive:
            raise FaultRefused(f"process {target} is not running (exit code {process.exit_code}); "
                               f"restart the deployment")
        return process

    def _restart(self, target: str, process: ManagedProcess) -> None:
        try:
            process.restart()
        except TargetError as exc:
            raise FaultRefused(f"process {target} was killed but did not come back: "
                               f"{exc}") from None
        # A pause still active holds the new process too: the fault says "paused until removed".
        if self._paused_by_faults(target):
            process.pause()

    def _paused_by_faults(self, target: str) -> bool:
        return any(fault["process"] == target for fault in self._active.values())

    def _resume_if_free(self, target: str) -> None:
        process = self.processes.get(target)
        if process is not None and process.alive and not self._paused_by_faults(target):
            process.resume()


def free_port() -> int:
    """A loopback port nothing listens on right now (another process could still take it before
    the child binds it; the readiness wait then reports the failure)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _health(health_url: str | None, port: int | None, name: str) -> str | None:
    if health_url is None:
        return None
    if health_url.startswith("/"):
        assert port is not None, f"process {name}: a health path needs a port"
        return f"http://{HOST}:{port}{health_url}"
    return health_url.replace("{port}", str(port))
