"""A client's latency while hundreds of others hold connections and trickle their request bodies a
byte a second (slowloris), beside the same client's latency with nobody else connected. Not a
test: run it by hand,

    .venv/bin/python benchmarks/bench_slow_clients.py [--slow 500] [--requests 200]

`limit-harness serve` runs in its own process, as users run it; the slow clients run in another,
so their event loop does not share the measuring client's GIL. The measuring client sends its
requests one after another on one keep-alive connection, paced so they interleave with the
trickle. Prints a markdown table; exit code 0 when every answer came within 100 ms while the slow
clients trickled, and all of them were still connected at the end (none cut before its limit).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import multiprocessing
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.service import process as serve_process  # noqa: E402
from harness.service.server import raise_open_files_limit  # noqa: E402

TARGET_MAX_MS = 100.0
PACE_S = 0.01  # between the measuring client's requests
SLOW_BODY_BYTES = 1_000_000  # declared, never all sent
TRICKLE_EVERY_S = 1.0
# The slow clients' connect burst (500 accepts, heads and tasks at once) delays whoever comes
# just then by tens of ms; what we measure is the steady trickle after it.
SETTLE_S = 1.5
CONNECT_BATCH = 100
READY_WAIT_S = 60.0
CREDIT_LINE = 10**14  # draws of 1 fen never run out


# -- the slow clients, in a child process ----------------------------------------------------------
def run_slow_clients(host: str, port: int, count: int, pipe) -> None:
    """Open `count` connections, send each a request head, then one body byte a second each until
    the parent says stop; answer how many the server still holds open."""
    raise_open_files_limit()
    asyncio.run(_slow_clients(host, port, count, pipe))


async def _slow_clients(host: str, port: int, count: int, pipe) -> None:
    request_head = (f"POST /v1/accounts HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json"
                    f"\r\ncontent-length: {SLOW_BODY_BYTES}\r\n\r\n").encode()
    connections = []
    while len(connections) < count:
        batch = min(CONNECT_BATCH, count - len(connections))
        connections += await asyncio.gather(*(asyncio.open_connection(host, port)
                                              for _ in range(batch)))
    for _, writer in connections:
        writer.write(request_head)
    pipe.send("ready")
    loop = asyncio.get_running_loop()
    while not await loop.run_in_executor(None, pipe.poll, TRICKLE_EVERY_S):
        for _, writer in connections:
            writer.write(b" ")  # JSON whitespace: valid, and never the end
    pipe.recv()
    pipe.send(sum(not reader.at_eof() for reader, _ in connections))
    for _, writer in connections:
        writer.close()


class SlowClients:
    def __init__(self, url: str, count: int) -> None:
        parts = urlsplit(url)
        context = multiprocessing.get_context("spawn")
        self.pipe, child_end = context.Pipe()
        self.process = context.Process(target=run_slow_clients, daemon=True,
                                       args=(parts.hostname, parts.port, count, child_end))
        self.process.start()
        assert self.pipe.poll(READY_WAIT_S), "the slow clients did not connect in time"
        assert self.pipe.recv() == "ready"

    def stop(self) -> int:
        """Stop trickling; the number of slow connections the server still held open."""
        self.pipe.send("stop")
        still_open = self.pipe.recv()
        self.process.join(READY_WAIT_S)
        return still_open


# -- the measuring client --------------------------------------------------------------------------
class Client:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        self.account = f"bench-{uuid.uuid4().hex[:10]}"
        self.draws = 0
        status, _ = self.call("POST", "/v1/accounts", {
            "account_id": self.account, "product": "huabei", "credit_line": CREDIT_LINE,
            "request_id": f"{self.account}-open"})
        assert status == 201, status

    def call(self, method: str, path: str, body=None) -> tuple[int, bytes]:
        data = None if body is None else orjson.dumps(body)
        self.conn.request(method, path, body=data, headers={"content-type": "application/json"})
        response = self.conn.getresponse()
        return response.status, response.read()

    def health(self) -> int:
        return self.call("GET", "/v1/health")[0]

    def draw(self) -> int:
        self.draws += 1
        return self.call("POST", f"/v1/accounts/{self.account}/draws", {
            "amount": 1, "request_id": f"{self.account}-{self.draws}"})[0]


def latencies_ms(request, count: int) -> list[float]:
    took = []
    for _ in range(count):
        started_s = time.perf_counter()
        status = request()
        took.append((time.perf_counter() - started_s) * 1e3)
        assert status in (200, 201), status
        time.sleep(PACE_S)
    return took


def measure(client: Client, count: int) -> dict[str, list[float]]:
    return {"GET /v1/health": latencies_ms(client.health, count),
            "POST draws": latencies_ms(client.draw, count)}


# -- the run ---------------------------------------------------------------------------------------
def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def report(rows: list[tuple[str, str, list[float]]]) -> None:
    print("| slow clients | request | n | p50 ms | p99 ms | max ms |")
    print("|---|---|---:|---:|---:|---:|")
    for condition, request, values in rows:
        print(f"| {condition} | {request} | {len(values)} | {statistics.median(values):.2f} "
              f"| {percentile(values, 0.99):.2f} | {max(values):.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=500, help="slow clients (default 500)")
    parser.add_argument("--requests", type=int, default=200,
                        help="measured requests of each kind per condition (default 200)")
    args = parser.parse_args()
    # Paced requests must end before the server's body limit (10 s) cuts the slow clients.
    assert SETTLE_S + 2 * args.requests * PACE_S < 8.0, "fewer --requests, or they would be cut"
    with tempfile.TemporaryDirectory() as workdir:
        served = serve_process.spawn(Path(workdir), "--ledger", "memory://")
        try:
            client = Client(served.url)
            rows = [("none", name, values)
                    for name, values in measure(client, args.requests).items()]
            slow = SlowClients(served.url, args.slow)
            time.sleep(SETTLE_S)
            trickling = measure(client, args.requests)
            still_open = slow.stop()
            rows += [(f"{args.slow} trickling 1 B/s", name, values)
                     for name, values in trickling.items()]
        finally:
            code = served.stop()
    report(rows)
    worst_ms = max(max(values) for values in trickling.values())
    print(f"\nslow connections still open at the end: {still_open} of {args.slow}; "
          f"serve exit {code}")
    met = worst_ms <= TARGET_MAX_MS and still_open == args.slow and code == 0
    print(f"target: every answer within {TARGET_MAX_MS:.0f} ms while they trickle: "
          f"{'met' if met else 'NOT met'} (worst {worst_ms:.2f} ms)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
