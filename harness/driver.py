"""Driving a target through the setup and safety phases: the users act, the nemesis injects.

A simulated drive is single-threaded on the target's clock and takes every random choice from
seeded generators, so the same seed replays the same history bit for bit. An HTTP drive runs one
thread per group of users in real time while the main thread moves the nemesis; it is
reproducible in intent, not bit for bit. The nemesis only says what to inject and when; the
driver carries it out through the recorder, so every fault is in the history.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from dataclasses import dataclass
from typing import Callable

from .client import Recorder
from .collector import fewer_collections
from .nemesis import FaultProfile, Nemesis
from .progress import Progress
from .targets import Choose, Target
from .workload import Action, Race, User, Workload, WorkloadConfig

NEMESIS = 0  # the process number of the nemesis's ops
NEMESIS_POLL_S = 0.02
PROGRESS_EVERY_OPS = 512
HTTP_STOP_GRACE_S = 30.0  # how long past its end an HTTP drive waits for hung workers
INTERLEAVING_STREAM = 4  # dice stream of a simulated drive's race interleavings


@dataclass(frozen=True)
class Drive:
    """What to drive: how many users, and for how long (ops for a simulated drive, seconds for
    an HTTP one); with its seed and the tag that makes its ids unique on a shared target."""

    seed: int
    accounts: int
    ops: int | None
    duration_s: float | None
    workers: int
    run_tag: str

    def __post_init__(self) -> None:
        assert (self.ops is None) != (self.duration_s is None), "bounded by ops or by time"
        assert self.accounts > 0 and self.workers > 0


def dice(seed: int, stream: int) -> random.Random:
    """Independent seeded generators per purpose, so adding a draw to one (the nemesis, say)
    does not shift every choice of another (the users)."""
    return random.Random(seed * 7919 + stream)


def drive(plan: Drive, target: Target, recorder: Recorder, profile: FaultProfile,
          workload_config: WorkloadConfig, progress: Progress) -> list[User]:
    """Setup and safety phases; returns the users (the history holds everything else)."""
    workload = Workload(workload_config, dice(plan.seed, 1), plan.run_tag)
    users = workload.users(plan.accounts)
    recorder.phase("setup")
    for user in users:
        for action in workload.opens(user):
            _perform(recorder, workload, user, action)
    recorder.phase("safety")
    nemesis = Nemesis(profile, dice(plan.seed, 2), target.now_ms(),
                      length_ms=safety_ms(plan, workload_config),
                      sla_ms=recorder.history.meta["sla_ms"])
    recorder.history.meta["nemesis"] = nemesis.plan.summary()
    with fewer_collections():
        if target.simulated:
            _safety_simulated(plan, target, recorder, workload, users, nemesis, progress)
        else:
            _safety_http(plan, target, recorder, workload_config, users, nemesis, progress)
    return users


def safety_ms(plan: Drive, workload_config: WorkloadConfig) -> int:
    """How long the safety phase will last, so the nemesis's covering cycle fits in it: an HTTP
    drive's duration; a simulated drive's ops shared by its users, each taking its mean think
    time plus the 1 ms between one op's completion and the next (an estimate: the nemesis plans
    with room to spare)."""
    if plan.duration_s is not None:
        return max(1, int(plan.duration_s * 1000))
    think_ms = (workload_config.think_ms_min + workload_config.think_ms_max) / 2
    return max(1, int(plan.ops * (think_ms + 1) / plan.accounts))


def _perform(recorder: Recorder, workload: Workload, user: User, action: Action) -> None:
    if action.f == "display":
        recorder.display(user.process, action.account_id)
        return
    op = recorder.write(user.process, action.f, action.account_id, action.body, action.retry_of)
    workload.observe(user, action, op.index, op.outcome, op.response)


def _act(recorder: Recorder, workload: Workload, user: User, choose: Choose | None) -> int:
    """One step of a user: a race now and then, else one action; returns the ops it made."""
    race = workload.next_race(user)
    if race is None:
        _perform(recorder, workload, user, workload.next_action(user))
        return 1
    _perform_race(recorder, workload, user, race, choose)
    return 2


def _perform_race(recorder: Recorder, workload: Workload, user: User, race: Race,
                  choose: Choose | None) -> None:
    first = race.first
    ops = [recorder.invoke_write(user.process, first.f, first.account_id, first.body)]
    race.first_invoked(ops[0].index)
    second = race.second
    ops.append(recorder.invoke_write(user.process, second.f, second.account_id, second.body,
                                     second.retry_of))
    recorder.send_at_once(ops, choose)
    workload.observe_race(user, [(action, op.index, op.outcome, op.response)
                                 for action, op in zip((first, second), ops)])


PROBE_ACCOUNTS_MAX = 32   # a probe reads the displays of at most this many accounts ...
PROBE_SCAN_OPS_MAX = 4096  # ... the last written, found among at most this many latest ops


def _nemesis_move(recorder: Recorder, nemesis: Nemesis, now_ms: int,
                  written: Callable[[], list[str]]) -> None:
    """One move; a probe reads the accounts `written` gives (`written_last` of the recorder's
    history; a load test's master passes its workers')."""
    move, what = nemesis.next_move(now_ms)
    if move == "probe":
        _probe(recorder, nemesis.next_fault_ms, written())
    elif move == "add":
        op = recorder.add_fault(NEMESIS, what)
        fault_id = op.response.get("fault_id") if op.outcome == "ok" else None
        nemesis.added(what, fault_id)
    else:
        recorder.remove_fault(NEMESIS, what)


def _probe(recorder: Recorder, until_ms: float, accounts: list[str]) -> None:
    """Read the displays of the accounts written last, as the users who just wrote would look,
    until `until_ms` (the nemesis's next move); the first read that gets no answer ends the
    probe (the next would wait as long)."""
    for account_id in accounts:  # bounded: PROBE_ACCOUNTS_MAX
        if recorder.target.now_ms() >= until_ms:
            return
        if recorder.display(NEMESIS, account_id).outcome == "info":
            return


def written_last(recorder: Recorder) -> Callable[[], list[str]]:
    """The accounts a probe reads: those the recorder's own history wrote last."""
    return lambda: recently_written(recorder.history.ops, PROBE_ACCOUNTS_MAX)


def recently_written(ops: list, accounts_max: int) -> list[str]:
    """The accounts of the latest writes, the latest first; up to `accounts_max` of them, looked
    for among the last PROBE_SCAN_OPS_MAX ops (workers append to `ops` meanwhile)."""
    found: dict[str, None] = {}
    for op in reversed(ops[-PROBE_SCAN_OPS_MAX:]):
        if op.is_write and op.account_id is not None:
            found.setdefault(op.account_id, None)
            if len(found) >= accounts_max:
                break
    return list(found)


def _safety_simulated(plan, target, recorder, workload, users, nemesis, progress) -> None:
    progress.phase("safety", total=plan.ops)
    queue = [(target.now_ms() + workload.think_ms(), user.process) for user in users]
    heapq.heapify(queue)
    by_process = {user.process: user for user in users}
    choose = dice(plan.seed, INTERLEAVING_STREAM).randrange
    written = written_last(recorder)
    done = 0
    for _ in range(plan.ops):  # each step makes at least one op
        if done >= plan.ops:
            break
        at_ms, process = heapq.heappop(queue)
        while nemesis.due(at_ms):
            target.wait_ms(max(0, nemesis.next_ms - target.now_ms()))
            _nemesis_move(recorder, nemesis, target.now_ms(), written)
        target.wait_ms(max(0, at_ms - target.now_ms()))
        user = by_process[process]
        made = _act(recorder, workload, user, choose)
        # +1: the next op of anyone is invoked strictly after this one completed.
        heapq.heappush(queue, (target.now_ms() + 1 + workload.think_ms(), process))
        done += made
        if done // PROGRESS_EVERY_OPS != (done - made) // PROGRESS_EVERY_OPS:
            progress.update(done, faults=len(nemesis.active))


def _safety_http(plan, target, recorder, workload_config, users, nemesis, progress) -> None:
    start_ms = target.now_ms()
    stop_ms = start_ms + int(plan.duration_s * 1000)
    progress.phase("safety", total=int(plan.duration_s))
    workers = min(plan.workers, len(users))
    threads = []
    errors: list[BaseException] = []
    for index in range(workers):
        # Each worker owns its users and its own dice, so no two threads share a generator.
        workload = Workload(workload_config, dice(plan.seed, 10 + index), plan.run_tag)
        thread = threading.Thread(target=_worker, name=f"worker-{index}", daemon=True,
                                  args=(target, recorder, workload, users[index::workers],
                                        stop_ms, errors))
        threads.append(thread)
        thread.start()
    deadline_s = time.monotonic() + plan.duration_s + HTTP_STOP_GRACE_S  # even if workers hang
    written = written_last(recorder)
    # A worker that stopped on an error (its command's wall-clock bound among them) ends the
    # drive now, not at its planned end.
    while target.now_ms() < stop_ms and time.monotonic() < deadline_s and not errors:
        now_ms = target.now_ms()
        # Every move due by now, not one per poll: a short run's cycle has moves ms apart.
        while nemesis.due(now_ms) and target.now_ms() < stop_ms:
            _nemesis_move(recorder, nemesis, now_ms, written)
            now_ms = target.now_ms()
        progress.update((now_ms - start_ms) // 1000, faults=len(nemesis.active),
                        ops=len(recorder.history))
        time.sleep(NEMESIS_POLL_S)
    for thread in threads:
        thread.join(timeout=max(0.1, deadline_s - time.monotonic()))
    if errors:
        raise errors[0]


def _worker(target, recorder, workload, users, stop_ms, errors) -> None:
    try:
        # Bounded by time: every pass performs at least one request, each bounded by the
        # target's timeout, and the loop ends once the clock passes stop_ms.
        while target.now_ms() < stop_ms:
            for user in users:
                _act(recorder, workload, user, None)
    except BaseException as exc:  # surfaced by the main thread; a worker must not die silently
        errors.append(exc)
