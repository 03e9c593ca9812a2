"""The history: every operation the harness performed, as an invocation and its completion.

The history, not the harness's memory, is what the checkers judge, so it carries everything a
checker needs (what was sent, what came back, when) and saves to and loads from JSON lines.

Vocabulary (DESIGN.md): an operation completes `ok` (acknowledged), `fail` (rejected with a
definite 4xx; for a display read, a definite 503) or `info` (outcome unknown: timeout, reset,
5xx, a reply that breaks the contract). An `info` write is never assumed done or not done.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import orjson

from .clock import SIM_EPOCH, rfc3339
from .contract import WRITE_KINDS
from .faults import ALL_KINDS, ONE_SHOT_KINDS

# An op's `f` names the operation (Jepsen's word): a write (named by its kind), a read, a
# fault move or a phase marker.
WRITE_FS = WRITE_KINDS
READ_FS = ("display", "ledger")
FAULT_FS = ("fault_add", "fault_remove")
FS = WRITE_FS + READ_FS + FAULT_FS + ("phase",)
OUTCOMES = ("ok", "fail", "info")
PHASES = ("setup", "safety", "convergence", "check")
FORMAT_VERSION = 1


@dataclass(slots=True)
class Op:
    """One operation: its invocation (index, process, f, request, invoke_ms) and completion."""

    index: int
    process: int
    f: str
    account_id: str | None
    request: dict | None
    invoke_ms: int
    complete_ms: int | None = None
    outcome: str | None = None
    http_status: int | None = None
    response: Any = None
    error: str | None = None
    # Index of the earlier op whose request_id this one deliberately reuses (an idempotent retry).
    retry_of: int | None = None

    @property
    def request_id(self) -> str | None:
        return self.request.get("request_id") if self.request else None

    @property
    def is_write(self) -> bool:
        return self.f in WRITE_FS

    def to_dict(self) -> dict:
        # `dataclasses.asdict` deep-copies through generic machinery: a history slice per
        # finding and a whole saved history pay for it op by op. The same copy, of the JSON
        # values an op holds, is made directly; anything else takes the generic way.
        try:
            return {name: _json_copy(value) for name in _OP_FIELD_NAMES
                    if (value := getattr(self, name)) is not None}
        except _NotJson:
            return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(slots=True)
class FaultWindow:
    """A fault as the history saw it: injected at `start_ms`, removed at `end_ms` (None: never)."""

    fault_id: str
    kind: str
    params: dict
    start_ms: int
    end_ms: int | None

    def active_at(self, t_ms: int) -> bool:
        return self.start_ms <= t_ms and (self.end_ms is None or t_ms <= self.end_ms)

    def overlaps(self, lo_ms: int, hi_ms: float) -> bool:
        return self.start_ms <= hi_ms and (self.end_ms is None or self.end_ms >= lo_ms)

    def describe(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.kind}({params})" if params else self.kind


@dataclass
class History:
    """The ops of one run plus what is needed to judge them again later."""

    meta: dict = field(default_factory=dict)
    ops: list[Op] = field(default_factory=list)

    # -- recording -------------------------------------------------------------------------
    def invoke(self, process: int, f: str, account_id: str | None, request: dict | None,
               now_ms: int, retry_of: int | None = None) -> Op:
        assert f in FS, f
        op = Op(len(self.ops), process, f, account_id, request, now_ms, retry_of=retry_of)
        self.ops.append(op)
        return op

    @staticmethod
    def complete(op: Op, outcome: str, now_ms: int, http_status: int | None = None,
                 response: Any = None, error: str | None = None) -> Op:
        assert outcome in OUTCOMES, outcome
        assert op.outcome is None, "an operation completes once"
        assert now_ms >= op.invoke_ms, "completion before invocation"
        op.outcome, op.complete_ms = outcome, now_ms
        op.http_status, op.response, op.error = http_status, response, error
        return op

    def phase(self, name: str, now_ms: int) -> None:
        assert name in PHASES, name
        op = self.invoke(0, "phase", None, {"name": name}, now_ms)
        self.complete(op, "ok", now_ms)

    # -- reading ---------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    def for_account(self, account_id: str) -> list[Op]:
        return [op for op in self.ops if op.account_id == account_id]

    def phase_start_ms(self, name: str) -> int | None:
        for op in self.ops:
            if op.f == "phase" and op.request["name"] == name:
                return op.invoke_ms
        return None

    def fault_windows(self) -> list[FaultWindow]:
        """Every fault that may have acted, with when it was on. A fault whose removal was not
        acknowledged counts as on until the end, and one whose injection got no answer (timeout,
        5xx) counts as on until the next remove-all: the target may have applied it, and lag
        while a fault might have been acting must never be blamed on the service."""
        windows: dict[str, FaultWindow] = {}
        unanswered: list[Op] = []
        for op in self.ops:
            if op.f == "fault_add" and op.outcome == "ok" and isinstance(op.response, dict):
                fault_id = str(op.response.get("fault_id"))
                params = {k: v for k, v in op.request.items() if k != "kind"}
                # A fault may act from the moment it was sent, before the ack arrived.
                end = op.complete_ms if op.request.get("kind") in ONE_SHOT_KINDS else None
                if fault_id in windows:  # an id given again (a restarted target counts anew)
                    windows[f"{fault_id}@{op.index}"] = windows.pop(fault_id)
                windows[fault_id] = FaultWindow(fault_id, op.request["kind"], params,
                                                op.invoke_ms, end)
            elif _unanswered_injection(op):
                unanswered.append(op)
            elif op.f == "fault_remove" and op.outcome == "ok":
                if op.request.get("all"):
                    for window in windows.values():
                        if window.end_ms is None:
                            window.end_ms = op.complete_ms
                    for u in unanswered:
                        windows[f"unanswered@{u.index}"] = _unanswered(u, op.complete_ms)
                    unanswered = []
                else:
                    window = windows.get(op.request.get("fault_id"))
                    if window is not None and window.end_ms is None:
                        window.end_ms = op.complete_ms
        for u in unanswered:
            windows[f"unanswered@{u.index}"] = _unanswered(u, None)
        out = sorted(windows.values(), key=lambda w: (w.start_ms, w.fault_id))
        assert all(w.end_ms is None or w.end_ms >= w.start_ms for w in out)
        return out

    # -- storage ---------------------------------------------------------------------------
    def dumps(self) -> bytes:
        lines = [orjson.dumps({"history": FORMAT_VERSION, "meta": self.meta})]
        lines.extend(orjson.dumps(op.to_dict()) for op in self.ops)
        return b"\n".join(lines) + b"\n"

    @classmethod
    def loads(cls, data: bytes) -> "History":
        lines = [line for line in data.splitlines() if line.strip()]
        if not lines:
            raise ValueError("empty history file")
        head = orjson.loads(lines[0])
        if not isinstance(head, dict) or head.get("history") != FORMAT_VERSION:
            raise ValueError(f"not a history file of format {FORMAT_VERSION}")
        meta = head.get("meta", {})
        if not isinstance(meta, dict):
            raise ValueError("line 1: meta is not an object")
        ops = []
        for n, line in enumerate(lines[1:], 2):
            try:
                raw = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"line {n} is not JSON ({exc})") from None
            op = _op_from_dict(raw, n)
            if op.index != len(ops):
                raise ValueError(f"line {n}: index {op.index} out of order (expected {len(ops)})")
            ops.append(op)
        return cls(meta=meta, ops=ops)



def _unanswered_injection(op: Op) -> bool:
    # A 4xx is a definite refusal (never applied), whatever outcome an older history gave it.
    return (op.f == "fault_add" and op.outcome == "info" and isinstance(op.request, dict)
            and op.request.get("kind") in ALL_KINDS
            and (op.http_status is None or op.http_status >= 500))


def _unanswered(op: Op, removed_ms: int | None) -> FaultWindow:
    kind = op.request["kind"]
    params = {k: v for k, v in op.request.items() if k != "kind"}
    end_ms = op.complete_ms if kind in ONE_SHOT_KINDS else removed_ms
    return FaultWindow(f"unanswered@{op.index}", kind, params, op.invoke_ms, end_ms)


def new_history(target_name: str, simulated: bool, sla_ms: int, *, seed: int | None = None,
                **meta) -> History:
    """An empty history with what every run records first: its seed, the target, the mode, when
    it started (the simulated epoch, so a simulated run replays bit for bit) and the service
    level. (The keys' order is part of the replay digest.)"""
    assert sla_ms > 0, sla_ms
    started = SIM_EPOCH if simulated else dt.datetime.now(dt.timezone.utc)
    head = {} if seed is None else {"seed": seed}
    return History(meta={**head, "target": target_name,
                         "mode": "simulated" if simulated else "http",
                         "started_at": rfc3339(started), "sla_ms": sla_ms, **meta})


# -- fault windows, indexed ------------------------------------------------------------------

# Faults after which a display may show an older state of any age until it is rebuilt: a wiped
# or restored read model, and a restarted service rebuilding its read model from the ledger.
RESETS_DISPLAY = ("maintenance_reset", "crash_restart")
# The params of each kind that say how long it holds an event back, each one more hop: a
# delay_sync's delay; a proxy's latency and its jitter on a link the event path may cross.
DELAY_PARAMS = {"delay_sync": ("delay_ms",), "network_latency": ("latency_ms", "jitter_ms")}


def delay_ms_of(kind: str, params: dict) -> int:
    """How long a fault may still hold an event back once removed (0 for most kinds): what it
    already held is still on its way."""
    values = [params.get(name) for name in DELAY_PARAMS.get(kind, ())]
    return sum(value for value in values if type(value) is int and value > 0)


def delay_of(window: FaultWindow) -> int:
    """The delay a window adds to the event path: `delay_ms_of` its kind and params."""
    return delay_ms_of(window.kind, window.params)


class FaultIndex:
    """Which faults were on at a given moment, answered by bisection: the active set only
    changes at a window's start or end."""

    def __init__(self, windows: list[FaultWindow]) -> None:
        self.windows = list(windows)
        points = sorted({w.start_ms for w in windows}
                        | {w.end_ms for w in windows if w.end_ms is not None})
        self._points = points
        # A sweep over the sorted points: each window is on from its start to its end, so the
        # sets change by the windows starting or ending there (linear, not points x windows).
        self._at_point: list[tuple[FaultWindow, ...]] = []
        self._after_point: list[tuple[FaultWindow, ...]] = []
        starts = sorted(self.windows, key=lambda w: w.start_ms)
        on: list[FaultWindow] = []
        n = 0
        for p in points:
            while n < len(starts) and starts[n].start_ms <= p:
                on.append(starts[n])
                n += 1
            on = [w for w in on if w.end_ms is None or w.end_ms >= p]
            self._at_point.append(tuple(on))
            # Between two points a window is on iff it started by the left one and ends after it.
            self._after_point.append(tuple(w for w in on if w.end_ms is None or w.end_ms > p))
        self.max_delay_ms = max((delay_of(w) for w in windows), default=0)
        self._kinds_at = [tuple(kinds_of(on)) for on in self._at_point]
        self._kinds_after = [tuple(kinds_of(on)) for on in self._after_point]
        self._by_start = starts
        self._starts_ms = [w.start_ms for w in starts]

    def active_at(self, t_ms: int) -> tuple[FaultWindow, ...]:
        n = bisect.bisect_right(self._points, t_ms) - 1
        if n < 0:
            return ()
        return self._at_point[n] if self._points[n] == t_ms else self._after_point[n]

    def kinds_at(self, t_ms: int) -> tuple[str, ...]:
        """`kinds_of(active_at(t_ms))`, computed once per stretch of time."""
        n = bisect.bisect_right(self._points, t_ms) - 1
        if n < 0:
            return ()
        return self._kinds_at[n] if self._points[n] == t_ms else self._kinds_after[n]

    def stretch_at(self, t_ms: int) -> int:
        """A number for the stretch of time `t_ms` is in: `active_at` gives the same windows for
        every moment of one stretch, so what follows from them can be computed once each."""
        n = bisect.bisect_right(self._points, t_ms) - 1
        if n < 0:
            return -1
        return 2 * n if self._points[n] == t_ms else 2 * n + 1

    def kinds_overlapping(self, lo_ms: int, hi_ms: float) -> list[str]:
        """`kinds_of(overlapping(lo_ms, hi_ms))`, without building the list when no window
        starts in between (most of the time)."""
        if bisect.bisect_right(self._starts_ms, lo_ms) == bisect.bisect_right(self._starts_ms,
                                                                               hi_ms):
            assert lo_ms <= hi_ms
            return list(self.kinds_at(lo_ms))
        return kinds_of(self.overlapping(lo_ms, hi_ms))

    def starting_after(self, t_ms: int) -> list[FaultWindow]:
        """The windows that start after `t_ms`, in order of start."""
        return self._by_start[bisect.bisect_right(self._starts_ms, t_ms):]

    def overlapping(self, lo_ms: int, hi_ms: float) -> list[FaultWindow]:
        """The windows on at some moment from `lo_ms` to `hi_ms`, in order of start: those on
        at `lo_ms`, then those starting by `hi_ms`."""
        assert lo_ms <= hi_ms
        first = bisect.bisect_right(self._starts_ms, lo_ms)
        last = bisect.bisect_right(self._starts_ms, hi_ms)
        return [*self.active_at(lo_ms), *self._by_start[first:last]]


def kinds_of(windows: Iterable[FaultWindow]) -> list[str]:
    return sorted({w.kind for w in windows})


def described(windows: Iterable[FaultWindow]) -> list[str]:
    return [w.describe() for w in windows]


_OP_FIELDS = {f.name for f in dataclasses.fields(Op)}
_OP_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(Op))  # in order
_JSON_ATOMS = (str, int, float, bool)


class _NotJson(Exception):
    pass


def _json_copy(value: Any) -> Any:
    """What `dataclasses.asdict` makes of a JSON value (fresh dicts and lists, the same atoms);
    `_NotJson` for any other value."""
    kind = type(value)
    if kind is dict:
        return {_json_copy(k): _json_copy(v) for k, v in value.items()}
    if kind is list:
        return [_json_copy(v) for v in value]
    if kind in _JSON_ATOMS or value is None:
        return value
    raise _NotJson


def _op_from_dict(raw: Any, line_no: int) -> Op:
    if not isinstance(raw, dict) or not {"index", "process", "f", "invoke_ms"} <= raw.keys():
        raise ValueError(f"line {line_no} is not an operation")
    unknown = raw.keys() - _OP_FIELDS
    if unknown:
        raise ValueError(f"line {line_no} has unknown fields {sorted(unknown)}")
    problem = _field_problem(raw)
    if problem:
        raise ValueError(f"line {line_no}: {problem}")
    raw.setdefault("account_id", None)
    raw.setdefault("request", None)
    return Op(**raw)


def _field_problem(raw: dict) -> str | None:
    for name in ("index", "process", "invoke_ms"):
        if type(raw[name]) is not int or raw[name] < 0:
            return f"{name} {raw[name]!r} is not a non-negative integer"
    if raw["f"] not in FS:
        return f"f {raw['f']!r} is not an operation this harness records"
    complete_ms = raw.get("complete_ms")
    if complete_ms is not None and (type(complete_ms) is not int or complete_ms < raw["invoke_ms"]):
        return f"complete_ms {complete_ms!r} is not an integer at or after invoke_ms"
    if raw.get("outcome") not in (None, *OUTCOMES):
        return f"outcome {raw.get('outcome')!r} is not one of {', '.join(OUTCOMES)}"
    for name, kinds in (("account_id", str), ("request", dict), ("http_status", int),
                        ("error", str), ("retry_of", int)):
        value = raw.get(name)
        if value is not None and type(value) is not kinds:
            return f"{name} {value!r:.60} has the wrong type"
    return None
