"""Single-flight through the public builder, under any interleaving hypothesis can find.

Builds (plain or ``build_request``, with or without a deadline) start, join each other's
flights, get cancelled, and outlive or miss their deadlines, while every source call parks on
its own ``asyncio.Event`` until the schedule releases it with a value or a failure, or never
does. TTL 0 makes every build that finds no flight start a new one, so single-flight alone
decides the number of source calls.

What must hold, whatever the schedule:

* one source call per key per flight: never two live calls of one key once the loop has
  settled (a flight being torn down may overlap a new one only until its cancellation lands),
  at most one call per (owning build, key), and no call without a build that owns it;
* every waiter gets the flight's outcome (a value some call of that key returned while the
  waiter was waiting, or the failure of such a call) or its own cancellation or deadline error:
  a build without a deadline never sees a deadline error, a build sees one only once its own
  deadline has passed, and no live build ever gets a "stopped"/"nobody waits" error from a
  flight torn down under it;
* a build that was not cancelled never raises ``CancelledError``; a cancelled one does;
* the single-flight table empties whenever no build is running, and after ``aclose()``
  nothing is left (tasks, capacity, flights).
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from tests.orchestration.conftest import Single, make_builder
from tests.reliability.conftest import leftovers, settle, task_baseline

from coalestra.core import (
    FreshnessPolicy,
    ResourceKey,
    ResourceResolutionError,
    Snapshot,
    SnapshotBuildError,
    SnapshotRequest,
)
from coalestra.resilience import CircuitBreakerPolicy, RetryPolicy, SourceResiliencePolicy
from coalestra.testing import VirtualClock, VirtualTimeRunner

R = TypeVar("R")
KEYS = [ResourceKey("sf", "item", subject) for subject in ("A", "B", "C")]
EVERY_READ_GOES_TO_A_SOURCE = FreshnessPolicy(ttl_seconds=0.0, allow_stale_on_error=False)
NO_RETRY_NO_CIRCUIT = SourceResiliencePolicy(
    retry=RetryPolicy(max_attempts=1), circuit=CircuitBreakerPolicy(enabled=False)
)
MAX_RUNNING = 6
_CALL_IN_MESSAGE = re.compile(r"#(\d+)\b")


@dataclass
class Call:
    """One source call: parked until the schedule releases it."""

    number: int
    key: ResourceKey
    owner: str
    started_at: float
    event: asyncio.Event = field(default_factory=asyncio.Event)
    outcome: str = ""  # "ok" / "fail", chosen when released
    state: str = "live"  # live / ok / failed / cancelled
    ended_at: float | None = None


@dataclass
class Build:
    """One build the schedule started."""

    name: str
    keys: tuple[ResourceKey, ...]
    deadline_at: float | None
    started_at: float
    task: asyncio.Task[Snapshot]
    cancel_requested: bool = False


class SingleFlightMachine(RuleBasedStateMachine):
    """Builds and parked source calls on one virtual-time loop, stepped by hypothesis."""

    def __init__(self) -> None:
        super().__init__()
        self.runner = VirtualTimeRunner()
        self.clock = VirtualClock(self.runner.get_loop())
        self.calls: list[Call] = []
        self.builds: list[Build] = []
        self.running: list[Build] = []
        self.serial = itertools.count(1)
        self.source = Single("gated", 1, self._fetch)
        self.builder = self.run(self._make_builder())
        self.baseline = self.run(self._baseline())

    # -- plumbing ---------------------------------------------------------------------------

    def run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        return self.runner.run(coroutine)

    async def _make_builder(self) -> Any:
        return make_builder(
            [self.source],
            self.clock,
            default_policy=EVERY_READ_GOES_TO_A_SOURCE,
            max_concurrency=2,  # the third key's call waits for capacity
            max_pending_tasks=2,
            default_resilience=NO_RETRY_NO_CIRCUIT,
        )

    async def _baseline(self) -> set[asyncio.Task[Any]]:
        return task_baseline()

    async def _fetch(self, key: ResourceKey, context: Any) -> str:
        call = Call(next(self.serial), key, context.snapshot_id, self.clock.monotonic())
        self.calls.append(call)
        try:
            await call.event.wait()
        except asyncio.CancelledError:
            call.state, call.ended_at = "cancelled", self.clock.monotonic()
            raise
        call.ended_at = self.clock.monotonic()
        if call.outcome == "fail":
            call.state = "failed"
            raise RuntimeError(f"boom {key.subject} #{call.number}")
        call.state = "ok"
        return f"{key.subject}#{call.number}"

    def live(self, key: ResourceKey | None = None) -> list[Call]:
        return [c for c in self.calls if c.state == "live" and (key is None or c.key == key)]

    async def _step(self, seconds: float = 0.0) -> None:
        if seconds:
            await asyncio.sleep(seconds)
        await settle()

    # -- the schedule -----------------------------------------------------------------------

    @precondition(lambda self: len(self.running) < MAX_RUNNING)
    @rule(
        subset=st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique=True),
        deadline=st.sampled_from([None, None, 1.0, 2.5]),
        kind=st.sampled_from(["build", "strict", "request"]),
    )
    def start_build(self, subset: list[ResourceKey], deadline: float | None, kind: str) -> None:
        name = f"b{len(self.builds) + 1}"

        async def start() -> Build:
            now = self.clock.monotonic()
            if kind == "request":
                request = SnapshotRequest(required=subset[:1], optional=subset[1:])
                coro = self.builder.build_request(
                    request, deadline_seconds=deadline, snapshot_id=name
                )
            else:
                coro = self.builder.build(
                    subset, strict=kind == "strict", deadline_seconds=deadline, snapshot_id=name
                )
            task = asyncio.get_running_loop().create_task(coro)
            deadline_at = None if deadline is None else now + deadline
            return Build(name, tuple(subset), deadline_at, now, task)

        build = self.run(start())
        self.builds.append(build)
        self.running.append(build)
        self.run(self._step())

    @precondition(lambda self: bool(self.live()))
    @rule(index=st.integers(min_value=0, max_value=20), outcome=st.sampled_from(["ok", "fail"]))
    def release(self, index: int, outcome: str) -> None:
        live = self.live()
        call = live[index % len(live)]
        call.outcome = outcome
        call.event.set()
        self.run(self._step())

    @precondition(lambda self: bool(self.running))
    @rule(index=st.integers(min_value=0, max_value=20))
    def cancel_build(self, index: int) -> None:
        build = self.running[index % len(self.running)]
        build.cancel_requested = build.task.cancel() or build.cancel_requested
        self.run(self._step())

    @rule(seconds=st.sampled_from([0.5, 1.0, 2.0]))
    def advance(self, seconds: float) -> None:
        self.run(self._step(seconds))

    # -- what must hold ---------------------------------------------------------------------

    @invariant()
    def one_live_call_per_key(self) -> None:
        for key in KEYS:
            live = self.live(key)
            assert len(live) <= 1, f"two flights of {key} call the source at once: {live}"

    @invariant()
    def one_call_per_owner_and_key(self) -> None:
        owners = [(call.owner, call.key) for call in self.calls]
        assert len(owners) == len(set(owners)), f"a build called a key twice: {owners}"
        names = {build.name for build in self.builds}
        assert {owner for owner, _key in owners} <= names

    @invariant()
    def finished_builds_got_their_flights_outcome(self) -> None:
        for build in [b for b in self.running if b.task.done()]:
            self.running.remove(build)
            self.check_outcome(build)

    @invariant()
    def the_table_empties_when_nobody_builds(self) -> None:
        if self.running:
            return
        health = self.run(self.builder.health_snapshot())
        assert health.singleflight_in_flight == 0
        assert self.live() == [], "a source call outlived every build that wanted it"

    def check_outcome(self, build: Build) -> None:
        task = build.task
        if task.cancelled():
            assert build.cancel_requested, f"{build.name} was cancelled by nobody"
            return
        error = task.exception()
        if error is None:
            snapshot = task.result()
        else:
            assert isinstance(error, SnapshotBuildError), f"{build.name} raised {error!r}"
            assert error.snapshot is not None
            snapshot = error.snapshot
        assert not build.cancel_requested, f"{build.name} swallowed its cancellation"
        finished = self.clock.monotonic()
        assert set(snapshot.resources) | set(snapshot.errors) == set(build.keys)
        for key in build.keys:
            if key in snapshot.resources:
                self.check_value(build, key, snapshot.resources[key].value)
            else:
                self.check_error(build, key, snapshot.errors[key], finished)

    def check_value(self, build: Build, key: ResourceKey, value: object) -> None:
        subject, _, number = str(value).partition("#")
        assert subject == key.subject, f"{build.name} got {value!r} for {key}"
        call = self.calls[int(number) - 1]
        assert call.key == key
        assert call.state == "ok"
        assert call.ended_at is not None
        # A value is written (and its flight resolved) with its whole priority level
        # (B-CACHE-17): a call that ended before the build started is still in flight while
        # another call of the same owner's level runs.
        level_open = any(
            other.owner == call.owner
            and (other.ended_at is None or other.ended_at >= build.started_at)
            for other in self.calls
        )
        assert call.ended_at >= build.started_at or level_open, (
            f"{build.name} got an earlier flight's value"
        )

    def check_error(self, build: Build, key: ResourceKey, error: Exception, now: float) -> None:
        # B-TIME-1: every key error is a ResourceResolutionError; a deadline shows as its
        # failure's type.
        assert isinstance(error, ResourceResolutionError), f"{build.name}/{key}: {error!r}"
        if error.failures and error.failures[-1].error_type == "SnapshotDeadlineExceededError":
            assert build.deadline_at is not None, f"{build.name} has no deadline: {error}"
            assert now >= build.deadline_at, f"{build.name} timed out early: {error}"
            return
        messages = [failure.message for failure in error.failures]
        numbers = [int(m) for text in messages for m in _CALL_IN_MESSAGE.findall(text)]
        assert numbers, f"{build.name}/{key} failed without a failed call: {messages}"
        call = self.calls[numbers[0] - 1]
        assert call.key == key
        assert call.state == "failed"
        assert call.ended_at is not None
        assert call.ended_at >= build.started_at, f"{build.name} got an earlier flight's failure"

    # -- the end ----------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            self.run(self._drain())
        finally:
            self.runner.close()

    async def _drain(self) -> None:
        for _ in range(20):  # calls waiting for capacity start only once others end
            for call in self.live():
                call.outcome = "ok"
                call.event.set()
            await settle()
        await asyncio.sleep(60.0)  # every deadline has passed
        await settle()
        for build in list(self.running):
            assert build.task.done(), f"{build.name} never finished"
            self.running.remove(build)
            self.check_outcome(build)
        health = await self.builder.health_snapshot()
        assert health.singleflight_in_flight == 0
        await self.builder.aclose()
        assert await leftovers(self.builder, self.baseline) == []


TestSingleFlightMachine = SingleFlightMachine.TestCase
TestSingleFlightMachine.settings = settings(max_examples=120, stateful_step_count=30, deadline=None)
