"""A Hypothesis state machine drives a CapacityController with acquire, release and cancel steps
(including cancellations that race a slot handover) and checks after every step that no limit is
exceeded, no capacity sits idle while someone waits, and nothing leaks at the end."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Protocol

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from coalestra.concurrency import CapacityController
from coalestra.testing import VirtualTimeLoop

GLOBAL_LIMIT = 3
SOURCE_LIMITS = {"a": 1, "b": 2}
SOURCES = ("a", "b", "c")  # "c" has no limit of its own


class _Lease(Protocol):
    def release(self) -> None: ...


async def _settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


class ControllerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = VirtualTimeLoop()
        self.controller = CapacityController(global_limit=GLOBAL_LIMIT, source_limits=SOURCE_LIMITS)
        self.next_id = 0
        self.calls: dict[int, tuple[str, asyncio.Task[None], asyncio.Future[None]]] = {}
        self.holders: dict[int, str] = {}
        self.leases: dict[int, _Lease] = {}

    # --- the model's calls --------------------------------------------------------------------

    async def _call(self, call_id: int, source: str, done: asyncio.Future[None]) -> None:
        lease = await self.controller.acquire(source)
        self.holders[call_id] = source
        self.leases[call_id] = lease
        try:
            await done
        finally:
            del self.holders[call_id], self.leases[call_id]
            lease.release()  # a no-op when the model already released it

    def _settle(self) -> None:
        self.loop.run_until_complete(_settle())
        for call_id in [cid for cid, (_, task, _) in self.calls.items() if task.done()]:
            del self.calls[call_id]

    def _finish(self, index: int) -> None:
        # Release synchronously, from outside the loop, so the slot is handed over right here.
        holders = sorted(self.holders)
        call_id = holders[index % len(holders)]
        self.leases[call_id].release()
        self.calls[call_id][2].set_result(None)

    def _waiting_ids(self) -> list[int]:
        return sorted(cid for cid in self.calls if cid not in self.holders)

    # --- rules --------------------------------------------------------------------------------

    @rule(source=st.sampled_from(SOURCES))
    def start_call(self, source: str) -> None:
        done: asyncio.Future[None] = self.loop.create_future()
        task = self.loop.create_task(self._call(self.next_id, source, done))
        self.calls[self.next_id] = (source, task, done)
        self.next_id += 1
        self._settle()

    @precondition(lambda self: bool(self.holders))
    @rule(index=st.integers(min_value=0, max_value=63))
    def finish_call(self, index: int) -> None:
        self._finish(index)
        self._settle()

    @precondition(lambda self: bool(self.calls))
    @rule(index=st.integers(min_value=0, max_value=63))
    def cancel_call(self, index: int) -> None:
        ids = sorted(self.calls)
        self.calls[ids[index % len(ids)]][1].cancel()
        self._settle()

    @precondition(lambda self: bool(self.holders) and bool(self._waiting_ids()))
    @rule(holder=st.integers(min_value=0, max_value=63), waiter=st.integers(0, 63))
    def finish_and_cancel_a_waiter_in_the_same_step(self, holder: int, waiter: int) -> None:
        # No loop step between the two: a waiter that was just handed a slot is cancelled
        # before it can resume, the race asyncio.Semaphore.acquire also has to handle.
        waiting = self._waiting_ids()
        self._finish(holder)
        self.calls[waiting[waiter % len(waiting)]][1].cancel()
        self._settle()

    # --- invariants ---------------------------------------------------------------------------

    @invariant()
    def limits_hold_and_books_match(self) -> None:
        snap = self.controller.snapshot_now()
        per_source = Counter(self.holders.values())
        assert snap["__global__"].in_use == len(self.holders) <= GLOBAL_LIMIT
        for source, limit in SOURCE_LIMITS.items():
            assert per_source[source] <= snap[source].in_use <= limit
        waiting = len(self.calls) - len(self.holders)
        assert self.controller.waiting_total() == waiting
        at_sources = sum(snap[source].waiting for source in SOURCE_LIMITS)
        assert snap["__global__"].waiting == waiting - at_sources

    @invariant()
    def no_capacity_idles_while_someone_waits(self) -> None:
        snap = self.controller.snapshot_now()
        for name, reading in snap.items():
            if reading.waiting:
                assert reading.in_use == reading.limit, name

    def teardown(self) -> None:
        try:
            for _, task, _ in self.calls.values():
                task.cancel()
            self._settle()
            assert not self.calls
            assert not asyncio.all_tasks(self.loop)
            assert self.controller.in_use_total() == 0
            assert self.controller.waiting_total() == 0
            for reading in self.controller.snapshot_now().values():
                assert (reading.in_use, reading.waiting) == (0, 0)
        finally:
            self.loop.close()


ControllerModel.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
TestControllerModel = ControllerModel.TestCase
