"""Throughput of the load test against the reference service (`serve --ledger memory://`), with 2
locust worker processes, measured with and without recording the history, side by side in one
run; and how long the master takes to merge and check what it recorded. Not a test: run it by
hand,

    .venv/bin/python benchmarks/bench_load.py [--duration 30] [--users 48] [--repeat 2]

Each round runs the same locust command twice, recording off (LIMIT_RECORD=0: locust's own
ceiling) and on (every request recorded, shipped to the master in chunks, merged, converged,
checked), in alternating order from round to round. Users do not think (LIMIT_THINK_MS=0,0),
so each variant runs as fast as the machine lets it and recording shows up as lost throughput;
no faults, so both variants see the same service. The service, the master and the workers
share the machine's cores, so the rates move with whatever else the machine runs; beside them,
the CPU each process group spent per request while every user was running (sampled from 2 s
after spawning to 1 s before the end) moves much less. The recording path alone (record,
chunk, msgpack as locust's messaging does, unpack, collect) is also timed in this process on
synthetic ops and set against the CPU a request costs without recording: what recording takes
from a load generator that is CPU-bound. Exit code 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import msgpack
import psutil

from harness.load import (Collector, LoadClock, LoadConfig, LoadSettings, OpLog, locust_argv,
                          timeout_s)
from harness.service import process as serve_process

TARGET_REQUESTS_PER_S = 2_000
RECORDING_COST_MAX = 0.10
MERGE_CHECK_S_MAX = 30.0
PROCESSES = 2
WAIT_S = 60.0  # for locust to start, connect its workers and spawn its users
# What locust logs once spawning is over (the second when a worker's report came late).
SPAWNED = "All users spawned|Spawning is complete"


@dataclass
class Measured:
    variant: str
    requests: int
    failures: int
    requests_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_s: dict[str, float]  # steady state: CPU seconds of "workers", "master", "service"
    window_s: float
    exit_code: int
    report: dict | None  # the recorded variant's report.json

    def cpu_share(self, group: str) -> float:
        """Cores' worth of CPU the group used while every user ran."""
        return self.cpu_s[group] / self.window_s if self.window_s else float("nan")

    def cpu_us_per_request(self, *groups: str) -> float:
        requests = self.requests_per_s * self.window_s
        return sum(self.cpu_s[g] for g in groups) / requests * 1e6 if requests else float("nan")


def run_variant(url: str, service: psutil.Process, config: LoadConfig, record: bool,
                workdir: Path) -> Measured:
    variant = "recording on" if record else "recording off"
    out = workdir / variant.replace(" ", "-")
    out.mkdir(parents=True, exist_ok=True)
    settings = LoadSettings(seed=config.seed, sla_ms=config.sla_ms, faults="none",
                            report_dir=out / "report", record=record, think_ms=(0, 0))
    argv = locust_argv(config, url) + ["--csv", str(out / "locust")]
    log_path = out / "locust.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, env={**os.environ, **settings.to_env()}, stdout=log,
                                stderr=subprocess.STDOUT)
    try:
        cpu_s, window_s = steady_cpu(proc, service, log_path, config.duration_s)
        code = proc.wait(timeout_s(config))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    row = _aggregated(out / "locust_stats.csv")
    report_path = out / "report" / "report.json"
    report = json.loads(report_path.read_text()) if record and report_path.exists() else None
    return Measured(variant, int(row["Request Count"]), int(row["Failure Count"]),
                    float(row["Requests/s"]), float(row["50%"]), float(row["95%"]),
                    float(row["99%"]), cpu_s, window_s, code, report)


def steady_cpu(proc: subprocess.Popen, service: psutil.Process, log_path: Path,
               duration_s: float) -> tuple[dict[str, float], float]:
    """CPU seconds per process group from 2 s after every user is running to 1 s before the
    test ends (locust's run-time clock starts when it logs the limit)."""
    _wait_for_line(proc, log_path, "Run time limit set", WAIT_S)
    ends_at = time.monotonic() + duration_s
    _wait_for_line(proc, log_path, SPAWNED, WAIT_S)
    time.sleep(2.0)
    first, first_at = _cpu(proc, service), time.monotonic()
    time.sleep(max(0.5, ends_at - 1.0 - time.monotonic()))
    last, last_at = _cpu(proc, service), time.monotonic()
    return {group: last[group] - first[group] for group in first}, last_at - first_at


def _cpu(proc: subprocess.Popen, service: psutil.Process) -> dict[str, float]:
    master = psutil.Process(proc.pid)
    workers = master.children(recursive=True)
    return {"master": sum(master.cpu_times()[:2]),
            "workers": sum(sum(w.cpu_times()[:2]) for w in workers),
            "service": sum(service.cpu_times()[:2])}


def _wait_for_line(proc: subprocess.Popen, log_path: Path, text: str, wait_s: float) -> None:
    deadline_s = time.monotonic() + wait_s
    while not re.search(text, log_path.read_text(errors="replace")):
        if proc.poll() is not None or time.monotonic() > deadline_s:
            raise RuntimeError(f"locust never logged {text!r}; see {log_path}")
        time.sleep(0.05)


def _aggregated(path: Path) -> dict:
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["Name"] == "Aggregated":
                return row
    raise RuntimeError(f"no Aggregated row in {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per variant")
    parser.add_argument("--users", type=int, default=48)
    parser.add_argument("--repeat", type=int, default=2, help="rounds of (off, on)")
    args = parser.parse_args()
    config = LoadConfig(users=args.users, spawn_rate=args.users, duration_s=args.duration,
                        processes=PROCESSES, faults="none", seed=1)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
          f"python {sys.version.split()[0]}; {args.users} users, {PROCESSES} worker processes, "
          f"{args.duration:g} s per variant, {args.repeat} round(s)")
    rounds: list[tuple[Measured, Measured]] = []
    with tempfile.TemporaryDirectory(prefix="bench-load-") as scratch:
        workdir = Path(scratch)
        served = serve_process.spawn(workdir, "--ledger", "memory://")
        try:
            service = psutil.Process(served.proc.pid)
            for n in range(args.repeat):
                order = (False, True) if n % 2 == 0 else (True, False)  # drift hits both
                runs = {record: run_variant(served.url, service, config, record,
                                            workdir / f"round{n}") for record in order}
                rounds.append((runs[False], runs[True]))
        finally:
            served.stop()
    return report(rounds, args.duration)


def recording_us_per_op(ops: int = 20_000) -> tuple[float, float]:
    """Microseconds per op of the recording path: (worker side, master side)."""
    clock = LoadClock()
    oplog = OpLog("bench", "ldB", clock, {"pid": 1, "host": "h", "index": 0})
    body = {"amount": 123_456, "request_id": "ldB-p12-12-345"}
    answer = {"seq": 123_456, "entry_id": "e-123456", "account_id": "ldB-p12-u3-h",
              "type": "draw", "amount": 123_456, "request_id": "ldB-p12-12-345",
              "at": "2026-01-01T00:00:00.000Z"}
    started = time.perf_counter()
    for _ in range(ops):
        op = oplog.invoke(3, "draw", "ldB-p12-u3-h", body)
        oplog.complete(op, "ok", 201, answer, None)
    packed = [msgpack.packb(chunk) for chunk in oplog.chunks(final=True)]
    worker_s = time.perf_counter() - started
    collector = Collector("bench", 0)
    started = time.perf_counter()
    for data in packed:
        collector.receive("w", msgpack.unpackb(data))
    master_s = time.perf_counter() - started
    assert len(collector.logs["w"].ops) == ops
    return worker_s / ops * 1e6, master_s / ops * 1e6


def report(rounds: list[tuple[Measured, Measured]], duration_s: float) -> int:
    print()
    print("| variant | requests | req/s | p50 ms | p95 ms | p99 ms | failures | cores used: "
          "workers / master / service | locust CPU µs per request | service CPU µs per request "
          "| exit |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    for off, on in rounds:
        for m in (off, on):
            print(f"| {m.variant} | {m.requests:,} | {m.requests_per_s:,.0f} | {m.p50_ms:g} | "
                  f"{m.p95_ms:g} | {m.p99_ms:g} | {m.failures} | {m.cpu_share('workers'):.2f} / "
                  f"{m.cpu_share('master'):.2f} / {m.cpu_share('service'):.2f} | "
                  f"{m.cpu_us_per_request('workers', 'master'):,.0f} | "
                  f"{m.cpu_us_per_request('service'):,.0f} | {m.exit_code} |")
    on_rate = statistics.median(on.requests_per_s for _, on in rounds)
    off_rate = statistics.median(off.requests_per_s for off, _ in rounds)
    cost = 1 - on_rate / off_rate if off_rate else float("nan")
    cpu_cost = statistics.median(on.cpu_us_per_request("workers", "master")
                                 / off.cpu_us_per_request("workers", "master") - 1
                                 for off, on in rounds)
    worker_us, master_us = recording_us_per_op()
    request_us = statistics.median(off.cpu_us_per_request("workers", "master")
                                   for off, _ in rounds)
    cpu_share = (worker_us + master_us) / request_us
    recorded = rounds[-1][1].report or {}
    load = (recorded.get("stats") or {}).get("load") or {}
    merge_s, check_s = load.get("merge_s"), load.get("check_s")
    ops = (recorded.get("stats") or {}).get("client_ops")
    merge_check_s = (merge_s or 0) + (check_s or 0) if merge_s is not None else None
    rows = [
        (f"throughput with recording, {PROCESSES} workers", f">= {TARGET_REQUESTS_PER_S:,} req/s",
         f"{on_rate:,.0f} req/s", on_rate >= TARGET_REQUESTS_PER_S),
        ("cost of recording, end to end (throughput lost)", f"<= {RECORDING_COST_MAX:.0%}",
         f"{cost:.1%} (locust CPU per request {cpu_cost:+.1%})", cost <= RECORDING_COST_MAX),
        ("cost of recording, its own CPU per request", f"<= {RECORDING_COST_MAX:.0%}",
         f"{cpu_share:.1%} ({worker_us:.0f} µs worker + {master_us:.0f} µs master of "
         f"{request_us:,.0f} µs per request)", cpu_share <= RECORDING_COST_MAX),
        (f"merge + check of the {duration_s:g} s recorded history", f"< {MERGE_CHECK_S_MAX:g} s",
         "no report" if merge_check_s is None else
         f"{merge_check_s:.1f} s (merge {merge_s:.2f} s, check {check_s:.1f} s, {ops:,} ops)",
         merge_check_s is not None and merge_check_s < MERGE_CHECK_S_MAX),
        ("recorded run's verdict", "pass", recorded.get("verdict", "none"),
         recorded.get("verdict") == "pass"),
    ]
    print()
    print("| target | bound | measured | met |")
    print("| --- | --- | --- | --- |")
    for name, bound, measured, met in rows:
        print(f"| {name} | {bound} | {measured} | {'yes' if met else 'NO'} |")
    return 0 if all(met for *_, met in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
