"""The HTTP edge of the reference service: a raw ASGI application around `LimitService.call`.

No web framework: routing, validation and answers live in the sans-IO core, so this edge and the
embedded target run the very same code. What this module adds is bytes <-> JSON, the body size
and time limits, the 500 safety net, and the background task that moves events to the read model
in real time, and the await point of every write: its call to the risk engine is a real
`asyncio.sleep` of a seeded 0 to 2 ms, so requests for one account sent at once truly interleave
on the event loop. Everything runs on the event loop thread and the core itself never awaits
(it hands a write back at its await point), so it needs no locks: a write that awaited checks
again, then commits.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from urllib.parse import parse_qs, unquote

import orjson

from ..contract import BODY_BYTES_MAX, BadRequest, error_body
from .core import Awaiting
from .routes import route

# The sync task wakes when the core says it has work, but never sleeps so long that a just
# published event waits noticeably, nor so short that an idle service burns a core.
SYNC_SLEEP_MIN_MS = 1
SYNC_SLEEP_MAX_MS = 5
SYNC_STOP_WAIT_S = 2.0
ERROR_LOG_EVERY_S = 1.0  # a failing sync tick would otherwise log hundreds of lines a second
# A body trickled a byte at a time would hold its connection and task for ever; past this the
# request is answered 408 and its connection closed. The server bounds the head (server.py).
BODY_READ_TIMEOUT_S = 10.0
# The risk engine's answer time: long enough that a second request for the account sent at the
# same moment arrives meanwhile, short enough to cost little throughput (a connection waits, the
# loop does not). Seeded from the service's seed, so the same requests in the same order wait
# the same.
RISK_ENGINE_MS_MAX = 2.0

_JSON_HEADERS = [(b"content-type", b"application/json")]
_CLOSE_HEADERS = [(b"connection", b"close")]  # the rest of the body may still be on its way
_TOO_LARGE = 413, error_body("too_large", f"the request body exceeds {BODY_BYTES_MAX} bytes")


class _Disconnected(Exception):
    """The client went away before its request body arrived: there is no one to answer."""


def make_app(service, clock=None, *, body_read_timeout_s: float = BODY_READ_TIMEOUT_S):
    """The ASGI callable serving `service`; `clock` (default: the service's) paces the sync task;
    a request body must arrive within `body_read_timeout_s` of its headers."""
    assert body_read_timeout_s > 0, body_read_timeout_s
    clock = service.clock if clock is None else clock
    timed_out = 408, {"error": "request_timeout",
                      "detail": f"the request body did not arrive within {body_read_timeout_s:g} s"}
    risk_engine = random.Random(service.config.seed)
    # A store that groups commits (PostgreSQL under `serve`) says what is not durable yet.
    pending = getattr(service.store, "pending", None)

    def await_s() -> float:
        return risk_engine.random() * RISK_ENGINE_MS_MAX / 1000

    async def app(scope, receive, send):
        kind = scope["type"]
        if kind == "http":
            await _http(service, scope, receive, send, body_read_timeout_s, timed_out, await_s,
                        pending)
        elif kind == "lifespan":
            await _lifespan(service, clock, receive, send)
        # Anything else (websocket) is not in the contract; returning makes the server refuse it.

    return app


# -- requests ------------------------------------------------------------------------------------
async def _http(service, scope, receive, send, body_read_timeout_s: float, timed_out,
                await_s, pending=None) -> None:
    try:
        if _declares_body(scope["headers"]):
            raw = await _read_body_within(scope, receive, body_read_timeout_s)
        else:  # the request ended with its headers: nothing to wait for, no timer to pay for
            raw = await _read_body(scope, receive)
    except _Disconnected:
        return
    except TimeoutError:
        await _respond(send, *timed_out, headers=_CLOSE_HEADERS)
        return
    answer = _TOO_LARGE if raw is None else _answer(service, scope, raw)
    if type(answer) is Awaiting:
        await asyncio.sleep(await_s())  # the risk engine: other requests run meanwhile
        answer = _resumed(service, scope, answer)
    if pending is not None:
        # No answer leaves before every commit made before it was computed is durable: a
        # write's own, and those whose effects a read may show (group_commit.py).
        durable = pending()
        if durable is not None:
            await durable
    await _respond(send, *answer)


def _answer(service, scope, raw: bytes):
    """(status, body) for one request, or the write awaiting at its await point; synchronous up
    to there, so no other request interleaves with this part."""
    method, path = scope["method"], _path(scope)
    try:
        try:
            found = route(method, path)  # once per request: the core dispatches on it
        except BadRequest as exc:  # a known route with a malformed id in its path
            return 400, error_body("bad_request", str(exc))
        parsed = None
        if method == "POST":
            try:
                parsed = _parse_json(raw)
            except BadRequest as exc:
                # An unknown route stays a 404 whatever its body; the core answers that.
                if found[0] is not None:
                    return 400, error_body("bad_request", str(exc))
        return service.begin(found, method, path, parsed, _parse_query(scope["query_string"]))
    except Exception as exc:  # the server must outlive a bug in one request
        return _internal_error(method, path, exc)


def _resumed(service, scope, waiting: Awaiting):
    """(status, body) of a write after its await point; synchronous to its commit."""
    try:
        return service.resume(waiting)
    except Exception as exc:  # the server must outlive a bug in one request
        return _internal_error(scope["method"], _path(scope), exc)


def _internal_error(method: str, path: str, exc: Exception):
    detail = _one_line(f"{type(exc).__name__}: {exc}")
    _log(f"internal error answering {method} {path}: {detail}")
    return 500, {"error": "internal", "detail": detail}


def _path(scope) -> str:
    """The request path, decoded, except that an encoded slash stays `%2F`: the server decodes
    `a%2Fb` into `a/b`, which would split one bad id into two segments and make a 404 of what
    the contract answers 400 (an id holds no slash)."""
    raw = scope.get("raw_path")
    if not raw or b"%2f" not in raw.lower():
        return scope["path"]
    text = raw.decode("utf-8", "replace")
    return unquote(text.replace("%2f", "%252F").replace("%2F", "%252F"))


async def _read_body_within(scope, receive, timeout_s: float) -> bytes | None:
    """`_read_body`, or TimeoutError once `timeout_s` has passed. A bare timer that cancels this
    task: wait_for would start a task per write, asyncio.timeout costs three times as much."""
    task = asyncio.current_task()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    timer = asyncio.get_running_loop().call_later(timeout_s, expire)
    try:
        return await _read_body(scope, receive)
    except asyncio.CancelledError:
        if not expired:
            raise  # a cancellation of our own (shutdown): not ours to swallow
        task.uncancel()
        raise TimeoutError from None
    finally:
        timer.cancel()


async def _read_body(scope, receive) -> bytes | None:
    """The whole body, or None when it is over the limit (by its declared length or by the bytes
    actually streamed, since chunked bodies declare nothing)."""
    declared = _content_length(scope["headers"])
    if declared is not None and declared > BODY_BYTES_MAX:
        return None
    message = await receive()
    if message["type"] == "http.disconnect":
        raise _Disconnected
    body = message.get("body", b"")
    if not message.get("more_body", False):  # the usual case: one message holds it all
        return body if len(body) <= BODY_BYTES_MAX else None
    chunks, size = [body], len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > BODY_BYTES_MAX:
            return None  # the server discards the rest once we have answered
        chunks.append(chunk)
    return b"".join(chunks)


def _declares_body(headers) -> bool:
    """Whether more than the headers may be on its way (HTTP/1.1: a content-length other than
    0, or a transfer-encoding)."""
    for name, value in headers:
        if name == b"content-length":
            return value != b"0"
        if name == b"transfer-encoding":
            return True
    return False


def _content_length(headers) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser rejects these before us; the byte count still holds
    return None


def _parse_json(raw: bytes):
    if not raw:
        raise BadRequest("empty body: this request needs a JSON object")
    try:
        return orjson.loads(raw)  # rejects non-UTF-8 too
    except orjson.JSONDecodeError as exc:
        raise BadRequest(_one_line(f"the body is not valid UTF-8 JSON: {exc}")) from None


def _parse_query(query_string: bytes) -> dict[str, str]:
    if not query_string:
        return {}
    pairs = parse_qs(query_string.decode("latin-1"), keep_blank_values=True)
    return {name: values[-1] for name, values in pairs.items()}


async def _respond(send, status: int, body, headers=()) -> None:
    if body is None:
        await send({"type": "http.response.start", "status": status, "headers": list(headers)})
        await send({"type": "http.response.body", "body": b""})
        return
    payload = orjson.dumps(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON_HEADERS, (b"content-length", b"%d" % len(payload)), *headers]})
    await send({"type": "http.response.body", "body": payload})


# -- lifespan and the sync task ------------------------------------------------------------------
async def _lifespan(service, clock, receive, send) -> None:
    stop = asyncio.Event()
    task = None
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            task = asyncio.get_running_loop().create_task(_sync_loop(service, clock, stop))
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            stop.set()
            if task is not None:
                await _stop_task(task)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _stop_task(task: asyncio.Task) -> None:
    try:
        await asyncio.wait_for(task, SYNC_STOP_WAIT_S)
    except asyncio.TimeoutError:
        _log("the sync task did not stop in time; cancelled")


async def _sync_loop(service, clock, stop: asyncio.Event) -> None:
    """Deliver due events and run the periodic jobs, in real time, until shutdown."""
    last_log_s = float("-inf")
    while not stop.is_set():
        try:
            service.advance(clock.now_ms())
            wake_ms = service.next_wakeup_ms()
        except Exception as exc:  # keep serving writes even if the read model path is broken
            if time.monotonic() - last_log_s >= ERROR_LOG_EVERY_S:
                last_log_s = time.monotonic()
                _log(f"internal error in the sync task: {_one_line(f'{type(exc).__name__}: {exc}')}")
            wake_ms = clock.now_ms() + SYNC_SLEEP_MAX_MS
        sleep_ms = min(max(wake_ms - clock.now_ms(), SYNC_SLEEP_MIN_MS), SYNC_SLEEP_MAX_MS)
        await asyncio.sleep(sleep_ms / 1000)


# -- helpers -------------------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(text.split())


def _log(line: str) -> None:
    print(f"limit-harness serve: {line}", file=sys.stderr, flush=True)
