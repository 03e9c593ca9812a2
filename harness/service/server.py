"""`limit-harness serve`: the reference service on a real socket, under uvicorn.

We bind the socket ourselves rather than let uvicorn do it, so `--port 0` can print the port the
kernel picked, and so a port in use is one line and exit 2 instead of a log record and exit 3.

Slow and idle clients get limits (`Limits`): each costs a socket, a timer and, once its head is in,
an idle task, never CPU, and loses them when a limit passes, so the service keeps answering others.
"""

from __future__ import annotations

import contextlib
import functools
import os
import resource
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, fields
from typing import Callable

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..clock import RealClock
from ..errors import UsageError
from . import bugs as bug_catalogue
from . import roles
from .app import BODY_READ_TIMEOUT_S, make_app
from .core import LimitService, ServiceConfig
from .storage import open_ledger

BACKLOG = 2048
GRACEFUL_SHUTDOWN_S = 5  # in-flight requests get this long after SIGTERM before they are cut
THREAD_START_WAIT_S = 10.0
PORT_MAX = 65535
EXIT_LEDGER_FAILED = 3  # fail-stop: a restart is what mends it

CONNECTIONS_MAX = 2048  # past it a request is answered 503 (uvicorn's limit_concurrency)
HEADER_BYTES_MAX = 16 * 1024  # request line and headers, as h11 and Node allow by default
HEAD_READ_TIMEOUT_S = 10.0  # from connect, or from the last response, to the end of the headers
KEEP_ALIVE_TIMEOUT_S = 5.0  # an idle keep-alive connection is closed after this


@dataclass(frozen=True)
class Limits:
    """What one client may hold of the server; `serve` takes each from the option of its name."""
    connections_max: int = CONNECTIONS_MAX
    header_bytes_max: int = HEADER_BYTES_MAX
    head_read_timeout_s: float = HEAD_READ_TIMEOUT_S
    body_read_timeout_s: float = BODY_READ_TIMEOUT_S
    keep_alive_timeout_s: float = KEEP_ALIVE_TIMEOUT_S

    def __post_init__(self) -> None:
        for field in fields(self):
            if not getattr(self, field.name) > 0:
                raise UsageError(f"--{field.name.replace('_', '-')} must be positive")

    @classmethod
    def from_args(cls, args) -> Limits:
        """The limits `args` names (an option the CLI does not offer keeps its default)."""
        return cls(**{field.name: getattr(args, field.name) for field in fields(cls)
                      if getattr(args, field.name, None) is not None})


def main(args) -> int:
    if args.list_bugs:
        print(bug_catalogue.listing())
        return 0
    bug_catalogue.check(args.bug)  # before touching the socket or the ledger
    topo = roles.topology(args)
    config = ServiceConfig(sync_lag_ms=args.sync_lag_ms, seed=args.seed)
    if topo.role == "projector":
        return roles.run_projector(topo, RealClock(), config, args.bug)
    limits = Limits.from_args(args)
    raise_open_files_limit()
    sock = bind(args.host, args.port)
    try:
        store = open_ledger(args.ledger)
    except BaseException:
        sock.close()
        raise
    closers = [sock.close, store.close]
    try:
        roles.durable_before_answer(store, _fail_stop)
        service, close_links = roles.api_service(store, RealClock(), config, args.bug, topo)
        closers.insert(0, close_links)
        if topo.role == "all" and topo.split:
            closers.insert(0, roles.start_worker_thread(topo, RealClock(), config, args.bug))
        server = uvicorn.Server(_uvicorn_config(service, limits))
        print(f"limit-harness serving on {url_of(sock)} ({topo.words()}, "
              f"bugs: {', '.join(args.bug) or 'none'})", flush=True)
        with _exit_quietly_on_signals(server):
            server.run(sockets=[sock])
    finally:
        for close in closers:
            close()
    return 0


def _fail_stop(exc: BaseException) -> None:
    """A ledger write failed after its requests were admitted: this process's memory is ahead
    of its ledger, and only a restart (which rebuilds it from the ledger) mends that."""
    print(f"limit-harness serve: the ledger write failed ({' '.join(str(exc).split())}); "
          f"stopping, so that a restart rebuilds the service from the ledger",
          file=sys.stderr, flush=True)
    os._exit(EXIT_LEDGER_FAILED)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one), or a one-line UsageError."""
    if not 0 <= port <= PORT_MAX:
        raise UsageError(f"port {port} is out of range 0..{PORT_MAX}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        # Lets a restarted server reuse a port whose old connections linger in TIME_WAIT; Linux
        # still refuses a port some other socket is listening on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)  # listening before we print the URL: early clients queue, not fail
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def raise_open_files_limit() -> int:
    """Lift this process's open-file limit to its hard limit (each connection is a descriptor; a
    soft limit of 1024 would refuse the 1000th client); returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, CONNECTIONS_MAX * 2)
        with contextlib.suppress(ValueError, OSError):  # not ours to raise: keep serving
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _uvicorn_config(service: LimitService, limits: Limits) -> uvicorn.Config:
    app = make_app(service, body_read_timeout_s=limits.body_read_timeout_s)
    return uvicorn.Config(
        app, loop=_best_loop(), http=functools.partial(GuardedProtocol, limits=limits),
        ws="none", lifespan="on", access_log=False, log_level="warning", server_header=False,
        limit_concurrency=limits.connections_max, timeout_keep_alive=limits.keep_alive_timeout_s,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus the two limits it lacks on a request head: a deadline
    (its keep-alive timer stops at the first byte, so a head trickled a byte at a time would hold
    the connection for ever) and a size (httptools buffers a header of any length). The body's
    deadline is the ASGI edge's (app.py)."""

    def __init__(self, *args, limits: Limits, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits
        self.head_timer = None  # armed while we wait for a request head
        self.in_head = False  # between a request's first byte and the end of its headers
        self.head_bytes = 0  # bytes received for the head under way, once it spans chunks
        self.chunk_bytes = 0  # of the chunk being parsed
        self.heads_begun = 0
        self.refused = False  # answered 408 or 431: the connection is closing, ignore the rest

    # -- the head's deadline: armed while waiting for a request, not while answering one --------
    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        idle = not self.pipeline  # else the next request's head is already in
        super().on_response_complete()
        if idle and not self.transport.is_closing():
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self.head_timer = self.loop.call_later(self.limits.head_read_timeout_s,
                                               self._on_head_timeout)

    def _disarm_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _on_head_timeout(self) -> None:
        self.head_timer = None
        if self.in_head:
            self._refuse(408, "request_timeout", "the request headers did not arrive within "
                         f"{self.limits.head_read_timeout_s:g} s")
        elif not self.transport.is_closing():
            self.transport.close()  # idle: nothing to answer

    # -- the head's size -----------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.chunk_bytes, begun = len(data), self.heads_begun
        super().data_received(data)
        # Counted only when the whole chunk is head: one that began the head may also hold the
        # end of the previous request, so a head may overrun by one chunk before it is caught here
        # (on_headers_complete measures it exactly).
        if self.in_head and self.heads_begun == begun and not self.refused:
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.header_bytes_max:
                self._refuse_too_large()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.heads_begun += 1
        self.in_head, self.head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self.in_head = False
        self._disarm_head_timer()
        if self.refused:
            return
        # The head lies within the chunks counted and this one: measured only if they are large.
        limit = self.limits.header_bytes_max
        if (self.head_bytes + self.chunk_bytes > limit
                and _head_bytes(self.url, self.headers) > limit):
            self._refuse_too_large()
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.refused:
            super().on_message_complete()

    def _refuse_too_large(self) -> None:
        self._refuse(431, "headers_too_large", "the request line and headers exceed "
                     f"{self.limits.header_bytes_max} bytes")

    def _refuse(self, status: int, code: str, detail: str) -> None:
        """Answer `status` when nothing else is on the wire, then close."""
        self.refused = True
        self._disarm_head_timer()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_refusal(status, code, detail))
        self.transport.close()


def _head_bytes(url: bytes, headers) -> int:
    # "METHOD " and " HTTP/1.1\r\n" are bounded; ": " and "\r\n" per header are not.
    return len(url) + sum(len(name) + len(value) + 4 for name, value in headers)


def _refusal(status: int, code: str, detail: str) -> bytes:
    body = orjson.dumps({"error": code, "detail": detail})
    return b"".join([
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
        b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
        b"connection: close\r\n\r\n", body])


_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


def _best_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


@contextlib.contextmanager
def _exit_quietly_on_signals(server: uvicorn.Server):
    """uvicorn re-raises the signal that stopped it once it has shut down, which would kill us
    with -SIGTERM (or KeyboardInterrupt) after a clean shutdown. Our handler, in place around
    uvicorn's own, absorbs that re-raise, and before uvicorn installs its handlers it asks the
    server to stop instead of dying mid-startup."""
    def stop(signum, frame):
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def start_in_thread(service_factory: Callable[[], LimitService] | None = None,
                    host: str = "127.0.0.1", port: int = 0,
                    limits: Limits = Limits()) -> tuple[str, Callable[[], None]]:
    """Serve in a background thread of this process (for benchmarks and in-process tests):
    (base URL, stop). Without a factory the service has an in-memory ledger and a real clock."""
    if service_factory is None:
        service = LimitService(open_ledger("memory://"), RealClock())
    else:
        service = service_factory()
    raise_open_files_limit()
    sock = bind(host, port)
    server = uvicorn.Server(_uvicorn_config(service, limits))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="limit-service", daemon=True)
    thread.start()
    deadline_s = time.monotonic() + THREAD_START_WAIT_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline_s:
        time.sleep(0.01)
    url = url_of(sock)

    def stop() -> None:
        server.should_exit = True
        thread.join(GRACEFUL_SHUTDOWN_S + THREAD_START_WAIT_S)
        sock.close()
        service.store.close()

    if not server.started:
        stop()
        raise RuntimeError(f"the service thread did not start on {url}")
    return url, stop
