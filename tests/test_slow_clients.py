"""Slow and idle clients over real sockets: while hundreds of connections trickle their bodies a
byte a second, another client is still answered at once; and every way of holding a connection
without finishing a request ends, within its limit, in a 408, a 431, a 503 or a close, leaving the
server serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import statistics
import time
import uuid
from urllib.parse import urlsplit

import orjson
import pytest

from harness.service.process import spawn
from harness.service.server import Limits, raise_open_files_limit, start_in_thread

pytestmark = pytest.mark.http

SLOW_CLIENTS = 500
TRICKLE_S = 3  # each slow client sends one body byte a second for this long
SLOW_BODY_BYTES = 1_000  # declared, never all sent
PROBES = 20  # health checks and draws timed while the slow clients trickle
LATENCY_TARGET_S = 0.1
LATENCY_BOUND_S = 1.0  # asserted: the target, with room for a busy 2-core CI box
SLACK_S = 2.0  # a limit's effect may come this much late on a busy box
CONNECT_BATCH = 100

SHORT = Limits(head_read_timeout_s=1.0, body_read_timeout_s=1.0, keep_alive_timeout_s=0.5)


# -- a minimal HTTP/1.1 client on asyncio streams ---------------------------------------------
Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def connect(address: tuple[str, int]) -> Conn:
    return await asyncio.open_connection(*address)


def head(method: str, path: str, body_bytes: int = 0, extra: bytes = b"") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
            f"content-length: {body_bytes}\r\n").encode() + extra + b"\r\n"


async def exchange(conn: Conn, method: str, path: str, body=None) -> tuple[int, dict | None]:
    data = b"" if body is None else orjson.dumps(body)
    conn[1].write(head(method, path, len(data)) + data)
    await conn[1].drain()
    return await read_response(conn[0])


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict | None]:
    raw_head = await reader.readuntil(b"\r\n\r\n")
    status = int(raw_head.split(b" ", 2)[1])
    length = re.search(rb"(?im)^content-length: *(\d+)", raw_head)
    body = await reader.readexactly(int(length.group(1))) if length else b""
    parsed = orjson.loads(body) if body.startswith(b"{") else None
    return status, parsed


async def outcome(reader: asyncio.StreamReader, wait_s: float) -> tuple[int | None, float]:
    """(status answered or None, seconds until the server closed the connection)."""
    started_s = time.monotonic()
    status = None
    async with asyncio.timeout(wait_s):
        try:
            status, _ = await read_response(reader)
            while await reader.read(65_536):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # closed (a reset when our unread bytes were still in its buffer)
    return status, time.monotonic() - started_s


async def healthy(address: tuple[str, int]) -> bool:
    reader, writer = await connect(address)
    try:
        return await exchange((reader, writer), "GET", "/v1/health") == (200, {"status": "ok"})
    finally:
        writer.close()


def address_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


@pytest.fixture(scope="module")
def short_limits():
    """A server in this process with short limits, so each limit passes within a second."""
    url, stop = start_in_thread(limits=SHORT)
    yield address_of(url)
    stop()


# -- many slow clients, one fast one ------------------------------------------------------------
async def open_slow_client(address, path: str) -> Conn:
    reader, writer = await connect(address)
    writer.write(head("POST", path, SLOW_BODY_BYTES))
    await writer.drain()
    return reader, writer


async def trickle(slow: list[Conn], seconds: int) -> None:
    for _ in range(seconds):
        await asyncio.sleep(1.0)
        for _, writer in slow:
            writer.write(b" ")  # JSON whitespace: the body stays valid, and never ends


async def timed(conn: Conn, method: str, path: str, body=None) -> float:
    started_s = time.perf_counter()
    status, answer = await exchange(conn, method, path, body)
    elapsed_s = time.perf_counter() - started_s
    assert status in (200, 201), (status, answer)
    return elapsed_s


async def probe_while_trickling(address) -> tuple[list[float], list[float], int]:
    fast = await connect(address)
    account = f"slow-{uuid.uuid4().hex[:10]}"
    opened = await exchange(fast, "POST", "/v1/accounts", {
        "account_id": account, "product": "huabei", "credit_line": 10**12,
        "request_id": f"{account}-open"})
    assert opened[0] == 201, opened
    slow = []
    for _ in range(SLOW_CLIENTS // CONNECT_BATCH):
        slow += await asyncio.gather(*(open_slow_client(address, f"/v1/accounts/{account}/draws")
                                       for _ in range(CONNECT_BATCH)))
    trickling = asyncio.create_task(trickle(slow, TRICKLE_S))
    health_s, draw_s = [], []
    await asyncio.sleep(1.2)  # the first trickled bytes are in
    for i in range(PROBES):
        health_s.append(await timed(fast, "GET", "/v1/health"))
        draw_s.append(await timed(fast, "POST", f"/v1/accounts/{account}/draws",
                                  {"amount": 1, "request_id": f"{account}-{i}"}))
        await asyncio.sleep((TRICKLE_S - 1.5) / PROBES)
    await trickling
    still_open = sum(not reader.at_eof() for reader, _ in slow)
    for _, writer in slow + [fast]:
        writer.close()
    return health_s, draw_s, still_open


@pytest.mark.timeout(90)
def test_a_client_is_answered_at_once_while_500_others_trickle_their_bodies(tmp_path):
    raise_open_files_limit()  # 500 sockets on this side too
    served = spawn(tmp_path, "--ledger", "memory://")
    try:
        address = address_of(served.url)
        health_s, draw_s, still_open = asyncio.run(probe_while_trickling(address))
        print(f"\n{SLOW_CLIENTS} slow clients trickling: health p50 "
              f"{statistics.median(health_s) * 1e3:.1f} ms max {max(health_s) * 1e3:.1f} ms; "
              f"draw p50 {statistics.median(draw_s) * 1e3:.1f} ms max "
              f"{max(draw_s) * 1e3:.1f} ms (target {LATENCY_TARGET_S * 1e3:.0f} ms)")
        assert still_open == SLOW_CLIENTS, "a slow client was cut before its limit"
        assert max(health_s) < LATENCY_BOUND_S and max(draw_s) < LATENCY_BOUND_S
        assert asyncio.run(healthy(address))
    finally:
        code = served.stop()
    assert code == 0, served.stderr()


# -- each limit ---------------------------------------------------------------------------------
async def trickled_body_outcome(address) -> tuple[int | None, float]:
    reader, writer = await connect(address)
    writer.write(head("POST", "/v1/accounts", 100))
    await writer.drain()
    waiting = asyncio.create_task(outcome(reader, SHORT.body_read_timeout_s + SLACK_S))
    while not waiting.done():
        writer.write(b" ")
        await asyncio.sleep(0.2)
    writer.close()
    return await waiting


@pytest.mark.timeout(30)
def test_a_body_trickled_past_its_time_limit_is_cut_with_408(short_limits):
    status, closed_after_s = asyncio.run(trickled_body_outcome(short_limits))
    print(f"\nbody trickle: {status} and closed after {closed_after_s:.2f} s")
    assert status == 408
    assert SHORT.body_read_timeout_s * 0.9 < closed_after_s < SHORT.body_read_timeout_s + SLACK_S
    assert asyncio.run(healthy(short_limits))


async def trickled_head_outcome(address) -> tuple[int | None, float]:
    reader, writer = await connect(address)
    writer.write(b"GET /v1/health HTTP/1.1\r\n")
    waiting = asyncio.create_task(outcome(reader, SHORT.head_read_timeout_s + SLACK_S))
    while not waiting.done():
        writer.write(b"x-slow: 1\r\n")  # a complete header line every 0.2 s, never the end
        await asyncio.sleep(0.2)
    writer.close()
    return await waiting


@pytest.mark.timeout(30)
def test_headers_trickled_past_their_time_limit_are_cut_with_408(short_limits):
    status, closed_after_s = asyncio.run(trickled_head_outcome(short_limits))
    assert status == 408
    assert closed_after_s < SHORT.head_read_timeout_s + SLACK_S
    assert asyncio.run(healthy(short_limits))


async def idle_outcome(address, request: bytes) -> tuple[int | None, float]:
    reader, writer = await connect(address)
    writer.write(request)
    try:
        if request:
            assert (await read_response(reader))[0] == 200
        return await outcome(reader, SHORT.head_read_timeout_s + SLACK_S)
    finally:
        writer.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("request_bytes, limit_s", [
    (b"", SHORT.head_read_timeout_s),  # connected, never a byte
    (head("GET", "/v1/health"), SHORT.keep_alive_timeout_s),  # one answer, then silence
], ids=["silent", "keep-alive"])
def test_an_idle_connection_is_closed_after_its_limit(short_limits, request_bytes, limit_s):
    status, closed_after_s = asyncio.run(idle_outcome(short_limits, request_bytes))
    assert status is None
    assert limit_s * 0.9 < closed_after_s < limit_s + SLACK_S


async def oversized_head_outcome(address, pieces: int, finished: bool) -> int | None:
    reader, writer = await connect(address)
    # Just over the limit when whole; unfinished, twice it (the chunk that began the head is not
    # counted: it may hold the end of the previous request).
    value = b"v" * (SHORT.header_bytes_max + 1 if finished else 2 * SHORT.header_bytes_max)
    line = b"GET /v1/health HTTP/1.1\r\nx-big: " + value + (b"\r\n\r\n" if finished else b"")
    step = len(line) // pieces + 1
    waiting = asyncio.create_task(outcome(reader, SLACK_S))
    with contextlib.suppress(ConnectionError):  # refused while we were still sending
        for start in range(0, len(line), step):
            if waiting.done():
                break
            writer.write(line[start:start + step])
            await writer.drain()
            await asyncio.sleep(0.01 if pieces > 1 else 0)  # separate chunks on the server's side
    try:
        return (await waiting)[0]
    finally:
        writer.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("pieces, finished", [(1, True), (40, False)],
                         ids=["whole-head-at-once", "trickled-never-ending-header"])
def test_oversized_headers_are_refused_with_431(short_limits, pieces, finished):
    # Unfinished, the header is caught by the bytes received, before the parser would ever
    # hand it over: nothing but the count stands between it and the server's memory.
    assert asyncio.run(oversized_head_outcome(short_limits, pieces, finished)) == 431
    assert asyncio.run(healthy(short_limits))


async def headers_at_the_limit_status(address) -> int:
    filler = SHORT.header_bytes_max - 200  # the rest of the head stays well under 200 bytes
    conn = await connect(address)
    try:
        conn[1].write(head("GET", "/v1/health", extra=b"x-big: " + b"v" * filler + b"\r\n"))
        return (await read_response(conn[0]))[0]
    finally:
        conn[1].close()


@pytest.mark.timeout(30)
def test_headers_just_under_the_limit_are_served(short_limits):
    assert asyncio.run(headers_at_the_limit_status(short_limits)) == 200


async def past_the_cap_status(address, connections_max: int) -> tuple[int, bool]:
    held = [await connect(address) for _ in range(connections_max)]
    # The server holds as many connections as it allows once it has accepted them all; until then
    # a request may still pass, so ask until the cap shows (or SLACK_S is up).
    deadline_s = time.monotonic() + SLACK_S
    while True:
        status, _ = await exchange(held[0], "GET", "/v1/health")
        if status != 200 or time.monotonic() > deadline_s:
            break
        await asyncio.sleep(0.05)
    for _, writer in held:
        writer.close()
    await asyncio.sleep(0.2)  # the server notices the closes
    return status, await healthy(address)


@pytest.mark.timeout(30)
def test_past_the_connection_cap_a_request_is_answered_503():
    limits = Limits(connections_max=16)
    url, stop = start_in_thread(limits=limits)
    try:
        status, then_healthy = asyncio.run(past_the_cap_status(address_of(url),
                                                               limits.connections_max))
    finally:
        stop()
    assert status == 503
    assert then_healthy
