"""Fault providers: the nemesis decides which fault and when; a provider carries it out.

A provider turns an abstract fault (`{"kind": ..., **params}`) into something done to the target
from outside or through its own chaos API: a signal to a process, a toxic on a TCP proxy, a shell
command, a container paused. The history records every injection and removal through the
recorder, whichever provider carried it out, so fault windows, staleness allowances and coverage
do not depend on how a fault was made.

The abstract kinds are the contract's six plus what operators see go wrong with real components.
"""

from __future__ import annotations

import itertools
import threading
from typing import Protocol

from ..contract import FAULT_KINDS

# Faults a service's own chaos API cannot express, carried out on its processes and connections.
OUTSIDE_KINDS = (
    "crash_restart",      # SIGKILL a process (or container), then start it again
    "process_pause",      # SIGSTOP until removed (SIGCONT), or a container paused
    "network_latency",    # a proxy delays every byte by latency_ms (plus jitter_ms)
    "network_partition",  # a proxy black-holes traffic until removed
    "connection_reset",   # a proxy resets every connection (RST) until removed
)
ALL_KINDS = FAULT_KINDS + OUTSIDE_KINDS
# Done once, never "on": the fault's window ends when its injection is answered (a restart is
# answered once the process is ready again), and nothing is left to remove.
ONE_SHOT_KINDS = ("maintenance_reset", "crash_restart")


class FaultRefused(Exception):
    """A provider could not carry out (or undo) a fault: a hook failed or timed out, a process
    is gone, a proxy is not listening. One line, no secrets; the recorder records the
    injection as refused (`fail`), so the fault is never counted as having acted."""


def remove_each(remove, fault_ids: list[str]) -> None:
    """`remove(fault_id)` for each, all tried even when some are refused; then the first refusal
    is raised, saying how many more there were."""
    refusals = []
    for fault_id in fault_ids:
        try:
            remove(fault_id)
        except FaultRefused as exc:
            refusals.append(str(exc))
    if refusals:
        more = f" (and {len(refusals) - 1} more)" if len(refusals) > 1 else ""
        raise FaultRefused(refusals[0] + more)


class RoutedProvider:
    """What the process and container providers share: each kind they carry out is routed to a
    named thing (a process, a container) and an action on it; faults still in effect are kept,
    by fault_id, under a lock (the nemesis and the convergence phase are two threads)."""

    name = "routed"
    thing = "thing"  # the param that names what a fault acts on, and what the ids begin with

    def __init__(self, routes: dict[str, str], actions: dict[str, str] | None,
                 default_actions: dict[str, str], allowed: tuple[str, ...]) -> None:
        self.routes = dict(routes)
        self.actions = {kind: (actions or {}).get(kind, default_actions.get(kind))
                        for kind in self.routes}
        assert all(action in allowed for action in self.actions.values()), \
            f"every routed kind needs an action from {allowed}: {self.actions}"
        self._active: dict[str, dict] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def kinds(self) -> tuple[str, ...]:
        return tuple(self.routes)

    def active(self) -> list[dict]:
        with self._lock:
            return list(self._active.values())

    def _routed(self, fault: dict) -> tuple[str, dict, str]:
        """(kind, params, the thing it acts on), or FaultRefused for a kind not routed here."""
        kind = fault.get("kind")
        if kind not in self.routes:
            raise FaultRefused(f"the {self.name} provider does not carry out {kind!r}; "
                               f"it carries out {', '.join(self.routes) or 'nothing'}")
        params = {key: value for key, value in fault.items() if key != "kind"}
        return kind, params, params.get(self.thing, self.routes[kind])

    def _carried_out(self, kind: str, params: dict, target: str) -> dict:
        """The fault as injected, with a new fault_id (call under the lock)."""
        return {"fault_id": f"{self.thing}-{next(self._ids)}", "kind": kind, **params,
                self.thing: target, "provider": self.name}


class Provider(Protocol):
    """Carries out faults of some kinds. `inject` returns the fault as carried out, with a
    `fault_id` unique within the provider (a one-shot fault such as `maintenance_reset` or
    `crash_restart` also gets one, and is never listed as active); `remove` and `clear` undo.
    Every call has a bound on its time and raises FaultRefused rather than hang."""

    name: str

    def kinds(self) -> tuple[str, ...]: ...

    def inject(self, fault: dict) -> dict: ...

    def remove(self, fault_id: str) -> None: ...

    def clear(self) -> None: ...

    def close(self) -> None: ...
