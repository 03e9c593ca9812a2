"""Throughput of the reference service deployed as in production: `serve --role api` and
`serve --role projector` as two processes, the ledger in PostgreSQL, the display and the event
bus in Redis (this machine's: 127.0.0.1:5432 database `test`, 127.0.0.1:6379). Not a test: run
it by hand,

    .venv/bin/python benchmarks/bench_deployment.py [--seconds 5] [--python-client]

Counts acknowledged writes (201s) from a few concurrent keep-alive clients (bench_service.py's
load generators: wrk when installed, else raw asyncio loops in two processes), checks that the
ledger grew by at least as many entries, then how long the projector took to show the last of
them (`GET /v1/sync` caught up), and display reads. Works in a schema and key prefix of its own
and removes them. Exit code 0 when the target is met, 1 otherwise, 2 when the services are not
there.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import orjson
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_service  # noqa: E402 - the same load generators and accounts
from bench_service import (  # noqa: E402
    measured_writes, print_table, python_load, writes_note, wrk_load)

from harness.faults.process import ManagedProcess  # noqa: E402
from harness.service import process as serve_process  # noqa: E402

TARGET_WRITES_PER_S = 1_000
POSTGRES = os.environ.get("LIMIT_HARNESS_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")
REDIS = os.environ.get("LIMIT_HARNESS_REDIS_URL", "redis://127.0.0.1:6379")
DISPLAY_DB, BUS_DB = 5, 6  # with a key prefix of its own: shared with nothing that flushes
SYNC_WAIT_S = 30.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--python-client", action="store_true", help="do not use wrk")
    parser.add_argument("--clients", type=int, default=bench_service.CLIENTS,
                        help="concurrent keep-alive connections")
    args = parser.parse_args(argv)
    bench_service.CLIENTS = args.clients  # the load generators read it when they run
    why_not = services_missing()
    if why_not:
        print(f"bench_deployment: {why_not}", file=sys.stderr)
        return 2
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    load = wrk_load if use_wrk else python_load
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs (other processes skew every figure)")
    print(f"load generator: {'wrk' if use_wrk else 'python asyncio client'}, {args.clients} "
          f"connections, {args.seconds:g} s per measurement", flush=True)
    tag = f"lh_bench_{uuid.uuid4().hex[:8]}"
    urls = ["--ledger", f"{POSTGRES}?schema={tag}",
            "--display", f"{REDIS}/{DISPLAY_DB}?prefix={tag}:",
            "--bus", f"{REDIS}/{BUS_DB}?prefix={tag}:"]
    try:
        with tempfile.TemporaryDirectory(prefix="bench-deployment-") as tmp:
            rows = measure(Path(tmp), urls, load, args.seconds)
        rows.append(("PostgreSQL alone: durable commits/s, one at a time", postgres_alone(tag),
                     None, "one connection, one-row INSERT + COMMIT: the disk's flush rate now"))
    finally:
        clean_up(tag)
    print_table(rows)
    return 0 if all(value >= target for _, value, target, _ in rows if target) else 1


def measure(workdir: Path, urls: list[str], load, seconds: float) -> list[tuple]:
    projector = ManagedProcess("projector", [sys.executable, "-m", "harness.cli", "serve",
                                             "--role", "projector", *urls],
                               start_timeout_s=30, log_dir=workdir)
    try:
        api = serve_process.spawn(workdir, "--role", "api", *urls, wait_s=30)
        try:
            print(api.banner, flush=True)
            writes, written = measured_writes(api.url, load, seconds, workdir)
            shown_s = time_to_sync(api.url)
            reads = load(api.url, "read", seconds, "r", workdir)
        finally:
            code = api.stop()
        if code != 0:
            print(f"warning: the api exited with {code}: {api.stderr()[-500:]}")
        assert projector.alive, f"the projector died: {projector.log.tail()}"
    finally:
        projector.stop()
    return [
        ("HTTP writes/s (201s; PostgreSQL ledger, Redis bus)", writes.per_s, TARGET_WRITES_PER_S,
         writes_note(writes, written)),
        ("projector: last write shown, ms after the load", shown_s * 1000, None,
         "GET /v1/sync applied_seq reached ledger_seq"),
        ("HTTP display reads/s (200s, from Redis)", reads.per_s, None,
         f"p50 {reads.p50_ms:.2f} ms, p99 {reads.p99_ms:.2f} ms, non-200 {reads.other}"),
    ]


def time_to_sync(url: str) -> float:
    """Seconds until the projector has applied the whole ledger, from now."""
    start_s = time.monotonic()
    with urllib3.PoolManager(retries=False, timeout=5.0) as pool:
        while time.monotonic() - start_s < SYNC_WAIT_S:
            sync = orjson.loads(pool.request("GET", url + "/v1/sync").data)
            if sync["applied_seq"] >= sync["ledger_seq"]:
                return time.monotonic() - start_s
            time.sleep(0.01)
    raise RuntimeError(f"the projector did not catch up within {SYNC_WAIT_S} s")


def postgres_alone(tag: str, commits: int = 300) -> float:
    """What one connection commits a second now, for context: the machine's flush rate bounds
    any service that answers after a durable commit, and varies with what else runs."""
    import psycopg

    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute("SET synchronous_commit TO on")
        conn.execute(f'CREATE TABLE "{tag}".alone (n integer)')
        start_s = time.perf_counter()
        for n in range(commits):
            conn.execute(f'INSERT INTO "{tag}".alone VALUES (%s)', (n,))
        return commits / (time.perf_counter() - start_s)


def services_missing() -> str | None:
    try:
        import psycopg
        import redis
    except ImportError as exc:
        return f"needs the deployment extra: pip install -e '.[deployment]' ({exc})"
    try:
        psycopg.connect(POSTGRES, connect_timeout=3).close()
        redis.Redis.from_url(REDIS, socket_timeout=3).ping()
    except (psycopg.Error, redis.RedisError) as exc:
        return f"needs PostgreSQL at {POSTGRES} and Redis at {REDIS}: {exc}"
    return None


def clean_up(tag: str) -> None:
    import psycopg
    import redis

    with psycopg.connect(POSTGRES, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{tag}" CASCADE')
    for db in (DISPLAY_DB, BUS_DB):
        client = redis.Redis.from_url(f"{REDIS}/{db}")
        keys = list(client.scan_iter(match=f"{tag}:*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start:start + 1000])
        client.close()


if __name__ == "__main__":
    sys.exit(main())
