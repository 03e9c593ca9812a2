"""How reliably `limit-harness run` catches each seeded bug, and how rarely it cries wolf.

For every bug of the reference service's catalogue (`harness/service/bugs.py`, iterated, so new
bugs are measured as they are added), `run` at the default settings (simulated: 20,000 ops, 24
accounts, every fault kind) with that bug switched on, over N seeds; per bug it prints the share
of runs that failed with the catalogue's finding kind, the median simulated time to the first
finding of that kind, the median wall time to it (the drive's wall time, interpolated at the
finding's operation: checking happens after the run) and the median wall time of a whole run.
Then the correct service over M seeds: the share of runs that pass (a run that fails is a false
positive, printed with its first finding). Exits 1 if a bug was missed on any seed or a clean
run failed. A bug that only a crash shows (the catalogue's `crash`: acknowledged before durable)
cannot show in the embedded target, which never crashes; simulated runs list it as not measured.

    .venv/bin/python benchmarks/bench_detect.py [--seeds 20] [--clean-seeds 100] [--processes 2]
                                                [--first-seed 1] [--bug NAME]... [--http]

`--http` does the same with HTTP runs of the default 20 s against `limit-harness serve --bug X`,
started by the run itself (`run --target-cmd 'limit-harness serve --port {port} ...'`, a fresh
server and SQLite file ledger per run, so the nemesis can also crash and pause it); 5 seeds and
5 clean seeds unless given, one run at a time (the server needs the other core): about 25 s a
run, so about 45 minutes for the whole catalogue.
"""

from __future__ import annotations

import argparse
import bisect
import multiprocessing
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness.runner import DEFAULT_ACCOUNTS, DEFAULT_DURATION_S, DEFAULT_OPS, RunConfig, \
    execute  # noqa: E402
from harness.service.bugs import CATALOGUE  # noqa: E402

HTTP_SEEDS = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=None, help="seeds per bug (20; --http: 5)")
    parser.add_argument("--clean-seeds", type=int, default=None,
                        help="seeds against the correct service (100; --http: 5)")
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--bug", action="append", default=[], choices=sorted(CATALOGUE))
    parser.add_argument("--http", action="store_true",
                        help="HTTP runs of the default 20 s against `limit-harness serve`")
    args = parser.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else (HTTP_SEEDS if args.http else 20)
    clean = args.clean_seeds if args.clean_seeds is not None else (HTTP_SEEDS if args.http else 100)
    bugs = args.bug or list(CATALOGUE)
    unmeasured = [] if args.http else [b for b in bugs if getattr(CATALOGUE[b], "crash", False)]
    bugs = [b for b in bugs if b not in unmeasured]
    first = args.first_seed
    jobs = [(bug, seed) for bug in bugs for seed in range(first, first + seeds)]
    jobs += [(None, seed) for seed in range(first, first + clean)]
    started = time.monotonic()
    mode = "HTTP, 20 s each" if args.http else f"simulated, {DEFAULT_OPS:,} ops"
    print(f"bench_detect: {len(bugs)} bugs x {seeds} seeds, {clean} clean seeds ({mode}), "
          f"seeds from {first}", file=sys.stderr, flush=True)
    results = _run_all(jobs, args)
    print(_table(results, bugs, seeds, clean, args.http))
    if unmeasured:
        print(f"not measured simulated (only a crash shows them; use --http): "
              f"{', '.join(unmeasured)}")
    print(f"\nwhole benchmark {time.monotonic() - started:.0f} s")
    missed = [r for r in results if r["bug"] is not None and not r["caught"]]
    false = [r for r in results if r["bug"] is None and not r["passed"]]
    return 1 if missed or false else 0


def _run_all(jobs: list[tuple[str | None, int]], args) -> list[dict]:
    one = _http_run if args.http else _simulated_run
    if args.http or args.processes <= 1:
        return [_progress(one(job)) for job in jobs]
    with multiprocessing.get_context("fork").Pool(args.processes) as pool:
        return [_progress(r) for r in pool.imap(one, jobs)]


def _progress(result: dict) -> dict:
    mark = ("caught" if result["caught"] else "MISSED") if result["bug"] else \
        ("pass" if result["passed"] else "FALSE POSITIVE")
    print(f"  {result['bug'] or '(correct service)'} seed {result['seed']}: {mark} "
          f"{result['kinds']} {result['wall_s']:.1f} s", file=sys.stderr, flush=True)
    return result


def _simulated_run(job: tuple[str | None, int]) -> dict:
    bug, seed = job
    config = RunConfig(seed=seed, ops=DEFAULT_OPS, accounts=DEFAULT_ACCOUNTS, faults="all",
                       bugs=(bug,) if bug else (), quiet=True)
    began = time.monotonic()
    result = execute(config)
    return _measured(bug, seed, result, time.monotonic() - began)


def _http_run(job: tuple[str | None, int]) -> dict:
    bug, seed = job
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmp:
        serve = [sys.executable, "-m", "harness.cli", "serve", "--port", "{port}",
                 "--ledger", f"sqlite:///{tmp}/ledger.sqlite", *(["--bug", bug] if bug else [])]
        config = RunConfig(target_cmd=shlex.join(serve), seed=seed,
                           duration_s=DEFAULT_DURATION_S, accounts=DEFAULT_ACCOUNTS,
                           faults="all", quiet=True)
        began = time.monotonic()
        result = execute(config)
        return _measured(bug, seed, result, time.monotonic() - began)


def _measured(bug: str | None, seed: int, result, wall_s: float) -> dict:
    report = result.report
    findings = report["findings"]
    kinds = sorted({f["kind"] for f in findings})
    expected = CATALOGUE[bug].finding_kind if bug else None
    times = [f["first_seen_ms"] for f in findings
             if f["kind"] == expected and isinstance(f.get("first_seen_ms"), int)]
    first_ms = min(times) if times else None
    return {"bug": bug, "seed": seed, "passed": report["verdict"] == "pass",
            "caught": report["verdict"] == "fail" and expected in kinds, "kinds": kinds,
            "first_ms": first_ms, "first_wall_s": _wall_at(result, first_ms), "wall_s": wall_s,
            "missing": report["stats"].get("fault_coverage", {}).get("missing"),
            "first_finding": findings[0]["explanation"].splitlines()[0][:160] if findings else ""}


def _wall_at(result, at_ms: int | None) -> float | None:
    """The drive's wall time when the run reached `at_ms`, interpolated by operations (the
    checkers judge after the run, so this is when the evidence was recorded)."""
    if at_ms is None:
        return None
    ops = result.history.ops
    index = bisect.bisect_left([op.invoke_ms for op in ops], at_ms)
    return result.stats["drive_s"] * min(index, len(ops)) / max(len(ops), 1)


def _table(results: list[dict], bugs: list[str], seeds: int, clean: int, http: bool) -> str:
    header = (f"{'bug':<28} {'finding kind':<22} {'caught':>8} {'sim s':>7} {'wall s':>7} "
              f"{'run s':>6}  missed seeds")
    lines = [header, "-" * len(header)]
    for bug in bugs:
        mine = [r for r in results if r["bug"] == bug]
        caught = [r for r in mine if r["caught"]]
        sim = [r["first_ms"] / 1000 for r in caught if r["first_ms"] is not None]
        wall = [r["first_wall_s"] for r in caught if r["first_wall_s"] is not None]
        missed = ", ".join(f"{r['seed']} {r['kinds']}" for r in mine if not r["caught"])
        lines.append(f"{bug:<28} {CATALOGUE[bug].finding_kind:<22} "
                     f"{len(caught) / len(mine):>8.0%} {_median(sim):>7} {_median(wall):>7} "
                     f"{_median([r['wall_s'] for r in mine]):>6}  {missed or '-'}")
    every = [r for r in results if r["bug"] is not None]
    lines.append(f"\nevery bug caught on every seed: {sum(r['caught'] for r in every)}/{len(every)} "
                 f"runs ({len(bugs)} bugs x {seeds} seeds)")
    correct = [r for r in results if r["bug"] is None]
    if correct:
        passed = sum(r["passed"] for r in correct)
        lines.append(f"correct service, every fault kind: {passed}/{len(correct)} runs pass "
                     f"({passed / len(correct):.0%}); median run {_median([r['wall_s'] for r in correct])} s")
        lines += [f"  FALSE POSITIVE seed {r['seed']}: {r['kinds']} {r['missing'] or ''} "
                  f"{r['first_finding']}" for r in correct if not r["passed"]]
    uncovered = [r for r in results if r["missing"]]
    if uncovered:
        lines.append(f"runs with planned faults never injected: {len(uncovered)} "
                     f"(first: {uncovered[0]['bug']} seed {uncovered[0]['seed']}: "
                     f"{uncovered[0]['missing']})")
    lines.append("sim s / wall s: median time to the first finding of the catalogue's kind "
                 + ("(HTTP: sim s is run-relative real time)" if http else
                    "(wall: interpolated over the drive)") + "; run s: median whole run")
    return "\n".join(lines)


def _median(values: list[float]) -> str:
    return f"{statistics.median(values):.1f}" if values else "-"


if __name__ == "__main__":
    sys.exit(main())
