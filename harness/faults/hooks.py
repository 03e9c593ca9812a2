"""Faults carried out by the operator's own commands (Chaos Toolkit's "actions"): a shell command
or an HTTP call to inject, another to remove. A kind is whatever the deployment file maps, e.g.
`maintenance_reset = "redis-cli -n 1 FLUSHDB"`; a hook with no remove action is one shot.

The fault's params, its `kind` and its `fault_id` reach a command as `{name}` placeholders (each
value shell-quoted) and as environment variables `LIMIT_FAULT_<NAME>`; an HTTP call gets them as
placeholders in its URL, headers and body. Messages never carry the command's environment, nor
an HTTP call's credentials or query string.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import orjson
import urllib3

from . import FaultRefused, remove_each

HOOK_TIMEOUT_S = 10.0
KILL_WAIT_S = 5.0
MESSAGE_CHARS = 200
PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class HttpCall:
    """An HTTP action. A table `body` is sent as JSON; a string value in it that is exactly
    `{param}` becomes the param's value with its type (so `"{delay_ms}"` sends a number)."""

    method: str
    url: str
    body: str | dict | None = None
    headers: dict[str, str] = field(default_factory=dict)


Action = str | HttpCall  # a str is a shell command


@dataclass(frozen=True)
class Hook:
    inject: Action
    remove: Action | None = None
    timeout_s: float = HOOK_TIMEOUT_S

    def __post_init__(self) -> None:
        assert self.timeout_s > 0, "a hook needs a positive timeout_s"


class HookProvider:
    """Runs the hook mapped to a fault's kind. A failed or timed-out action is FaultRefused; a
    failed remove leaves the fault listed active, since whatever it did is still in effect."""

    name = "hooks"

    def __init__(self, hooks: dict[str, Hook]) -> None:
        self.hooks = hooks
        self._active: dict[str, dict] = {}  # fault_id -> the values it was injected with
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._http = urllib3.PoolManager(maxsize=2, retries=False)

    def kinds(self) -> tuple[str, ...]:
        return tuple(self.hooks)

    def active(self) -> list[dict]:
        with self._lock:
            return [{**values, "provider": self.name} for values in self._active.values()]

    def inject(self, fault: dict) -> dict:
        kind = fault.get("kind")
        hook = self.hooks.get(kind)
        if hook is None:
            raise FaultRefused(f"no hook for {kind!r}; hooks: {', '.join(self.hooks) or 'none'}")
        with self._lock:
            fault_id = f"hook-{next(self._ids)}"
        values = {**fault, "fault_id": fault_id}
        self._run(hook.inject, values, hook.timeout_s, f"hook {kind} inject")
        if hook.remove is not None:
            with self._lock:
                self._active[fault_id] = values
        return {"fault_id": fault_id, **fault, "provider": self.name}

    def remove(self, fault_id: str) -> None:
        """Run the hook's remove action; an unknown or one-shot fault id has nothing to undo."""
        with self._lock:
            values = self._active.get(fault_id)
        if values is None:
            return
        hook = self.hooks[values["kind"]]
        self._run(hook.remove, values, hook.timeout_s, f"hook {values['kind']} remove")
        with self._lock:
            self._active.pop(fault_id, None)

    def clear(self) -> None:
        """Remove every active fault; the first refusal is raised after all were tried."""
        with self._lock:
            fault_ids = list(self._active)
        remove_each(self.remove, fault_ids)

    def close(self) -> None:
        self._http.clear()

    def _run(self, action: Action, values: dict, timeout_s: float, what: str) -> None:
        if isinstance(action, HttpCall):
            self._call(action, values, timeout_s, what)
        else:
            run_command(action, values, timeout_s, what)

    def _call(self, call: HttpCall, values: dict, timeout_s: float, what: str) -> None:
        url = _fill(call.url, values, lambda value: quote(_text(value), safe=""))
        where = f"{call.method} {_without_secrets(url)}"
        headers = {key: _fill(value, values, _text) for key, value in call.headers.items()}
        body = call.body
        if isinstance(body, dict):
            body = orjson.dumps(_fill_json(body, values))
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            body = _fill(body, values, _text).encode()
        try:
            response = self._http.request(call.method, url, body=body, headers=headers,
                                          timeout=urllib3.Timeout(total=timeout_s))
        except urllib3.exceptions.HTTPError as exc:
            raise FaultRefused(f"{what}: {where} {_failure(exc, timeout_s)}") from None
        if not 200 <= response.status < 300:
            said = _one_line(response.data.decode(errors="replace"), 80)
            raise FaultRefused(f"{what}: {where} answered {response.status}, not 2xx"
                               + (f": {said}" if said else ""))


def run_command(command: str, values: dict, timeout_s: float, what: str) -> None:
    """Run `command` in a shell in its own process group, so a timeout kills what it forked too
    (subprocess.run would kill only the shell and leave, say, a `sleep` running)."""
    env = {**os.environ, **{f"LIMIT_FAULT_{key.upper()}": _text(value)
                            for key, value in values.items()}}
    command = _fill(command, values, lambda value: shlex.quote(_text(value)))
    with subprocess.Popen(command, shell=True, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          start_new_session=True) as proc:
        try:
            _, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            raise FaultRefused(f"{what}: command did not finish within {timeout_s} s and was "
                               f"killed; raise timeout_s or make it faster") from None
    if proc.returncode != 0:
        lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
        last = _one_line(lines[-1], MESSAGE_CHARS) if lines else "no stderr"
        ended = (f"was killed by signal {-proc.returncode}" if proc.returncode < 0
                 else f"exited with {proc.returncode}")
        raise FaultRefused(f"{what}: command {ended}: {last}")


def _failure(exc: urllib3.exceptions.HTTPError, timeout_s: float) -> str:
    # A refused connection is a NewConnectionError, which urllib3 makes a TimeoutError too.
    if isinstance(exc, urllib3.exceptions.TimeoutError) and \
            not isinstance(exc, urllib3.exceptions.NewConnectionError):
        return f"did not answer within {timeout_s} s; raise timeout_s or check the endpoint"
    return f"could not be reached ({type(exc).__name__}); check the URL and that it is up"


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=KILL_WAIT_S)
    except subprocess.TimeoutExpired:
        pass  # something left the group and holds the pipe; the shell itself is dead


def _fill(template: str, values: dict, render) -> str:
    # One pass, so a value that itself looks like `{name}` is not substituted again; unknown
    # names stay as written (a shell's `${HOME}` or a JSON brace is not ours).
    return PLACEHOLDER.sub(
        lambda m: render(values[m[1]]) if m[1] in values else m[0], template)


def _fill_json(value, values: dict):
    if isinstance(value, dict):
        return {key: _fill_json(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill_json(item, values) for item in value]
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value)
        if whole and whole[1] in values:
            return values[whole[1]]
        return _fill(value, values, _text)
    return value


def _text(value) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _without_secrets(url: str) -> str:
    """Scheme, host, port and path: userinfo and query strings often carry tokens."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
