"""A deployment file: how to start the target (its processes, the TCP fault proxies in front of
what it talks to, the containers it runs in) and how each abstract fault kind is carried out on
it. `load_deployment` validates the whole file before anything starts; `Deployment.start` starts
it and builds one provider per way of carrying out faults. docs/deployments.md describes every
key.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from types import EllipsisType

from .contract import FAULT_KINDS
from .errors import TargetError, UsageError
from .faults import ALL_KINDS, Provider
from .faults.hooks import HOOK_TIMEOUT_S, Hook, HttpCall
from .faults.process import START_TIMEOUT_S, ManagedProcess, ProcessProvider, free_port
from .packaged import read_toml

NAME = re.compile(r"[A-Za-z0-9_-]+")
# A proxy's port in a process's cmd, health or env, or in the target URL: known only once the
# proxy listens.
PROXY_PORT = re.compile(r"\{proxies\.([^.{}]+)\.port\}")
# A process's port (chosen before anything starts) in a proxy's upstream, a process's cmd,
# health or env, or the target URL: a proxy in front of the api names it so.
PROCESS_PORT = re.compile(r"\{processes\.([^.{}]+)\.port\}")
TOP_KEYS = ("name", "target", "chaos_api", "processes", "proxies", "containers", "faults")
API = "api"  # the process whose URL is the target's, unless `target` says otherwise
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
DEFAULT_LISTEN = "127.0.0.1:0"
NETWORK_KINDS = ("network_latency", "network_partition", "connection_reset")  # a proxy's own
PROCESS_KINDS = ("crash_restart", "process_pause")  # outside kinds with a fixed process action
CONTAINER_KINDS = PROCESS_KINDS + ("network_partition",)
ACTION_OF = {"crash_restart": "restart", "process_pause": "pause",
             "network_partition": "disconnect"}
CONTRACT_ACTIONS = ("pause", "restart")  # what a contract kind may be mapped onto


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    cmd: str
    port: int | None = None
    health: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    start_timeout_s: float = START_TIMEOUT_S


@dataclass(frozen=True)
class ProxySpec:
    name: str
    listen_host: str
    listen_port: int
    upstream_host: str
    upstream_port: int  # 0 when the upstream is a process's port (`upstream_process`)
    upstream_process: str | None = None


@dataclass(frozen=True)
class ProcessRoute:
    process: str
    action: str  # "pause" or "restart"


@dataclass(frozen=True)
class ContainerRoute:
    container: str
    action: str  # "pause", "restart" or "disconnect"
    network: str | None = None


@dataclass(frozen=True)
class ProxyRoute:
    """`toxic` None: the proxy's own toxic for a network kind. `param` maps a toxic param to
    the fault param it takes its value from; `fixed` sets toxic params (and `direction`)."""

    proxy: str
    toxic: str | None = None
    param: dict[str, str] | None = None
    fixed: dict[str, str | int | float] = field(default_factory=dict)


Route = ProcessRoute | ContainerRoute | ProxyRoute | Hook


@dataclass
class Deployment:
    name: str
    processes: dict[str, ProcessSpec] = field(default_factory=dict)
    target: str | None = None  # the target's URL, with placeholders; default: the api's URL
    chaos_api: bool = True  # kinds no provider carries out go to the target's own chaos API
    proxies: dict[str, ProxySpec] = field(default_factory=dict)
    containers: dict[str, str] = field(default_factory=dict)
    faults: dict[str, Route] = field(default_factory=dict)
    running: dict[str, ManagedProcess] = field(default_factory=dict, init=False)
    listening: dict = field(default_factory=dict, init=False)  # name -> FaultProxy
    providers: list[Provider] = field(default_factory=list, init=False)
    _docker: object = field(default=None, init=False, repr=False)  # when containers are routed
    _started: bool = field(default=False, init=False, repr=False)
    _by_kind: dict[str, Provider] = field(default_factory=dict, init=False, repr=False)
    _ports: dict[str, int | None] = field(default_factory=dict, init=False, repr=False)

    def kinds(self) -> tuple[str, ...]:
        return tuple(self.faults)

    @property
    def url(self) -> str | None:
        """The target's URL once started: `target` filled in, else the api process's."""
        if not self._started:
            return None
        if self.target is not None:
            return self._fill(self.target)
        api = self.running.get(API)
        return None if api is None else api.url

    def routed(self) -> dict[str, Provider]:
        """Each fault kind the deployment carries out, with its provider (once started)."""
        assert self._started, "start the deployment first"
        return dict(self._by_kind)

    def start(self, *, seed: int = 0) -> list[Provider]:
        """Proxies first (a command may name a proxy's port), then processes in declaration
        order, each ready before the next; on any failure whatever started is stopped."""
        assert not self._started, f"deployment {self.name} is already started"
        self._started = True
        # Every port first: a proxy in front of a process names the process's port.
        self._ports = {name: spec.port if spec.port is not None
                       else free_port() if "{port}" in spec.cmd else None
                       for name, spec in self.processes.items()}
        try:
            self._start_proxies()
            for spec in self.processes.values():
                self.running[spec.name] = self._start_process(spec)
            self.providers = self._build_providers(seed)
        except BaseException:
            self.stop()
            raise
        return list(self.providers)

    def provider_for(self, kind: str) -> Provider | None:
        """The provider that carries out `kind`, or None when the deployment does not map it
        (the target's own chaos API may)."""
        assert self._started, "start the deployment first"
        return self._by_kind.get(kind)

    def stop(self) -> None:
        """Undo every fault, stop processes (last declared first), then proxies. Every step is
        bounded and tried even if an earlier one failed; the first failure is raised at the end."""
        problems: list[str] = []
        for provider in self.providers:
            _attempt(provider.close, problems)
        for process in reversed(self.running.values()):
            _attempt(process.stop, problems)
        for proxy in self.listening.values():
            _attempt(proxy.stop, problems)
        if self._docker is not None:
            _attempt(self._docker.close, problems)
        self.providers, self.running, self.listening, self._docker = [], {}, {}, None
        self._by_kind = {}
        self._started = False
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise TargetError(f"deployment {self.name} stopped, but {problems[0]}{more}")

    def __enter__(self) -> "Deployment":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _start_proxies(self) -> None:
        if not self.proxies:
            return
        # Imported here: only deployments with proxies need the proxy (and its event loop).
        from .faults.proxy import FaultProxy

        for spec in self.proxies.values():
            upstream_port = spec.upstream_port if spec.upstream_process is None \
                else self._ports[spec.upstream_process]
            assert upstream_port, f"proxy {spec.name}: its upstream has no port"
            proxy = FaultProxy(spec.listen_host, spec.listen_port, spec.upstream_host,
                               upstream_port, name=spec.name)
            try:
                proxy.start()
            except (OSError, RuntimeError, TimeoutError) as exc:
                raise TargetError(f"proxy {spec.name} cannot listen on {spec.listen_host}:"
                                  f"{spec.listen_port} ({exc}); pick a free port") from None
            self.listening[spec.name] = proxy

    def _fill(self, text: str) -> str:
        text = PROXY_PORT.sub(lambda m: str(self.listening[m[1]].port), text)
        return PROCESS_PORT.sub(lambda m: str(self._ports[m[1]]), text)

    def _start_process(self, spec: ProcessSpec) -> ManagedProcess:
        fill = self._fill
        return ManagedProcess(
            spec.name, fill(spec.cmd), port=self._ports.get(spec.name, spec.port),
            health_url=None if spec.health is None else fill(spec.health),
            env={key: fill(value) for key, value in spec.env.items()}, cwd=spec.cwd,
            start_timeout_s=spec.start_timeout_s)

    def _build_providers(self, seed: int) -> list[Provider]:
        """One provider per way of carrying out faults; `_by_kind` says which has which kind
        (a provider may list more kinds than the file routes to it)."""
        def routed(kind_of_route):
            return {kind: route for kind, route in self.faults.items()
                    if isinstance(route, kind_of_route)}

        built: list[tuple[Provider, dict]] = []
        if processes := routed(ProcessRoute):
            built.append((ProcessProvider(
                self.running, {kind: r.process for kind, r in processes.items()},
                actions={kind: r.action for kind, r in processes.items()}), processes))
        if containers := routed(ContainerRoute):
            from .faults.containers import ContainerProvider, docker_client

            self._docker = docker_client()
            network = next((r.network for r in containers.values() if r.network), None)
            built.append((ContainerProvider(
                self._docker, self.containers,
                {kind: r.container for kind, r in containers.items()},
                actions={kind: r.action for kind, r in containers.items()}, network=network),
                containers))
        if proxied := routed(ProxyRoute):
            built.append((self._network_provider(proxied, seed), proxied))
        if hooks := routed(Hook):
            from .faults.hooks import HookProvider

            built.append((HookProvider(hooks), hooks))
        self._by_kind = {kind: provider for provider, routes in built for kind in routes}
        return [provider for provider, _ in built]

    def _network_provider(self, proxied: dict[str, ProxyRoute], seed: int) -> Provider:
        from .faults.proxy import NetworkProvider

        kind_map = {kind: (r.toxic, dict(r.fixed)) for kind, r in proxied.items() if r.toxic}
        try:
            provider = NetworkProvider(self.listening, {k: [r.proxy] for k, r in proxied.items()},
                                       seed, kind_map)
        except ValueError as exc:  # e.g. a toxic the proxy does not know
            raise UsageError(f"deployment {self.name}: faults: {exc}") from None
        renames = {kind: r.param or {} for kind, r in proxied.items()
                   if r.param is not None or kind not in NETWORK_KINDS}
        return ParamsMapped(provider, renames) if renames else provider


class ParamsMapped:
    """A provider that sees, for the kinds in `renames`, only the params mapped there, under
    their new names: a contract fault's `delay_ms` becomes a toxic's `latency_ms`, and params no
    toxic takes (a `probability`) are left out. The fault is reported with its own params."""

    def __init__(self, inner: Provider, renames: dict[str, dict[str, str]]) -> None:
        self.inner, self.renames = inner, renames
        self.name = inner.name

    def kinds(self) -> tuple[str, ...]:
        return self.inner.kinds()

    def inject(self, fault: dict) -> dict:
        rename = self.renames.get(fault.get("kind"))
        if rename is None:
            return self.inner.inject(fault)
        mapped = {new: fault[old] for new, old in rename.items() if old in fault}
        done = self.inner.inject({"kind": fault["kind"], **mapped})
        return {"fault_id": done["fault_id"], **fault, "provider": done.get("provider", self.name)}

    def remove(self, fault_id: str) -> None:
        self.inner.remove(fault_id)

    def clear(self) -> None:
        self.inner.clear()

    def close(self) -> None:
        self.inner.close()


def _attempt(step, problems: list[str]) -> None:
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - one failed step must not leave processes running
        problems.append(" ".join(str(exc).split()) or type(exc).__name__)


TARGET_CMD = "--target-cmd"
# What the api process started from --target-cmd carries out, unless a deployment file says.
TARGET_CMD_ROUTES = {"crash_restart": ProcessRoute(API, "restart"),
                     "process_pause": ProcessRoute(API, "pause")}


def target_cmd_process(cmd: str) -> ProcessSpec:
    """The api process `--target-cmd 'CMD {port}'` starts: on a free port, ready when the port
    accepts connections."""
    if "{port}" not in cmd:
        raise UsageError(f"{TARGET_CMD} must contain {{port}}, where the harness puts the port "
                         f"it chose, e.g. {TARGET_CMD} 'my-service --port {{port}}'")
    try:
        shlex.split(cmd)
    except ValueError as exc:
        raise UsageError(f"{TARGET_CMD} cannot be split into words ({exc}); check its "
                         f"quotes") from None
    return ProcessSpec(API, cmd)


def deployment_from_target_cmd(cmd: str) -> Deployment:
    """What `--target-cmd 'CMD {port}'` alone means: one process, "api", started on a free port
    and ready when the port accepts connections; crash_restart and process_pause act on it."""
    return Deployment(name=TARGET_CMD, processes={API: target_cmd_process(cmd)},
                      faults=dict(TARGET_CMD_ROUTES))


def open_run_target(spec: str | None, *, target_cmd: str | None = None,
                    deployment: str | Path | None = None, seed: int = 0, **options):
    """`targets.open_target(spec, seed=seed, **options)`; with `target_cmd` or `deployment`
    (--target-cmd, --deployment), that deployment started first and the target it names opened,
    its fault kinds routed to its providers (`faults.routing.RoutedTarget`): closing the target
    stops the deployment, whatever happened before."""
    from .faults.routing import RoutedTarget
    from .targets import open_target

    if target_cmd is None and deployment is None:
        return open_target(spec, seed=seed, **options)
    started = deployment_for(spec, target_cmd, deployment)
    started.start(seed=seed)
    try:
        inner = open_target(started.url or spec, seed=seed, **options)
        return RoutedTarget(inner, started.routed(), chaos_api=started.chaos_api, owner=started)
    except BaseException:
        started.stop()
        raise


def deployment_for(spec: str | None, target_cmd: str | None,
                   path: str | Path | None) -> Deployment:
    """The deployment --target-cmd and --deployment describe (not started), checked against
    --target: exactly one of them says where the target is."""
    deployment = deployment_from_target_cmd(target_cmd) if path is None else \
        load_deployment(path, target_cmd)
    names_target = deployment.target is not None or API in deployment.processes
    if spec is not None and names_target:
        raise UsageError(f"deployment {deployment.name} starts the target itself; drop --target")
    if spec is None and not names_target:
        raise UsageError(f"deployment {deployment.name} starts no {API} process and names no "
                         f"target; give --target URL (or {TARGET_CMD}, or a target key)")
    if spec is not None and not spec.startswith(("http://", "https://")):
        raise UsageError("a deployment acts on a real service: --target must be an http:// or "
                         "https:// URL")
    return deployment


def load_deployment(path: str | Path, target_cmd: str | None = None) -> Deployment:
    """The deployment in a TOML file, validated whole: any problem is a one-line UsageError
    naming the file and the key. `target_cmd`: the file plus the api process --target-cmd
    starts (first, so the file's proxies and processes may name its port), with crash_restart
    and process_pause on it where the file routes them nowhere else."""
    path = Path(path)
    raw = read_toml(path, "deployment file")
    api = None if target_cmd is None else target_cmd_process(target_cmd)
    return _Reader(path, api).deployment(raw)


class _Reader:
    """Validates one file's parsed TOML; every error names `self.path` and the dotted key."""

    def __init__(self, path: Path, api: ProcessSpec | None = None) -> None:
        self.path = path
        self.api = api  # started from --target-cmd

    def error(self, key: str, problem: str) -> UsageError:
        return UsageError(f"deployment file {self.path}: {key}: {problem}")

    def deployment(self, raw: dict) -> Deployment:
        self.keys(raw, "", TOP_KEYS)
        name = self.string(raw, "name", "name", default=self.path.stem)
        proxies = {key: self.proxy(key, value)
                   for key, value in self.named_tables(raw, "proxies").items()}
        processes = {key: self.process(key, value)
                     for key, value in self.named_tables(raw, "processes").items()}
        if self.api is not None:
            if API in processes:
                raise self.error(f"processes.{API}", f"{TARGET_CMD} starts the {API} process "
                                                     f"already; drop one of them")
            processes = {API: self.api, **processes}
        self.process_ports(processes, proxies)
        containers = {key: self.string(raw["containers"], key, f"containers.{key}")
                      for key in self.names(raw, "containers")}
        declared = {"process": processes, "proxy": proxies, "container": containers}
        faults_raw = self.table(raw, "faults", "faults")
        faults = {kind: self.route(kind, value, declared) for kind, value in faults_raw.items()}
        if self.api is not None:
            faults = {**TARGET_CMD_ROUTES, **faults}
        target = self.target(raw, processes, proxies)
        chaos_api = raw.get("chaos_api", True)
        if type(chaos_api) is not bool:
            raise self.error("chaos_api", f"must be true or false, not {_type(chaos_api)}")
        return Deployment(name=name, processes=processes, target=target, chaos_api=chaos_api,
                          proxies=proxies, containers=containers, faults=faults)

    def target(self, raw: dict, processes: dict, proxies: dict) -> str | None:
        target = self.string(raw, "target", "target", default=None)
        if target is None:
            return None
        if not target.startswith(("http://", "https://")):
            raise self.error("target", "must be an http:// or https:// URL, e.g. "
                                       "http://127.0.0.1:{proxies.front.port}")
        self.placeholders("target", target, processes, proxies)
        return target

    def process_ports(self, processes: dict, proxies: dict) -> None:
        """`{processes.NAME.port}` anywhere must name a declared process that has a port."""
        for spec in processes.values():
            where = f"processes.{spec.name}"
            texts = {"cmd": spec.cmd, "health": spec.health or ""} | \
                {f"env.{k}": v for k, v in spec.env.items()}
            for key, text in texts.items():
                self.placeholders(f"{where}.{key}", text, processes, proxies)
        for spec in proxies.values():
            if spec.upstream_process is not None:
                self.placeholders(f"proxies.{spec.name}.upstream",
                                  f"{{processes.{spec.upstream_process}.port}}", processes,
                                  proxies)

    def placeholders(self, where: str, text: str, processes: dict, proxies: dict) -> None:
        for proxy in PROXY_PORT.findall(text):
            if proxy not in proxies:
                raise self.error(where, f"names proxy {proxy!r}, which is not declared under "
                                        f"[proxies]")
        for name in PROCESS_PORT.findall(text):
            spec = processes.get(name)
            if spec is None:
                raise self.error(where, f"names process {name!r}, which is not declared under "
                                        f"[processes]")
            if spec.port is None and "{port}" not in spec.cmd:
                raise self.error(where, f"names the port of process {name!r}, which has none: "
                                        f"put {{port}} in its cmd or set its port")

    # -- sections ---------------------------------------------------------------------------
    def process(self, name: str, raw: dict) -> ProcessSpec:
        where = f"processes.{name}"
        self.keys(raw, where, ("cmd", "port", "health", "env", "cwd", "start_timeout_s"))
        cmd = self.string(raw, "cmd", f"{where}.cmd")
        try:
            shlex.split(cmd)
        except ValueError as exc:
            raise self.error(f"{where}.cmd", f"cannot be split into words ({exc}); check its "
                                             f"quotes") from None
        port = self.integer(raw, "port", f"{where}.port", 1, 65535)
        health = self.string(raw, "health", f"{where}.health", default=None)
        if health is not None and not health.startswith(("/", "http://", "https://")):
            raise self.error(f"{where}.health", "must be a path such as /v1/health or an "
                                                "http:// URL")
        if health is not None and health.startswith("/") and port is None and "{port}" not in cmd:
            raise self.error(f"{where}.health", "a health path needs a port: put {port} in cmd "
                                                "or set port")
        env_raw = self.table(raw, "env", f"{where}.env")
        env = {key: self.string(env_raw, key, f"{where}.env.{key}") for key in env_raw}
        cwd = self.string(raw, "cwd", f"{where}.cwd", default=None)
        timeout_s = self.number(raw, "start_timeout_s", f"{where}.start_timeout_s",
                                START_TIMEOUT_S)
        return ProcessSpec(name, cmd, port, health, env,
                           None if cwd is None else self.path.parent / cwd, timeout_s)

    def proxy(self, name: str, raw: dict) -> ProxySpec:
        where = f"proxies.{name}"
        self.keys(raw, where, ("listen", "upstream"))
        listen = self.address(raw, "listen", f"{where}.listen", DEFAULT_LISTEN, port_min=0)
        upstream = raw.get("upstream")
        named = PROCESS_PORT.fullmatch(upstream.rpartition(":")[2]) \
            if isinstance(upstream, str) else None
        if named is not None and upstream.rpartition(":")[0]:
            # A process's port, known once the deployment starts (checked with the processes).
            return ProxySpec(name, *listen, upstream.rpartition(":")[0], 0, named[1])
        upstream = self.address(raw, "upstream", f"{where}.upstream", ..., port_min=1)
        return ProxySpec(name, *listen, *upstream)

    def route(self, kind: str, raw, declared: dict) -> Route:
        where = f"faults.{kind}"
        if kind not in ALL_KINDS:
            raise self.error(where, f"unknown fault kind; known: {', '.join(ALL_KINDS)}")
        if isinstance(raw, str):  # shorthand: a one-shot command hook
            return Hook(inject=self.action(raw, where))
        if not isinstance(raw, dict):
            raise self.error(where, f"must be a command string or a table, not {_type(raw)}")
        vias = [via for via in ("process", "container", "proxy", "inject") if via in raw]
        if len(vias) != 1:
            raise self.error(where, "needs exactly one of process, container, proxy or inject")
        via = vias[0]
        if via == "inject":
            return self.hook(kind, raw, where)
        if via == "proxy":
            return self.proxy_route(kind, raw, where, declared["proxy"])
        allowed = (via, "action") + (("network",) if via == "container" else ())
        self.keys(raw, where, allowed)
        target = self.string(raw, via, f"{where}.{via}")
        if target not in declared[via]:
            section = "processes" if via == "process" else "containers"
            raise self.error(f"{where}.{via}", f"{target!r} is not declared under [{section}]")
        action = self.contract_action(kind, raw, where, via)
        if via == "process":
            return ProcessRoute(target, action)
        network = self.string(raw, "network", f"{where}.network", default=None)
        if action == "disconnect" and network is None:
            raise self.error(f"{where}.network", "missing; a container partition needs the docker "
                                                 "network to disconnect it from")
        if action != "disconnect" and network is not None:
            raise self.error(f"{where}.network", "only network_partition takes a network")
        return ContainerRoute(target, action, network)

    def contract_action(self, kind: str, raw: dict, where: str, via: str) -> str:
        fixed = PROCESS_KINDS if via == "process" else CONTAINER_KINDS
        if kind in fixed:
            if "action" in raw:
                raise self.error(f"{where}.action", f"{kind} always means {ACTION_OF[kind]}; "
                                                    f"remove the key")
            return ACTION_OF[kind]
        if kind not in FAULT_KINDS:
            raise self.error(where, f"a {via} cannot carry out {kind}; route it to a proxy")
        action = self.string(raw, "action", f"{where}.action")
        if action not in CONTRACT_ACTIONS:
            raise self.error(f"{where}.action", f"must be one of {', '.join(CONTRACT_ACTIONS)}")
        return action

    def proxy_route(self, kind: str, raw: dict, where: str, proxies: dict) -> ProxyRoute:
        self.keys(raw, where, ("proxy", "toxic", "param", "fixed"))
        if kind in PROCESS_KINDS:
            raise self.error(f"{where}.proxy", f"a proxy cannot carry out {kind}; route it to a "
                                               f"process or a container")
        proxy = self.string(raw, "proxy", f"{where}.proxy")
        if proxy not in proxies:
            raise self.error(f"{where}.proxy", f"{proxy!r} is not declared under [proxies]")
        # Which toxics exist is the proxy's to say; it is checked when the deployment starts.
        toxic = self.string(raw, "toxic", f"{where}.toxic", default=None)
        if toxic is None and kind not in NETWORK_KINDS:
            raise self.error(f"{where}.toxic", f"missing; {kind} on a proxy needs a toxic, such "
                                               f"as latency or timeout (docs/deployments.md)")
        param = None
        if "param" in raw:
            param_raw = self.table(raw, "param", f"{where}.param")
            param = {key: self.string(param_raw, key, f"{where}.param.{key}")
                     for key in param_raw}
        fixed = self.table(raw, "fixed", f"{where}.fixed")
        for key, value in fixed.items():
            if type(value) not in (str, int, float):
                raise self.error(f"{where}.fixed.{key}", f"must be a string or a number, not "
                                                         f"{_type(value)}")
        return ProxyRoute(proxy, toxic, param, fixed)

    def hook(self, kind: str, raw: dict, where: str) -> Hook:
        self.keys(raw, where, ("inject", "remove", "timeout_s"))
        inject = self.action(raw["inject"], f"{where}.inject")
        remove = None if "remove" not in raw else self.action(raw["remove"], f"{where}.remove")
        timeout_s = self.number(raw, "timeout_s", f"{where}.timeout_s", HOOK_TIMEOUT_S)
        return Hook(inject, remove, timeout_s)

    def action(self, raw, where: str) -> str | HttpCall:
        if isinstance(raw, str):
            if not raw.strip():
                raise self.error(where, "must not be empty")
            return raw
        if not isinstance(raw, dict):
            raise self.error(where, f"must be a command string or an HTTP table, not {_type(raw)}")
        self.keys(raw, where, ("method", "url", "body", "headers"))
        method = self.string(raw, "method", f"{where}.method").upper()
        if method not in HTTP_METHODS:
            raise self.error(f"{where}.method", f"must be one of {', '.join(HTTP_METHODS)}")
        url = self.string(raw, "url", f"{where}.url")
        if not url.startswith(("http://", "https://")):
            raise self.error(f"{where}.url", "must start with http:// or https://")
        body = raw.get("body")
        if body is not None and not isinstance(body, (str, dict)):
            raise self.error(f"{where}.body", f"must be a string or a table, not {_type(body)}")
        headers_raw = self.table(raw, "headers", f"{where}.headers")
        headers = {key: self.string(headers_raw, key, f"{where}.headers.{key}")
                   for key in headers_raw}
        return HttpCall(method, url, body, headers)

    # -- values -----------------------------------------------------------------------------
    def keys(self, raw: dict, where: str, allowed: tuple[str, ...]) -> None:
        unknown = [key for key in raw if key not in allowed]
        if unknown:
            key = f"{where}.{unknown[0]}" if where else unknown[0]
            raise self.error(key, f"unknown key; known here: {', '.join(allowed)}")

    def table(self, raw: dict, key: str, where: str) -> dict:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            raise self.error(where, f"must be a table, not {_type(value)}")
        return value

    def names(self, raw: dict, section: str) -> list[str]:
        table = self.table(raw, section, section)
        for name in table:
            if not NAME.fullmatch(name):
                raise self.error(f"{section}.{name}", "names may hold only letters, digits, _ "
                                                      "and -")
        return list(table)

    def named_tables(self, raw: dict, section: str) -> dict[str, dict]:
        table = self.table(raw, section, section)
        for name in self.names(raw, section):
            if not isinstance(table[name], dict):
                raise self.error(f"{section}.{name}", f"must be a table, not {_type(table[name])}")
        return table

    def string(self, raw: dict, key: str, where: str, default: str | None | EllipsisType = ...):
        """The string at `key`; `default` ... means required."""
        if key not in raw:
            if default is ...:
                raise self.error(where, "missing; it is required")
            return default
        value = raw[key]
        if not isinstance(value, str) or not value:
            raise self.error(where, f"must be a non-empty string, not {_type(value)}")
        return value

    def integer(self, raw: dict, key: str, where: str, low: int, high: int) -> int | None:
        value = raw.get(key)
        if value is not None and (type(value) is not int or not low <= value <= high):
            raise self.error(where, f"must be an integer from {low} to {high}")
        return value

    def number(self, raw: dict, key: str, where: str, default: float) -> float:
        value = raw.get(key, default)
        if type(value) not in (int, float) or not value > 0:
            raise self.error(where, "must be a positive number of seconds")
        return float(value)

    def address(self, raw: dict, key: str, where: str, default: str | EllipsisType,
                port_min: int) -> tuple[str, int]:
        text = self.string(raw, key, where, default)
        host, _, port = text.rpartition(":")
        if not host or not port.isdigit() or not port_min <= int(port) <= 65535:
            raise self.error(where, f"must be HOST:PORT with a port from {port_min} to 65535, "
                                    f"not {text!r}")
        return host, int(port)


def _type(value) -> str:
    names = {str: "string", int: "integer", float: "float", bool: "boolean", dict: "table",
             list: "array"}
    if isinstance(value, str) and not value:
        return "an empty string"
    return names.get(type(value), type(value).__name__)
