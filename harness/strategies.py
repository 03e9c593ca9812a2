"""Hypothesis strategies for the limit contract: ids, names, money, personas, faults.

Public surface (each returns a hypothesis strategy):

- `names(locale="zh_CN")`: a user's display name, from faker.
- `account_ids(max_size=64)`: an account id the contract accepts, built from faker user names.
- `amounts(available=None, outstanding=None)`: a draw or repay amount in fen that favours the
  edges (1 fen, exactly the available, exactly the outstanding, one fen over either) while still
  producing ordinary values.
- `credit_lines(current=None, outstanding=None)`: a credit line in fen (for `open` and `limit`),
  favouring 0, 1 fen, a cut to or just below the balance, and one fen either side of the line.
- `personas()`: one of the workload's personas (harness.workload.PERSONAS).
- `operations(persona=None)`: a list of abstract `Operation`s telling one persona's story
  (PERSONA_STORIES), amounts varied, with ordinary steps around it; `Operation.request(state,
  request_id)` turns one into a request body against what you know of the account.
- `persona_stories()`: one PERSONA_STORIES story exactly as told (a single choice: shrinks
  well inside a state machine).
- `faults(kinds=FAULT_KINDS)`: a fault body for `POST /v1/chaos/faults`, valid per the contract.
- `fault_schedules(kinds=FAULT_KINDS)`: a list of `(at_ms, action)`: a fault to inject, or
  `{"remove": n}` naming the n-th injection of the schedule.

Faker output is sampled from lists made once from a fixed faker seed, so every value is a pure
function of hypothesis's choices: the same hypothesis seed gives the same names, and shrinking
moves towards the first names of the list.
"""

from __future__ import annotations

import functools

from hypothesis import strategies as st

from . import contract, oracle
from .contract import FAULT_KINDS, FEN_MAX, RESET_MODES
from .workload import PERSONAS

__all__ = [
    "Operation", "PERSONA_STORIES", "account_ids", "amounts", "credit_lines",
    "fault_schedules", "faults", "names", "operations", "persona_stories", "personas",
    "schedule_faults",
]

FAKER_SEED = 20260101  # fixed: the lists below must not change between runs
FAKER_LIST_SIZE = 256
ORDINARY_FEN_MAX = 10_000_000  # ¥100,000: ordinary money when nothing bounds it
TYPICAL_LINES = (500_000, 5_000_000)  # ¥5,000 to ¥50,000, as fixtures/personas.toml
ORDINARY_DELAY_MS_MAX = 2_000
STORY_FILLER_MAX = 4  # ordinary steps around a persona's story, so lists stay short to shrink

# What a draw or repay may aim at, resolved against an account's state by `Operation.request`.
AIMS = ("available", "available+1", "outstanding", "outstanding+1")


# -- faker-backed ids and names ---------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _faker_list(locale: str, what: str) -> tuple[str, ...]:
    from faker import Faker

    fake = Faker(locale)
    fake.seed_instance(FAKER_SEED)
    make = getattr(fake, what)
    seen: dict[str, None] = {}
    for _ in range(FAKER_LIST_SIZE * 4):  # bounded: duplicates are skipped, not retried forever
        seen.setdefault(make(), None)
        if len(seen) >= FAKER_LIST_SIZE:
            break
    return tuple(seen)


def names(locale: str = "zh_CN") -> st.SearchStrategy[str]:
    """A person's name as faker writes it for `locale` (e.g. 张伟 for zh_CN)."""
    return st.sampled_from(_faker_list(locale, "name"))


def account_ids(max_size: int = 64) -> st.SearchStrategy[str]:
    """An account id the contract accepts (1 to `max_size` characters of [A-Za-z0-9._:-]):
    usually a faker user name plus a product letter (`xia92-h`), sometimes one using the
    punctuation the contract allows, or exactly `max_size` characters long."""
    if not 1 <= max_size <= 64:
        raise ValueError("max_size must be between 1 and 64")
    users = st.sampled_from(_faker_list("zh_CN", "user_name"))
    plain = st.builds(lambda user, product: f"{user}-{product[0]}", users,
                      st.sampled_from(contract.PRODUCTS))
    dotted = st.builds(lambda user, n: f"{user}.{n}:x_y", users, st.integers(0, 99))
    longest = st.builds(lambda user: (user * 64)[:max_size], users)
    ids = st.one_of(plain, dotted, longest).map(lambda value: value[:max_size])
    return ids.filter(contract.is_id)


# -- money ------------------------------------------------------------------------------------------

def _edges(*values: int | None) -> list[int]:
    # Order matters: sampled_from shrinks towards the front, so the plainest edge comes first.
    out: list[int] = []
    for value in values:
        if value is not None and 0 <= value <= FEN_MAX and value not in out:
            out.append(value)
    return out


def amounts(available: int | None = None, outstanding: int | None = None
            ) -> st.SearchStrategy[int]:
    """A positive amount in fen, half the time an edge: 1 fen, exactly `available`, one fen
    over it, exactly `outstanding`, one fen over it. The other half are ordinary values at or
    below the larger bound (so most draws and repays are accepted), or up to ¥100,000 when no
    bound is given. A negative bound (a broken service's balance) counts as 0."""
    known = [max(0, v) for v in (available, outstanding) if v is not None]
    edges = _edges(1, *(v + d for v in known for d in (0, 1)))
    top = max(known, default=0) or ORDINARY_FEN_MAX
    return st.one_of(st.sampled_from([e for e in edges if e >= 1]),
                     st.integers(1, min(FEN_MAX, top)))


def credit_lines(current: int | None = None, outstanding: int | None = None
                 ) -> st.SearchStrategy[int]:
    """A credit line in fen (>= 0). Edges: 1 fen, 0, a cut to exactly the balance and one fen
    below it (available becomes 0), one fen either side of the current line; ordinary values
    are round yuan amounts of a typical consumer line."""
    edges = _edges(1, 0)
    if outstanding is not None and outstanding > 0:
        edges += _edges(outstanding, outstanding - 1)
    if current is not None:
        edges += _edges(current - 1, current + 1)
    typical = st.integers(TYPICAL_LINES[0] // 100, TYPICAL_LINES[1] // 100).map(lambda y: y * 100)
    return st.one_of(st.sampled_from(list(dict.fromkeys(edges))), typical,
                     st.integers(0, ORDINARY_FEN_MAX), st.just(FEN_MAX))


# -- personas and their stories ---------------------------------------------------------------------

def personas() -> st.SearchStrategy[str]:
    """One of the personas of harness.workload (the failure stories users report)."""
    return st.sampled_from(PERSONAS)


class Operation:
    """One abstract step of a persona's story, not yet bound to an account's state.

    `f` is draw, repay, limit, status, display, retry (resend the previous write) or wait.
    `value` is, by `f`: an amount in fen or one of AIMS (draw, repay); a credit line in fen or
    "outstanding" / "outstanding-1" (limit); a status (status); milliseconds (wait).

    A plain class rather than a dataclass: hypothesis prints dataclasses field by field, and
    `Operation('draw', 'available')` is what a failing program should read like.
    """

    __slots__ = ("f", "value")

    def __init__(self, f: str, value: int | str | None = None) -> None:
        self.f = f
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Operation) and (self.f, self.value) == (other.f, other.value)

    def __hash__(self) -> int:
        return hash((self.f, self.value))

    def request(self, state: oracle.State, request_id: str) -> dict | None:
        """The write's body against `state` (the caller's belief of the account), or None for
        display, retry and wait."""
        if self.f in ("draw", "repay"):
            return {"amount": _resolve(self.value, state), "request_id": request_id}
        if self.f == "limit":
            return {"credit_line": _resolve(self.value, state), "reason": "risk-policy",
                    "request_id": request_id}
        if self.f == "status":
            return {"status": self.value, "reason": f"set-{self.value}",
                    "request_id": request_id}
        return None

    def __repr__(self) -> str:  # short, for the failing programs hypothesis prints
        return f"Operation({self.f!r}, {self.value!r})" if self.value is not None \
            else f"Operation({self.f!r})"


def _resolve(value: int | str | None, state: oracle.State) -> int:
    if isinstance(value, int):
        return value
    headroom = max(0, state.credit_line - state.outstanding)
    outstanding = max(0, state.outstanding)
    resolved = {"available": headroom, "available+1": headroom + 1,
                "outstanding": outstanding, "outstanding+1": outstanding + 1,
                "outstanding-1": outstanding - 1}[value]
    # Amounts must be positive and at most FEN_MAX (beyond it is a 400, not an edge of the
    # limit); a cut "below the balance" of a zero balance is a cut to 0.
    return min(FEN_MAX, max(1, resolved) if value != "outstanding-1" else max(0, resolved))


def _money_step(f: str) -> st.SearchStrategy[Operation]:
    return st.builds(Operation, st.just(f), st.one_of(st.sampled_from(AIMS), amounts()))


_filler = st.one_of(_money_step("draw"), _money_step("repay"), st.just(Operation("display")),
                    st.builds(Operation, st.just("wait"), st.sampled_from([25, 250, 1500])))


def _script(*steps: tuple) -> tuple[Operation, ...]:
    return tuple(Operation(*step) for step in steps)


# Each persona's story in its plainest telling: the steps the failure story turns on, with
# amounts aimed at the edges. `operations()` varies them; `persona_stories()` picks one as is.
PERSONA_STORIES: dict[str, tuple[Operation, ...]] = {
    "steady_spender": _script(("draw", 1), ("repay", "outstanding"), ("draw", "available")),
    "prober": _script(("draw", 1), ("display",), ("draw", 1), ("display",), ("draw", 1),
                      ("display",)),
    "early_repayer": _script(("draw", "available"), ("repay", "outstanding")),
    "multi_lender": _script(("draw", "available"), ("draw", "available+1"), ("retry",)),
    "overdue_repayer": _script(("draw", "available"), ("status", "overdue"),
                               ("repay", "outstanding"), ("draw", 1)),
    "frozen_unfrozen": _script(("status", "frozen"), ("draw", 1), ("status", "active"),
                               ("draw", "available")),
    "limit_cut": _script(("draw", "available"), ("limit", "outstanding-1"), ("display",),
                         ("draw", 1)),
    # Tries to close with a balance (must be refused), repays, closes, later reopens.
    "closer": _script(("draw", "available"), ("status", "closed"), ("repay", "outstanding"),
                      ("status", "closed"), ("status", "active")),
}
assert set(PERSONA_STORIES) == set(PERSONAS)


def persona_stories() -> st.SearchStrategy[list[Operation]]:
    """One persona's story exactly as PERSONA_STORIES tells it: a single choice, so a
    failing program that contains one shrinks as easily as a single step."""
    return st.sampled_from([list(story) for story in PERSONA_STORIES.values()])


def _told(persona: str) -> st.SearchStrategy[list[Operation]]:
    # The persona's story in order, each draw or repay either as the story aims it or with
    # another amount, and a few ordinary steps before and after.
    core = [st.one_of(st.just(op), _money_step(op.f)) if op.f in ("draw", "repay") else st.just(op)
            for op in PERSONA_STORIES[persona]]
    filler = st.lists(_filler, max_size=STORY_FILLER_MAX)
    return st.tuples(filler, st.tuples(*core), filler).map(lambda t: [*t[0], *t[1], *t[2]])


def operations(persona: str | None = None) -> st.SearchStrategy[list[Operation]]:
    """A short list of `Operation`s telling `persona`'s story (any persona when None): the
    steps of PERSONA_STORIES in order (e.g. overdue_repayer: draw, go overdue, repay everything,
    draw again), amounts varied, with a few ordinary steps (draws, repayments, reads, waits)
    before and after."""
    if persona is None:
        return st.one_of(*(_told(p) for p in PERSONAS))
    if persona not in PERSONA_STORIES:
        raise ValueError(f"unknown persona {persona!r}; known: {', '.join(PERSONAS)}")
    return _told(persona)


# -- faults -----------------------------------------------------------------------------------------

def _probabilities() -> st.SearchStrategy[float]:
    return st.one_of(st.sampled_from([1.0, 0.5, 0.0]),
                     st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False))


def faults(kinds=FAULT_KINDS, max_delay_ms: int = contract.DELAY_MS_MAX
           ) -> st.SearchStrategy[dict]:
    """A fault body for `POST /v1/chaos/faults` of one of `kinds`, every parameter valid per the
    contract (and within its bounds in harness.contract); probabilities favour 1.0 and 0.5, a
    delay favours the values that outlast the service level, windows favour small sizes."""
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {', '.join(FAULT_KINDS)}")
    max_delay_ms = max(0, min(max_delay_ms, contract.DELAY_MS_MAX))
    delays = st.one_of(
        st.sampled_from(_edges(min(1500, max_delay_ms), 100, 0, max_delay_ms)),
        st.integers(0, min(max_delay_ms, ORDINARY_DELAY_MS_MAX)))
    by_kind = {
        "delay_sync": st.builds(lambda d: {"kind": "delay_sync", "delay_ms": d}, delays),
        "drop_events": st.builds(lambda p: {"kind": "drop_events", "probability": p},
                                 _probabilities()),
        "duplicate_events": st.builds(lambda p: {"kind": "duplicate_events", "probability": p},
                                      _probabilities()),
        "reorder_events": st.builds(
            lambda w: {"kind": "reorder_events", "window": w},
            st.one_of(st.sampled_from([2, 4, 8, 1]), st.integers(1, contract.WINDOW_MAX))),
        "pause_sync": st.just({"kind": "pause_sync"}),
        "maintenance_reset": st.builds(lambda m: {"kind": "maintenance_reset", "mode": m},
                                       st.sampled_from(RESET_MODES)),
    }
    return st.one_of(*(by_kind[k] for k in kinds))


def fault_schedules(kinds=FAULT_KINDS, max_faults: int = 6, horizon_ms: int = 10_000,
                    max_delay_ms: int = contract.DELAY_MS_MAX
                    ) -> st.SearchStrategy[list[tuple[int, dict]]]:
    """A schedule of injections and removals within `horizon_ms`, sorted by time: a list of
    `(at_ms, fault)` and `(at_ms, {"remove": n})`, where n indexes the injections of the
    schedule in order. Each injection is removed at most once and never before it was made;
    some are left on (the convergence phase removes them); `maintenance_reset` is one shot and
    never removed."""
    one = st.tuples(st.integers(0, horizon_ms), faults(kinds, max_delay_ms),
                    st.one_of(st.none(), st.integers(1, horizon_ms)))
    return st.lists(one, max_size=max_faults).map(lambda items: _schedule(items, horizon_ms))


def _schedule(items: list[tuple[int, dict, int | None]], horizon_ms: int) -> list[tuple[int, dict]]:
    injections = sorted(items, key=lambda item: item[0])
    out: list[tuple[int, int, dict]] = []
    for n, (at_ms, fault, lasts_ms) in enumerate(injections):
        out.append((at_ms, 0, fault))
        if lasts_ms is not None and fault["kind"] != "maintenance_reset":
            # 1 orders a removal after an injection of the same millisecond.
            out.append((min(horizon_ms, at_ms + lasts_ms), 1, {"remove": n}))
    out.sort(key=lambda item: (item[0], item[1]))
    return [(at_ms, action) for at_ms, _, action in out]


def schedule_faults(schedule: list[tuple[int, dict]]) -> list[dict]:
    """The injections of a schedule, in order: index n is what `{"remove": n}` names."""
    return [action for _, action in schedule if "kind" in action]
