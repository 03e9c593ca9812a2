"""`limit-harness serve` in a child process, as a user's CI script would run it: started on a
free port, its URL read from the first line it prints, stopped with SIGTERM (killed if it hangs).
The test suite and the benchmarks start it this way; so can anyone's script.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

# The line `serve` prints first (server.py); the URL is what callers need of it.
BANNER = re.compile(r"^limit-harness serving on (http://\S+) \(ledger .*, bugs: .*\)$")
START_WAIT_S = 15.0
STOP_WAIT_S = 10.0


class ServeProcess:
    """One running `limit-harness serve`."""

    def __init__(self, proc: subprocess.Popen, banner: str, url: str, stderr_path: Path) -> None:
        self.proc, self.banner, self.url, self.stderr_path = proc, banner, url, stderr_path
        self.exit_code: int | None = None  # set by `stop`

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server, wait for it, and return its exit code (killing it if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_WAIT_S)
        self.proc.stdout.close()
        self.exit_code = self.proc.returncode
        return self.exit_code

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness.cli", "serve", *args]


def spawn(workdir: Path, *args: str, wait_s: float = START_WAIT_S) -> ServeProcess:
    """Start `serve --port 0 ARGS` in `workdir`; returns once it has printed its URL. Its stderr
    goes to a file in `workdir` (a pipe nobody reads could block it)."""
    stderr_path = workdir / f"serve-{time.monotonic_ns()}.stderr"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(command("--port", "0", *args), cwd=workdir,
                                stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL)
    try:
        line = first_line(proc, wait_s)
        match = BANNER.match(line)
        if not match:
            raise RuntimeError(f"unexpected first line from serve: {line!r}")
        return ServeProcess(proc, line, match.group(1), stderr_path)
    except BaseException:
        proc.kill()
        proc.wait(STOP_WAIT_S)
        raise


def first_line(proc: subprocess.Popen, wait_s: float) -> str:
    """The first line `proc` prints, waiting at most `wait_s` (readline alone could hang)."""
    deadline_s, data, fd = time.monotonic() + wait_s, b"", proc.stdout.fileno()
    while b"\n" not in data:
        left_s = deadline_s - time.monotonic()
        if left_s <= 0 or not select.select([fd], [], [], left_s)[0]:
            raise TimeoutError(f"serve printed no line within {wait_s} s (got {data!r})")
        chunk = os.read(fd, 4096)
        if not chunk:
            raise RuntimeError(f"serve exited with {proc.wait(STOP_WAIT_S)} before its URL")
        data += chunk
    return data.split(b"\n", 1)[0].decode()
