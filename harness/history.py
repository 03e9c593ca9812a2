"""The history: every operation the harness performed, as an invocation and its completion.

The history, not the harness's memory, is what the checkers judge, so it carries everything a
checker needs (what was sent, what came back, when) and saves to and loads from JSON lines.

Vocabulary (DESIGN.md): an operation completes `ok` (acknowledged), `fail` (rejected with a
definite 4xx; for a display read, a definite 503) or `info` (outcome unknown: timeout, reset,
5xx, a reply that breaks the contract). An `info` write is never assumed done or not done.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator

import orjson

from .contract import FAULT_KINDS

WRITE_FS = ("open", "draw", "repay", "limit", "status")
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

    def overlaps(self, lo_ms: int, hi_ms: int) -> bool:
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

    def writes(self) -> Iterator[Op]:
        return (op for op in self.ops if op.f in WRITE_FS)

    def for_account(self, account_id: str) -> list[Op]:
        return [op for op in self.ops if op.account_id == account_id]

    def by_account(self) -> dict[str, list[Op]]:
        out: dict[str, list[Op]] = {}
        for op in self.ops:
            if op.account_id is not None:
                out.setdefault(op.account_id, []).append(op)
        return out

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
                end = op.complete_ms if op.request.get("kind") == "maintenance_reset" else None
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
        return sorted(windows.values(), key=lambda w: (w.start_ms, w.fault_id))

    # -- storage ---------------------------------------------------------------------------
    def dumps(self) -> bytes:
        lines = [orjson.dumps({"history": FORMAT_VERSION, "meta": self.meta})]
        lines.extend(orjson.dumps(op.to_dict()) for op in self.ops)
        return b"\n".join(lines) + b"\n"

    def save(self, path) -> None:
        with open(path, "wb") as fh:
            fh.write(self.dumps())

    @classmethod
    def loads(cls, data: bytes) -> "History":
        lines = [line for line in data.splitlines() if line.strip()]
        if not lines:
            raise ValueError("empty history file")
        head = orjson.loads(lines[0])
        if not isinstance(head, dict) or head.get("history") != FORMAT_VERSION:
            raise ValueError(f"not a history file of format {FORMAT_VERSION}")
        ops = [_op_from_dict(orjson.loads(line), n) for n, line in enumerate(lines[1:], 2)]
        return cls(meta=head.get("meta", {}), ops=ops)

    @classmethod
    def load(cls, path) -> "History":
        with open(path, "rb") as fh:
            return cls.loads(fh.read())


def _unanswered_injection(op: Op) -> bool:
    # A 4xx is a definite refusal (never applied), whatever outcome an older history gave it.
    return (op.f == "fault_add" and op.outcome == "info" and isinstance(op.request, dict)
            and op.request.get("kind") in FAULT_KINDS
            and (op.http_status is None or op.http_status >= 500))


def _unanswered(op: Op, removed_ms: int | None) -> FaultWindow:
    kind = op.request["kind"]
    params = {k: v for k, v in op.request.items() if k != "kind"}
    end_ms = op.complete_ms if kind == "maintenance_reset" else removed_ms
    return FaultWindow(f"unanswered@{op.index}", kind, params, op.invoke_ms, end_ms)


_OP_FIELDS = {f.name for f in dataclasses.fields(Op)}


def _op_from_dict(raw: Any, line_no: int) -> Op:
    if not isinstance(raw, dict) or not {"index", "process", "f", "invoke_ms"} <= raw.keys():
        raise ValueError(f"history line {line_no} is not an operation")
    unknown = raw.keys() - _OP_FIELDS
    if unknown:
        raise ValueError(f"history line {line_no} has unknown fields {sorted(unknown)}")
    raw.setdefault("account_id", None)
    raw.setdefault("request", None)
    return Op(**raw)
