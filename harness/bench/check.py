"""`limit-harness bench check`: checking speed, every checker over a stored history of at least
200,000 operations.

    limit-harness bench check [--ops 200000] [--seed 7] [--repeat 3]

Makes (once, cached in the temp directory) a simulated run with every fault kind whose history
holds at least --ops operations, saves its history.jsonl and ledger.jsonl as `run` does, then
times `limit-harness check`'s work on them: loading the files, and the analysis plus every
checker plus the statistics. Prints the best of --repeat (wall and CPU time), as history
operations checked per second. Target: at least 50,000 operations/s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

TARGET_OPS_PER_S = 50_000


def add_arguments(parser: argparse.ArgumentParser, name: str = "check") -> None:
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def stored_run(ops: int, seed: int) -> Path:
    """A saved simulated run with at least `ops` history operations (made once, then reused)."""
    from ..runner import RunConfig, execute, save

    run_dir = Path(tempfile.gettempdir()) / f"limit-harness-bench-check-{seed}-{ops}"
    if (run_dir / "ledger.jsonl").exists():
        return run_dir
    print(f"making a simulated run of {ops:,} operations (once; cached in {run_dir})...",
          file=sys.stderr)
    # The safety phase's ops plus setup and convergence come to a little more than asked.
    result = execute(RunConfig(seed=seed, ops=ops, quiet=True))
    assert len(result.history) >= ops
    save(result, run_dir)
    return run_dir


def run(args: argparse.Namespace) -> int:
    from .. import checkers
    from ..analysis import CheckConfig
    from ..recheck import load_history, load_ledger

    run_dir = stored_run(args.ops, args.seed)
    load_s = check_s = check_cpu_s = float("inf")
    for _ in range(args.repeat):  # bounded by --repeat
        started = time.perf_counter()
        history = load_history(run_dir / "history.jsonl")
        ledger = load_ledger(run_dir / "ledger.jsonl")
        loaded, loaded_cpu = time.perf_counter(), time.process_time()
        verdict = checkers.check(history, ledger, CheckConfig(sla_ms=history.meta["sla_ms"]))
        done, done_cpu = time.perf_counter(), time.process_time()
        load_s = min(load_s, loaded - started)
        check_s = min(check_s, done - loaded)
        check_cpu_s = min(check_cpu_s, done_cpu - loaded_cpu)
    ops = len(history)
    rate = ops / check_s
    print("| measure | value |\n| --- | ---: |")
    print(f"| history operations | {ops:,} |")
    print(f"| ledger entries | {len(ledger):,} |")
    print(f"| findings | {len(verdict.findings)} |")
    print(f"| load both files (s) | {load_s:.2f} |")
    print(f"| analysis + checkers + statistics (s, wall) | {check_s:.2f} |")
    print(f"| the same, CPU time of this process (s) | {check_cpu_s:.2f} |")
    print(f"| operations checked per second (wall) | {rate:,.0f} |")
    print(f"| target | {TARGET_OPS_PER_S:,} |")
    return 0 if rate >= TARGET_OPS_PER_S else 1


if __name__ == "__main__":
    sys.exit(main())
