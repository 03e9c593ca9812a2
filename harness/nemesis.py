"""The nemesis: injects the faults a profile allows, on a seeded schedule, alone and overlapping,
during the safety phase; and removes them all when the convergence phase begins."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from .contract import FAULT_KINDS
from .errors import UsageError
from .packaged import fixture, read_toml


@dataclass(frozen=True)
class FaultProfile:
    name: str
    kinds: tuple[str, ...]
    interval_ms_min: int = 150
    interval_ms_max: int = 1200
    concurrent_max: int = 3
    delay_ms: tuple[int, ...] = (100, 300, 800, 2000)
    probability: tuple[float, ...] = (0.1, 0.3, 0.7, 1.0)
    window: tuple[int, ...] = (2, 4, 8)
    reset_modes: tuple[str, ...] = ("clear", "snapshot")

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in FAULT_KINDS]
        if bad:
            raise UsageError(f"unknown fault kind {bad[0]!r}; known: none, all, "
                             f"{', '.join(FAULT_KINDS)}")
        if not 1 <= self.interval_ms_min <= self.interval_ms_max:
            raise UsageError(f"fault profile {self.name}: need 1 <= interval_ms_min <= interval_ms_max")
        if self.concurrent_max < 1:
            raise UsageError(f"fault profile {self.name}: concurrent_max must be at least 1")
        if not (self.delay_ms and self.probability and self.window and self.reset_modes):
            raise UsageError(f"fault profile {self.name}: parameter lists must not be empty")

    def restricted_to(self, supported: list[str]) -> "FaultProfile":
        """Only what the target lists as supported: the harness injects nothing else."""
        kinds = tuple(k for k in self.kinds if k in supported)
        return FaultProfile(**{**self.__dict__, "kinds": kinds})


def load_profile(spec: str) -> FaultProfile:
    """`none`, `all`, `KIND,KIND`, a shipped profile's name (faults-NAME.toml) or a TOML path."""
    if spec == "none":
        return FaultProfile("none", ())
    named = fixture(f"faults-{spec}.toml")
    if named is not None:
        return _from_file(named, spec)
    if spec.endswith(".toml") or "/" in spec:
        return _from_file(Path(spec), spec)
    kinds = tuple(k.strip() for k in spec.split(",") if k.strip())
    return FaultProfile(spec, kinds)


def _from_file(path, name: str) -> FaultProfile:
    raw = read_toml(path, "fault profile")
    fields = FaultProfile.__dataclass_fields__
    unknown = set(raw) - set(fields) - {"name"}
    if unknown:
        raise UsageError(f"fault profile {path}: unknown key {sorted(unknown)[0]!r}")
    try:
        return FaultProfile(name=name, **{k: tuple(v) if isinstance(v, list) else v
                                          for k, v in raw.items() if k != "name"})
    except TypeError as exc:
        raise UsageError(f"fault profile {path}: {exc}") from None


class Nemesis:
    """Decides, from its own seeded dice, what to inject or remove next and when."""

    def __init__(self, profile: FaultProfile, rng: random.Random, start_ms: int) -> None:
        self.profile = profile
        self.rng = rng
        self.active: list[str] = []  # fault ids the target acknowledged
        self.next_ms = start_ms + self._interval_ms()

    def due(self, now_ms: int) -> bool:
        return bool(self.profile.kinds) and now_ms >= self.next_ms

    def next_move(self, now_ms: int) -> tuple[str, dict | str]:
        """("add", fault) or ("remove", fault_id); schedules the move after it."""
        self.next_ms = now_ms + self._interval_ms()
        full = len(self.active) >= self.profile.concurrent_max
        if self.active and (full or self.rng.random() < 0.4):
            return "remove", self.active.pop(self.rng.randrange(len(self.active)))
        return "add", self._fault()

    def added(self, fault: dict, fault_id: str | None) -> None:
        if fault_id is not None and fault["kind"] != "maintenance_reset":
            self.active.append(fault_id)

    def _fault(self) -> dict:
        p, rng = self.profile, self.rng
        kind = rng.choice(p.kinds)
        if kind == "delay_sync":
            return {"kind": kind, "delay_ms": rng.choice(p.delay_ms)}
        if kind in ("drop_events", "duplicate_events"):
            return {"kind": kind, "probability": rng.choice(p.probability)}
        if kind == "reorder_events":
            return {"kind": kind, "window": rng.choice(p.window)}
        if kind == "maintenance_reset":
            return {"kind": kind, "mode": rng.choice(p.reset_modes)}
        return {"kind": kind}

    def _interval_ms(self) -> int:
        return self.rng.randint(self.profile.interval_ms_min, self.profile.interval_ms_max)
