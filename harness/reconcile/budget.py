"""How many findings a reconcile explains at most.

Each finding is explained in words, one by one: a million of them take minutes and gigabytes,
and such a count almost always means the export or the options are wrong (yuan read as fen, a
cut below the snapshot, a column mapped to the wrong one), not a million separate bugs. Past the
bound, a reconcile stops with a one-line error that counts them by kind, before explaining any.
"""

from __future__ import annotations

from ..errors import UsageError

FINDINGS_MAX = 100_000


def check(counts: dict[str, int], findings_max: int) -> None:
    """UsageError when the findings counted by kind are over `findings_max`."""
    total = sum(counts.values())
    if total <= findings_max:
        return
    words = ", ".join(f"{n:,} {kind}" for kind, n in
                      sorted(counts.items(), key=lambda item: (-item[1], item[0])) if n)
    raise UsageError(f"{total:,} findings ({words}), over --findings-max {findings_max:,}: so "
                     f"many usually means wrong options or export (check --money-unit, "
                     f"--as-of-seq and --columns); raise --findings-max to list them all")
