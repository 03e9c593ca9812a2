"""What the fault proxy costs with no toxic on: round-trip times of small request/response
exchanges straight to an echo server and through a FaultProxy in front of it, side by side.
Not a test: run it by hand,

    .venv/bin/python benchmarks/bench_proxy.py [--pings 20000] [--connects 2000] [--size 100]

Two exchanges: ping-pongs over one kept connection, and a new connection per request (connect,
ping, close). The echo server runs in its own process so it does not share our GIL; the proxy
runs as the harness runs it, on its loop thread in this process, beside the blocking client.
Direct and proxied runs alternate in rounds, so drift in the machine hits both alike. Prints a
markdown table; exit code 0 when the proxy adds at most 1 ms at the median to both exchanges.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.faults.proxy import FaultProxy  # noqa: E402

TARGET_ADDED_MEDIAN_MS = 1.0
ROUNDS = 4
WARMUP_EXCHANGES = 200
START_WAIT_S = 10.0
RECV_TIMEOUT_S = 5.0


# -- the echo server, in a child process -----------------------------------------------------------
class Echo(asyncio.Protocol):
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def serve_echo(port_pipe) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Echo, "127.0.0.1", 0)
        port_pipe.send(server.sockets[0].getsockname()[1])
        await asyncio.Event().wait()  # until the parent terminates us

    asyncio.run(main())


def start_echo() -> tuple[multiprocessing.Process, int]:
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    process = context.Process(target=serve_echo, args=(child_end,), daemon=True)
    process.start()
    if not parent_end.poll(START_WAIT_S):
        process.terminate()
        raise SystemExit(f"echo server did not start in {START_WAIT_S:g} s")
    return process, parent_end.recv()


# -- the client ------------------------------------------------------------------------------------
def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=RECV_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def exchange(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(payload)
    got = 0
    for _ in range(len(payload)):  # each recv returns at least one byte
        part = sock.recv(len(payload) - got)
        if not part:
            raise SystemExit("echo connection closed mid-exchange")
        got += len(part)
        if got == len(payload):
            return


def ping_pongs_ms(port: int, count: int, payload: bytes) -> list[float]:
    """Round trips over one connection."""
    rtts_ms = []
    with connect(port) as sock:
        for _ in range(WARMUP_EXCHANGES):
            exchange(sock, payload)
        for _ in range(count):
            start_ns = time.perf_counter_ns()
            exchange(sock, payload)
            rtts_ms.append((time.perf_counter_ns() - start_ns) / 1e6)
    return rtts_ms


def connects_ms(port: int, count: int, payload: bytes) -> list[float]:
    """Connect, one round trip, close: each timed whole."""
    rtts_ms = []
    for _ in range(count):
        start_ns = time.perf_counter_ns()
        with connect(port) as sock:
            exchange(sock, payload)
        rtts_ms.append((time.perf_counter_ns() - start_ns) / 1e6)
    return rtts_ms


def measure(measure_fn, ports: dict[str, int], count: int, payload: bytes) -> dict[str, list]:
    samples: dict[str, list[float]] = {path: [] for path in ports}
    for _ in range(ROUNDS):
        for path, port in ports.items():
            samples[path] += measure_fn(port, count // ROUNDS, payload)
    return samples


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


# -- the report ------------------------------------------------------------------------------------
def report(results: dict[str, dict[str, list[float]]]) -> bool:
    print("| exchange | path | n | median ms | p99 ms | added median ms |")
    print("|---|---|---:|---:|---:|---:|")
    met = True
    for name, samples in results.items():
        direct_ms = statistics.median(samples["direct"])
        for path, values in samples.items():
            median_ms = statistics.median(values)
            added = "" if path == "direct" else f"{median_ms - direct_ms:+.3f}"
            print(f"| {name} | {path} | {len(values)} | {median_ms:.3f} | {p99(values):.3f} "
                  f"| {added} |")
        met &= statistics.median(samples["proxy"]) - direct_ms <= TARGET_ADDED_MEDIAN_MS
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pings", type=int, default=20_000)
    parser.add_argument("--connects", type=int, default=2_000)
    parser.add_argument("--size", type=int, default=100, help="bytes per request")
    args = parser.parse_args()
    payload = b"x" * args.size
    echo, echo_port = start_echo()
    proxy = FaultProxy("127.0.0.1", 0, "127.0.0.1", echo_port, name="bench")
    started_s = time.monotonic()
    try:
        ports = {"direct": echo_port, "proxy": proxy.start()}
        results = {
            f"ping-pong {args.size} B, one connection": measure(ping_pongs_ms, ports,
                                                               args.pings, payload),
            f"connect + ping {args.size} B + close": measure(connects_ms, ports,
                                                            args.connects, payload),
        }
    finally:
        proxy.stop()
        echo.terminate()
        echo.join(START_WAIT_S)
    met = report(results)
    print(f"\nproxied connections: {proxy.connections_total}, failed: "
          f"{proxy.connections_failed}; took {time.monotonic() - started_s:.1f} s; target: "
          f"at most +{TARGET_ADDED_MEDIAN_MS:g} ms at the median: {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
