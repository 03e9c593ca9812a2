"""Benchmark `reconcile` beside datacompy and the bare engine: `limit-harness bench reconcile`.

    python benchmarks/bench_reconcile.py --accounts 1000000 [--entries-per-account 10]
                                         [--seed 1] [--mismatches 60] [--repeat 3]

A thin wrapper: the benchmark lives in `harness/bench/reconcile.py`, so it runs from an installed
wheel as `limit-harness bench reconcile` too. See that module for what it measures.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from harness.bench.reconcile import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
