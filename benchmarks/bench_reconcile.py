"""Benchmark `reconcile` on generated exports, beside the tools a team would otherwise use.

    python benchmarks/bench_reconcile.py --accounts 1000000 [--entries-per-account 10]
                                         [--seed 1] [--mismatches 60] [--repeat 3]

Generates ledger.parquet and display.parquet with planted mismatches (timed on its own and
cached under the temp dir, keyed by the arguments), then measures, each run in a fresh
subprocess so that every figure has its own peak memory (the child's ru_maxrss):

- ours: `reconcile` end to end from the Parquet files (read, derive the oracle, check the
  ledger rules, compare the display, classify) plus writing the findings as JSON;
- floor: polars' own aggregate-and-join over the same files (sum the signed amounts and take
  the last line and status per account, join the display, keep the rows that differ): what the
  engine costs with no contract logic at all;
- datacompy with its polars compare and with its default pandas compare, given only the display
  table and the expected display table (ours, computed beforehand and not timed), the tables
  already in memory: the compare alone, and its mismatching rows.

Prints best and median seconds and peak RSS of each, the ratios, and whether every planted
mismatch was found and nothing else (exit 1 otherwise). `main(argv)` is the entry point, so a
CLI can expose it as `limit-harness bench reconcile`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(ROOT))

DATA_VERSION = 2  # bump when the generator's output changes, to drop stale caches
MEASUREMENTS = ("ours", "floor", "datacompy_polars", "datacompy_pandas")
LABELS = {"ours": "ours: reconcile, end to end", "floor": "floor: polars aggregate + join",
          "datacompy_polars": "datacompy PolarsCompare", "datacompy_pandas":
          "datacompy PandasCompare"}
CHILD_TIMEOUT_S = 1800
MIB = 1024 * 1024


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        return _child(args.child, Path(args.data))
    data = _data_dir(args)
    generated_seconds = _ensure_data(args, data)
    total = args.accounts * args.entries_per_account
    print(f"reconcile benchmark: {args.accounts:,} accounts x {args.entries_per_account} entries "
          f"= {total:,} ledger entries, {args.mismatches} planted mismatches, seed {args.seed}")
    print(f"data: {data} ({_generated_words(generated_seconds)})")
    results = {name: [_run_child(name, data) for _ in range(args.repeat)]
               for name in MEASUREMENTS if name not in args.skip}
    _print_table(results)
    ok = _check_planted(data)
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the end")
    return 0 if ok else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench_reconcile", description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--entries-per-account", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mismatches", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--skip", nargs="*", default=[], choices=MEASUREMENTS,
                        help="measurements to leave out")
    parser.add_argument("--data-dir", help="where to cache the generated files")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    return parser


# -- data -----------------------------------------------------------------------------------------

def _data_dir(args: argparse.Namespace) -> Path:
    base = Path(args.data_dir) if args.data_dir else \
        Path(tempfile.gettempdir()) / "limit-harness-bench-reconcile"
    key = (f"v{DATA_VERSION}-a{args.accounts}-e{args.entries_per_account}-s{args.seed}"
           f"-m{args.mismatches}")
    return base / key


def _ensure_data(args: argparse.Namespace, data: Path) -> float | None:
    """Seconds spent generating, or None when the cache already had the files. Done in a child
    too: Linux carries a parent's peak RSS into its children's ru_maxrss, so this process must
    stay small for the children's figures to be their own."""
    if (data / "expected.parquet").exists():
        return None
    data.mkdir(parents=True, exist_ok=True)
    spec = {"accounts": args.accounts, "entries_per_account": args.entries_per_account,
            "seed": args.seed, "mismatches": args.mismatches}
    (data / "spec.json").write_text(json.dumps(spec))
    return _run_child("generate", data)["seconds"]


def _generate(data: Path) -> tuple[float, dict]:
    from harness.reconcile import datagen, engine, sources

    spec = json.loads((data / "spec.json").read_text())
    started = time.perf_counter()
    made = datagen.generate(spec["accounts"], spec["entries_per_account"], spec["seed"], data,
                            spec["mismatches"])
    seconds = time.perf_counter() - started
    (data / "planted.json").write_text(json.dumps([asdict(p) for p in made.planted]))
    # The expected display for datacompy: ours, computed once here and never timed.
    ledger = sources.read_ledger(str(made.ledger_path))
    display = sources.read_display(str(made.display_path))
    engine.expected_display(ledger, display).write_parquet(data / "expected.parquet")
    return seconds, {}


def _generated_words(seconds: float | None) -> str:
    return "cached" if seconds is None else f"generated in {seconds:.1f} s, not counted below"


# -- measurements, each in its own process --------------------------------------------------------

def _run_child(name: str, data: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", name,
               "--data", str(data)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                          cwd=ROOT)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"bench_reconcile: the {name} run failed: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(name: str, data: Path) -> int:
    measure = {"ours": _ours, "floor": _floor, "datacompy_polars": _datacompy_polars,
               "datacompy_pandas": _datacompy_pandas, "generate": _generate}[name]
    seconds, extra = measure(data)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_mib": peak_kib / 1024, **extra}))
    return 0


def _ours(data: Path) -> tuple[float, dict]:
    import orjson

    from harness.reconcile import ReconcileConfig, reconcile

    started = time.perf_counter()
    result = reconcile(ReconcileConfig(str(data / "ledger.parquet"),
                                       str(data / "display.parquet")))
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as out:
        out.write(orjson.dumps([f.to_dict() for f in result.findings]))
    seconds = time.perf_counter() - started
    found = sorted({(f.account_id, f.kind, f.severity) for f in result.findings})
    (data / "found.json").write_text(json.dumps(found))
    os.unlink(out.name)
    return seconds, {"stages": result.stats["seconds"], "findings": len(result.findings)}


def _floor(data: Path) -> tuple[float, dict]:
    import polars as pl

    started = time.perf_counter()
    kind = pl.col("type")
    per_account = pl.scan_parquet(data / "ledger.parquet").group_by("account_id").agg(
        outstanding=pl.when(kind == "draw").then(pl.col("amount"))
        .when(kind == "repay").then(-pl.col("amount")).otherwise(0).sum(),
        # The file is in seq order and an aggregation keeps row order within a group.
        credit_line=pl.col("credit_line").drop_nulls().last(),
        status=pl.col("status").drop_nulls().last())
    display = pl.scan_parquet(data / "display.parquet")
    differ = display.join(per_account, on="account_id", how="full", suffix="_ledger").filter(
        pl.col("outstanding").ne_missing(pl.col("outstanding_ledger"))
        | pl.col("credit_line").ne_missing(pl.col("credit_line_ledger"))
        | pl.col("status").cast(pl.Utf8).ne_missing(pl.col("status_ledger").cast(pl.Utf8)))
    rows = differ.collect().height
    return time.perf_counter() - started, {"rows": rows}


def _datacompy_tables(data: Path):
    import polars as pl

    columns = ["account_id", "credit_line", "outstanding", "available", "status", "usable"]
    shown = pl.read_parquet(data / "display.parquet", columns=columns)
    expected = pl.read_parquet(data / "expected.parquet", columns=columns)
    return shown, expected


def _datacompy_polars(data: Path) -> tuple[float, dict]:
    import datacompy

    shown, expected = _datacompy_tables(data)
    started = time.perf_counter()
    compare = datacompy.PolarsCompare(shown, expected, join_columns="account_id")
    rows = compare.all_mismatch().height
    matches = bool(compare.matches())
    return time.perf_counter() - started, {"rows": rows, "matches": matches}


def _datacompy_pandas(data: Path) -> tuple[float, dict]:
    import datacompy

    shown, expected = _datacompy_tables(data)
    shown, expected = shown.to_pandas(), expected.to_pandas()
    started = time.perf_counter()
    compare = datacompy.PandasCompare(shown, expected, join_columns="account_id")
    rows = len(compare.all_mismatch())
    matches = bool(compare.matches())
    return time.perf_counter() - started, {"rows": rows, "matches": matches}


# -- the report -----------------------------------------------------------------------------------

def _print_table(results: dict[str, list[dict]]) -> None:
    print(f"{'measurement':<34} {'best s':>8} {'median s':>9} {'peak RSS MiB':>13} {'runs':>5}")
    best = {}
    for name, runs in results.items():
        seconds = [r["seconds"] for r in runs]
        best[name] = min(seconds)
        peak = max(r["peak_mib"] for r in runs)
        print(f"{LABELS[name]:<34} {min(seconds):>8.2f} {statistics.median(seconds):>9.2f} "
              f"{peak:>13.0f} {len(runs):>5}")
    if "ours" in results:
        fastest = min(results["ours"], key=lambda r: r["seconds"])
        stages = ", ".join(f"{k} {v:.2f}" for k, v in fastest["stages"].items() if k != "total")
        print(f"ours, stages of the best run (s): {stages}")
        _print_ratios(best)


def _print_ratios(best: dict[str, float]) -> None:
    ours = best["ours"]
    words = []
    if "datacompy_polars" in best:
        words.append(f"datacompy polars / ours = {best['datacompy_polars'] / ours:.2f}x")
    if "datacompy_pandas" in best:
        words.append(f"datacompy pandas / ours = {best['datacompy_pandas'] / ours:.2f}x")
    if "floor" in best:
        words.append(f"ours / floor = {ours / best['floor']:.2f}x")
    print("ratios (best runs): " + "; ".join(words))


def _check_planted(data: Path) -> bool:
    planted = {(p["account_id"], p["kind"], p["severity"])
               for p in json.loads((data / "planted.json").read_text())}
    found_path = data / "found.json"
    if not found_path.exists():
        print("planted: not checked (ours was skipped)")
        return True
    found = {tuple(f) for f in json.loads(found_path.read_text())}
    missed, extra = planted - found, found - planted
    print(f"planted: {len(planted & found)} of {len(planted)} found, {len(missed)} missed, "
          f"{len(extra)} unexpected -> {'OK' if not missed and not extra else 'FAIL'}")
    for item in sorted(missed)[:5]:
        print(f"  missed: {item}")
    for item in sorted(extra)[:5]:
        print(f"  unexpected: {item}")
    return not missed and not extra


if __name__ == "__main__":
    sys.exit(main())
