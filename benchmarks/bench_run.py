"""Benchmark of `limit-harness run` (a script that prints figures, not a test).

    .venv/bin/python benchmarks/bench_run.py            # simulated figures + the README command
    .venv/bin/python benchmarks/bench_run.py --http     # also drive a served reference service

A thin wrapper: the benchmark lives in `harness/bench/run.py`, so it runs from an installed
wheel as `limit-harness bench sim` / `bench http` too. See that module for what it measures.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from harness.bench.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
