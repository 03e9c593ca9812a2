"""`limit-harness serve`: the reference service on a real socket, under uvicorn.

We bind the socket ourselves rather than let uvicorn do it, so `--port 0` can print the port the
kernel picked, and so a port in use is one line and exit 2 instead of a log record and exit 3.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from typing import Callable

import uvicorn

from ..clock import RealClock
from ..errors import UsageError
from . import bugs as bug_catalogue
from .app import make_app
from .core import LimitService, ServiceConfig
from .storage import open_ledger

BACKLOG = 2048
GRACEFUL_SHUTDOWN_S = 5  # in-flight requests get this long after SIGTERM before they are cut
THREAD_START_WAIT_S = 10.0
PORT_MAX = 65535


def main(args) -> int:
    if args.list_bugs:
        print(bug_catalogue.listing())
        return 0
    bug_catalogue.check(args.bug)  # before touching the socket or the ledger
    sock = bind(args.host, args.port)
    try:
        store = open_ledger(args.ledger)
    except BaseException:
        sock.close()
        raise
    try:
        config = ServiceConfig(sync_lag_ms=args.sync_lag_ms, seed=args.seed)
        service = LimitService(store, RealClock(), config, bugs=args.bug)
        server = uvicorn.Server(_uvicorn_config(make_app(service)))
        print(f"limit-harness serving on {url_of(sock)} (ledger {args.ledger}, "
              f"bugs: {', '.join(args.bug) or 'none'})", flush=True)
        with _exit_quietly_on_signals(server):
            server.run(sockets=[sock])
    finally:
        sock.close()
        store.close()
    return 0


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


def _uvicorn_config(app) -> uvicorn.Config:
    return uvicorn.Config(
        app, loop=_best_loop(), http="httptools", ws="none", lifespan="on",
        access_log=False, log_level="warning", server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


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
                    host: str = "127.0.0.1", port: int = 0) -> tuple[str, Callable[[], None]]:
    """Serve in a background thread of this process (for benchmarks and in-process tests):
    (base URL, stop). Without a factory the service has an in-memory ledger and a real clock."""
    if service_factory is None:
        service = LimitService(open_ledger("memory://"), RealClock())
    else:
        service = service_factory()
    sock = bind(host, port)
    server = uvicorn.Server(_uvicorn_config(make_app(service)))
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
