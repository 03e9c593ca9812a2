"""Checking speed: every checker over a stored history of at least 200,000 operations.

    python benchmarks/bench_check.py [--ops 200000] [--seed 7] [--repeat 3]

A thin wrapper: the benchmark lives in `harness/bench/check.py`, so it runs from an installed
wheel as `limit-harness bench check` too. See that module for what it measures.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from harness.bench.check import main, stored_run  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
