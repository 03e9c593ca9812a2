"""The workload: generated users whose personas come from the failure stories users report.

A user keeps a belief of its accounts' states (from its own acknowledged writes), only to aim at
the edges: a draw of exactly the available, a repayment of exactly the outstanding, one fen
over either, a retry of an earlier request id. The belief is never used to judge anything:
the checkers judge the history against the ledger.

Now and then a user sends two requests for one account at once (`Race`), the way people and
apps do: a double tap, two devices, a retry of a request still in flight, or the bank's back
office acting on the account while its owner does.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from . import oracle
from .contract import FEN_MAX
from .errors import UsageError
from .packaged import fixture, read_toml
from .oracle import State
SENT_REMEMBERED_MAX = 32  # earlier requests a user may retry; older ones are forgotten
# Any whole number in a personas file: the contract's largest amount, so a credit line drawn from
# it is one the contract (and a 64-bit history) can carry.
PERSONA_NUMBER_MAX = FEN_MAX

RACES = (
    "double_tap",       # the same purchase tapped twice: two draws, each fits, both do not
    "two_devices",      # a draw and a repayment, or a balance repaid in two halves, at once
    "retry_in_flight",  # the app's retry after its own timeout, while the original is in flight
    "back_office",      # an overdue mark, a limit cut or a freeze meets the owner's write
)

PERSONAS = (
    "steady_spender",    # draws and repays at a steady pace
    "prober",            # many small draws, reads the limit all the time
    "early_repayer",     # repays right after drawing
    "multi_lender",      # holds a 花呗 and a 借呗 line and draws on both
    "overdue_repayer",   # goes overdue, then repays in full (the cure rule)
    "frozen_unfrozen",   # gets frozen, tries to draw, is unfrozen
    "limit_cut",         # a risk-policy cut below the balance, then restored
    "closer",            # repays everything, closes, reopens
)


@dataclass(frozen=True)
class WorkloadConfig:
    mix: dict[str, int]
    credit_line_fen_min: int = 500_000
    credit_line_fen_max: int = 5_000_000
    think_ms_min: int = 5
    think_ms_max: int = 120
    read_p: float = 0.35
    edge_p: float = 0.25
    retry_p: float = 0.05
    race_p: float = 0.04
    locale: str = "zh_CN"

    def __post_init__(self) -> None:
        unknown = set(self.mix) - set(PERSONAS)
        if unknown:
            raise UsageError(f"unknown persona {sorted(unknown)[0]!r}; known: {', '.join(PERSONAS)}")
        if not self.mix or sum(self.mix.values()) <= 0 or min(self.mix.values()) < 0:
            raise UsageError("the persona mix needs at least one persona with a positive weight")
        if not 0 <= self.credit_line_fen_min <= self.credit_line_fen_max:
            raise UsageError("credit_line_fen_min must be between 0 and credit_line_fen_max")
        if not 1 <= self.think_ms_min <= self.think_ms_max:
            raise UsageError("think_ms_min must be between 1 and think_ms_max")
        for name in ("read_p", "edge_p", "retry_p", "race_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise UsageError(f"{name} must be between 0 and 1")


def load_config(spec: str | None, locale: str | None) -> WorkloadConfig:
    """`spec`: None (the shipped personas.toml), a shipped name (personas-NAME.toml) or a path."""
    shipped = fixture("personas.toml" if spec is None else f"personas-{spec}.toml")
    path = Path(spec) if spec is not None and (shipped is None or Path(spec).exists()) else shipped
    raw = read_toml(path, "personas file")
    known = {"mix", "workload"}
    if set(raw) - known:
        raise UsageError(f"personas file {path}: unknown section {sorted(set(raw) - known)[0]!r}")
    for section in known & set(raw):
        if not isinstance(raw[section], dict):
            raise UsageError(f"personas file {path}: {section!r} must be a table")
    options = dict(raw.get("workload", {}))
    fields = set(WorkloadConfig.__dataclass_fields__) - {"mix"}
    if set(options) - fields:
        raise UsageError(f"personas file {path}: unknown key {sorted(set(options) - fields)[0]!r}")
    mix = raw.get("mix", {})
    for key, value in [*mix.items(), *options.items()]:
        expected = str if key == "locale" else (float, int) if key.endswith("_p") else int
        if not isinstance(value, expected) or isinstance(value, bool):
            raise UsageError(f"personas file {path}: {key!r} has the wrong type")
        if isinstance(value, int) and not -PERSONA_NUMBER_MAX <= value <= PERSONA_NUMBER_MAX:
            raise UsageError(f"personas file {path}: {key!r} is out of range")
    if locale:
        options["locale"] = locale
    try:
        return WorkloadConfig(mix=mix, **options)
    except UsageError as exc:
        raise UsageError(f"personas file {path}: {exc}") from None


@dataclass
class Action:
    f: str  # open, draw, repay, limit, status, display
    account_id: str
    body: dict | None = None
    retry_of: int | None = None  # history index of the op whose request this repeats


@dataclass
class Race:
    """Two writes for one account, sent together (`RACES` names the story)."""

    kind: str
    first: Action
    second: Action

    def first_invoked(self, index: int) -> None:
        """A retry in flight names the request it repeats, known once that one is invoked."""
        if self.kind == "retry_in_flight":
            self.second.retry_of = index


@dataclass
class User:
    process: int
    name: str
    persona: str
    accounts: list[str]
    credit_line: int
    belief: dict[str, State] = field(default_factory=dict)
    sent: list[tuple[int, Action]] = field(default_factory=list)
    step: int = 0
    requests: int = 0
    # A write that got no answer (timeout, reset, 5xx), retried next as the app would retry it.
    retry_next: tuple[int, Action] | None = None


class Workload:
    def __init__(self, config: WorkloadConfig, rng: random.Random, run_tag: str) -> None:
        self.config = config
        self.rng = rng
        self.run_tag = run_tag

    def users(self, count: int) -> list[User]:
        from faker import Faker

        fake = Faker(self.config.locale)
        fake.seed_instance(self.rng.randrange(2**32))
        names = sorted(n for n, weight in self.config.mix.items() if weight > 0)
        weights = [self.config.mix[n] for n in names]
        out = []
        for process in range(1, count + 1):
            # Every persona first, so a small run still exercises each story; then by weight.
            if process <= len(names):
                persona = names[process - 1]
            else:
                persona = self.rng.choices(names, weights)[0]
            products = ("huabei", "jiebei") if persona == "multi_lender" else \
                (self.rng.choice(("huabei", "jiebei")),)
            accounts = [f"{self.run_tag}-u{process}-{p[0]}" for p in products]
            line = self.rng.randint(self.config.credit_line_fen_min,
                                    self.config.credit_line_fen_max) // 100 * 100
            out.append(User(process, fake.name(), persona, accounts, line))
        return out

    def opens(self, user: User) -> list[Action]:
        return [Action("open", acc, {"account_id": acc,
                                      "product": "huabei" if acc.endswith("-h") else "jiebei",
                                      "credit_line": user.credit_line,
                                      "request_id": self._rid(user)})
                for acc in user.accounts]

    def think_ms(self) -> int:
        return self.rng.randint(self.config.think_ms_min, self.config.think_ms_max)

    # -- choosing the next action ------------------------------------------------------------
    def next_action(self, user: User) -> Action:
        if user.retry_next is not None:
            index, earlier = user.retry_next
            user.retry_next = None
            return Action(earlier.f, earlier.account_id, dict(earlier.body), retry_of=index)
        rng, config = self.rng, self.config
        account_id = rng.choice(user.accounts)
        if account_id not in user.belief:
            return Action("display", account_id)
        if user.sent and rng.random() < config.retry_p:
            index, earlier = rng.choice(user.sent)
            return Action(earlier.f, earlier.account_id, dict(earlier.body), retry_of=index)
        if rng.random() < config.read_p:
            return Action("display", account_id)
        user.step += 1
        f, body = _PERSONA_STEPS[user.persona](self, user, user.belief[account_id])
        body["request_id"] = self._rid(user)
        return Action(f, account_id, body)

    def next_race(self, user: User) -> Race | None:
        """Two writes to send at once, now and then (`race_p`); None the rest of the time, and
        while a retry of an unanswered write is due (it goes first, as the app's would)."""
        rng = self.rng
        if user.retry_next is not None or rng.random() >= self.config.race_p:
            return None
        account_id = rng.choice(user.accounts)
        state = user.belief.get(account_id)
        if state is None:
            return None
        # The back office is part of some personas' stories (the overdue job meets the overdue
        # repayer's payment): for them it races as often as the owner's own devices do.
        back_office = _back_office_races(user.persona, state)
        kind = rng.choice(RACES + ("back_office",) if back_office else RACES)
        if kind == "back_office" and not back_office:
            kind = "two_devices"
        first, second = _RACE_WRITES[kind](self, user, state)
        for body in (first[1], second[1]):
            if "request_id" not in body:
                body["request_id"] = self._rid(user)
        return Race(kind, Action(first[0], account_id, first[1]),
                    Action(second[0], account_id, second[1]))

    def observe_race(self, user: User, sent: list[tuple[Action, int, str, object]]) -> None:
        """`observe` for writes sent at once, (action, index, outcome, answer) each. The
        acknowledged ones are folded in the order they committed (their seq), not sent."""
        for action, index, outcome, answer in sorted(sent, key=lambda s: committed_seq(s[3])):
            self.observe(user, action, index, outcome, answer)

    def observe(self, user: User, action: Action, index: int, outcome: str, answer) -> None:
        """Fold an answer into the user's belief (acknowledged writes only)."""
        if action.f == "display" or action.retry_of is not None:
            return
        user.sent.append((index, action))
        del user.sent[:-SENT_REMEMBERED_MAX]
        if outcome == "info":  # once: a retry that gets no answer either is left at that
            user.retry_next = (index, action)
        if outcome != "ok":
            return
        value = action.body[oracle.VALUE_FIELD[action.f]]
        user.belief[action.account_id] = oracle.after_write(
            user.belief.get(action.account_id), action.f, value)

    # -- edges -------------------------------------------------------------------------------
    def draw_amount(self, state: State, small: bool = False) -> int:
        rng = self.rng
        if rng.random() < self.config.edge_p:
            return rng.choice((max(1, state.available), state.available + 1, 1))
        top = max(1, state.available // (20 if small else 4))
        return rng.randint(1, top)

    def repay_amount(self, state: State) -> int:
        rng = self.rng
        # max(1, ...): a buggy target can drive the belief below zero; we still send valid money.
        if state.outstanding <= 0 or rng.random() < self.config.edge_p:
            return rng.choice((max(1, state.outstanding), max(1, state.outstanding + 1)))
        return rng.randint(1, state.outstanding)

    def _rid(self, user: User) -> str:
        user.requests += 1
        return f"{self.run_tag}-{user.process}-{user.requests}"


def committed_seq(answer) -> int:
    """The seq a write's answer says it committed at (0 when it says none): the order in which
    writes sent at once took effect."""
    seq = answer.get("seq") if isinstance(answer, dict) else None
    return seq if type(seq) is int else 0


# -- races: (f, body) of the two writes; each body gets its own request_id unless it has one --

def _double_tap(w: Workload, u: User, s: State):
    amount = w.rng.randint(s.available // 2 + 1, s.available) if s.available > 1 else 1
    return ("draw", {"amount": amount}), ("draw", {"amount": amount})


def _two_devices(w: Workload, u: User, s: State):
    if s.outstanding > 1 and (s.status != "active" or w.rng.random() < 0.5):
        half = w.rng.randint(1, s.outstanding - 1)  # together, exactly the balance
        return ("repay", {"amount": half}), ("repay", {"amount": s.outstanding - half})
    return ("draw", {"amount": w.draw_amount(s)}), ("repay", {"amount": w.repay_amount(s)})


def _retry_in_flight(w: Workload, u: User, s: State):
    if s.available <= 1 and s.outstanding > 0:
        body = {"amount": w.repay_amount(s), "request_id": w._rid(u)}
        return ("repay", body), ("repay", dict(body))
    body = {"amount": w.rng.randint(1, max(1, s.available // 2)), "request_id": w._rid(u)}
    return ("draw", body), ("draw", dict(body))


def _back_office_races(persona: str, s: State) -> bool:
    # Only where the persona's own steps bring the account back afterwards (unfreeze, restore
    # the limit, reactivate), so no user is left with an account it never uses again.
    return (persona in ("limit_cut", "frozen_unfrozen")
            or persona == "overdue_repayer" and s.status == "active" and s.outstanding > 0)


def _back_office(w: Workload, u: User, s: State):
    if u.persona == "overdue_repayer":  # the overdue job meets a repayment in full
        return (("repay", {"amount": s.outstanding}),
                ("status", {"status": "overdue", "reason": "overdue-job"}))
    if u.persona == "frozen_unfrozen":
        return (("draw", {"amount": w.draw_amount(s)}),
                ("status", {"status": "frozen", "reason": "risk-review"}))
    cut = w.rng.randint(0, max(0, s.outstanding))  # a risk cut meets a purchase
    return (("draw", {"amount": w.draw_amount(s)}),
            ("limit", {"credit_line": cut, "reason": "risk-policy-cut"}))


_RACE_WRITES = {
    "double_tap": _double_tap,
    "two_devices": _two_devices,
    "retry_in_flight": _retry_in_flight,
    "back_office": _back_office,
}
assert set(_RACE_WRITES) == set(RACES)


def _steady(w: Workload, u: User, s: State):
    if s.outstanding > 0 and w.rng.random() < 0.35:
        return "repay", {"amount": w.repay_amount(s)}
    return "draw", {"amount": w.draw_amount(s)}


def _prober(w: Workload, u: User, s: State):
    if s.outstanding > 0 and w.rng.random() < 0.15:
        return "repay", {"amount": w.repay_amount(s)}
    return "draw", {"amount": w.draw_amount(s, small=True)}


def _early_repayer(w: Workload, u: User, s: State):
    if s.outstanding:
        return "repay", {"amount": w.repay_amount(s)}
    return "draw", {"amount": w.draw_amount(s)}


def _overdue_repayer(w: Workload, u: User, s: State):
    phase = u.step % 6
    if s.status == "overdue" and s.outstanding <= 0:  # marked after it was repaid (a race)
        return "status", {"status": "active", "reason": "restored"}
    if s.status == "overdue":
        return "repay", {"amount": max(1, s.outstanding) if w.rng.random() < 0.6 else w.repay_amount(s)}
    if phase == 3 and s.outstanding > 0:
        return "status", {"status": "overdue", "reason": "payment-overdue"}
    if s.status != "active":
        return "status", {"status": "active", "reason": "restored"}
    return "draw", {"amount": w.draw_amount(s)}


def _frozen(w: Workload, u: User, s: State):
    phase = u.step % 7
    if phase == 2:
        return "status", {"status": "frozen", "reason": "risk-review"}
    if phase == 5:
        return "status", {"status": "active", "reason": "review-cleared"}
    if s.outstanding > 0 and w.rng.random() < 0.3:
        return "repay", {"amount": w.repay_amount(s)}
    return "draw", {"amount": w.draw_amount(s)}


def _limit_cut(w: Workload, u: User, s: State):
    phase = u.step % 8
    if phase == 3:
        cut = w.rng.randint(0, max(0, s.outstanding))  # below the balance: available becomes 0
        return "limit", {"credit_line": cut, "reason": "risk-policy-cut"}
    if phase == 7:
        return "limit", {"credit_line": u.credit_line, "reason": "policy-restored"}
    if s.outstanding > 0 and w.rng.random() < 0.3:
        return "repay", {"amount": w.repay_amount(s)}
    return "draw", {"amount": w.draw_amount(s)}


def _closer(w: Workload, u: User, s: State):
    if s.status == "closed":
        return "status", {"status": "active", "reason": "reopened"}
    phase = u.step % 6
    if phase == 4:  # sometimes with a balance left: the service must refuse that close
        return "status", {"status": "closed", "reason": "user-closed"}
    if phase == 3 and s.outstanding > 0 and w.rng.random() < 0.7:
        return "repay", {"amount": s.outstanding}
    return "draw", {"amount": w.draw_amount(s)}


_PERSONA_STEPS = {
    "steady_spender": _steady,
    "prober": _prober,
    "early_repayer": _early_repayer,
    "multi_lender": _steady,
    "overdue_repayer": _overdue_repayer,
    "frozen_unfrozen": _frozen,
    "limit_cut": _limit_cut,
    "closer": _closer,
}
assert set(_PERSONA_STEPS) == set(PERSONAS)
