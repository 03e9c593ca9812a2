"""The nemesis: injects the faults a profile allows during the safety phase, on a seeded schedule
that covers, and removes them all when the convergence phase begins.

Dice alone leave gaps: a 20 s run once drew sixteen faults and no maintenance reset, so a broken
reset path passed one run in three. So the schedule is a cycle planned to fit the run's length:
every kind the profile allows, every parameter class of it (`FAULTS`: short and long delays, low
to total probabilities, small and large windows, each reset mode), each kind alone and each
overlapping another kind; then every fault off for a calm, seeded dice for as long as the cycle
(other combinations, more at once), a calm, the cycle again. Which value stands for a class, the
order and a jitter on every time come from the seed. A fault that may silence the target (a
stopped process, a partition) is kept brief and nothing else moves while it is on.

It also says when to look: a probe reads the display of the accounts written last, right after
each fault that resets the display (users open the app after maintenance) and every
PROBE_EVERY_SLA service levels through each calm. The workers' own reads are random; a wrong
row that lives only until the account's next event, or a stale one that only a calm may not
excuse, would meet one on some seeds and not others. And after a restart it removes every
fault and injects again what its schedule still has on: the restarted target lost them.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
import random
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple

from .contract import RESET_MODES
from .errors import UsageError
from .faults import ALL_KINDS, ONE_SHOT_KINDS
from .history import RESETS_DISPLAY, delay_ms_of
from .packaged import fixture, read_toml

# -- the kinds and their parameter classes ----------------------------------------------------

LONG_DELAY_MS = 1000  # the default service level: a longer delay is staleness a window excuses
LARGE_WINDOW = 4      # reordering past neighbours, not just a swap of two


def bands(*edges: tuple[str, float], top: float = math.inf) -> Callable[[Any], str]:
    """A number's class: the last band whose lower edge it reaches (up to `top`)."""
    def classify(value: Any) -> str:
        if type(value) not in (int, float) or not edges[0][1] <= value <= top:
            raise ValueError(f"{value!r} is not a number from {edges[0][1]:g} to {top:g}")
        return [name for name, low in edges if value >= low][-1]
    return classify


def choices(*names: str) -> Callable[[Any], str]:
    """Each allowed value is its own class (a reset's mode)."""
    def classify(value: Any) -> str:
        if value not in names:
            raise ValueError(f"{value!r} is not one of {', '.join(names)}")
        return value
    return classify


@dataclass(frozen=True)
class Param:
    field: str                       # the fault request's field
    profile_key: str                 # the fault profile's list of values for it
    defaults: tuple                  # the values when a profile names none
    classify: Callable[[Any], str]   # a value's class; ValueError for one the kind cannot take


@dataclass(frozen=True)
class FaultKind:
    param: Param | None = None
    lasting: bool = True  # False: acts once when injected (a reset); there is nothing to remove
    # True: while on, the target may answer nothing, its chaos API included (a stopped process,
    # a partition): the nemesis makes no other move until it is removed, and keeps it short.
    isolates: bool = False


PROBABILITY = Param("probability", "probability", (0.1, 0.3, 0.7, 1.0),
                    bands(("low", 0), ("high", 0.5), ("total", 1), top=1))

# Every kind the nemesis can inject, with its parameter classes: adding a kind is one line here
# (and its profile key, if it has a parameter, is then accepted in fault profiles).
FAULTS: dict[str, FaultKind] = {
    "delay_sync": FaultKind(Param("delay_ms", "delay_ms", (100, 300, 800, 2000),
                                  bands(("short", 0), ("long", LONG_DELAY_MS)))),
    "drop_events": FaultKind(PROBABILITY),
    "duplicate_events": FaultKind(PROBABILITY),
    "reorder_events": FaultKind(Param("window", "window", (2, 4, 8),
                                      bands(("small", 1), ("large", LARGE_WINDOW)))),
    "pause_sync": FaultKind(),
    "maintenance_reset": FaultKind(Param("mode", "reset_modes", RESET_MODES,
                                         choices(*RESET_MODES)), lasting=False),
    # Faults from outside (harness/faults/): a deployment's providers carry them out.
    "crash_restart": FaultKind(lasting=False),
    "process_pause": FaultKind(isolates=True),
    "network_latency": FaultKind(Param("latency_ms", "latency_ms", (50, 300, 1200),
                                       bands(("short", 0), ("long", LONG_DELAY_MS)))),
    "network_partition": FaultKind(isolates=True),
    "connection_reset": FaultKind(isolates=True),
}
PROFILE_PARAMS: dict[str, Param] = {k.param.profile_key: k.param for k in FAULTS.values() if k.param}
assert set(ALL_KINDS) == set(FAULTS), "every kind a provider can carry out has its line"
assert {k for k, f in FAULTS.items() if not f.lasting} == set(ONE_SHOT_KINDS)
assert all(k.param is PROFILE_PARAMS[k.param.profile_key] for k in FAULTS.values() if k.param), \
    "kinds sharing a profile key share its classes"


class Variant(NamedTuple):
    """A kind with one class of its parameter (None: a kind without one)."""

    kind: str
    cls: str | None

    @property
    def label(self) -> str:
        return self.kind if self.cls is None else f"{self.kind}({self.cls})"


def variant_of(kind: str, params: dict) -> Variant:
    """The variant a fault (its request, or a window's params) belongs to; class "?" for a value
    no class takes (a history made elsewhere)."""
    entry = FAULTS.get(kind)
    if entry is None or entry.param is None:
        return Variant(kind, None)
    try:
        return Variant(kind, entry.param.classify(params.get(entry.param.field)))
    except ValueError:
        return Variant(kind, "?")


def is_lasting(kind: str) -> bool:
    entry = FAULTS.get(kind)
    return entry is None or entry.lasting


def isolates(kind: str) -> bool:
    entry = FAULTS.get(kind)
    return entry is not None and entry.isolates


# -- profiles ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class FaultProfile:
    name: str
    kinds: tuple[str, ...]
    interval_ms_min: int = 150   # between two moves of the dice
    interval_ms_max: int = 1200
    concurrent_max: int = 3      # lasting faults on at once
    values: dict[str, tuple] = field(default_factory=dict)  # profile key -> values

    def __post_init__(self) -> None:
        bad = [k for k in self.kinds if k not in FAULTS]
        if bad:
            raise UsageError(f"unknown fault kind {bad[0]!r}; known: none, all, "
                             f"{', '.join(FAULTS)}")
        if not 1 <= self.interval_ms_min <= self.interval_ms_max:
            raise UsageError(f"fault profile {self.name}: need 1 <= interval_ms_min <= interval_ms_max")
        if self.concurrent_max < 1:
            raise UsageError(f"fault profile {self.name}: concurrent_max must be at least 1")
        for key, values in self.values.items():
            if key not in PROFILE_PARAMS:
                raise UsageError(f"fault profile {self.name}: unknown key {key!r}")
            if not values:
                raise UsageError(f"fault profile {self.name}: {key} must not be empty")
            for value in values:
                try:
                    PROFILE_PARAMS[key].classify(value)
                except ValueError as exc:
                    raise UsageError(f"fault profile {self.name}: {key}: {exc}") from None

    def __getattr__(self, name: str) -> tuple:
        """A parameter's values by its profile key (`profile.delay_ms`), the table's defaults
        where the profile names none."""
        param = PROFILE_PARAMS.get(name)
        if param is None or name == "values":
            raise AttributeError(name)
        return self.values.get(name, param.defaults)

    def values_of(self, kind: str) -> tuple:
        param = FAULTS[kind].param
        return () if param is None else self.values.get(param.profile_key, param.defaults)

    def variants(self) -> dict[Variant, tuple]:
        """Each variant the profile allows, with its values (in the profile's order)."""
        out: dict[Variant, list] = {}
        for kind in self.kinds:
            param = FAULTS[kind].param
            if param is None:
                out[Variant(kind, None)] = []
            for value in self.values_of(kind):
                out.setdefault(Variant(kind, param.classify(value)), []).append(value)
        return {variant: tuple(values) for variant, values in out.items()}

    def restricted_to(self, supported: list[str]) -> "FaultProfile":
        """Only what the target lists as supported: the harness injects nothing else."""
        return dataclasses.replace(self, kinds=tuple(k for k in self.kinds if k in supported))


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


_PROFILE_FIELDS = ("kinds", "interval_ms_min", "interval_ms_max", "concurrent_max")


# A profile's whole numbers (intervals, concurrent faults) at most: a day in milliseconds.
PROFILE_NUMBER_MAX = 86_400_000


def _from_file(path, name: str) -> FaultProfile:
    raw = read_toml(path, "fault profile")
    unknown = set(raw) - set(_PROFILE_FIELDS) - set(PROFILE_PARAMS) - {"name"}
    if unknown:
        raise UsageError(f"fault profile {path}: unknown key {sorted(unknown)[0]!r}")
    for key, value in raw.items():
        problem = _value_problem(key, value)
        if problem:
            raise UsageError(f"fault profile {path}: {key!r} {problem}")
    lists = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k != "name"}
    values = {k: v for k, v in lists.items() if k in PROFILE_PARAMS}
    try:
        return FaultProfile(name=name, values=values,
                            **{k: v for k, v in lists.items() if k in _PROFILE_FIELDS})
    except (TypeError, UsageError) as exc:
        message = str(exc)  # FaultProfile's own words name the profile, not always the file
        raise UsageError(message if str(path) in message else f"fault profile {path}: {message}") \
            from None


def _value_problem(key: str, value) -> str | None:
    """What is wrong with a profile file's value by its type alone (the profile judges the
    rest); None when nothing is."""
    if key == "name":
        return None if isinstance(value, str) else "must be a string"
    if key == "kinds":
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return None if ok else "must be a list of fault kinds (strings)"
    if key in _PROFILE_FIELDS:
        if type(value) is not int or not 0 <= value <= PROFILE_NUMBER_MAX:
            return f"must be a whole number from 0 to {PROFILE_NUMBER_MAX:,}"
        return None
    if not isinstance(value, list):
        return "must be a list of values"
    for v in value:  # the classes judge the rest; an infinite or a 64-bit-busting one first
        if type(v) in (int, float) and (type(v) is float and not math.isfinite(v)
                                        or abs(v) > PROFILE_NUMBER_MAX):
            return f"holds {v!r:.30}, out of range (at most {PROFILE_NUMBER_MAX:,})"
    return None


# -- the covering plan ------------------------------------------------------------------------

TICKS_PER_UNIT = 4        # a unit is a fault's turn; moves fall on ticks, resets mid-unit
COVER_SHARE = 0.5         # one cycle takes this share of the run, when it can
SHORT_SHARE = 0.8         # ... and this much of a short run, rather than units under UNIT_MS_SHORT
COVER_END_SHARE = 0.9     # a cycle ending later may not finish (a simulated length is estimated)
UNIT_MS_SHORT = 50        # a unit at which a fault meets a few dozen operations
UNIT_MS_MIN = 20          # shorter and a fault would meet too few operations to mean anything
UNIT_MS_MAX = 1000        # longer runs repeat the cycle instead of stretching it
DEFAULT_LENGTH_MS = 20_000  # a run of unknown length is planned as one of `run`'s default HTTP runs
DEFAULT_SLA_MS = 1000
# After the cycle and after the dice, every fault off for this many service levels beyond what
# the profile's longest delay excuses: a fault on excuses staleness until its end plus the
# service level (plus its delay), so without calm stretches a slow or flapping display would
# always be excused and never judged.
QUIET_SLAS = 3
PROBE_EVERY_SLA = 0.25  # a probe this often through a calm: several looks per allowance
PROBE_AFTER_RESET_MS = 5  # the look after a reset: before the next event can mend a row
RESTARTS_TARGET = ("crash_restart",)


class Move(NamedTuple):
    tick: int
    action: str    # "add" or "remove"
    slot: int      # which planned fault of the cycle
    variant: Variant


@dataclass(frozen=True)
class Plan:
    """One covering cycle: its moves in ticks, the unit that turns ticks into ms, and what it
    covers (the same measure `covered` applies to a run's windows)."""

    length_ms: int
    unit_ms: int
    quiet_ms: int  # the calm after the cycle and after the dice (never longer than the cycle)
    moves: tuple[Move, ...]
    ticks: int
    variants: dict[Variant, tuple]
    claims: dict
    notes: tuple[str, ...]

    def at_ms(self, tick: int) -> int:
        return tick * self.unit_ms // TICKS_PER_UNIT

    @property
    def cycle_ms(self) -> int:
        return self.at_ms(self.ticks)

    @property
    def covers(self) -> bool:
        return self.cycle_ms <= COVER_END_SHARE * self.length_ms

    def summary(self) -> dict:
        """What the run planned, for the history's meta (and so for the coverage statistics and
        the gate's `coverage_required`)."""
        kinds: dict[str, list[str]] = {}
        for variant in self.variants:
            kinds.setdefault(variant.kind, [])
            if variant.cls is not None:
                kinds[variant.kind].append(variant.cls)
        return {"kinds": kinds, "alone": self.claims["alone"],
                "overlapping": self.claims["overlapping"], "length_ms": self.length_ms,
                "unit_ms": self.unit_ms, "cycle_ms": self.cycle_ms, "quiet_ms": self.quiet_ms,
                "covers": self.covers, "notes": list(self.notes)}


def build_plan(profile: FaultProfile, rng: random.Random, length_ms: int,
               sla_ms: int = DEFAULT_SLA_MS) -> Plan:
    assert length_ms > 0 and sla_ms > 0, (length_ms, sla_ms)
    variants = profile.variants()
    # The chains' faults stay on for units; the brief ones (instant, or isolating the target)
    # each take the inside of one unit: once in a chain (over its faults) and once alone.
    lasting = _interleaved([v for v in variants if is_lasting(v.kind)
                            and not isolates(v.kind)], rng)
    brief = _wipes_first([v for v in variants if not is_lasting(v.kind) or isolates(v.kind)],
                         rng)
    overlap = profile.concurrent_max >= 2
    half = (len(lasting) + 1) // 2
    chains = [chain for chain in (lasting[:half], lasting[half:]) if chain] or [[]]
    alone = _split(brief, len(chains))
    # One at a time (concurrent_max = 1): only instant faults meet a chain's.
    over = brief if overlap else [v for v in brief if not is_lasting(v.kind)]
    during = _split(over, len(chains)) if lasting else [[] for _ in chains]
    moves: list[Move] = []
    tick = TICKS_PER_UNIT // 2  # room for the removal of the dice's faults first
    for chain, over, gap in zip(chains, during, alone):
        chain_moves, on_units, units = _chain(chain, overlap, len(moves), min_units=len(over))
        moves += [m._replace(tick=tick + m.tick) for m in chain_moves]
        picks = [on_units[(2 * n + 1) * len(on_units) // (2 * len(over))]
                 for n in range(len(over))]
        for unit, variant in zip(picks, over):
            moves += _brief(variant, tick + unit * TICKS_PER_UNIT, overlap, len(moves))
        tick += units * TICKS_PER_UNIT
        for variant in gap:  # nothing else is on: each acts alone
            moves += _brief(variant, tick, True, len(moves))
            tick += TICKS_PER_UNIT
    moves.sort(key=lambda m: m.tick)
    assert len({m.tick for m in moves}) == len(moves), "one move per tick"
    units = max(1, math.ceil(tick / TICKS_PER_UNIT))
    unit_ms = _unit_ms(length_ms, units)
    delay_ms_max = max((delay_ms_of(v.kind, {FAULTS[v.kind].param.field: value})
                        for v, values in variants.items() if FAULTS[v.kind].param
                        for value in values), default=0)
    quiet_ms = min(QUIET_SLAS * sla_ms + delay_ms_max, unit_ms * tick // TICKS_PER_UNIT)
    draft = Plan(length_ms, unit_ms, quiet_ms, tuple(moves), tick, variants, {}, ())
    claims = covered(_windows(draft))
    return dataclasses.replace(draft, claims=claims,
                               notes=_notes(draft, claims, profile, variants))


def _wipes_first(brief: list[Variant], rng: random.Random) -> list[Variant]:
    """A seeded order of the brief faults with those that wipe the display (a clear, a crash)
    first and the restore from a snapshot last: a restore tests a service only once its
    snapshot holds a built display, and one taken before a wipe or a restart may hold nothing."""
    def rank(variant: Variant) -> int:
        if variant == Variant("maintenance_reset", "snapshot"):
            return 2
        return 0 if variant.kind in RESETS_DISPLAY else 1
    return sorted(rng.sample(brief, len(brief)), key=rank)


def _unit_ms(length_ms: int, units: int) -> int:
    """Half the run for the cycle; a short run gives it most of itself before units get short;
    a run too short even then gets the shortest unit (and its plan says it does not cover)."""
    unit_ms = COVER_SHARE * length_ms / units
    if unit_ms < UNIT_MS_SHORT:
        unit_ms = min(UNIT_MS_SHORT, SHORT_SHARE * length_ms / units)
    return int(min(UNIT_MS_MAX, max(UNIT_MS_MIN, unit_ms)))


def _interleaved(variants: list[Variant], rng: random.Random) -> list[Variant]:
    """A seeded order in which neighbours are of different kinds wherever the mix allows, so
    each overlap in a chain is one kind over another."""
    by_kind: dict[str, list[Variant]] = {}
    for variant in rng.sample(variants, len(variants)):
        by_kind.setdefault(variant.kind, []).append(variant)
    order: list[Variant] = []
    while by_kind:
        last = order[-1].kind if order else None
        kinds = sorted(by_kind, key=lambda k: -len(by_kind[k]))  # stable: the seeded order
        kind = next((k for k in kinds if k != last), kinds[0])
        order.append(by_kind[kind].pop())
        if not by_kind[kind]:
            del by_kind[kind]
    return order


def _split(items: list, parts: int) -> list[list]:
    size = math.ceil(len(items) / parts) if items else 0
    return [items[n * size:(n + 1) * size] for n in range(parts)]


def _chain(chain: list[Variant], overlap: bool, slot: int,
           min_units: int) -> tuple[list[Move], list[int], int]:
    """The moves of one chain (ticks from its start), the units a lasting fault is on, and its
    length in units. Overlapping: each fault comes on while the one before is still on, and is
    alone for a unit once that one goes: on 0-2, 1-4, 3-6, ... Else one after another. The last
    one stays on until `min_units` have passed (room for the instant faults meant to meet it)."""
    moves: list[Move] = []
    k = len(chain)
    units = max(min_units, 2 * k - 1 if overlap else k) if k else 0
    for n, variant in enumerate(chain):
        # The last one goes a tick before the chain ends, so the next chain starts clean.
        if overlap:
            on_unit = 0 if n == 0 else 2 * n - 1
            off_tick = (2 * n + 2) * TICKS_PER_UNIT if n < k - 1 else units * TICKS_PER_UNIT - 1
        else:
            on_unit = n
            off_tick = (n + 1 if n < k - 1 else units) * TICKS_PER_UNIT - 1
        moves.append(Move(on_unit * TICKS_PER_UNIT, "add", slot + n, variant))
        moves.append(Move(off_tick, "remove", slot + n, variant))
    return moves, list(range(units)), units


def _brief(variant: Variant, unit_tick: int, overlap: bool, slot: int) -> list[Move]:
    """A brief fault inside the unit starting at `unit_tick`, between the chain's moves (at the
    unit's start, and a tick before its end: where a chain's last fault goes)."""
    if not is_lasting(variant.kind):
        return [Move(unit_tick + 2, "add", slot, variant)]
    return [Move(unit_tick + 1, "add", slot, variant), Move(unit_tick + 2, "remove", slot,
                                                             variant)]


def _windows(plan: Plan) -> list[Window]:
    """The plan's faults as the windows a run would record if every move succeeded."""
    on: dict[int, Move] = {}
    out = []
    for move in plan.moves:
        at_ms = plan.at_ms(move.tick)
        if move.action == "add" and not is_lasting(move.variant.kind):
            out.append(Window(move.variant.kind, move.variant, at_ms, at_ms, True))
        elif move.action == "add":
            on[move.slot] = move
        else:
            added = on.pop(move.slot)
            out.append(Window(move.variant.kind, move.variant, plan.at_ms(added.tick), at_ms,
                              True))
    assert not on, "every planned lasting fault is removed within the cycle"
    return out


def _notes(plan: Plan, claims: dict, profile: FaultProfile,
           variants: dict[Variant, tuple]) -> tuple[str, ...]:
    notes = []
    if variants and not plan.covers:
        notes.append(f"the run is too short to cover every fault: one covering cycle takes "
                     f"{plan.cycle_ms:,} ms at the shortest unit ({UNIT_MS_MIN} ms) and the run "
                     f"is expected to last {plan.length_ms:,} ms")
    kinds = {v.kind for v in variants}
    lonely = sorted(kinds - set(claims["overlapping"]))
    if lonely and len(kinds) > 1:
        why = "concurrent_max = 1" if profile.concurrent_max < 2 else "no other kind can overlap"
        notes.append(f"{', '.join(lonely)} never overlap another kind in the plan ({why})")
    return tuple(notes)


# -- what a set of fault windows covers ---------------------------------------------------------

class Window(NamedTuple):
    kind: str
    variant: Variant
    start_ms: int
    end_ms: int
    acknowledged: bool  # False: an injection that got no answer (it may or may not have acted)


def windows_of(fault_windows: Iterable, end_ms: int) -> list[Window]:
    """history.FaultWindow objects in the plan's terms (an open window ends with the run)."""
    return [Window(w.kind, variant_of(w.kind, w.params), w.start_ms,
                   end_ms if w.end_ms is None else max(w.start_ms, w.end_ms),
                   not str(w.fault_id).startswith("unanswered@"))
            for w in fault_windows]


def covered(windows: list[Window]) -> dict:
    """`variants` {label: injected count}, the kinds that acted `alone` (a moment with no other
    fault on; an instant fault: none on at all while it acted) and `overlapping` another kind.
    Only acknowledged faults count as injected; one that got no answer still spoils alone."""
    ordered = sorted(windows, key=lambda w: (w.start_ms, w.end_ms))
    injected: dict[str, int] = {}
    alone: set[str] = set()
    overlapping: set[str] = set()
    still_on: list[Window] = []  # earlier windows, pruned to those on at the current start
    for n, w in enumerate(ordered):
        still_on = [o for o in still_on if o.end_ms >= w.start_ms]
        later = []
        for o in itertools.islice(ordered, n + 1, None):
            if o.start_ms > w.end_ms:
                break
            later.append(o)
        others = still_on + later
        still_on.append(w)
        if not w.acknowledged:
            continue
        injected[w.variant.label] = injected.get(w.variant.label, 0) + 1
        if any(o.acknowledged and o.kind != w.kind for o in others):
            overlapping.add(w.kind)
        if _has_a_moment_alone(w, others):
            alone.add(w.kind)
    return {"variants": dict(sorted(injected.items())), "alone": sorted(alone),
            "overlapping": sorted(overlapping)}


def _has_a_moment_alone(w: Window, others: list[Window]) -> bool:
    if not others:
        return True
    if w.start_ms == w.end_ms or not is_lasting(w.kind):
        return False
    reached = w.start_ms
    for o in sorted(others, key=lambda o: o.start_ms):
        if o.start_ms > reached:
            return True
        reached = max(reached, o.end_ms)
        if reached >= w.end_ms:
            return False
    return reached < w.end_ms


# -- the nemesis ------------------------------------------------------------------------------

LATE_MS_TOLERATED = 100  # a move later than this (a restart answered once ready) delays the rest


class _Due(NamedTuple):
    at_ms: int
    what: str  # "add", "remove" (a planned slot), "drop" (a fault id), "dice", "calm", "cycle"
    slot: int | None = None
    fault: dict | str | None = None


class Nemesis:
    """Says what to inject or remove next and when: the covering cycle, a calm, the dice for as
    long as the cycle, a calm, the cycle again, and so on; and when to probe the display. All its
    choices come from `rng`; the driver carries them out."""

    def __init__(self, profile: FaultProfile, rng: random.Random, start_ms: int,
                 length_ms: int | None = None, sla_ms: int = DEFAULT_SLA_MS) -> None:
        self.profile = profile
        self.rng = rng
        self.plan = build_plan(profile, rng, length_ms or DEFAULT_LENGTH_MS, sla_ms)
        self._end_ms = start_ms + self.plan.length_ms
        self._adding: int | None = None
        self._slots_used = 0
        self._queue: deque[_Due] = deque()
        self._next_cycle_ms = start_ms
        self._dice_until_ms = start_ms
        # The lasting faults the target acknowledged, in order: id -> (slot, fault).
        self._faults: dict[str, tuple[int | None, dict]] = {}
        # After a restart: a remove-all (None), then what was on, again (`_after_restart`).
        self._restore: deque[tuple[int | None, dict] | None] = deque()
        self._moved_ms = start_ms
        self._probe_every_ms = max(1, int(PROBE_EVERY_SLA * sla_ms))
        self._probes: list[int] = []  # a heap of due times: a reset's look comes between calms'
        if profile.kinds:
            self._queue.append(_Due(start_ms, "cycle"))
        # Bounded: a queue holds at most one cycle's moves plus the removal of `active`; the
        # probes at most two calms' and one per move.
        self._queue_max = len(self.plan.moves) + profile.concurrent_max + 2
        self._probes_max = 2 * (self.plan.quiet_ms // self._probe_every_ms + 1) + self._queue_max

    @property
    def active(self) -> list[str]:
        """The ids of the lasting faults on, in the order they came on."""
        return list(self._faults)

    @property
    def _isolating(self) -> list[str]:
        """Those of them that may silence the target."""
        return [fault_id for fault_id, (_, fault) in self._faults.items()
                if isolates(fault["kind"])]

    def _on_slot(self, slot: int) -> str | None:
        """The id of the planned fault of `slot`, while it is on."""
        return next((fault_id for fault_id, (on, _) in self._faults.items() if on == slot), None)

    @property
    def next_fault_ms(self) -> float:
        """When the next fault move is due: a probe must be over by then, or it would push the
        schedule (a short run's cycle would no longer fit it)."""
        return self._moved_ms if self._restore else self._next_move_ms

    @property
    def next_ms(self) -> float:
        return min(self.next_fault_ms, self._next_probe_ms)

    def due(self, now_ms: int) -> bool:
        return bool(self.profile.kinds) and now_ms >= self.next_ms

    def next_move(self, now_ms: int) -> tuple[str, dict | str | None]:
        """("add", fault), ("remove", fault_id), ("remove", None): every fault, or ("probe",
        None): read the displays now."""
        self._moved_ms = now_ms
        if self._restore:
            return self._restoring()
        if self._next_probe_ms <= self._next_move_ms:
            while self._probes and self._probes[0] <= now_ms:  # one look for all that are late
                heapq.heappop(self._probes)
            return "probe", None
        move, what = self._next_fault_move(now_ms)
        if move == "add" and isinstance(what, dict) and what["kind"] in RESETS_DISPLAY:
            heapq.heappush(self._probes, now_ms + PROBE_AFTER_RESET_MS)
        assert len(self._probes) <= self._probes_max
        return move, what

    @property
    def _next_move_ms(self) -> float:
        self._settle()
        return self._queue[0].at_ms if self._queue else math.inf

    @property
    def _next_probe_ms(self) -> float:
        """Never while the target may not answer (a probe would wait out each read's timeout)."""
        return self._probes[0] if self._probes and not self._isolating else math.inf

    def _next_fault_move(self, now_ms: int) -> tuple[str, dict | str]:
        self._settle()
        item = self._queue.popleft()
        self._adding = None
        if item.what == "dice":
            return self._roll(now_ms)
        if now_ms - item.at_ms > LATE_MS_TOLERATED:
            self._delay(now_ms - item.at_ms)
        if item.what == "add":
            self._adding = item.slot
            return "add", item.fault
        if item.what == "remove":
            fault_id = self._on_slot(item.slot)
        else:
            fault_id = item.fault
        self._forget(fault_id)
        return "remove", fault_id

    def added(self, fault: dict, fault_id: str | None) -> None:
        if fault_id is None:
            return
        if is_lasting(fault["kind"]):
            self._faults[fault_id] = (self._adding, fault)
        elif fault["kind"] in RESTARTS_TARGET and self._faults:
            self._after_restart()
        self._adding = None

    def _after_restart(self) -> None:
        """A restarted target has lost the faults its own chaos API held (and may reuse their
        ids), yet the history would count them on until removed: so every fault is removed,
        which the history records, and what the schedule still has on is injected again."""
        self._restore = deque([None, *self._faults.values()])
        assert len(self._restore) <= self._queue_max

    def _restoring(self) -> tuple[str, dict | None]:
        item = self._restore.popleft()
        if item is None:
            self._faults = {}
            return "remove", None
        self._adding, fault = item
        return "add", fault

    # -- inside ----------------------------------------------------------------------------
    def _settle(self) -> None:
        """Expand a cycle or a calm that is next, and skip removals of planned faults never
        injected."""
        while self._queue:
            head = self._queue[0]
            if head.what == "cycle":
                self._queue.popleft()
                self._expand(head.at_ms)
            elif head.what == "calm":
                self._queue.popleft()
                self._queue.extend(_Due(head.at_ms, "drop", fault=f) for f in self._dropped())
                self._queue.append(_Due(self._next_cycle_ms, "cycle"))
            elif head.what == "remove" and self._on_slot(head.slot) is None:
                self._queue.popleft()
            else:
                break
        assert len(self._queue) <= self._queue_max

    def _expand(self, start_ms: int) -> None:
        """The dice's faults go first, so the cycle's alone is alone; then the cycle's moves."""
        for fault_id in self._dropped():
            self._queue.append(_Due(start_ms, "drop", fault=fault_id))
        base = self._slots_used
        # Seeded jitter within half a tick (the order stays): round times would meet a target's
        # own round periods (a snapshot every 2 s) at the same phase in every cycle.
        jitter_ms = max(0, self.plan.at_ms(1) // 2 - 1)
        for move in self.plan.moves:
            at_ms = start_ms + self.plan.at_ms(move.tick) + self.rng.randint(-jitter_ms, jitter_ms)
            fault = self._fault(move.variant, self.plan.variants[move.variant]) \
                if move.action == "add" else None
            self._queue.append(_Due(at_ms, move.action, base + move.slot, fault))
        self._slots_used = base + len(self.plan.moves)
        dice_ms = start_ms + self.plan.cycle_ms + self.plan.quiet_ms
        self._dice_until_ms = dice_ms + max(self.plan.cycle_ms, self.profile.interval_ms_max)
        self._next_cycle_ms = self._dice_until_ms + self.plan.quiet_ms
        self._queue.append(_Due(dice_ms + self._interval_ms(), "dice"))
        for calm_ms in (start_ms + self.plan.cycle_ms, self._dice_until_ms):
            for at_ms in range(calm_ms + self._probe_every_ms, calm_ms + self.plan.quiet_ms,
                               self._probe_every_ms):
                heapq.heappush(self._probes, at_ms)

    def _dropped(self) -> list[str]:
        """Every active fault, those silencing the target first (else removing the others
        would wait on it)."""
        isolating = self._isolating
        return sorted(self.active, key=lambda fault_id: fault_id not in isolating)

    def _forget(self, fault_id: str) -> None:
        self._faults.pop(fault_id, None)

    def _delay(self, late_ms: int) -> None:
        """A late move (a restart answered once the process was ready) delays what follows, so
        each planned fault keeps its turn alone and its overlap."""
        self._queue = deque(item._replace(at_ms=item.at_ms + late_ms) for item in self._queue)
        self._probes = [at_ms + late_ms for at_ms in self._probes]  # still a heap
        self._dice_until_ms += late_ms
        self._next_cycle_ms += late_ms

    def _roll(self, now_ms: int) -> tuple[str, dict | str]:
        next_ms = now_ms + self._interval_ms()
        self._queue.append(_Due(next_ms, "dice") if next_ms < self._dice_until_ms else
                           _Due(max(now_ms, self._dice_until_ms), "calm"))
        if self._isolating:  # nothing else while the target may not answer; keep it short
            fault_id = self._isolating[0]
            self._forget(fault_id)
            return "remove", fault_id
        active = self.active
        full = len(active) >= self.profile.concurrent_max
        if active and (full or self.rng.random() < 0.4):
            fault_id = active[self.rng.randrange(len(active))]
            self._forget(fault_id)
            return "remove", fault_id
        kinds = self.profile.kinds
        if now_ms + self.profile.interval_ms_max >= self._end_ms:
            # No fault that silences the target when the run may end before its removal: the
            # workers would hang on it until the convergence phase.
            kinds = tuple(k for k in kinds if not isolates(k)) or kinds
        kind = self.rng.choice(kinds)
        values = self.profile.values_of(kind)
        return "add", self._fault(Variant(kind, None), values)

    def _fault(self, variant: Variant, values: tuple) -> dict:
        param = FAULTS[variant.kind].param
        if param is None:
            return {"kind": variant.kind}
        return {"kind": variant.kind, param.field: self.rng.choice(values)}

    def _interval_ms(self) -> int:
        return self.rng.randint(self.profile.interval_ms_min, self.profile.interval_ms_max)
