"""How fast `limit-harness prop` finds each seeded bug of the reference service.

For every bug of the catalogue that shows without concurrency, run `limit-harness prop` (in its
own process, as a user would) against the embedded target with that bug switched on (200
examples, the CLI's default 30 steps, seed 0) and record whether it was found, the time to find
it (before shrinking), the examples it took, the time in all (process start and shrinking
included) and the length of the shrunk program. Prints a table and the median time to find;
exits 1 if a bug was missed or its program shrank to more than 12 steps.

    .venv/bin/python benchmarks/bench_prop.py [--seed N] [--examples N] [--steps N] [--bug NAME]...
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.service.bugs import CATALOGUE  # noqa: E402

MAX_STEPS_READABLE = 12  # a shrunk program longer than this is reported as too long to read
RUN_TIMEOUT_S = 600  # one search, shrinking included; far above what any bug takes today


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--bug", action="append", default=[])
    args = parser.parse_args(argv)
    bugs = args.bug or [name for name, bug in CATALOGUE.items() if bug.sequential]
    rows = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-prop-") as tmp:
        for bug in bugs:
            rows.append(_run(bug, args, Path(tmp) / bug))
            print(_row(rows[-1]), file=sys.stderr, flush=True)  # progress for a long run
    print(_table(rows, args))
    found = [r for r in rows if r["found"]]
    times = [r["find_s"] for r in found]
    print(f"\nfound {len(found)}/{len(rows)}; median time to find {statistics.median(times):.2f} s"
          if times else f"\nfound 0/{len(rows)}")
    print(f"shrunk programs: max {max((r['steps'] for r in found), default=0)} steps; "
          f"whole benchmark {time.monotonic() - started:.0f} s")
    too_long = [r["bug"] for r in found if r["steps"] > MAX_STEPS_READABLE]
    missed = [r["bug"] for r in rows if not r["found"]]
    return 1 if missed or too_long else 0


def _run(bug: str, args, report_dir: Path) -> dict:
    """One `limit-harness prop` run in its own process, exactly as a user would start it (a
    fresh process also makes each search independent of the ones before it)."""
    argv = [sys.executable, "-m", "harness.cli", "prop", "--seed", str(args.seed),
            "--examples", str(args.examples), "--steps", str(args.steps), "--bug", bug,
            "--report-dir", str(report_dir)]
    began = time.monotonic()
    done = subprocess.run(argv, cwd=report_dir.parent, capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S)
    total_s = time.monotonic() - began
    if done.returncode not in (0, 1):
        raise SystemExit(f"prop --bug {bug} exited {done.returncode}: {done.stderr.strip()}")
    row = {"bug": bug, "found": done.returncode == 1, "examples": None, "find_s": None,
           "total_s": total_s, "steps": None, "expected_kind": CATALOGUE[bug].finding_kind, "kinds": []}
    if row["found"]:
        report = json.loads((report_dir / "findings.json").read_text(encoding="utf-8"))
        row.update(examples=report["examples"], find_s=report["time_to_find_s"],
                   steps=report["steps"], kinds=sorted({f["kind"] for f in report["findings"]}))
    else:
        row["examples"] = int(done.stdout.split("no failure in ")[1].split()[0])
    return row


HEADER = (f"{'bug':<26} {'found':<5} {'examples':>8} {'find s':>7} {'total s':>8} {'steps':>5}  "
          f"findings (catalogue kind marked *)")


def _row(r: dict) -> str:
    kinds = ", ".join(k + ("*" if k == r["expected_kind"] else "") for k in r["kinds"])
    return (f"{r['bug']:<26} {'yes' if r['found'] else 'NO':<5} {r['examples']:>8} "
            f"{_secs(r['find_s']):>7} {r['total_s']:>8.1f} {r['steps'] or '-':>5}  {kinds}")


def _table(rows: list[dict], args) -> str:
    lines = [f"prop against the embedded target, seed {args.seed}, {args.examples} examples, "
             f"{args.steps} steps", HEADER, "-" * len(HEADER)]
    lines.extend(_row(r) for r in rows)
    return "\n".join(lines)


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    sys.exit(main())
