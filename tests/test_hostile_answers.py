"""A target that answers hugely or forever is cut off within seconds at bounded memory, and the
cut-off answer is judged: a contract violation, or exit 2 when it is the ledger itself."""

from __future__ import annotations

import resource
import socket
import threading
import time

import pytest

from harness.client import Recorder
from harness.history import new_history
from harness.http_options import HttpOptions
from harness.targets import HttpTarget

pytestmark = pytest.mark.timeout(60)


def _endless_server(trickle: bool = False) -> tuple[str, threading.Event]:
    """Answers every request 200 with a JSON body that never ends (fast, or a byte at a time)."""
    stop = threading.Event()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)

    def serve_one(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                         b"transfer-encoding: chunked\r\n\r\n")
            chunk = b"[" + b"1," * 32_000
            try:
                while not stop.is_set():
                    piece = chunk[:1] if trickle else chunk
                    conn.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                    if trickle:
                        time.sleep(0.2)
            except OSError:
                pass  # the harness hung up: what it should do

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            threading.Thread(target=serve_one, args=(conn,), daemon=True).start()
        listener.close()

    threading.Thread(target=accept, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", stop


def test_an_endless_answer_is_cut_off_quickly_at_bounded_memory():
    url, stop = _endless_server()
    try:
        target = HttpTarget(url, http=HttpOptions(timeout_s=2.0))
        before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        reply = target.request("GET", "/v1/accounts/a1/display")
        took_s = time.monotonic() - started
        grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kib) / 1024
    finally:
        stop.set()
    assert reply.status is None and reply.error.startswith("contract: the answer is over")
    assert took_s < 10 and grown_mib < 100, (took_s, grown_mib)


def test_a_trickled_answer_is_cut_off_by_the_time_bound():
    url, stop = _endless_server(trickle=True)
    try:
        target = HttpTarget(url, http=HttpOptions(timeout_s=1.0))
        started = time.monotonic()
        reply = target.request("GET", "/v1/accounts/a1/display")
        took_s = time.monotonic() - started
    finally:
        stop.set()
    assert reply.status is None and reply.error.startswith("timeout:"), reply
    assert took_s < 6


def test_a_cut_off_display_is_a_contract_violation_and_a_cut_off_ledger_is_unjudgeable():
    from harness.convergence import fetch_ledger
    from harness.errors import TargetError

    url, stop = _endless_server()
    try:
        target = HttpTarget(url, http=HttpOptions(timeout_s=2.0))
        recorder = Recorder(target, new_history(target.name, False, 1000))
        op = recorder.display(1, "a1")
        assert op.outcome == "info" and op.error.startswith("contract:")
        with pytest.raises(TargetError, match="ledger"):
            fetch_ledger(recorder)
    finally:
        stop.set()


def test_waiting_for_a_free_connection_is_bounded():
    """Every connection of the pool taken and never given back: a request is refused after the
    bound, as a timeout, instead of waiting forever."""
    url, stop = _endless_server()
    try:
        target = HttpTarget(url, pool_size=1, http=HttpOptions(timeout_s=0.5))
        pool = target.pool.connection_from_url(url)
        taken = [pool._get_conn() for _ in range(2)]  # the pool's two connections (2 x 1)
        started = time.monotonic()
        reply = target.request("GET", "/v1/accounts/a1/display")
        took_s = time.monotonic() - started
    finally:
        stop.set()
    assert taken and reply.status is None and reply.error.startswith("timeout: no free"), reply
    assert target.pool_wait_s <= took_s < target.pool_wait_s + 5
