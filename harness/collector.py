"""Fewer garbage collections while the harness builds large structures without reference cycles
(a history, a ledger, their analysis). The cyclic collector would otherwise rescan every object
already there, again and again: a fifth of a simulated run's time, and half of checking a
200,000-operation history. What is there when this starts is frozen out of its scans, and young
collections come rarely; the usual thresholds come back afterwards."""

from __future__ import annotations

import contextlib
import gc

YOUNG_THRESHOLD = 200_000  # allocations between young-generation collections


@contextlib.contextmanager
def fewer_collections():
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


@contextlib.contextmanager
def no_collections():
    """No cyclic collection at all while a check digests a run: what it builds is either kept
    until it ends (the analysis) or freed by reference counting, so a collection would only
    rescan it (a seventh of the analysis's time, even with `fewer_collections`)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
