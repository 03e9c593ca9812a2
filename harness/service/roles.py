"""`limit-harness serve --role`: the reference service as one process, or as the parts of a
real deployment.

- `all` (the default): everything in one process. Without `--display`/`--bus`, the in-process
  event pipe and projector, the display in memory. With them, the same parts as below: the API,
  and the projector worker on a thread of its own.
- `api`: the HTTP edge and the core's write path on the ledger; each committed entry is published
  on the bus (`bus.BusPublisher` in the place of the event pipe), displays and the sync watermark
  are read from Redis (`redis_display.DisplayReader` in the place of the projector). The chaos
  API's faults and resets go to the projector on the bus, in order with the events.
- `projector`: the projector worker (worker.py), no HTTP: bus in, ledger for repairs, Redis out.

Both parts reach the same ledger, so it must be one two processes can open: a SQLite file or
PostgreSQL. `--no-chaos-api` makes the chaos routes absent (404, as on a service that has none);
faults then come from outside only (signals, proxies, hooks: docs/deployments.md).
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from ..contract import error_body
from ..errors import UsageError
from ..secrets import url_shown
from .bus import BusConsumer, BusPublisher
from .core import LimitService, ServiceConfig
from .redis_display import DisplayReader, DisplayWriter
from .redis_link import RedisLink, log
from .storage import LedgerStore, open_ledger
from .worker import ProjectorWorker

ROLES = ("all", "api", "projector")
PRIVATE_LEDGERS = ("memory://", "sqlite://", "sqlite:///:memory:")  # one process's own memory
API_REDIS_TIMEOUT_S = 0.25  # the API's event loop waits no longer on Redis...
API_REDIS_BREAK_S = 0.5  # ...and not again for this long after a failure
WORKER_REDIS_TIMEOUT_S = 10.0  # the projector may sit behind a slow link: it waits, and lags
WORKER_JOIN_S = 5.0
CRASH_BUGS = ("ack_before_durable",)  # bugs that defer a SQLite commit: a SQLite file only


@dataclass(frozen=True)
class Topology:
    role: str
    ledger: str
    display: str | None
    bus: str | None
    chaos_api: bool

    @property
    def split(self) -> bool:
        """The projector is a worker of its own (process or thread), reached through Redis."""
        return self.display is not None

    def words(self) -> str:
        """What the banner says about it (no secrets)."""
        parts = [f"ledger {shown(self.ledger)}"]
        if self.split:
            parts += [f"display {shown(self.display)}", f"bus {shown(self.bus)}"]
        if self.role != "all":
            parts.append(f"role {self.role}")
        if not self.chaos_api:
            parts.append("no chaos API")
        return ", ".join(parts)


def topology(args) -> Topology:
    """The role and its URLs from `serve`'s options, checked before anything starts."""
    role = getattr(args, "role", "all")
    display, bus = getattr(args, "display", None), getattr(args, "bus", None)
    if role not in ROLES:
        raise UsageError(f"--role must be one of {', '.join(ROLES)}")
    if (display is None) != (bus is None):
        raise UsageError("--display and --bus go together: the projector reads the bus and "
                         "writes the display")
    if role != "all" and display is None:
        raise UsageError(f"--role {role} needs --display redis://... and --bus redis://...")
    for option, url in (("--display", display), ("--bus", bus)):
        if url is not None and not url.startswith(("redis://", "rediss://")):
            raise UsageError(f"{option} must be a redis:// URL, not {shown(url)!r}")
    if display is not None and args.ledger in PRIVATE_LEDGERS:
        raise UsageError(f"--ledger {args.ledger} lives in one process's memory; the API and "
                         f"the projector must both reach the ledger: use sqlite:///PATH or "
                         f"postgresql://...")
    crash_bugs = [name for name in getattr(args, "bug", ()) if name in CRASH_BUGS]
    if crash_bugs and (not args.ledger.startswith("sqlite:///") or args.ledger in PRIVATE_LEDGERS):
        raise UsageError(f"--bug {crash_bugs[0]} defers a SQLite commit: it needs "
                         f"--ledger sqlite:///PATH")
    return Topology(role, args.ledger, display, bus, not getattr(args, "no_chaos_api", False))


# -- the API ---------------------------------------------------------------------------------------

def api_service(store: LedgerStore, clock, config: ServiceConfig, bugs,
                topo: Topology) -> tuple[LimitService, Callable[[], None]]:
    """The service the HTTP edge serves, and how to close what it opened."""
    service = LimitService(store, clock, config, bugs=bugs)
    links: list[RedisLink] = []
    closers: list[Callable[[], None]] = []
    if topo.split:
        bus = RedisLink(topo.bus, "bus", timeout_s=API_REDIS_TIMEOUT_S, break_s=API_REDIS_BREAK_S)
        display = RedisLink(topo.display, "display", timeout_s=API_REDIS_TIMEOUT_S,
                            break_s=API_REDIS_BREAK_S)
        links = [bus, display]
        try:
            for link in links:
                link.check()
        except BaseException:
            _close(links)
            raise
        # The core's event pipe and projector, replaced by their ends in Redis: `_commit`
        # publishes and notes as ever, `display` and `sync` read as ever.
        publisher = BusPublisher(bus, service.faults, getattr(store, "durable_seq", lambda: None))
        closers.append(publisher.close)
        service.pipe = publisher
        service.projector = DisplayReader(display, publisher)
    if not topo.chaos_api:
        without_chaos_api(service)

    def close() -> None:
        for closer in closers:
            closer()
        _close(links)
    return service, close


def without_chaos_api(service: LimitService) -> None:
    """Answer the chaos routes as a service without them does: 404, no route."""
    def absent(route: str):
        return 404, error_body("not_found", f"no route {route}")

    service.chaos_status = lambda: absent("GET /v1/chaos")
    service.chaos_add = lambda body: absent("POST /v1/chaos/faults")
    service.chaos_remove = lambda fault_id: absent(
        "DELETE /v1/chaos/faults" + ("" if fault_id is None else f"/{fault_id}"))


def durable_before_answer(store: LedgerStore, on_failure: Callable[[BaseException], None]) -> None:
    """Where the store can group commits (PostgreSQL), let it: the edge then holds each answer
    until what it may show is durable (group_commit.py)."""
    group = getattr(store, "group_commits", None)
    if group is not None:
        group(on_failure)


# -- the projector -----------------------------------------------------------------------------

def projector_worker(topo: Topology, clock, config: ServiceConfig,
                     bugs) -> tuple[ProjectorWorker, Callable[[], None]]:
    """The worker on its own ledger connection and Redis links, and how to close them."""
    assert topo.split
    bus = RedisLink(topo.bus, "bus", timeout_s=WORKER_REDIS_TIMEOUT_S)
    display = RedisLink(topo.display, "display", timeout_s=WORKER_REDIS_TIMEOUT_S)
    store = None
    try:
        bus.check()
        display.check()
        consumer = BusConsumer(bus)  # joined before the ledger is read: nothing falls between
        store = open_ledger(topo.ledger)
        worker = ProjectorWorker(store, DisplayWriter(display), consumer, clock, config, bugs)
    except BaseException:
        _close([bus, display])
        if store is not None:
            store.close()
        raise

    def close() -> None:
        _close([bus, display])
        store.close()
    return worker, close


def start_worker_thread(topo: Topology, clock, config: ServiceConfig,
                        bugs) -> Callable[[], None]:
    """`--role all` with Redis: the worker beside the API, in this process; returns stop."""
    worker, close = projector_worker(topo, clock, config, bugs)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="projector", daemon=True)
    thread.start()

    def stop_worker() -> None:
        stop.set()
        thread.join(WORKER_JOIN_S)
        close()
    return stop_worker


def run_projector(topo: Topology, clock, config: ServiceConfig, bugs) -> int:
    """`--role projector`: the worker in this process until SIGINT or SIGTERM."""
    worker, close = projector_worker(topo, clock, config, bugs)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    print(f"limit-harness projector running ({topo.words()}, bugs: "
          f"{', '.join(bugs) or 'none'})", flush=True)
    try:
        worker.run(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        close()
    log(f"projector stopped after {worker.steps} steps, {worker.wipes} display wipes rebuilt")
    return 0


def shown(url: str) -> str:
    """A URL fit for a banner or a message: its password replaced (`secrets.url_shown`, which
    also rewrites a URL without a host, so only where there is a password to hide)."""
    try:
        has_password = urlsplit(url).password is not None
    except ValueError:
        return url
    return url_shown(url) if has_password else url


def _close(links: list[RedisLink]) -> None:
    for link in links:
        link.close()
