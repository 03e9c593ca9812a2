"""The event pipe keeps a FIFO for events in delivery order and a heap for those a lifted delay
made due earlier. Whatever the delays do, `due` must hand out exactly what a single priority
queue on (deliver_at_ms, publish order) would, and nothing before its time."""

from __future__ import annotations

import heapq
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.service.chaos import FaultSet
from harness.service.events import QUEUE_MAX, Event, EventPipe

LAG_MS = 20

# A step: publish one event after `wait_ms`, with the delay fault at `delay_ms` (0 = none), or
# deliver what is due after `wait_ms`.
steps = st.lists(st.tuples(st.sampled_from(["publish", "deliver"]),
                           st.integers(0, 30), st.sampled_from([0, 0, 5, 40, 300])),
                 max_size=120)


def event(n: int) -> Event:
    return Event(n, f"a-{n % 3}", None, "draw", 1)


def set_delay(faults: FaultSet, delay_ms: int) -> None:
    faults.clear()
    if delay_ms:
        faults.add({"kind": "delay_sync", "delay_ms": delay_ms})


@settings(max_examples=300, deadline=None)
@given(steps)
def test_due_is_a_priority_queue_on_delivery_time_then_publish_order(program):
    faults = FaultSet()
    pipe = EventPipe(faults, random.Random(0), LAG_MS)
    model: list[tuple[int, int, Event]] = []
    now_ms, published = 0, 0
    for action, wait_ms, delay_ms in program:
        now_ms += wait_ms
        if action == "publish":
            set_delay(faults, delay_ms)
            published += 1
            heapq.heappush(model, (now_ms + LAG_MS + delay_ms, published, event(published)))
            pipe.publish(event(published), now_ms)
        else:
            expected = []
            while model and model[0][0] <= now_ms:
                expected.append(heapq.heappop(model)[2])
            assert pipe.due(now_ms) == expected
        assert len(pipe) == len(model)
    faults.clear()
    assert pipe.due(now_ms + 10**6) == [item[2] for item in sorted(model)]
    assert len(pipe) == 0


def test_an_event_made_due_early_by_a_lifted_delay_overtakes_the_delayed_ones():
    faults = FaultSet()
    pipe = EventPipe(faults, random.Random(0), LAG_MS)
    set_delay(faults, 1000)
    pipe.publish(event(1), 0)  # due at 1020
    set_delay(faults, 0)
    pipe.publish(event(2), 10)  # due at 30
    assert pipe.next_due_ms() == 30
    assert pipe.due(29) == []
    assert [e.seq for e in pipe.due(30)] == [2]
    assert pipe.due(1019) == []
    assert [e.seq for e in pipe.due(1020)] == [1]


def test_the_queue_is_bounded_and_counts_what_it_drops():
    pipe = EventPipe(FaultSet(), random.Random(0), LAG_MS)
    for n in range(QUEUE_MAX + 5):
        pipe.publish(event(n), 0)
    assert len(pipe) == QUEUE_MAX
    assert pipe.dropped == 5
