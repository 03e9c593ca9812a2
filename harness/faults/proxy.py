"""A TCP fault proxy in the manner of Toxiproxy, in pure asyncio, and the provider built on it.

The proxy sits between a service and a component it talks to (Redis, a database): the service
connects to the proxy's port, the proxy connects on to the real one. With no toxic it only copies
bytes; toxics, added and removed while traffic flows, delay, throttle, black-hole, half-close or
reset what goes through. Directions follow Toxiproxy: `upstream` is client -> server,
`downstream` server -> client, `both` is both.

The proxy runs its own event loop in a daemon thread, so the synchronous harness can use it from
any thread; connections and toxics are only ever touched on that loop (calls from other threads
are handed over with `call_soon_threadsafe` and waited for with a bound).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import random
import socket
import struct
import threading
from dataclasses import dataclass

from . import FaultRefused

CHUNK_BYTES = 64 * 1024  # largest read, and the StreamReader limit: a side buffers ~2 chunks
DELAY_LINE_CHUNKS = 16  # chunks latency may hold per direction (1 MiB), then the reader waits
PACE_SLICE_S = 0.05  # bandwidth sends a chunk in slices this long, so a slow link never bursts
CONNECTIONS_MAX = 1024
TOXICS_MAX = 64
TOXIC_NAME_MAX = 100
CHUNKS_MAX = 2**40  # bound on a copy loop: 64 PiB through one connection, i.e. never in practice
LISTEN_BACKLOG = 128
ACCEPT_RETRY_S = 0.1
START_TIMEOUT_S = 5.0
CALL_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5.0
LATENCY_MS_MAX = 600_000
TIMEOUT_MS_MAX = 3_600_000
RATE_KBPS_MAX = 100_000_000

DIRECTIONS = ("upstream", "downstream", "both")
# Each toxic type's parameters: name -> (default, minimum, maximum); a None default is required.
TOXIC_PARAMS: dict[str, dict[str, tuple]] = {
    "latency": {"latency_ms": (None, 0, LATENCY_MS_MAX), "jitter_ms": (0, 0, LATENCY_MS_MAX)},
    "bandwidth": {"rate_kbps": (None, 1, RATE_KBPS_MAX)},  # kilobits (1000 bits) per second
    "reset_peer": {"timeout_ms": (0, 0, TIMEOUT_MS_MAX)},
    "timeout": {"timeout_ms": (0, 0, TIMEOUT_MS_MAX)},
    "half_open": {},
}
# Toxics after which a connection's byte stream is no longer whole (bytes swallowed, a side
# shut): removing one closes the connections it touched, so clients reconnect onto a clean path.
STREAM_BREAKING = ("timeout", "half_open")


# -- toxics ------------------------------------------------------------------------------------
@dataclass
class Toxic:
    name: str
    toxic_type: str
    direction: str
    params: dict
    rng: random.Random

    def covers(self, direction: str) -> bool:
        return self.direction in (direction, "both")

    def delay_s(self) -> float:
        """One chunk's latency: latency_ms give or take up to jitter_ms, never negative."""
        assert self.toxic_type == "latency"
        jitter_ms = self.params["jitter_ms"]
        offset_ms = self.rng.uniform(-jitter_ms, jitter_ms) if jitter_ms else 0.0
        return max(0.0, self.params["latency_ms"] + offset_ms) / 1000


def make_toxic(name: str, toxic_type: str, direction: str = "both",
               rng: random.Random | None = None, **params) -> Toxic:
    """A checked toxic; ValueError (one line) names the first thing wrong."""
    if toxic_type not in TOXIC_PARAMS:
        raise ValueError(f"unknown toxic type {toxic_type!r} (known: {', '.join(TOXIC_PARAMS)})")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}")
    if not isinstance(name, str) or not 0 < len(name) <= TOXIC_NAME_MAX:
        raise ValueError(f"a toxic name is 1 to {TOXIC_NAME_MAX} characters")
    spec = TOXIC_PARAMS[toxic_type]
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise ValueError(f"toxic {toxic_type} takes no parameter {unknown[0]!r}")
    values = {}
    for key, (default, low, high) in spec.items():
        value = params.get(key, default)
        if value is None:
            raise ValueError(f"toxic {toxic_type} needs {key!r}")
        if type(value) not in (int, float) or not low <= value <= high:  # NaN fails too
            raise ValueError(f"{key!r} must be a number from {low} to {high}")
        values[key] = value
    return Toxic(name, toxic_type, direction, values, rng or random.Random(0))


def _directions(direction: str) -> tuple[str, ...]:
    return ("upstream", "downstream") if direction == "both" else (direction,)


def _linger_zero(sock) -> None:
    """SO_LINGER on with a 0 s timeout: the close that follows sends an RST, not a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _reset_socket(sock: socket.socket) -> None:
    _linger_zero(sock)
    sock.close()


def _abort(writer: asyncio.StreamWriter, reset: bool) -> None:
    """Drop a connection now, its buffers with it; with `reset`, by an RST."""
    sock = writer.get_extra_info("socket")
    if reset and sock is not None:
        _linger_zero(sock)
    writer.transport.abort()


# -- one direction of one connection --------------------------------------------------------------
class _Pipe:
    """Copies chunks from `reader` to `writer` through the toxics on for its direction."""

    def __init__(self, proxy: FaultProxy, conn: _Connection, direction: str,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.proxy, self.conn, self.direction = proxy, conn, direction
        self.reader, self.writer = reader, writer
        self.write_closed = False  # our write side is shut (half_open, or EOF passed on)
        self.held_chunks = 0  # chunks in the delay line; while any, nothing may overtake them
        self.delay_line: asyncio.Queue | None = None  # (due_s, chunk), made on first latency
        self.delay_task: asyncio.Task | None = None
        self.next_send_s = 0.0  # bandwidth: when the throttled link is free again

    async def run(self) -> None:
        try:
            await self._copy()
            await self._end_of_stream()
        except OSError:  # a peer reset or vanished (ConnectionError): the pair is dead
            self.conn.close()

    async def _copy(self) -> None:
        for _ in range(CHUNKS_MAX):
            chunk = await self.reader.read(CHUNK_BYTES)
            if not chunk or self.conn.closed:
                return
            toxics = self.proxy.toxics_on[self.direction]
            if toxics or self.held_chunks or self.write_closed:
                await self._through_toxics(chunk, toxics)
            else:  # the fast path: no toxic, nothing held back
                self.writer.write(chunk)
                await self.writer.drain()
        self.conn.close()

    async def _through_toxics(self, chunk: bytes, toxics: tuple[Toxic, ...]) -> None:
        # Swallowed chunks are still read, so the sender is never blocked by a full window.
        if self.write_closed or any(t.toxic_type == "timeout" for t in toxics):
            return
        delay_s = sum(t.delay_s() for t in toxics if t.toxic_type == "latency")
        if delay_s or self.held_chunks:
            await self._hold(chunk, delay_s)
        else:
            await self._send(chunk)

    async def _hold(self, chunk: bytes, delay_s: float) -> None:
        """Queue a chunk to leave `delay_s` after it arrived: chunks are delayed side by side, not
        one after another, so latency does not also cap throughput. The line is FIFO: a chunk
        whose jittered time comes before its predecessor's leaves just after it, never before."""
        due_s = asyncio.get_running_loop().time() + delay_s
        if self.delay_task is None:
            self.delay_line = asyncio.Queue(DELAY_LINE_CHUNKS)
            self.delay_task = asyncio.create_task(self._release())
            self.conn.tasks.append(self.delay_task)
        self.held_chunks += 1
        await self.delay_line.put((due_s, chunk))  # blocks when full: that is the backpressure

    async def _release(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            for _ in range(CHUNKS_MAX):
                due_s, chunk = await self.delay_line.get()
                if due_s > loop.time():
                    await asyncio.sleep(due_s - loop.time())
                await self._send(chunk)
                self.held_chunks -= 1
                self.delay_line.task_done()
        except OSError:
            self.conn.close()

    async def _send(self, chunk: bytes) -> None:
        rates_kbps = [t.params["rate_kbps"] for t in self.proxy.toxics_on[self.direction]
                      if t.toxic_type == "bandwidth"]
        if not rates_kbps:
            if not self.write_closed:
                self.writer.write(chunk)
                await self.writer.drain()
            return
        bytes_per_s = min(rates_kbps) * 1000 / 8
        slice_bytes = max(1, int(bytes_per_s * PACE_SLICE_S))
        loop = asyncio.get_running_loop()
        for start in range(0, len(chunk), slice_bytes):
            send_at_s = max(loop.time(), self.next_send_s)
            if send_at_s > loop.time():
                await asyncio.sleep(send_at_s - loop.time())
            if self.write_closed or self.conn.closed:  # shut while we slept
                return
            piece = chunk[start:start + slice_bytes]
            self.writer.write(piece)
            await self.writer.drain()
            self.next_send_s = send_at_s + len(piece) / bytes_per_s

    async def _end_of_stream(self) -> None:
        """The reading side closed its write half: pass that on once held chunks are out. A
        black hole swallows the close too; the connection then lives until the toxic goes."""
        if self.conn.closed:
            return
        if any(t.toxic_type == "timeout" for t in self.proxy.toxics_on[self.direction]):
            await self.conn.wait_closed()
            return
        if self.delay_line is not None:
            await self.delay_line.join()
        self.shut_write()

    def shut_write(self) -> None:
        if not self.write_closed and not self.writer.transport.is_closing():
            self.writer.write_eof()  # shutdown(SHUT_WR) once buffered bytes are out
        self.write_closed = True


# -- one client connection and its upstream connection ---------------------------------------------
class _Connection:
    def __init__(self, proxy: FaultProxy, conn_id: int, client: tuple, upstream: tuple) -> None:
        (client_reader, client_writer), (upstream_reader, upstream_writer) = client, upstream
        self.conn_id = conn_id
        self.pipes = {
            "upstream": _Pipe(proxy, self, "upstream", client_reader, upstream_writer),
            "downstream": _Pipe(proxy, self, "downstream", upstream_reader, client_writer),
        }
        self.timers: dict[str, asyncio.TimerHandle] = {}  # toxic name -> its pending close
        self.tasks: list[asyncio.Task] = []  # the pipes' tasks, and their delay lines'
        self.closed = False
        self._closed_event = asyncio.Event()

    async def run(self) -> None:
        """Copy both ways until both ends have closed, or `close` cancels the copying."""
        pipe_tasks = [asyncio.create_task(pipe.run()) for pipe in self.pipes.values()]
        self.tasks += pipe_tasks
        await asyncio.gather(*pipe_tasks, return_exceptions=True)

    async def wait_closed(self) -> None:
        await self._closed_event.wait()

    def half_close(self, direction: str) -> None:
        for name in _directions(direction):
            self.pipes[name].shut_write()

    def close(self, reset_direction: str | None = None, graceful: bool = False) -> None:
        """Close both sockets; those toward `reset_direction` with an RST. `graceful` lets
        buffered bytes out first (a normal end), otherwise buffers are dropped."""
        if self.closed:
            return
        self.closed = True
        self._closed_event.set()
        for timer in self.timers.values():
            timer.cancel()
        for task in self.tasks:  # a pipe may wait on a full delay line: nothing else wakes it
            task.cancel()
        resets = _directions(reset_direction) if reset_direction else ()
        for name, pipe in self.pipes.items():
            if graceful and name not in resets:
                pipe.writer.close()
            else:
                _abort(pipe.writer, reset=name in resets)


# -- the proxy -------------------------------------------------------------------------------------
class FaultProxy:
    """A TCP proxy from listen_host:listen_port to upstream_host:upstream_port with toxics.
    Port 0 picks a free port at `start` (see `.port`); a restarted proxy keeps its port."""

    def __init__(self, listen_host: str, listen_port: int, upstream_host: str,
                 upstream_port: int, *, name: str) -> None:
        assert 0 <= listen_port < 65536 and 0 < upstream_port < 65536
        self.name = name
        self.listen_host, self.listen_port = listen_host, listen_port
        self.upstream_host, self.upstream_port = upstream_host, upstream_port
        self.port: int | None = None
        self.connections_total = 0  # proxied connections ever
        self.connections_failed = 0  # refused: upstream unreachable or CONNECTIONS_MAX reached
        # Loop-thread state: read and written only on the proxy's loop.
        self.toxics_on: dict[str, tuple[Toxic, ...]] = {"upstream": (), "downstream": ()}
        self._toxics: dict[str, Toxic] = {}
        self._connections: dict[int, _Connection] = {}
        self._serving: set[asyncio.Task] = set()
        self._closing = False  # set by `stop`: connections still arriving are dropped
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle, from any thread but the proxy's own -----------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None

    @property
    def connections_active(self) -> int:
        return len(self._connections)

    def start(self) -> int:
        """Listen, and return the port once connections are accepted."""
        assert self._thread is None, f"proxy {self.name} is already running"
        self._loop = asyncio.new_event_loop()
        self._closing = False
        self._thread = threading.Thread(target=self._run_loop, name=f"fault-proxy-{self.name}",
                                        daemon=True)
        self._thread.start()
        try:
            self.port = self._call_async(self._listen(), START_TIMEOUT_S)
        except BaseException:
            self._halt_loop()
            raise
        assert self.port
        return self.port

    def stop(self) -> None:
        """Close the listener and every connection, and drop every toxic; returns within
        ~2 * STOP_TIMEOUT_S."""
        if self._thread is None:
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self._call_async(self._shutdown(), STOP_TIMEOUT_S)
        self._halt_loop()

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- toxics, from any thread but the proxy's own ----------------------------------------------
    def add_toxic(self, name: str, toxic_type: str, direction: str = "both", *,
                  rng: random.Random | None = None, **params) -> Toxic:
        """Turn a toxic on for existing and new connections; ValueError if it is malformed or
        its name is taken."""
        toxic = make_toxic(name, toxic_type, direction, rng, **params)
        self._call(self._add, toxic)
        return toxic

    def remove_toxic(self, name: str) -> bool:
        """Turn a toxic off; False if there was none of that name."""
        return self._call(self._remove, name)

    def clear_toxics(self) -> int:
        return self._call(lambda: sum(self._remove(name) for name in list(self._toxics)))

    def toxics(self) -> list[Toxic]:
        return self._call(lambda: list(self._toxics.values()))

    # -- handing work to the loop ---------------------------------------------------------------
    def _call(self, fn, *args):
        """Run `fn(*args)` on the proxy's loop and return its result (or raise its error)."""
        loop = self._checked_loop()
        future: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args))
            except Exception as exc:  # handed back to the calling thread
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        try:
            return future.result(CALL_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            raise RuntimeError(f"proxy {self.name}: no answer from its loop in "
                               f"{CALL_TIMEOUT_S:g} s") from None

    def _call_async(self, coro, timeout_s: float):
        loop = self._checked_loop()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout_s)

    def _checked_loop(self) -> asyncio.AbstractEventLoop:
        if self._thread is None:
            raise RuntimeError(f"proxy {self.name} is not running")
        assert threading.get_ident() != self._thread.ident, "would wait on its own loop"
        return self._loop

    def _run_loop(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(asyncio.sleep(0))  # lets aborted transports close sockets
        finally:
            loop.close()

    def _halt_loop(self) -> None:
        with contextlib.suppress(RuntimeError):  # already closed
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(STOP_TIMEOUT_S)
        self._thread = None

    # -- on the loop ------------------------------------------------------------------------------
    # The proxy owns its listening socket and accepts in a plain reader callback rather than use
    # asyncio.start_server or sock_accept: there, a socket accepted while `stop` runs can be left
    # in a cancelled future or dropped by a closed Server (CPython 3.11), and stay open.
    async def _listen(self) -> int:
        port = self.port if self.port is not None else self.listen_port
        listener = socket.create_server((self.listen_host, port), backlog=LISTEN_BACKLOG)
        listener.setblocking(False)
        self._listener = listener
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept_ready)
        return listener.getsockname()[1]

    def _accept_ready(self) -> None:
        """Accept what is waiting, each connection into its own task at once. At most
        LISTEN_BACKLOG per call, so a burst of connections cannot starve the copying."""
        for _ in range(LISTEN_BACKLOG):
            try:
                client_sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of file descriptors, say: pause rather than spin
                self._pause_accepting()
                return
            client_sock.setblocking(False)
            if self._closing or len(self._serving) >= CONNECTIONS_MAX:
                self.connections_failed += 1
                _reset_socket(client_sock)
                continue
            task = asyncio.get_running_loop().create_task(self._serve(client_sock))
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)

    def _pause_accepting(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self._listener.fileno())
        if not self._closing:
            self.connections_failed += 1
            loop.call_later(ACCEPT_RETRY_S, self._resume_accepting)

    def _resume_accepting(self) -> None:
        if not self._closing:
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept_ready)

    async def _shutdown(self) -> None:
        # Cancelling is not enough: wait_for may swallow a cancel that races a finished connect
        # (bpo-42130), so `_serve` also checks `_closing` after each await.
        self._closing = True
        asyncio.get_running_loop().remove_reader(self._listener.fileno())
        self._listener.close()  # the kernel resets connections not yet accepted
        self._toxics.clear()  # a restarted proxy starts clean: no toxic survives unseen
        self._index()
        for conn in list(self._connections.values()):
            conn.close()
        # One round lets every `_serve` task take its first step: a task cancelled before it
        # has entered its try block could not close its socket.
        await asyncio.sleep(0)
        for task in self._serving:
            task.cancel()
        if self._serving:
            await asyncio.wait(self._serving, timeout=STOP_TIMEOUT_S)

    async def _serve(self, client_sock: socket.socket) -> None:
        client_writer = None
        try:
            client_reader, client_writer = await asyncio.open_connection(sock=client_sock,
                                                                         limit=CHUNK_BYTES)
            if self._closing:
                return
            upstream = await self._connect_upstream()
            if upstream is None:
                _abort(client_writer, reset=True)  # the client learns at once, as if refused
            elif self._closing:
                _abort(upstream[1], reset=False)
            else:
                await self._proxy((client_reader, client_writer), upstream)
        finally:
            if client_writer is None:
                client_sock.close()
            elif not client_writer.transport.is_closing():
                _abort(client_writer, reset=False)

    async def _connect_upstream(self) -> tuple | None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):  # no extra task, unlike wait_for
                return await asyncio.open_connection(self.upstream_host, self.upstream_port,
                                                     limit=CHUNK_BYTES)
        except (OSError, asyncio.TimeoutError):
            self.connections_failed += 1
            return None

    async def _proxy(self, client: tuple, upstream: tuple) -> None:
        self.connections_total += 1
        conn = _Connection(self, self.connections_total, client, upstream)
        self._connections[conn.conn_id] = conn
        try:
            for toxic in list(self._toxics.values()):  # bounded: TOXICS_MAX
                self._apply(toxic, conn)
            if not conn.closed:
                await conn.run()
        finally:
            del self._connections[conn.conn_id]
            conn.close(graceful=not self._closing)  # a graceful close waits on the peer

    def _add(self, toxic: Toxic) -> None:
        if toxic.name in self._toxics:
            raise ValueError(f"proxy {self.name} already has a toxic named {toxic.name!r}")
        if len(self._toxics) >= TOXICS_MAX:
            raise ValueError(f"proxy {self.name} has {TOXICS_MAX} toxics already")
        self._toxics[toxic.name] = toxic
        self._index()
        for conn in list(self._connections.values()):
            self._apply(toxic, conn)

    def _remove(self, name: str) -> bool:
        toxic = self._toxics.pop(name, None)
        if toxic is None:
            return False
        self._index()
        for conn in list(self._connections.values()):
            timer = conn.timers.pop(name, None)
            if timer is not None:
                timer.cancel()
            if toxic.toxic_type in STREAM_BREAKING:
                conn.close()
        return True

    def _index(self) -> None:
        """Toxics by direction, so a pipe's check per chunk is one lookup."""
        self.toxics_on = {direction: tuple(t for t in self._toxics.values() if t.covers(direction))
                          for direction in ("upstream", "downstream")}

    def _apply(self, toxic: Toxic, conn: _Connection) -> None:
        """Start a toxic's effect on one connection, existing or new. Latency, bandwidth and the
        black hole itself act in the pipes; here are the one-off acts and the timers."""
        if toxic.toxic_type == "half_open":
            conn.half_close(toxic.direction)
            return
        if toxic.toxic_type not in ("reset_peer", "timeout"):
            return
        reset_direction = toxic.direction if toxic.toxic_type == "reset_peer" else None
        delay_s = toxic.params["timeout_ms"] / 1000
        if delay_s:
            conn.timers[toxic.name] = asyncio.get_running_loop().call_later(
                delay_s, conn.close, reset_direction)
        elif reset_direction:
            conn.close(reset_direction)


# -- the provider ----------------------------------------------------------------------------------
# Abstract kind -> (toxic type, fixed toxic params); a "direction" among them picks the direction.
NETWORK_KINDS: dict[str, tuple[str, dict]] = {
    "network_latency": ("latency", {}),
    "network_partition": ("timeout", {}),
    "connection_reset": ("reset_peer", {}),
}
# Fault parameters named otherwise than the toxic's: the contract's delay_sync says delay_ms.
PARAM_ALIASES = {"delay_ms": "latency_ms"}


class NetworkProvider:
    """Carries out network faults as toxics on FaultProxies. A fault's optional `proxy` names
    the proxy; otherwise it goes on `routes[kind]`, or on every proxy. `kind_map` adds kinds a
    deployment maps onto toxics, e.g. {"delay_sync": ("latency", {"direction": "downstream"})}.
    Proxies not yet running are started here, and stopped by `close`."""

    name = "network"

    def __init__(self, proxies: dict[str, FaultProxy], routes: dict[str, list[str]] | None = None,
                 seed: int = 0, kind_map: dict[str, tuple[str, dict]] | None = None) -> None:
        self.proxies = dict(proxies)
        self.routes = dict(routes or {})
        self.kind_map = {**NETWORK_KINDS, **(kind_map or {})}
        for kind, names in self.routes.items():
            unknown = [n for n in names if n not in self.proxies]
            if unknown:
                raise ValueError(f"route for {kind} names unknown proxy {unknown[0]!r}")
        for kind, (toxic_type, _) in self.kind_map.items():
            if toxic_type not in TOXIC_PARAMS:
                raise ValueError(f"kind {kind} maps to unknown toxic type {toxic_type!r}")
        self._rng = random.Random(seed)
        self._ids = itertools.count(1)
        self._active: dict[str, list[str]] = {}  # fault_id -> names of the proxies it is on
        self._started: list[FaultProxy] = []
        for name, proxy in self.proxies.items():
            if not proxy.running:
                self._start(name, proxy)

    def kinds(self) -> tuple[str, ...]:
        return tuple(self.kind_map)

    def inject(self, fault: dict) -> dict:
        kind = fault.get("kind")
        params = {key: value for key, value in fault.items() if key != "kind"}
        targets = self._targets(kind, params.get("proxy"))
        toxic_type, direction, toxic_params = self._toxic_for(kind, params)
        fault_id = f"network-{next(self._ids)}"
        added: list[str] = []
        try:
            for name in targets:  # bounded: the proxies given
                rng = random.Random(self._rng.getrandbits(64))
                self.proxies[name].add_toxic(fault_id, toxic_type, direction, rng=rng,
                                             **toxic_params)
                added.append(name)
        except (ValueError, RuntimeError) as exc:
            self._remove_from(fault_id, added)
            raise FaultRefused(f"{kind} on proxy {name}: {exc}") from None
        self._active[fault_id] = added
        return {"fault_id": fault_id, "kind": kind, **params, "provider": self.name}

    def remove(self, fault_id: str) -> None:
        names = self._active.pop(fault_id, None)
        if names is None:
            raise FaultRefused(f"no active network fault {fault_id!r}")
        failure = self._remove_from(fault_id, names)
        if failure:
            raise FaultRefused(failure)

    def clear(self) -> None:
        failures = [self._remove_from(fault_id, self._active.pop(fault_id))
                    for fault_id in list(self._active)]
        failures = [f for f in failures if f]
        if failures:
            raise FaultRefused(failures[0])

    def close(self) -> None:
        with contextlib.suppress(FaultRefused):
            self.clear()
        for proxy in self._started:
            proxy.stop()
        self._started.clear()

    # -- helpers ---------------------------------------------------------------------------------
    def _start(self, name: str, proxy: FaultProxy) -> None:
        try:
            proxy.start()
        except (OSError, RuntimeError, concurrent.futures.TimeoutError) as exc:
            raise FaultRefused(f"proxy {name} could not listen: {exc}") from None
        self._started.append(proxy)

    def _targets(self, kind, proxy_name) -> list[str]:
        if kind not in self.kind_map:
            raise FaultRefused(f"network provider does not carry out {kind!r} "
                               f"(it does {', '.join(self.kind_map)})")
        if proxy_name is not None:
            if proxy_name not in self.proxies:
                raise FaultRefused(f"{kind}: no proxy named {proxy_name!r}")
            return [proxy_name]
        targets = self.routes.get(kind) or list(self.proxies)
        if not targets:
            raise FaultRefused(f"{kind}: no proxy to carry it out")
        return targets

    def _toxic_for(self, kind: str, params: dict) -> tuple[str, str, dict]:
        """(toxic type, direction, toxic params), checked before any proxy is touched."""
        toxic_type, fixed = self.kind_map[kind]
        toxic_params = dict(fixed)
        for key, value in params.items():
            if key != "proxy":
                toxic_params[PARAM_ALIASES.get(key, key)] = value
        direction = toxic_params.pop("direction", "both")
        try:
            make_toxic("check", toxic_type, direction, **toxic_params)
        except (ValueError, TypeError) as exc:
            raise FaultRefused(f"{kind}: {exc}") from None
        return toxic_type, direction, toxic_params

    def _remove_from(self, fault_id: str, names: list[str]) -> str | None:
        """Remove a fault's toxics; the first failure as one line, or None."""
        failure = None
        for name in names:
            try:
                self.proxies[name].remove_toxic(fault_id)
            except RuntimeError as exc:
                failure = failure or f"removing {fault_id} from proxy {name}: {exc}"
        return failure
