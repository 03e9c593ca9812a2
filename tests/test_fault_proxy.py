"""The fault proxy against real sockets on 127.0.0.1: a threaded echo server upstream, blocking
client sockets, every wait bounded."""

from __future__ import annotations

import random
import socket
import socketserver
import statistics
import threading
import time

import pytest

from harness.faults import FaultRefused
from harness.faults.proxy import FaultProxy, NetworkProvider, make_toxic

pytestmark = pytest.mark.timeout(30)

RECV_TIMEOUT_S = 5.0
TAIL_BYTES = 4096


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        for _ in range(10**7):  # ends at EOF or a reset
            try:
                data = self.request.recv(65536)
            except OSError:
                return
            if not data:
                return
            self.server.note(data)
            try:
                self.request.sendall(data)
            except OSError:
                return


class EchoServer(socketserver.ThreadingTCPServer):
    """Echoes every byte, and keeps the last TAIL_BYTES it received (to see what got through)."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), EchoHandler)
        self.port = self.server_address[1]
        self.tail = bytearray()
        self.lock = threading.Lock()

    def note(self, data: bytes) -> None:
        with self.lock:
            self.tail = (self.tail + data)[-TAIL_BYTES:]

    def handle_error(self, request, client_address) -> None:
        pass  # resets are what several tests do on purpose


@pytest.fixture
def echo():
    server = EchoServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def proxy(echo):
    proxy = FaultProxy("127.0.0.1", 0, "127.0.0.1", echo.port, name="test")
    proxy.start()
    yield proxy
    proxy.stop()


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=RECV_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    parts, got = [], 0
    for _ in range(size + 1):  # each recv returns at least one byte or ends the loop
        if got == size:
            break
        part = sock.recv(min(65536, size - got))
        if not part:
            raise EOFError(f"EOF after {got} of {size} bytes")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def ping(sock: socket.socket, payload: bytes = b"ping" * 25) -> float:
    """One round trip; its time in seconds."""
    start = time.perf_counter()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return time.perf_counter() - start


def median_rtt_s(sock: socket.socket, count: int = 5) -> float:
    return statistics.median(ping(sock) for _ in range(count))


def wait_until(predicate, timeout_s: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / 0.01) + 1):
        if predicate():
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return predicate()


def refused_at_once(port: int) -> bool:
    """True when a new connection is reset or closed by the proxy. A timeout socket connects
    without blocking, so an RST may already be there when connect() looks: it can show in
    connect as well as in the first recv."""
    try:
        with connect(port) as sock:
            return closed_by_peer(sock)
    except ConnectionResetError:
        return True


def closed_by_peer(sock: socket.socket) -> bool:
    """True when the socket has seen EOF or a reset (not a timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# -- passthrough -----------------------------------------------------------------------------------
def test_passthrough_round_trips_bytes_unchanged(proxy):
    with connect(proxy.port) as sock:
        ping(sock, b"hello")
        payload = random.Random(1).randbytes(5 * 1024 * 1024)
        sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
        sender.start()
        echoed = recv_exactly(sock, len(payload))
        sender.join(RECV_TIMEOUT_S)
        assert echoed == payload  # same bytes, same order
    assert proxy.connections_total == 1
    assert wait_until(lambda: proxy.connections_active == 0)


def test_connections_are_counted(proxy):
    socks = [connect(proxy.port) for _ in range(3)]
    for sock in socks:
        ping(sock)
    assert proxy.connections_total == 3 and proxy.connections_active == 3
    for sock in socks:
        sock.close()
    assert wait_until(lambda: proxy.connections_active == 0)


def test_unreachable_upstream_is_told_to_the_client_at_once():
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        dead_port = free.getsockname()[1]  # bound but not listening: connections are refused
        with FaultProxy("127.0.0.1", 0, "127.0.0.1", dead_port, name="dead") as proxy:
            assert refused_at_once(proxy.port)
            assert wait_until(lambda: proxy.connections_failed == 1)


# -- latency ---------------------------------------------------------------------------------------
def test_latency_adds_latency_ms_per_direction(proxy):
    with connect(proxy.port) as sock:
        base_s = median_rtt_s(sock)
        proxy.add_toxic("down", "latency", "downstream", latency_ms=40)
        down_s = median_rtt_s(sock)
        assert 0.040 <= down_s < base_s + 0.040 + 0.100
        proxy.add_toxic("up", "latency", "upstream", latency_ms=30)
        both_s = median_rtt_s(sock)
        assert 0.070 <= both_s < base_s + 0.070 + 0.100


def test_jitter_is_seeded_and_bounded():
    def delays_ms(seed: int) -> list[float]:
        toxic = make_toxic("j", "latency", latency_ms=50, jitter_ms=20, rng=random.Random(seed))
        return [toxic.delay_s() * 1000 for _ in range(200)]

    assert delays_ms(7) == delays_ms(7)
    assert delays_ms(7) != delays_ms(8)
    assert all(30 <= d <= 70 for d in delays_ms(7))
    assert max(delays_ms(7)) - min(delays_ms(7)) > 20  # the jitter is really applied


def test_jitter_never_reorders_bytes(proxy):
    # Delays drawn from 0..40 ms for messages 1 ms apart: without the ordering rule, later
    # messages would often overtake earlier ones.
    proxy.add_toxic("jitter", "latency", "upstream", latency_ms=20, jitter_ms=20,
                    rng=random.Random(3))
    messages = [f"<{i:04d}>".encode() for i in range(150)]
    with connect(proxy.port) as sock:
        for message in messages:
            sock.sendall(message)
            time.sleep(0.001)
        assert recv_exactly(sock, sum(map(len, messages))) == b"".join(messages)


def test_jittered_round_trips_stay_within_latency_plus_minus_jitter(proxy):
    proxy.add_toxic("jitter", "latency", "downstream", latency_ms=40, jitter_ms=20,
                    rng=random.Random(5))
    with connect(proxy.port) as sock:
        rtts_s = [ping(sock) for _ in range(8)]
    assert all(0.020 <= rtt_s < 0.060 + 0.100 for rtt_s in rtts_s)


# -- bandwidth -------------------------------------------------------------------------------------
def test_bandwidth_limits_throughput(proxy):
    size_bytes, rate_kbps = 256 * 1024, 2048
    expected_s = size_bytes * 8 / (rate_kbps * 1000)  # 1.02 s
    proxy.add_toxic("slow", "bandwidth", "upstream", rate_kbps=rate_kbps)
    payload = random.Random(2).randbytes(size_bytes)
    with connect(proxy.port) as sock:
        start = time.perf_counter()
        sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
        sender.start()
        assert recv_exactly(sock, size_bytes) == payload
        elapsed_s = time.perf_counter() - start
        sender.join(RECV_TIMEOUT_S)
    assert expected_s - 0.1 <= elapsed_s < expected_s * 3


# -- reset_peer ------------------------------------------------------------------------------------
def test_reset_peer_resets_existing_and_new_connections(proxy):
    with connect(proxy.port) as existing:
        ping(existing)
        proxy.add_toxic("rst", "reset_peer")
        with pytest.raises(ConnectionResetError):
            existing.recv(1)
        with pytest.raises(ConnectionResetError), connect(proxy.port) as new:
            new.recv(1)  # or connect() itself raises: see refused_at_once
    proxy.remove_toxic("rst")
    with connect(proxy.port) as sock:
        ping(sock)


def test_reset_peer_waits_timeout_ms(proxy):
    with connect(proxy.port) as sock:
        proxy.add_toxic("rst", "reset_peer", timeout_ms=300)
        start = time.perf_counter()
        ping(sock)  # still open before timeout_ms
        with pytest.raises(ConnectionResetError):
            sock.recv(1)
        assert 0.25 <= time.perf_counter() - start < 2.0


# -- timeout (black hole) --------------------------------------------------------------------------
def test_timeout_black_holes_until_removed_then_closes(proxy):
    with connect(proxy.port) as existing:
        ping(existing)
        proxy.add_toxic("hole", "timeout")
        with connect(proxy.port) as new:
            for sock in (existing, new):
                sock.settimeout(0.5)
                sock.sendall(b"lost")
                with pytest.raises(TimeoutError):
                    sock.recv(1)
                sock.settimeout(RECV_TIMEOUT_S)
            assert proxy.remove_toxic("hole")
            assert closed_by_peer(existing) and closed_by_peer(new)
    with connect(proxy.port) as sock:
        ping(sock)


def test_timeout_ms_closes_a_black_holed_connection(proxy):
    with connect(proxy.port) as sock:
        ping(sock)
        proxy.add_toxic("hole", "timeout", timeout_ms=300)
        start = time.perf_counter()
        sock.sendall(b"lost")
        assert closed_by_peer(sock)
        assert 0.25 <= time.perf_counter() - start < 2.0


# -- half_open -------------------------------------------------------------------------------------
def test_half_open_downstream_gives_eof_while_writes_still_reach_upstream(proxy, echo):
    with connect(proxy.port) as existing:
        ping(existing)
        proxy.add_toxic("half", "half_open", "downstream")
        assert existing.recv(1) == b""  # EOF, not a reset nor a timeout
        existing.sendall(b"after-eof-from-existing")
        assert wait_until(lambda: b"after-eof-from-existing" in echo.tail)
        with connect(proxy.port) as new:
            assert new.recv(1) == b""
            new.sendall(b"after-eof-from-new")
            assert wait_until(lambda: b"after-eof-from-new" in echo.tail)
        proxy.remove_toxic("half")
        assert closed_by_peer(existing)  # a stream it broke is closed when it goes
    with connect(proxy.port) as sock:
        ping(sock)


# -- removal, stop ---------------------------------------------------------------------------------
def test_removal_restores_passthrough(proxy):
    with connect(proxy.port) as sock:
        proxy.add_toxic("lag", "latency", latency_ms=100)
        proxy.add_toxic("slow", "bandwidth", rate_kbps=64)
        assert median_rtt_s(sock, 3) >= 0.200
        assert proxy.remove_toxic("lag") and proxy.remove_toxic("slow")
        assert not proxy.remove_toxic("lag")
        assert median_rtt_s(sock) < 0.050  # the same connection, untouched by the removal
    assert proxy.toxics() == []


def test_bad_toxics_are_refused_in_one_line(proxy):
    bad = [("x", "latency", {}), ("x", "latency", {"latency_ms": -1}),
           ("x", "latency", {"latency_ms": True}), ("x", "bandwidth", {"rate_kbps": 0}),
           ("x", "slicer", {}), ("x", "timeout", {"timeout_ms": 1, "colour": 2}),
           ("", "timeout", {})]
    for name, toxic_type, params in bad:
        with pytest.raises(ValueError) as info:
            proxy.add_toxic(name, toxic_type, **params)
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError):
        proxy.add_toxic("x", "latency", "sideways", latency_ms=1)
    proxy.add_toxic("x", "latency", latency_ms=1)
    with pytest.raises(ValueError, match="already"):
        proxy.add_toxic("x", "latency", latency_ms=1)


def test_stop_closes_everything_within_a_bound(echo):
    proxy = FaultProxy("127.0.0.1", 0, "127.0.0.1", echo.port, name="stopping")
    port = proxy.start()
    socks = [connect(port) for _ in range(5)]
    for sock in socks:
        ping(sock)
    proxy.add_toxic("hole", "timeout")  # a black-holed connection must not hold stop up
    proxy.add_toxic("lag", "latency", latency_ms=10_000)
    socks.append(connect(port))
    socks[-1].sendall(b"held")
    start = time.perf_counter()
    proxy.stop()
    assert time.perf_counter() - start < 2.0
    assert not proxy.running
    assert all(closed_by_peer(sock) for sock in socks)
    with pytest.raises(ConnectionRefusedError):
        connect(port)
    for sock in socks:
        sock.close()
    with pytest.raises(RuntimeError, match="not running"):
        proxy.add_toxic("late", "latency", latency_ms=1)
    assert proxy.start() == port  # a restarted proxy keeps its address
    with connect(port) as sock:
        ping(sock)
    proxy.stop()


def test_toxics_added_and_removed_from_another_thread_while_traffic_flows(proxy):
    errors: list[BaseException] = []
    done = threading.Event()
    exchanges = [0]

    def traffic() -> None:
        rng = random.Random(9)
        try:
            with connect(proxy.port) as sock:
                for _ in range(100_000):
                    if done.is_set():
                        return
                    ping(sock, rng.randbytes(rng.randint(1, 20_000)))
                    exchanges[0] += 1
        except BaseException as exc:  # reported to the test thread
            errors.append(exc)

    def churn() -> None:
        # At least 100 rounds, and on until the traffic has made its exchanges under the churn
        # (a fast machine ran the 100 rounds before the traffic had made 20).
        until_s = time.monotonic() + 10
        try:
            for i in range(100_000):
                if i >= 100 and (exchanges[0] > 40 or time.monotonic() > until_s):
                    return
                proxy.add_toxic(f"lag{i}", "latency", rng=random.Random(i), latency_ms=1,
                                jitter_ms=1)
                proxy.add_toxic(f"bw{i}", "bandwidth", "downstream", rate_kbps=100_000)
                proxy.remove_toxic(f"lag{i}")
                proxy.remove_toxic(f"bw{i}")
        except BaseException as exc:
            errors.append(exc)

    runners = [threading.Thread(target=traffic, daemon=True) for _ in range(2)]
    churner = threading.Thread(target=churn, daemon=True)
    for thread in runners + [churner]:
        thread.start()
    churner.join(15)
    done.set()
    for thread in runners:
        thread.join(RECV_TIMEOUT_S)
    assert not errors, errors[0]
    assert exchanges[0] > 20
    assert proxy.toxics() == []


# -- NetworkProvider -------------------------------------------------------------------------------
@pytest.fixture
def provider(echo):
    proxies = {name: FaultProxy("127.0.0.1", 0, "127.0.0.1", echo.port, name=name)
               for name in ("redis", "db")}
    provider = NetworkProvider(proxies, routes={"connection_reset": ["db"]}, seed=4,
                               kind_map={"delay_sync": ("latency", {"direction": "downstream"}),
                                         "pause_sync": ("timeout", {})})
    yield provider
    provider.close()
    assert not any(proxy.running for proxy in proxies.values())


def test_provider_latency_inject_and_remove(provider):
    redis, db = provider.proxies["redis"], provider.proxies["db"]
    assert set(provider.kinds()) >= {"network_latency", "network_partition",
                                     "connection_reset", "delay_sync"}
    fault = provider.inject({"kind": "network_latency", "latency_ms": 30, "jitter_ms": 5,
                             "proxy": "redis"})
    assert fault == {"fault_id": fault["fault_id"], "kind": "network_latency", "latency_ms": 30,
                     "jitter_ms": 5, "proxy": "redis", "provider": "network"}
    with connect(redis.port) as slow, connect(db.port) as fast:
        assert median_rtt_s(slow) >= 0.050  # 25..35 ms each way
        assert median_rtt_s(fast) < 0.025
        provider.remove(fault["fault_id"])
        assert median_rtt_s(slow) < 0.025
    with pytest.raises(FaultRefused):
        provider.remove(fault["fault_id"])


def test_provider_kind_map_and_routes(provider):
    redis, db = provider.proxies["redis"], provider.proxies["db"]
    fault = provider.inject({"kind": "delay_sync", "delay_ms": 40})
    assert fault["delay_ms"] == 40 and fault["provider"] == "network"
    for proxy in (redis, db):  # no route: every proxy
        (toxic,) = proxy.toxics()
        assert (toxic.toxic_type, toxic.direction, toxic.params["latency_ms"]) == \
            ("latency", "downstream", 40)
    provider.clear()
    assert redis.toxics() == db.toxics() == []
    with connect(redis.port) as on_redis, connect(db.port) as on_db:
        provider.inject({"kind": "connection_reset"})  # routed to db only
        with pytest.raises(ConnectionResetError):
            on_db.recv(1)
        ping(on_redis)


def test_provider_partition_then_clear(provider):
    redis = provider.proxies["redis"]
    with connect(redis.port) as sock:
        ping(sock)
        provider.inject({"kind": "network_partition"})
        provider.inject({"kind": "pause_sync", "proxy": "db"})
        sock.settimeout(0.5)
        sock.sendall(b"lost")
        with pytest.raises(TimeoutError):
            sock.recv(1)
        provider.clear()
    with connect(redis.port) as sock:
        ping(sock)
    assert redis.toxics() == []


def test_provider_refuses_in_one_line(provider):
    refused = [{"kind": "drop_events", "probability": 0.5},
               {"kind": "crash_restart"},
               {"kind": "network_latency"},
               {"kind": "network_latency", "latency_ms": -5},
               {"kind": "network_latency", "latency_ms": "50"},
               {"kind": "network_latency", "latency_ms": 5, "proxy": "kafka"},
               {"kind": "network_partition", "colour": "red"},
               {"kind": "delay_sync", "delay_ms": 5, "direction": "sideways"},
               {}]
    for fault in refused:
        with pytest.raises(FaultRefused) as info:
            provider.inject(fault)
        assert "\n" not in str(info.value)
    assert all(proxy.toxics() == [] for proxy in provider.proxies.values())
    with pytest.raises(ValueError):
        NetworkProvider(provider.proxies, routes={"network_latency": ["kafka"]})
