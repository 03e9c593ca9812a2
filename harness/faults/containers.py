"""Faults done to the target's containers through a docker engine (the `docker` SDK): pause
until removed, kill and start again, disconnect from a named network until removed.

Containers are named by a logical name (the deployment's, e.g. "api") mapped to the engine's
container name or id; a fault may name one with a `container` param. A container on host
networking cannot be cut off by a network disconnect: such a partition is refused, and belongs
to a TCP fault proxy instead.
"""

from __future__ import annotations

import contextlib
import time

import docker
import requests

from ..errors import TargetError
from . import FaultRefused, RoutedProvider, remove_each

CLIENT_TIMEOUT_S = 10  # every engine call is bounded by the client's timeout
RUNNING_TIMEOUT_S = 10.0
RUNNING_POLL_S = 0.05
MESSAGE_CHARS = 200

ACTIONS = ("pause", "restart", "disconnect")
DEFAULT_ACTIONS = {"crash_restart": "restart", "process_pause": "pause",
                   "network_partition": "disconnect"}
DEFAULT_ROUTES = {"crash_restart": "api", "process_pause": "api"}


def docker_client(base_url: str | None = None, timeout_s: int = CLIENT_TIMEOUT_S):
    """A client for `base_url` (default: DOCKER_HOST, else the local socket); an engine that does
    not answer is a one-line TargetError."""
    try:
        if base_url is None:
            return docker.from_env(timeout=timeout_s)
        return docker.DockerClient(base_url=base_url, timeout=timeout_s)
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise TargetError(f"cannot reach the docker engine ({_one_line(exc)}); start it or set "
                          f"DOCKER_HOST") from None


class ContainerProvider(RoutedProvider):
    """`routes` maps a kind to the logical container it acts on (default: crash_restart and
    process_pause on "api", plus network_partition when `network` is named). `actions` maps a
    kind to "pause" (until removed), "restart" (one shot) or "disconnect" (from `network`, until
    removed); the outside kinds have theirs by default. Pauses and disconnects nest per
    container: it is resumed or reconnected when the last is removed. `close` undoes every
    fault; the client stays the caller's."""

    name = "containers"
    thing = "container"

    def __init__(self, client, containers: dict[str, str], routes: dict[str, str] | None = None,
                 *, actions: dict[str, str] | None = None, network: str | None = None,
                 running_timeout_s: float = RUNNING_TIMEOUT_S) -> None:
        self.client, self.containers, self.network = client, containers, network
        default_routes = {**DEFAULT_ROUTES, **({"network_partition": "api"} if network else {})}
        super().__init__(default_routes if routes is None else routes, actions,
                         DEFAULT_ACTIONS, ACTIONS)
        self.running_timeout_s = running_timeout_s

    def inject(self, fault: dict) -> dict:
        kind, params, target = self._routed(fault)
        action = self.actions[kind]
        with self._lock, _engine(f"{kind} on container {target}"):
            container = self._running(target)
            done = self._carried_out(kind, params, target)
            fault_id = done["fault_id"]
            if action == "restart":
                self._restart(target, container)
                return done
            if action == "disconnect":
                network = self._network_for(target, container)
                if not self._held(target, "disconnect"):
                    network.disconnect(container)
            elif not self._held(target, "pause"):
                container.pause()
            self._active[fault_id] = {**done, "action": action}
            return done

    def remove(self, fault_id: str) -> None:
        """Undo a pause or disconnect; an unknown or one-shot fault id has nothing to undo. A
        failed undo leaves the fault listed active, since it is still in effect."""
        with self._lock:
            fault = self._active.pop(fault_id, None)
            if fault is None:
                return
            try:
                with _engine(f"removing {fault['kind']} from container {fault['container']}"):
                    self._undo_if_free(fault["container"], fault["action"])
            except FaultRefused:
                self._active[fault_id] = fault
                raise

    def clear(self) -> None:
        """Remove every active fault; the first refusal is raised after all were tried."""
        with self._lock:
            fault_ids = list(self._active)
        remove_each(self.remove, fault_ids)

    def close(self) -> None:
        self.clear()

    def _running(self, target: str):
        ref = self.containers.get(target)
        if ref is None:
            raise FaultRefused(f"no container named {target!r}; "
                               f"known: {', '.join(self.containers) or 'none'}")
        try:
            container = self.client.containers.get(ref)
        except docker.errors.NotFound:
            raise FaultRefused(f"container {target} ({ref}) does not exist on the docker engine; "
                               f"start it or fix its name") from None
        if container.status not in ("running", "paused"):
            raise FaultRefused(f"container {target} ({ref}) is {container.status}, not running; "
                               f"start it again")
        return container

    def _restart(self, target: str, container) -> None:
        if container.status == "paused":
            container.unpause()  # an engine may refuse to kill a paused container
        container.kill()
        container.start()
        self._wait_running(target, container)
        # A pause still active holds the new process too: the fault says "paused until removed".
        if self._held(target, "pause"):
            container.pause()

    def _wait_running(self, target: str, container) -> None:
        deadline_s = time.monotonic() + self.running_timeout_s
        while time.monotonic() < deadline_s:
            container.reload()
            if container.status == "running":
                return
            time.sleep(RUNNING_POLL_S)
        raise FaultRefused(f"container {target} was killed but is {container.status}, not "
                           f"running, {self.running_timeout_s} s after start; check its logs")

    def _network_for(self, target: str, container):
        if self.network is None:
            raise FaultRefused(f"no docker network named for container partitions of {target}; "
                               f"name one, or route network_partition to a proxy")
        if container.attrs.get("HostConfig", {}).get("NetworkMode") == "host":
            raise FaultRefused(f"container {target} uses host networking, which no network "
                               f"disconnect can cut; route network_partition to a proxy")
        try:
            return self.client.networks.get(self.network)
        except docker.errors.NotFound:
            raise FaultRefused(f"docker network {self.network!r} does not exist; "
                               f"create it or fix its name") from None

    def _held(self, target: str, action: str) -> bool:
        return any(fault["container"] == target and fault["action"] == action
                   for fault in self._active.values())

    def _undo_if_free(self, target: str, action: str) -> None:
        if self._held(target, action):
            return
        try:
            container = self.client.containers.get(self.containers[target])
        except docker.errors.NotFound:
            return  # nothing left to undo
        if action == "pause" and container.status == "paused":
            container.unpause()
        elif action == "disconnect":
            self.client.networks.get(self.network).connect(container)


@contextlib.contextmanager
def _engine(what: str):
    """Engine failures as one-line FaultRefused (FaultRefused itself passes through)."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise FaultRefused(f"docker engine refused {what}: "
                           f"{_one_line(exc.explanation or exc)}") from None
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise FaultRefused(f"docker engine unreachable during {what} ({_one_line(exc)}); "
                           f"start it or set DOCKER_HOST") from None


def _one_line(exc: object) -> str:
    flat = " ".join(str(exc).split())
    return flat if len(flat) <= MESSAGE_CHARS else flat[: MESSAGE_CHARS - 1] + "…"
