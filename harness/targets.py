"""Targets: anything that speaks CONTRACT.md. Three ways to reach one (DESIGN.md):

- `EmbeddedTarget`: the reference service in-process under a simulated clock (deterministic,
  no sockets, no sleeping);
- `HttpTarget`: a base URL, real time;
- `AdapterTarget`: a user's Python class with a `request(method, path, body, query)` method
  returning `(status, body)`, for services that do not speak the contract over HTTP.
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol
from urllib.parse import urlencode, urlsplit

import orjson
import urllib3

from .clock import RealClock, SimClock
from .errors import TargetError, UsageError
from .http_options import HttpOptions
from .secrets import redact, url_shown

WAIT_STEPS_MAX = 10_000_000  # a bound on the event loop of one simulated wait
AT_ONCE_MAX = 4  # requests one `request_at_once` sends together
RELEASE_WAIT_S = 5.0  # how long the threads of one `request_at_once` wait for each other
READ_CHUNK_BYTES = 64 * 1024
ANSWER_TIMEOUTS = 3  # a whole answer may take this many --timeout-s (each read has one)


@dataclass(slots=True)
class Reply:
    status: int | None  # None: no answer (timeout, reset, refused)
    body: Any  # parsed JSON, or None
    error: str | None = None  # why there is no usable answer


# (method, path, body) of one request that `request_at_once` sends.
Request = tuple[str, str, Any]
# Called with a request's position and its reply as soon as it is answered.
Answered = Callable[[int, Reply], None]
# Given how many steps could run next, which one does (a simulated interleaving's dice).
Choose = Callable[[int], int]


class Target(Protocol):
    name: str
    simulated: bool

    def request(self, method: str, path: str, body: Any = None,
                query: dict | None = None) -> Reply: ...

    def request_at_once(self, requests: list[Request], answered: Answered,
                        choose: Choose | None = None) -> None:
        """Send the requests together, as two clients of one user would, and call `answered`
        with each reply as it comes. `choose` picks a simulated target's interleaving."""
        ...

    def now_ms(self) -> int: ...

    def wait_ms(self, duration_ms: int) -> None: ...

    def counters(self) -> dict[str, int]:
        """What the target counts of itself that a report shows (the embedded service's event
        deliveries); empty for a target the harness cannot see into."""
        ...

    def close(self) -> None: ...


class EmbeddedTarget:
    simulated = True

    def __init__(self, seed: int = 0, bugs=(), ledger: str = "sqlite://",
                 sync_lag_ms: int = 20) -> None:
        from .service.core import LimitService, ServiceConfig
        from .service.storage import open_ledger

        self.clock = SimClock()
        self.service = LimitService(open_ledger(ledger), self.clock,
                                    ServiceConfig(sync_lag_ms=sync_lag_ms, seed=seed), bugs=bugs)
        self.bugs = tuple(bugs)
        self.name = "embedded" + (f" (bugs: {', '.join(self.bugs)})" if self.bugs else "")

    def request(self, method: str, path: str, body: Any = None,
                query: dict | None = None) -> Reply:
        self.service.advance(self.clock.now_ms())
        status, answer = self.service.call(method, path, body, query)
        return Reply(status, answer)

    def request_at_once(self, requests: list[Request], answered: Answered,
                        choose: Choose | None = None) -> None:
        """The scheduler of a simulated race: each step either starts a request (it runs to its
        await point, or to its answer) or resumes one that awaits; `choose` picks among the
        steps that could run (default: the first, so every request starts before any resumes).
        Simulated time stands still meanwhile, so the history shows them all overlapping."""
        from .service.core import Awaiting

        assert 0 < len(requests) <= AT_ONCE_MAX
        service = self.service
        service.advance(self.clock.now_ms())
        unstarted = list(range(len(requests)))
        waiting: dict[int, Awaiting] = {}
        # Each request starts once and resumes at most once (a write has one await point).
        for _ in range(2 * len(requests)):
            steps = len(unstarted) + len(waiting)
            if not steps:
                break
            pick = 0 if choose is None or steps == 1 else choose(steps)
            assert 0 <= pick < steps, (pick, steps)
            if pick < len(unstarted):
                n = unstarted.pop(pick)
                method, path, body = requests[n]
                answer = service.start(method, path, body)
            else:
                n = sorted(waiting)[pick - len(unstarted)]
                answer = service.resume(waiting.pop(n))
                assert type(answer) is not Awaiting, "a write awaits once"
            if type(answer) is Awaiting:
                waiting[n] = answer
            else:
                answered(n, Reply(*answer))
        assert not unstarted and not waiting

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def wait_ms(self, duration_ms: int) -> None:
        """Let simulated time pass, delivering every event that falls due on the way."""
        assert duration_ms >= 0
        end_ms = self.clock.now_ms() + duration_ms
        service, clock = self.service, self.clock
        for _ in range(WAIT_STEPS_MAX):
            wake_ms = service.next_wakeup_ms()
            if wake_ms > end_ms:
                break
            clock.advance_to(max(wake_ms, clock.now_ms()))
            service.advance(clock.now_ms())
            if wake_ms <= clock.now_ms() and service.next_wakeup_ms() <= clock.now_ms():
                clock.advance(1)  # nothing more due at this ms; never spin in place
        clock.advance_to(max(end_ms, clock.now_ms()))
        service.advance(clock.now_ms())

    def counters(self) -> dict[str, int]:
        return {"events_delivered": self.service.delivered}

    def close(self) -> None:
        self.service.store.close()


class HttpTarget:
    """A base URL (a path after the host is kept: `https://host/api/credit`), with the user's
    headers, TLS trust and timeout."""

    simulated = False

    def __init__(self, base_url: str, pool_size: int = 8,
                 http: HttpOptions = HttpOptions()) -> None:
        try:
            parts = urlsplit(base_url)
        except ValueError as exc:  # `http://host:1[` and the like
            raise UsageError(f"--target {url_shown(base_url)!r} is not a URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"--target {url_shown(base_url)!r} is not an http:// or https:// URL")
        self.base_url = base_url.rstrip("/")
        self.name = url_shown(self.base_url)
        self.clock = RealClock()
        self.headers = http.resolved_headers()
        self.answer_bytes_max = http.answer_bytes_max
        self.answer_s_max = ANSWER_TIMEOUTS * http.timeout_s
        self._json_headers = {**self.headers, "content-type": "application/json"}
        tls = {"cert_reqs": "CERT_NONE"} if http.insecure else \
            {"ca_certs": str(http.ca_bundle)} if http.ca_bundle else {}
        if http.insecure:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.connect_s = min(2.0, http.timeout_s)
        # A connection in use is given back within one answer's bounds: waiting longer for a
        # free one means one was lost, and the wait must not be forever.
        self.pool_wait_s = self.answer_s_max + self.connect_s
        # Twice the callers: each may have a second request on the wire (`request_at_once`),
        # and one waiting for a connection would not be at once.
        self.pool = urllib3.PoolManager(
            num_pools=4, maxsize=2 * pool_size, block=True, retries=False,
            timeout=urllib3.Timeout(connect=self.connect_s, read=http.timeout_s), **tls)

    def request(self, method: str, path: str, body: Any = None,
                query: dict | None = None) -> Reply:
        data = None if body is None else orjson.dumps(body)
        return self.request_raw(method, path + (f"?{urlencode(query)}" if query else ""), data)

    def request_at_once(self, requests: list[Request], answered: Answered,
                        choose: Choose | None = None) -> None:
        at_once(self.request, requests, answered, self.answer_s_max + self.connect_s)

    def request_raw(self, method: str, path: str, data: bytes | None) -> Reply:
        """A request whose body is bytes as given (the conformance probe's malformed JSON)."""
        headers = self._json_headers if data is not None else self.headers
        try:
            response = self.pool.request(method, self.base_url + path, body=data,
                                         headers=headers, redirect=False, preload_content=False,
                                         pool_timeout=self.pool_wait_s)
            raw = self._bounded(response)
        except urllib3.exceptions.EmptyPoolError:
            return Reply(None, None, f"timeout: no free connection to the target within "
                                     f"{self.pool_wait_s:g} s (every one is still in use)")
        except urllib3.exceptions.HTTPError as exc:
            return Reply(None, None, redact(f"{type(exc).__name__}: {exc}"))
        if isinstance(raw, str):  # over a bound: what it sent is not an answer
            return Reply(None, None, raw)
        if not raw:
            return Reply(response.status, None)
        try:
            return Reply(response.status, orjson.loads(raw))
        except orjson.JSONDecodeError:
            return Reply(response.status, None, f"contract: body is not JSON: {raw[:80]!r}")

    def _bounded(self, response) -> bytes | str:
        """The body, read a chunk at a time; or, past the size or time bound, why not (the
        connection is closed then: a service that sends forever is not read forever)."""
        limit, until_s = self.answer_bytes_max, time.monotonic() + self.answer_s_max
        chunks, size, whole = [], 0, False
        try:
            # Each read returns at least one byte or the end, so the size bound bounds the loop;
            # read1, not read: one socket read at a time keeps the time bound checked.
            for _ in range(limit + 2):
                chunk = response.read1(READ_CHUNK_BYTES)
                if not chunk:
                    whole = True
                    return b"".join(chunks)
                size += len(chunk)
                if size > limit:
                    return (f"contract: the answer is over {limit:,} bytes (--answer-bytes-max);"
                            f" cut off")
                if time.monotonic() > until_s:
                    return (f"timeout: the answer took over {self.answer_s_max:g} s to arrive "
                            f"(3 x --timeout-s); cut off")
                chunks.append(chunk)
            return f"contract: the answer is over {limit:,} bytes (--answer-bytes-max); cut off"
        finally:
            if not whole:  # cut off, or a read failed: the rest would still be coming
                response.close()
            # Back to the pool even when closed (it reconnects): a pool that blocks for a free
            # connection would otherwise lose one slot per cut-off answer and then hang forever.
            response.release_conn()

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def wait_ms(self, duration_ms: int) -> None:
        time.sleep(duration_ms / 1000)

    def counters(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        self.pool.clear()


class AdapterTarget:
    """Wraps a user's class: `request(method, path, body, query) -> (status, body)`; an exception
    it raises is an unknown outcome, as a lost response would be over HTTP."""

    simulated = False

    def __init__(self, spec: str) -> None:
        module_name, _, class_name = spec.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
            self.impl = cls()
        except Exception as exc:
            raise UsageError(f"cannot load adapter {spec!r}: {type(exc).__name__}: {exc}") from None
        self.name = f"py:{spec}"
        self.clock = RealClock()

    def request(self, method: str, path: str, body: Any = None,
                query: dict | None = None) -> Reply:
        try:
            status, answer = self.impl.request(method, path, body, query)
        except Exception as exc:
            return Reply(None, None, f"{type(exc).__name__}: {exc}")
        return Reply(status, answer)

    def request_at_once(self, requests: list[Request], answered: Answered,
                        choose: Choose | None = None) -> None:
        at_once(self.request, requests, answered, None)

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def wait_ms(self, duration_ms: int) -> None:
        time.sleep(duration_ms / 1000)

    def counters(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        close = getattr(self.impl, "close", None)
        if callable(close):
            close()


def at_once(send: Callable[..., Reply], requests: list[Request], answered: Answered,
            join_s: float | None) -> None:
    """Each request from a thread of its own (the first from this one), all released together
    by a barrier, so they are on the wire at the same moment; `answered` from each thread.
    `join_s`: how long a send may take at most (None: the sender bounds itself)."""
    assert 0 < len(requests) <= AT_ONCE_MAX
    release = threading.Barrier(len(requests))
    errors: list[BaseException] = []

    def one(n: int) -> None:
        try:
            try:
                release.wait(RELEASE_WAIT_S)
            except threading.BrokenBarrierError:
                pass  # a helper started late: send anyway, a little less at once
            answered(n, send(*requests[n]))
        except BaseException as exc:  # raised again in the caller: nothing dies silently
            errors.append(exc)

    helpers = [threading.Thread(target=one, args=(n,), name=f"at-once-{n}", daemon=True)
               for n in range(1, len(requests))]
    for helper in helpers:
        helper.start()
    one(0)
    for helper in helpers:
        helper.join(timeout=None if join_s is None else RELEASE_WAIT_S + join_s)
        if helper.is_alive():
            raise TargetError(f"a request sent at once did not end: {helper.name}")
    if errors:
        raise errors[0]


def open_target(spec: str | None, *, seed: int = 0, bugs=(), pool_size: int = 8,
                ledger: str = "sqlite://", http: HttpOptions = HttpOptions()) -> Target:
    """None: the embedded reference service; `http(s)://...`; or `py:MODULE:CLASS`."""
    from .service.bugs import require_embedded

    require_embedded(spec, bugs)
    if spec is None or spec == "embedded":
        return EmbeddedTarget(seed=seed, bugs=bugs, ledger=ledger)
    if spec.startswith("py:"):
        return AdapterTarget(spec[3:])
    return HttpTarget(spec, pool_size=pool_size, http=http)


def probe(target: Target) -> list[str]:
    """Check the target answers its health route; returns the fault kinds it supports."""
    reply = target.request("GET", "/v1/health")
    if reply.status != 200:
        why = reply.error or f"status {reply.status}"
        raise TargetError(f"target {target.name} is not reachable or not healthy "
                          f"(GET /v1/health: {why}); is it running?")
    chaos = target.request("GET", "/v1/chaos")
    if chaos.status != 200 or not isinstance(chaos.body, dict):
        return []  # chaos control is optional: no faults will be injected
    supported = chaos.body.get("supported")
    if not isinstance(supported, list):
        return []
    return [k for k in supported if isinstance(k, str)]
