"""The seeded-bug catalogue: realistic defects, each a small deviation of the real code path.

They exist so the harness can prove it catches what it claims: every one is switched on with
`--bug NAME` and has a test showing the defect and the finding `run` reports for it. A bug is
chosen when the service is built: its `install` replaces one hook of the core or the projector
(each hook is named for what it decides), so the correct path carries no test for any bug.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, NamedTuple

from ..errors import UsageError
from ..oracle import State
from .projector import ZERO, Row

if TYPE_CHECKING:  # pragma: no cover
    from .core import Awaiting, LimitService


class Bug(NamedTuple):
    words: str          # what goes wrong, as a user would notice it
    finding_kind: str   # the finding `run` reports for it
    sequential: bool    # shows with one sequential client (the faults and lag driven in order)
    install: Callable[["LimitService"], None]
    # Shows only when the service is killed and restarted (tests/test_durability.py does it),
    # never within one simulated run, which nothing kills.
    crash: bool = False


# -- the write path: what is remembered, what is allowed, what is cured ---------------------

def _retry_duplicates_draw(service: "LimitService") -> None:
    # The draw endpoint never looks its request ids up, on arrival or at commit.
    service.recall_for["draw"] = service.recall_at_commit["draw"] = lambda request_id: None


def _judge_with(change: Callable[["LimitService", str, State, str, object], str | None | State]):
    """A bug in the acceptance rules: `change` sees each write and returns a verdict to give
    instead (an error code, or `True` to accept), a State to judge against instead, or None."""
    def install(service: "LimitService") -> None:
        judge = service.judge

        def buggy(account_id: str, state: State, kind: str, value) -> str | None:
            instead = change(service, account_id, state, kind, value)
            if instead is True:
                return None
            if isinstance(instead, str):
                return instead
            return judge(account_id, instead if instead is not None else state, kind, value)
        service.judge = buggy
    return install


def _against_display(service, account_id, state, kind, value):
    if kind != "draw":
        return None
    shown = service.projector.display(account_id)
    return None if shown is None else \
        State(shown["credit_line"], shown["outstanding"], shown["status"])


def _frozen_draws(service, account_id, state, kind, value):
    return state._replace(status="active") if kind == "draw" and state.status == "frozen" \
        else None


def _exact_available(service, account_id, state, kind, value):
    return "insufficient_limit" if kind == "draw" and value == state.available else None


def _overpay(service, account_id, state, kind, value):
    return True if kind == "repay" and state.status != "closed" else None


def _close_with_balance(service, account_id, state, kind, value):
    return True if kind == "status" else None


def _no_cure(service: "LimitService") -> None:
    service.cures = lambda state, kind, value: False


# -- across the await point: what a write re-checks after its call to the risk engine ------
# None of these can show with one sequential client: on that path nothing commits while a write
# awaits, so what it decided before the await still holds at its commit.

def _draw_unchecked_after_risk(service: "LimitService") -> None:
    decide_again = service.decide_again

    def trusting_the_authorisation(waiting: "Awaiting", state: State) -> tuple[str | None, bool]:
        # "It was authorised before the risk call": written on top of whatever committed since.
        return (None, False) if waiting.kind == "draw" else decide_again(waiting, state)
    service.decide_again = trusting_the_authorisation


def _retry_races_original(service: "LimitService") -> None:
    # The request id is looked up as the request arrives, and not again in the transaction.
    service.recall_at_commit = {kind: lambda request_id: None for kind in service.recall_for}


def _cure_decided_before_risk(service: "LimitService") -> None:
    decide_again = service.decide_again

    def keeping_the_cure(waiting: "Awaiting", state: State) -> tuple[str | None, bool]:
        # The verdict is taken again, the cure is what was decided before the risk call.
        error, _ = decide_again(waiting, state)
        return error, waiting.cures
    service.decide_again = keeping_the_cure


# -- the ledger: when a write is durable -------------------------------------------------------

ACK_FLUSH_EVERY_MS = 250  # how long acknowledged writes wait for their commit, at most


def _ack_before_durable(service: "LimitService") -> None:
    # "Commits are batched on a timer for throughput": the write is answered while its
    # transaction is still open, and a kill within the next 250 ms loses it. Reads on the same
    # connection see it meanwhile, so nothing looks wrong until the process dies. SQLite only
    # (the store with that hook); `serve` refuses the bug on any other ledger.
    store = service.store
    durable = getattr(store, "end_transaction", None)
    if durable is None:
        return
    opened_ms: list[int] = []  # when the open transaction began, while one is open
    advance = service.advance

    def later() -> None:
        if not opened_ms:
            opened_ms.append(service.clock.now_ms())

    def advance_and_commit_on_timer(now_ms: int | None = None) -> int:
        if opened_ms and service.clock.now_ms() - opened_ms[0] >= ACK_FLUSH_EVERY_MS:
            opened_ms.clear()
            durable()
        return advance(now_ms)
    store.end_transaction = later
    service.advance = advance_and_commit_on_timer


# -- the read model: how events apply, repairs, maintenance, rendering ----------------------

def _limit_cut_hidden(service: "LimitService") -> None:
    projector = service.projector
    change = projector.change

    def ignoring_cuts(state: State | None, kind: str, value) -> State:
        if state is not None and kind == "limit" and value < state.credit_line:
            return state
        return change(state, kind, value)
    projector.change = ignoring_cuts


def _apply_duplicates(service: "LimitService") -> None:
    projector = service.projector

    def apply_again(account_id: str, row: Row, event) -> None:
        projector.rows[account_id] = Row(projector.change(row.state, event.kind, event.value),
                                         row.as_of_seq)
    projector.on_old_event = apply_again


def _reorder_blind(service: "LimitService") -> None:
    projector = service.projector

    def deliver_blind(event, now_ms: int) -> None:
        # Trust arrival order: anything newer than the watermark is applied on top and moves
        # the watermark, so a late older event is skipped although the watermark covers it.
        row = projector.rows.get(event.account_id)
        if row is None:
            if event.kind == "open":
                projector.rows[event.account_id] = Row(projector.change(None, event.kind,
                                                                        event.value), event.seq)
            return
        if row.as_of_seq is None or event.seq > row.as_of_seq:
            projector.rows[event.account_id] = Row(
                projector.change(row.state, event.kind, event.value), event.seq)
            projector.applied += 1
            projector.settle(event.account_id, event.seq)
    projector.deliver = deliver_blind


LATE_REDELIVERY_MS = 150  # within the convergence phase's settle interval, as a real bus's would


def _late_duplicate(service: "LimitService") -> None:
    pipe = service.pipe
    publish = pipe.publish

    def publish_and_redeliver(event, now_ms: int) -> None:
        publish(event, now_ms)
        if event.kind != "open":  # a second open would reset the row and hide the rest
            pipe.redeliver(event, now_ms + service.config.sync_lag_ms + LATE_REDELIVERY_MS)
    pipe.publish = publish_and_redeliver
    _apply_duplicates(service)


def _display_flaps(service: "LimitService") -> None:
    projector = service.projector
    display = projector.display
    reads: dict[str, int] = {}

    def flapping(account_id: str) -> dict | None:
        # Every other read of an account is served from the last snapshot, as a read replica
        # that lags behind would: honest about its as_of_seq, but the limit jumps back.
        reads[account_id] = reads.get(account_id, 0) + 1
        old = projector.snapshot.get(account_id)
        if reads[account_id] % 2 or old is None:
            return display(account_id)
        view = old.state.view()
        view["account_id"], view["as_of_seq"] = account_id, old.as_of_seq
        return view
    projector.display = flapping


def _no_gap_repair(service: "LimitService") -> None:
    service.projector.anti_entropy = lambda now_ms, late_ms: 0


def _reset_shows_zero(service: "LimitService") -> None:
    projector = service.projector
    reset = projector.reset

    def wipe_to_zero(mode: str, now_ms: int) -> None:
        if mode != "clear":
            return reset(mode, now_ms)
        # An empty row renders as a zero limit, and nothing marks it for rebuild.
        projector.pending.clear()
        projector.rows = {a: Row(ZERO, None) for a in projector.tail}
        projector.behind.clear()
    projector.reset = wipe_to_zero


def _snapshot_keeps_watermark(service: "LimitService") -> None:
    projector = service.projector
    reset = projector.reset

    def restore_keeping_watermark(mode: str, now_ms: int) -> None:
        if mode != "snapshot":
            return reset(mode, now_ms)
        # Old numbers under today's watermark, so the repair job sees nothing to do.
        current = projector.rows
        projector.pending.clear()
        projector.rows = {a: Row(projector.snapshot[a].state, current[a].as_of_seq)
                          for a in projector.snapshot if a in current}
        projector.behind = {a: (now_ms, 0) for a in projector.tail if a not in projector.rows}
    projector.reset = restore_keeping_watermark


def _negative_available(service: "LimitService") -> None:
    projector = service.projector
    display = projector.display

    def unfloored(account_id: str) -> dict | None:
        view = display(account_id)
        if view is not None and view["status"] == "active":
            view["available"] = view["credit_line"] - view["outstanding"]
            view["usable"] = view["available"] > 0
        return view
    projector.display = unfloored


CATALOGUE: dict[str, Bug] = {
    "no_gap_repair": Bug(
        "projector never repairs: after a dropped event the display stays stuck for good",
        "display_divergence", True, _no_gap_repair),
    "apply_duplicates": Bug(
        "projector does not de-duplicate: a redelivered event is applied twice",
        "inconsistent_display", True, _apply_duplicates),
    "reset_shows_zero": Bug(
        "after a maintenance wipe the display shows a zero limit instead of 503 (50,000 -> 0)",
        "inconsistent_display", True, _reset_shows_zero),
    "no_cure": Bug(
        "repaying an overdue account in full does not reactivate it: it stays unusable",
        "ledger_rule_violation", True, _no_cure),
    "limit_cut_hidden": Bug(
        "projector ignores limit cuts: the app keeps showing the old, higher limit",
        "inconsistent_display", True, _limit_cut_hidden),
    "retry_duplicates_draw": Bug(
        "a retried draw (same request_id) is written a second time",
        "duplicate_write", True, _retry_duplicates_draw),
    "draw_against_display": Bug(
        "draws are authorised against the (possibly stale) display instead of the ledger",
        "ledger_rule_violation", True, _judge_with(_against_display)),
    "negative_available": Bug(
        "available is shown as line minus balance without the floor at zero",
        "inconsistent_display", True, _negative_available),
    "reorder_blind": Bug(
        "projector trusts arrival order: a late, older event is skipped, yet as_of_seq claims it",
        "inconsistent_display", True, _reorder_blind),
    "snapshot_keeps_watermark": Bug(
        "restoring a snapshot keeps the newer as_of_seq: old numbers claim to be fresh",
        "inconsistent_display", True, _snapshot_keeps_watermark),
    "exact_available_rejected": Bug(
        "a draw of exactly the available limit is refused (off by one)",
        "wrongful_rejection", True, _judge_with(_exact_available)),
    "overpay_accepted": Bug(
        "a repayment larger than the balance is accepted (balance goes negative)",
        "ledger_rule_violation", True, _judge_with(_overpay)),
    "close_with_balance": Bug(
        "an account with an outstanding balance can be closed",
        "ledger_rule_violation", True, _judge_with(_close_with_balance)),
    "frozen_draw_allowed": Bug(
        "a frozen account can still draw",
        "ledger_rule_violation", True, _judge_with(_frozen_draws)),
    "late_duplicate": Bug(
        "the bus redelivers every event a moment later and the projector applies it again",
        "inconsistent_display", True, _late_duplicate),
    "display_flaps": Bug(
        "every other display read comes from an old snapshot: the limit jumps back and forth",
        "stale_display", True, _display_flaps),
    "draw_unchecked_after_risk": Bug(
        "a draw authorised before the risk-engine call is written after it unchecked: two at "
        "once overdraw",
        "ledger_rule_violation", False, _draw_unchecked_after_risk),
    "retry_races_original": Bug(
        "request ids are looked up on arrival only: a retry sent while its original is in "
        "flight is written twice",
        "duplicate_write", False, _retry_races_original),
    "cure_decided_before_risk": Bug(
        "a repayment's cure is decided before the risk-engine call: one racing an overdue mark "
        "clears the balance and the account stays overdue",
        "ledger_rule_violation", False, _cure_decided_before_risk),
    "ack_before_durable": Bug(
        "a write is acknowledged before its commit is durable (commits batched on a timer): a "
        "crash loses acknowledged writes",
        "lost_write", False, _ack_before_durable, crash=True),
}


def require_embedded(target: str | None, names) -> None:
    """Seeded bugs live in the embedded reference service; anything else has its own code."""
    if names and target not in (None, "embedded"):
        raise UsageError("--bug switches on bugs of the embedded reference service; for an HTTP "
                         "target start it with `limit-harness serve --bug NAME` instead")


def check(names) -> tuple[str, ...]:
    """The names, each known, each once, in the order given."""
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        raise UsageError(f"unknown bug {unknown[0]!r}; `limit-harness serve --list-bugs` lists them")
    if names:
        # Imported only here: findings brings deepdiff, 1.6 s of every `serve` start otherwise,
        # and a service restarted after a crash is a service down until it has started.
        from ..findings import KINDS
        assert all(CATALOGUE[n].finding_kind in KINDS for n in names), names
    return tuple(dict.fromkeys(names))


def install(service: "LimitService", names) -> None:
    for name in check(names):
        CATALOGUE[name].install(service)


def listing() -> str:
    width = max(map(len, CATALOGUE))
    return "\n".join(f"{name:<{width}}  {bug.words}" for name, bug in CATALOGUE.items())
