"""The faults the reference service can inject, and what the active set adds up to."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..contract import BadRequest

ACTIVE_FAULTS_MAX = 1000  # a bound on the set, so a runaway client cannot grow it forever


@dataclass
class FaultSet:
    active: dict[str, dict] = field(default_factory=dict)
    _next_id: int = 1
    # Derived from `active` on every change; read on the hot event path.
    delay_ms: int = 0
    drop_p: float = 0.0
    duplicate_p: float = 0.0
    window: int = 1
    paused: bool = False

    def new_id(self) -> str:
        fault_id = f"f-{self._next_id}"
        self._next_id += 1
        return fault_id

    def add(self, fault: dict) -> dict:
        if len(self.active) >= ACTIVE_FAULTS_MAX:
            raise BadRequest(f"at most {ACTIVE_FAULTS_MAX} active faults; remove some first")
        fault = {"fault_id": self.new_id(), **fault}
        self.active[fault["fault_id"]] = fault
        self._derive()
        return fault

    def remove(self, fault_id: str) -> bool:
        found = self.active.pop(fault_id, None) is not None
        self._derive()
        return found

    def clear(self) -> None:
        self.active.clear()
        self._derive()

    def listed(self) -> list[dict]:
        return list(self.active.values())

    def _derive(self) -> None:
        faults = self.active.values()
        # The contract: same kinds combine into the largest delay or window, combined probability.
        self.delay_ms = max((f["delay_ms"] for f in faults if f["kind"] == "delay_sync"), default=0)
        self.window = max((f["window"] for f in faults if f["kind"] == "reorder_events"), default=1)
        self.drop_p = _combined(f["probability"] for f in faults if f["kind"] == "drop_events")
        self.duplicate_p = _combined(
            f["probability"] for f in faults if f["kind"] == "duplicate_events")
        self.paused = any(f["kind"] == "pause_sync" for f in faults)


def _combined(probabilities) -> float:
    miss = 1.0
    for p in probabilities:
        miss *= 1.0 - p
    return 1.0 - miss
