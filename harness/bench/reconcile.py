"""`limit-harness bench reconcile`: our reconcile beside the tools a team would otherwise use, on
generated exports, side by side in one run.

    limit-harness bench reconcile --accounts 1000000 [--entries-per-account 10] [--seed 1]
                                  [--mismatches 60] [--repeat 3] [--skip NAME ...]

Generates ledger.parquet and display.parquet with planted mismatches (once, cached under the
temp dir keyed by the arguments; not timed), then measures, each run in a fresh process so that
every figure has its own peak memory (the child's RSS high-water mark, `ru_maxrss`), the
measurements taking turns so a change in the machine's load falls on all of them:

- ours: `limit-harness reconcile` end to end from the Parquet files (read, derive the oracle,
  check the ledger rules, compare, classify, write the four reports);
- floor: polars' own aggregate-and-join over the same files (sum the signed amounts and take the
  last credit line and status per account, join the display, keep the rows that differ): the
  engine with no contract logic at all. DuckDB runs the same query too, for comparison;
- datacompy with its polars compare and with its default pandas compare, given only the display
  table and the expected display table (ours, computed when the data is made and not timed),
  both already in memory: the compare alone, and its mismatching rows.

Prints best and median seconds and peak RSS of each, the ratios against the targets, and checks
that every planted mismatch was found and nothing else (exit 1, loudly, otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import HarnessError, UsageError

DATA_VERSION = 2  # bump when the generator's output changes, to drop stale caches
MEASUREMENTS = ("ours", "floor", "floor_duckdb", "datacompy_polars", "datacompy_pandas")
LABELS = {"ours": "ours: limit-harness reconcile", "floor": "floor: polars aggregate + join",
          "floor_duckdb": "DuckDB aggregate + join (same)",
          "datacompy_polars": "datacompy PolarsCompare", "datacompy_pandas":
          "datacompy PandasCompare"}
# Each child needs the package it measures; a missing one is skipped with a note, not an error.
NEEDS = {"floor_duckdb": "duckdb", "datacompy_polars": "datacompy",
         "datacompy_pandas": "datacompy"}
TARGET_SECONDS, TARGET_MIB = 3.0, 2048
CHILD_TIMEOUT_S = 1800
MIB = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser, name: str = "reconcile") -> None:
    parser.add_argument("--accounts", type=_positive, default=1_000_000)
    parser.add_argument("--entries-per-account", type=_positive, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mismatches", type=int, default=60,
                        help="planted mismatches the run must find exactly (default 60)")
    parser.add_argument("--repeat", type=_positive, default=3, help="runs of each measurement")
    parser.add_argument("--skip", nargs="*", default=[], choices=MEASUREMENTS,
                        help="measurements to leave out")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where to cache the generated files (default: the temp dir)")


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--child"]:  # a measurement in its own process
        return _child(argv[1], Path(argv[2]))
    parser = argparse.ArgumentParser(prog="bench reconcile", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.mismatches <= args.accounts:
        raise UsageError("bench reconcile: --mismatches must be between 0 and --accounts")
    data = _data_dir(args)
    generated_s = _ensure_data(args, data)
    total = args.accounts * args.entries_per_account
    print(f"reconcile benchmark: {args.accounts:,} accounts x {args.entries_per_account} entries "
          f"= {total:,} ledger entries, {args.mismatches} planted mismatches, seed {args.seed}")
    made = "cached" if generated_s is None else f"generated in {generated_s:.1f} s"
    print(f"data: {data} ({made}, not counted below)")
    print(f"machine: {os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f} at the start")
    chosen = [m for m in MEASUREMENTS if m not in args.skip and _available(m)]
    results: dict[str, list[dict]] = {name: [] for name in chosen}
    for round_ in range(args.repeat):  # bounded by --repeat; turns, so load falls on all
        for name in chosen:  # bounded: five measurements
            _progress(f"{name} (run {round_ + 1} of {args.repeat})")
            results[name].append(_run_child(name, data))
    _print_table(results)
    planted_ok = _check_planted(data) if "ours" in results else True
    print(f"machine: load average {os.getloadavg()[0]:.2f} at the end")
    return 0 if planted_ok else 1


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _available(name: str) -> bool:
    import importlib.util

    package = NEEDS.get(name)
    if package is None or importlib.util.find_spec(package) is not None:
        return True
    print(f"{LABELS[name]}: skipped, {package} is not installed "
          f"(pip install 'limit-harness[bench]')")
    return False


def _progress(words: str) -> None:
    print(f"bench reconcile: {words}...", file=sys.stderr, flush=True)


# -- data -----------------------------------------------------------------------------------------

def _data_dir(args: argparse.Namespace) -> Path:
    base = args.data_dir or Path(tempfile.gettempdir()) / "limit-harness-bench-reconcile"
    key = (f"v{DATA_VERSION}-a{args.accounts}-e{args.entries_per_account}-s{args.seed}"
           f"-m{args.mismatches}")
    return Path(base) / key


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
    _progress(f"generating {args.accounts * args.entries_per_account:,} entries (once, cached)")
    return _run_child("generate", data)["seconds"]


def _generate(data: Path) -> tuple[float, dict]:
    from dataclasses import asdict

    from ..reconcile import datagen, engine, sources

    spec = json.loads((data / "spec.json").read_text())
    started = time.perf_counter()
    made = datagen.generate(spec["accounts"], spec["entries_per_account"], spec["seed"], data,
                            spec["mismatches"])
    seconds = time.perf_counter() - started
    (data / "planted.json").write_text(json.dumps([asdict(p) for p in made.planted]))
    # The expected display for datacompy: ours, computed once here and never timed.
    ledger = sources.read_ledger(str(made.ledger_path))
    display = sources.read_display(str(made.display_path))
    partial = data / "expected.parquet.partial"
    engine.expected_display(ledger, display).write_parquet(partial)
    partial.rename(data / "expected.parquet")  # last: its presence means the data is whole
    return seconds, {}


# -- measurements, each in its own process --------------------------------------------------------

def _run_child(name: str, data: Path) -> dict:
    command = [sys.executable, "-m", __name__, "--child", name, str(data)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise HarnessError(f"bench reconcile: the {name} run failed: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _child(name: str, data: Path) -> int:
    measure = {"ours": _ours, "floor": _floor, "floor_duckdb": _floor_duckdb,
               "datacompy_polars": _datacompy_polars, "datacompy_pandas": _datacompy_pandas,
               "generate": _generate}[name]
    seconds, extra = measure(data)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"seconds": seconds, "peak_mib": peak_kib / 1024, **extra}))
    return 0


def _ours(data: Path) -> tuple[float, dict]:
    from .. import cli
    from ..reconcile import engine, sources  # noqa: F401  (imported before the clock starts)

    with tempfile.TemporaryDirectory() as reports, open(os.devnull, "w") as quiet:
        started = time.perf_counter()
        with contextlib.redirect_stdout(quiet):  # the summary; this child's stdout is JSON
            code = cli.main(["reconcile", "--ledger", str(data / "ledger.parquet"),
                             "--display", str(data / "display.parquet"), "--report-dir",
                             reports])
        seconds = time.perf_counter() - started
        if code not in (0, 1):
            raise SystemExit(f"reconcile ended with exit code {code}")
        report = json.loads((Path(reports) / "report.json").read_text())
    found = sorted({(f["account_id"], f["kind"], f["severity"]) for f in report["findings"]})
    (data / "found.json").write_text(json.dumps(found))
    return seconds, {"stages": report["stats"]["seconds"], "findings": len(report["findings"])}


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


DUCKDB_FLOOR = """
WITH per_account AS (
  SELECT account_id,
         sum(CASE type WHEN 'draw' THEN amount WHEN 'repay' THEN -amount ELSE 0 END)
           AS outstanding,
         last(credit_line ORDER BY seq) FILTER (WHERE credit_line IS NOT NULL) AS credit_line,
         last(status ORDER BY seq) FILTER (WHERE status IS NOT NULL) AS status
  FROM read_parquet($ledger) GROUP BY account_id)
SELECT count(*) FROM read_parquet($display) d FULL JOIN per_account l USING (account_id)
WHERE d.outstanding IS DISTINCT FROM l.outstanding
   OR d.credit_line IS DISTINCT FROM l.credit_line OR d.status IS DISTINCT FROM l.status
"""


def _floor_duckdb(data: Path) -> tuple[float, dict]:
    import duckdb

    started = time.perf_counter()
    rows = duckdb.execute(DUCKDB_FLOOR, {"ledger": str(data / "ledger.parquet"),
                                         "display": str(data / "display.parquet")}).fetchone()[0]
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
    best, peak = {}, {}
    for name, runs in results.items():
        seconds = [r["seconds"] for r in runs]
        best[name] = min(seconds)
        peak[name] = max(r["peak_mib"] for r in runs)
        print(f"{LABELS[name]:<34} {min(seconds):>8.2f} {statistics.median(seconds):>9.2f} "
              f"{peak[name]:>13.0f} {len(runs):>5}")
    if "ours" not in results:
        return
    from ..reconcile import STAGES

    fastest = min(results["ours"], key=lambda r: r["seconds"])
    stages = fastest["stages"]
    words = ", ".join(f"{stage} {stages[stage]:.2f}" for stage in STAGES)
    print(f"ours, stages of the best run (s): {words}; writing the reports "
          f"{fastest['seconds'] - stages['total']:.2f}")
    compare_s = min(r["stages"]["compare"] for r in results["ours"])
    _print_targets(best, peak, compare_s)


def _print_targets(best: dict[str, float], peak: dict[str, float], compare_s: float) -> None:
    ours = best["ours"]
    rows = [("ours, best s", f"{ours:.2f}", f"< {TARGET_SECONDS:g}", ours < TARGET_SECONDS),
            ("ours, peak RSS MiB", f"{peak['ours']:.0f}", f"< {TARGET_MIB}",
             peak["ours"] < TARGET_MIB)]
    # Against datacompy two ways: our whole run (it reads and derives 10^7 entries, datacompy
    # is handed both tables in memory), and our compare stage alone (the display in memory,
    # each row matched to its account and compared with the oracle there: datacompy's work).
    for name, label, target, meets in (
            ("datacompy_polars", "datacompy polars", "> 1x", lambda ratio: ratio > 1),
            ("datacompy_pandas", "datacompy pandas", ">= 3x", lambda ratio: ratio >= 3)):
        for what, ours_s in (("ours", ours), ("our compare", compare_s)) if name in best else ():
            ratio = best[name] / ours_s
            rows.append((f"{label} / {what}", f"{ratio:.2f}x", target, meets(ratio)))
    if "floor" in best:
        ratio = ours / best["floor"]
        rows.append(("ours / polars floor", f"{ratio:.2f}x", "<= 3x", ratio <= 3))
    if "floor_duckdb" in best:
        rows.append(("ours / DuckDB floor", f"{ours / best['floor_duckdb']:.2f}x", "", None))
    print("targets (best runs, side by side in this one run):")
    for name, value, target, ok in rows:
        verdict = "" if ok is None else ("met" if ok else "MISSED")
        print(f"  {name:<33} {value:>9}  {target:<7} {verdict}")


def _check_planted(data: Path) -> bool:
    planted = {(p["account_id"], p["kind"], p["severity"])
               for p in json.loads((data / "planted.json").read_text())}
    found = {tuple(f) for f in json.loads((data / "found.json").read_text())}
    missed, extra = planted - found, found - planted
    ok = not missed and not extra
    print(f"planted: {len(planted & found)} of {len(planted)} found, {len(missed)} missed, "
          f"{len(extra)} unexpected -> {'OK' if ok else 'FAIL'}")
    for item in sorted(missed)[:5]:
        print(f"  missed: {item}")
    for item in sorted(extra)[:5]:
        print(f"  unexpected: {item}")
    if not ok:
        print("bench reconcile: FAIL: the run did not find exactly the planted mismatches",
              file=sys.stderr)
    return ok


if __name__ == "__main__":
    sys.exit(main())
