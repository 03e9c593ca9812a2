"""The chaos routes of a target, answered by fault providers: `RoutedTarget` wraps any target so
that `GET /v1/chaos`, `POST /v1/chaos/faults` and the two `DELETE`s reach, for each fault kind,
the provider a deployment routes it to, and the target's own chaos API for every other kind.

Everything else passes through unchanged, so the recorder, the convergence phase, the property
machine and the load test's master inject and remove faults exactly as they always did, and the
history records every injection and removal the same way whoever carried it out. The answer to
an injection names its provider (`"provider"`), so the report can say who did what.

A provider's refusal (`FaultRefused`: a hook that failed or timed out, a process that is gone)
is answered 409, which the recorder records as a refused injection (`fail`): such a fault never
counts as having acted. A provider that breaks in any other way is answered with no status at
all, an unknown outcome, because it may have acted before it broke.
"""

from __future__ import annotations

import http.server
import sys
import threading
from typing import Any

import orjson

from ..secrets import redact
from ..targets import Reply, Target
from . import ALL_KINDS, ONE_SHOT_KINDS, FaultRefused, Provider

CHAOS_API = "chaos_api"  # the provider name of faults the target's own chaos API carried out
LISTING = "/v1/chaos"
FAULTS = "/v1/chaos/faults"


def is_chaos_route(path: str) -> bool:
    return path == LISTING or path == FAULTS or path.startswith(FAULTS + "/")


class _Wrapping:
    """A target in front of `inner`: its clock, counters and extras (request_raw, clock) are
    the inner target's; subclasses answer some routes themselves."""

    inner: Target

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def now_ms(self) -> int:
        return self.inner.now_ms()

    def wait_ms(self, duration_ms: int) -> None:
        self.inner.wait_ms(duration_ms)

    def counters(self) -> dict[str, int]:
        return self.inner.counters()


class RoutedTarget(_Wrapping):
    """`inner` with its chaos routes answered by `providers` (kind -> the provider that carries
    it out). `chaos_api` False: kinds no provider carries out are refused instead of sent to the
    target (a deployment that says its service has no chaos API, or must not use it). `owner`:
    what started the providers (a deployment), stopped when the target is closed."""

    def __init__(self, inner: Target, providers: dict[str, Provider], *,
                 chaos_api: bool = True, owner=None) -> None:
        assert all(kind in ALL_KINDS for kind in providers), sorted(providers)
        self.inner = inner
        self.owner = owner
        self.providers = dict(providers)
        self.chaos_api = chaos_api
        self.name, self.simulated = inner.name, inner.simulated
        self._owners: dict[str, tuple[Provider, str]] = {}  # fault_id -> (provider, kind)
        # One provider call at a time: the nemesis and the convergence phase are two threads,
        # and a restart must not race a pause of the same process.
        self._lock = threading.RLock()

    # -- Target -------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None,
                query: dict | None = None) -> Reply:
        if method == "GET" and path == LISTING:
            return self._listing()
        if method == "POST" and path == FAULTS:
            return self._inject(body)
        if method == "DELETE" and path == FAULTS:
            return self._clear()
        if method == "DELETE" and path.startswith(FAULTS + "/"):
            return self._remove(path[len(FAULTS) + 1:])
        return self.inner.request(method, path, body, query)

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            if self.owner is not None:
                owner, self.owner = self.owner, None
                try:
                    owner.stop()
                except Exception as exc:  # noqa: BLE001 - the run's verdict still stands
                    # Said, not raised: a run that found a bug must still report it.
                    print(_line(f"limit-harness: warning: {exc}"), file=sys.stderr)

    # -- the chaos routes ---------------------------------------------------------------------
    def _own_listing(self) -> tuple[list[str], list]:
        """What the target's own chaos API lists (nothing when it has none or is not used)."""
        if not self.chaos_api:
            return [], []
        reply = self.inner.request("GET", LISTING)
        body = reply.body if reply.status == 200 and isinstance(reply.body, dict) else {}
        supported = body.get("supported") if isinstance(body.get("supported"), list) else []
        active = body.get("active") if isinstance(body.get("active"), list) else []
        return [k for k in supported if isinstance(k, str)], active

    def _listing(self) -> Reply:
        supported, active = self._own_listing()
        kinds = set(supported) | set(self.providers)
        with self._lock:
            mine = [{"fault_id": fault_id, "kind": kind, "provider": provider.name}
                    for fault_id, (provider, kind) in self._owners.items()
                    if kind not in ONE_SHOT_KINDS]
        ordered = [k for k in ALL_KINDS if k in kinds] + sorted(kinds - set(ALL_KINDS))
        return Reply(200, {"supported": ordered, "active": [*active, *mine]})

    def _inject(self, fault: Any) -> Reply:
        kind = fault.get("kind") if isinstance(fault, dict) else None
        provider = self.providers.get(kind)
        if provider is None:
            if not self.chaos_api:
                return _refused(400, "bad_request", f"no provider carries out {kind!r} and the "
                                                    f"target's chaos API is not used")
            reply = self.inner.request("POST", FAULTS, fault)
            if reply.status == 201 and isinstance(reply.body, dict):
                return Reply(201, {**reply.body, "provider": CHAOS_API})
            return reply
        with self._lock:
            try:
                done = provider.inject(dict(fault))
            except FaultRefused as exc:
                return _refused(409, "fault_refused", f"the {provider.name} provider refused "
                                                      f"{kind}: {exc}", provider.name)
            except Exception as exc:  # noqa: BLE001 - it may have acted: an unknown outcome
                return Reply(None, None, _line(f"the {provider.name} provider failed on {kind} "
                                               f"({type(exc).__name__}: {exc})"))
            fault_id = str(done["fault_id"])
            assert fault_id not in self._owners, f"{provider.name} reused fault id {fault_id}"
            self._owners[fault_id] = (provider, kind)
        return Reply(201, {**fault, **done, "fault_id": fault_id, "provider": provider.name})

    def _remove(self, fault_id: str) -> Reply:
        with self._lock:
            owner = self._owners.get(fault_id)
            if owner is not None:
                provider, kind = owner
                try:
                    provider.remove(fault_id)
                except FaultRefused as exc:  # still in effect: the fault stays listed
                    return _refused(409, "fault_refused", f"the {provider.name} provider could "
                                                          f"not remove {kind} {fault_id}: {exc}")
                del self._owners[fault_id]
                return Reply(204, None)
        if self.chaos_api:
            return self.inner.request("DELETE", f"{FAULTS}/{fault_id}")
        return _refused(404, "not_found", f"no active fault {fault_id!r}")

    def _clear(self) -> Reply:
        """Every provider cleared, then the target's own faults; every step is tried, and any
        failure makes the whole a refusal (some fault may still be on)."""
        problems = []
        with self._lock:
            for provider in dict.fromkeys(self.providers.values()):
                try:
                    provider.clear()
                except Exception as exc:  # noqa: BLE001 - the others must still be cleared
                    problems.append(f"the {provider.name} provider: {_line(str(exc))}")
            if not problems:
                self._owners.clear()
        if self.chaos_api:
            reply = self.inner.request("DELETE", FAULTS)
            if reply.status not in (204, 404):  # 404: the target has no chaos API at all
                problems.append(f"the target's chaos API: {reply.error or reply.status}")
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            return _refused(409, "fault_refused", f"could not clear every fault: "
                                                  f"{problems[0]}{more}")
        return Reply(204, None)


class ChaosElsewhere(_Wrapping):
    """`inner`, except that its chaos routes go to `chaos`: a load test's master reaches the
    target over HTTP, and the providers through the harness that started the deployment."""

    def __init__(self, inner: Target, chaos: Target) -> None:
        self.inner, self.chaos = inner, chaos
        self.name, self.simulated = inner.name, inner.simulated

    def request(self, method: str, path: str, body: Any = None,
                query: dict | None = None) -> Reply:
        to = self.chaos if is_chaos_route(path) else self.inner
        return to.request(method, path, body, query)

    def close(self) -> None:
        self.inner.close()
        self.chaos.close()


CHAOS_BODY_MAX = 64 * 1024  # the contract's body bound: a fault is a few params
SERVER_STOP_S = 5.0


class ChaosServer:
    """The chaos routes of `routed` over HTTP on a loopback port, for a process that cannot hold
    the providers itself: the load test's master runs inside locust, while the deployment's
    processes and proxies belong to the harness that started them. Only the chaos routes are
    served; anything else is 404."""

    def __init__(self, routed: RoutedTarget, host: str = "127.0.0.1") -> None:
        self.routed = routed
        handler = type("ChaosHandler", (_ChaosHandler,), {"routed": routed})
        self._server = http.server.ThreadingHTTPServer((host, 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="chaos routes")
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(SERVER_STOP_S)


class _ChaosHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    routed: RoutedTarget

    def log_message(self, *args) -> None:  # a report's business, not stderr's
        pass

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def _route(self, method: str) -> None:
        length = int(self.headers.get("content-length") or 0)
        if not 0 <= length <= CHAOS_BODY_MAX or not is_chaos_route(self.path):
            self.close_connection = True
            return self._send(Reply(404, {"error": "not_found", "detail": "no such route"}))
        try:
            body = orjson.loads(self.rfile.read(length)) if length else None
        except orjson.JSONDecodeError:
            return self._send(Reply(400, {"error": "bad_request", "detail": "not JSON"}))
        self._send(self.routed.request(method, self.path, body))

    def _send(self, reply: Reply) -> None:
        # No answer from a provider stays no answer: the connection is dropped unanswered.
        if reply.status is None:
            self.close_connection = True
            return
        data = b"" if reply.body is None else orjson.dumps(reply.body)
        self.send_response(reply.status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _refused(status: int, code: str, detail: str, provider: str | None = None) -> Reply:
    detail = _line(detail)
    body = {"error": code, "detail": detail}
    return Reply(status, body if provider is None else {**body, "provider": provider}, detail)


def _line(text: str) -> str:
    return redact(" ".join(text.split()))
