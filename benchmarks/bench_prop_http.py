"""`prop --target URL` speed against a correct reference service: examples per minute now, and
with the code of an earlier commit (default b5915e5, before convergence was observed instead of
slept), side by side in one run on the same machine.

    python benchmarks/bench_prop_http.py [--examples 20] [--seed 0] [--before b5915e5]

Each side serves its own reference service (`limit-harness serve --ledger memory://` on a free
port) and runs `limit-harness prop --target URL --examples N --seed S` in a child process, as a
user would. The earlier commit is checked out into a temporary git worktree. Target: at least
5x the examples per minute of the earlier commit.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.service.process import spawn  # noqa: E402

TARGET_RATIO = 5.0
RUN_TIMEOUT_S = 1800


def _prop_rate(code_dir: Path, examples: int, seed: int) -> tuple[float, float]:
    """(seconds, examples per minute) of one prop search with the code in `code_dir`."""
    env = {**os.environ, "PYTHONPATH": str(code_dir)}
    with tempfile.TemporaryDirectory(prefix="limit-harness-prop-") as workdir:
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = str(code_dir)  # the served service runs the same code
        try:
            served = spawn(Path(workdir), "--ledger", "memory://")
        finally:
            os.environ.pop("PYTHONPATH") if saved is None else os.environ.update(PYTHONPATH=saved)
        try:
            started = time.monotonic()
            done = subprocess.run([sys.executable, "-m", "harness.cli", "prop", "--target",
                                   served.url, "--examples", str(examples), "--seed", str(seed)],
                                  cwd=workdir, env=env, capture_output=True, text=True,
                                  timeout=RUN_TIMEOUT_S)
            took_s = time.monotonic() - started
        finally:
            served.stop()
    if done.returncode != 0 or not re.search(r"no failure in \d+ examples", done.stdout):
        raise SystemExit(f"prop with {code_dir} did not pass a correct service: "
                         f"{done.stdout[-400:]} {done.stderr[-400:]}")
    return took_s, examples * 60 / took_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--before", default="b5915e5")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="limit-harness-before-") as tmp:
        before_dir = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(before_dir),
                        args.before], check=True, capture_output=True)
        try:
            before_s, before_rate = _prop_rate(before_dir, args.examples, args.seed)
            now_s, now_rate = _prop_rate(ROOT, args.examples, args.seed)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(before_dir)], capture_output=True)
    ratio = now_rate / before_rate
    print(f"prop --target URL --examples {args.examples} --seed {args.seed}, correct service\n")
    print("| code | seconds | examples per minute |\n| --- | ---: | ---: |")
    print(f"| {args.before} (slept through the service level) | {before_s:.1f} | "
          f"{before_rate:.1f} |")
    print(f"| now (convergence observed) | {now_s:.1f} | {now_rate:.1f} |")
    print(f"\nratio: {ratio:.1f}x (target {TARGET_RATIO:g}x)")
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
