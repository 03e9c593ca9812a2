"""The seeded-bug catalogue: realistic defects, each a small deviation of the real code path.

They exist so the harness can prove it catches what it claims: every one is switched on with
`--bug NAME` and each has a test showing the defect and the finding `run` reports for it.
"""

from __future__ import annotations

from ..errors import UsageError

# name -> (what goes wrong, the finding kind the harness reports, shows with one sequential
# client). Every bug here does: the faults and the sync lag they need are driven sequentially.
CATALOGUE: dict[str, tuple[str, str, bool]] = {
    "no_gap_repair": (
        "projector never repairs: after a dropped event the display stays stuck for good",
        "display_divergence", True),
    "apply_duplicates": (
        "projector does not de-duplicate: a redelivered event is applied twice",
        "inconsistent_display", True),
    "reset_shows_zero": (
        "after a maintenance wipe the display shows a zero limit instead of 503 (50,000 -> 0)",
        "inconsistent_display", True),
    "no_cure": (
        "repaying an overdue account in full does not reactivate it: it stays unusable",
        "ledger_rule_violation", True),
    "limit_cut_hidden": (
        "projector ignores limit cuts: the app keeps showing the old, higher limit",
        "inconsistent_display", True),
    "retry_duplicates_draw": (
        "a retried draw (same request_id) is written a second time",
        "duplicate_write", True),
    "draw_against_display": (
        "draws are authorised against the (possibly stale) display instead of the ledger",
        "ledger_rule_violation", True),
    "negative_available": (
        "available is shown as line minus balance without the floor at zero",
        "inconsistent_display", True),
    "reorder_blind": (
        "projector trusts arrival order: a late, older event is skipped, yet as_of_seq claims it",
        "inconsistent_display", True),
    "snapshot_keeps_watermark": (
        "restoring a snapshot keeps the newer as_of_seq: old numbers claim to be fresh",
        "inconsistent_display", True),
    "exact_available_rejected": (
        "a draw of exactly the available limit is refused (off by one)",
        "wrongful_rejection", True),
    "overpay_accepted": (
        "a repayment larger than the balance is accepted (balance goes negative)",
        "ledger_rule_violation", True),
    "close_with_balance": (
        "an account with an outstanding balance can be closed",
        "ledger_rule_violation", True),
    "frozen_draw_allowed": (
        "a frozen account can still draw",
        "ledger_rule_violation", True),
}


def check(names) -> frozenset[str]:
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        raise UsageError(f"unknown bug {unknown[0]!r}; `limit-harness serve --list-bugs` lists them")
    return frozenset(names)


def listing() -> str:
    width = max(map(len, CATALOGUE))
    return "\n".join(f"{name:<{width}}  {text}" for name, (text, _, _) in CATALOGUE.items())
