"""Benchmark of `limit-harness run` (a script that prints figures, not a test).

    .venv/bin/python benchmarks/bench_run.py            # simulated figures + the README command
    .venv/bin/python benchmarks/bench_run.py --http     # also drive a served reference service

Figures:
- simulated throughput: (client operations + delivered events) / seconds spent driving, on one
  core, for the SQLite in-memory ledger (the default) and the memory:// ledger; target 50,000/s;
- the README's main-job command, wall-clock seconds end to end; target < 30 s;
- HTTP mode: operations/s the harness drives against `limit-harness serve`; target >= 1,000/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.runner import RunConfig, execute  # noqa: E402
from harness.service import process as serve_process  # noqa: E402

README_COMMAND = ["run", "--seed", "7"]


def simulated(ledger: str, ops: int, repeats: int) -> tuple[float, float]:
    """The best of `repeats` runs: (client ops + events delivered) per second of driving (the
    figure this benchmark has always reported), and client ops alone per second."""
    best_rate, best_client_rate = 0.0, 0.0
    for seed in range(repeats):
        stats = execute(RunConfig(seed=seed, ops=ops, ledger=ledger, quiet=True)).stats
        rate = (stats["client_ops"] + stats["events_delivered"]) / stats["drive_s"]
        if rate > best_rate:
            best_rate, best_client_rate = rate, stats["ops_per_s"]
    return best_rate, best_client_rate


def readme_command() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "harness.cli", *README_COMMAND, "--quiet",
                        "--report-dir", tmp], check=True, capture_output=True)
        return time.perf_counter() - started


def http(duration_s: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        server = serve_process.spawn(Path(tmp), "--ledger", f"sqlite:///{tmp}/ledger.sqlite")
        try:
            done = subprocess.run(
                [sys.executable, "-m", "harness.cli", "run", "--target", server.url, "--duration",
                 str(duration_s), "--quiet", "--report-dir", f"{tmp}/report"],
                capture_output=True, text=True)
            report = Path(tmp) / "report" / "report.json"
            if not report.exists():
                raise SystemExit(f"run failed: {done.stdout}{done.stderr}")
            # For HTTP the safety phase's rate: the convergence phase mostly waits on purpose.
            return json.loads(report.read_text())["stats"]["safety_ops_per_s"]
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--http-duration", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for ledger in ("sqlite://", "memory://"):
        rate, client_rate = simulated(ledger, args.ops, args.repeats)
        rows.append((f"simulated client ops + events/s, {ledger} ledger (best of "
                     f"{args.repeats})", f"{rate:,.0f}", ">= 50,000", rate >= 50_000))
        rows.append(("  of which client ops/s", f"{client_rate:,.0f}", "", True))
    wall_s = readme_command()
    rows.append(("README main job `limit-harness run --seed 7`, s", f"{wall_s:.1f}", "< 30",
                 wall_s < 30))
    if args.http:
        rate = http(args.http_duration)
        rows.append((f"HTTP run vs reference service, safety-phase ops/s ({args.http_duration} s)",
                     f"{rate:,.0f}", ">= 1,000", rate >= 1000))
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    width = max(len(r[0]) for r in rows)
    for name, value, target, ok in rows:
        print(f"{name:<{width}}  {value:>10}  target {target:<10} {'ok' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
