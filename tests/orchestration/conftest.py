"""Shared helpers for the engine tests: tiny hand-written sources that count what happens.

The sources implement the source protocols directly (``name``, ``priority``, ``supports``,
``fetch`` / ``fetch_many`` / ``dependencies`` + ``derive``) so the engine is tested on its own,
independently of ``coalestra.adapters``. Every source records its calls and the most calls it had
running at once; a shared :class:`Gauge` tracks concurrency across sources.

Test modules import them as ``from tests.orchestration.conftest import ...``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

import pytest
from tests.orchestration import session_support

from coalestra.core import FetchContext, ResourceKey, Snapshot, SourcePayload
from coalestra.orchestration import SnapshotBuilder
from coalestra.resilience import RetryPolicy, SourceResiliencePolicy
from coalestra.testing import VirtualClock

NO_RETRY = RetryPolicy(max_attempts=1)


def key(subject: str, name: str = "price", namespace: str = "market") -> ResourceKey:
    """A market price key by default: ``market:price:<subject>``."""
    return ResourceKey(namespace, name, subject)


def keys(*subjects: str, name: str = "price") -> list[ResourceKey]:
    return [key(subject, name) for subject in subjects]


class Gauge:
    """Counts calls running at once (across every source sharing it)."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0

    def enter(self) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)

    def leave(self) -> None:
        self.active -= 1


Handler = Callable[..., Any]


async def _outcome(handler: Handler, *args: Any) -> Any:
    result = handler(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class _Base:
    """What every test source shares: identity, optional attributes, call bookkeeping."""

    def __init__(
        self,
        name: str,
        priority: int,
        *,
        supports: Callable[[ResourceKey], Any] | None = None,
        delay: float = 0.0,
        gauge: Gauge | None = None,
        timeout_seconds: float | None = None,
        queue_timeout_seconds: float | None = None,
        max_concurrency: int | None = None,
        resilience_policy: SourceResiliencePolicy | None = None,
        cache_supports: bool = True,
    ) -> None:
        self.name = name
        self.priority = priority
        self._supports = supports if supports is not None else (lambda _key: True)
        self.delay = delay
        self.gauge = gauge
        self.timeout_seconds = timeout_seconds
        self.queue_timeout_seconds = queue_timeout_seconds
        self.max_concurrency = max_concurrency
        self.resilience_policy = resilience_policy
        self.cache_supports = cache_supports
        self.supports_calls = 0
        self.active = 0
        self.peak = 0
        self.started = 0
        self.finished = 0
        self.cancelled = 0
        self.contexts: list[FetchContext] = []

    def supports(self, key: ResourceKey) -> Any:
        self.supports_calls += 1
        return self._supports(key)

    async def _run(self, handler: Handler, *args: Any) -> Any:
        self.started += 1
        self.active += 1
        self.peak = max(self.peak, self.active)
        if self.gauge is not None:
            self.gauge.enter()
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            result = await _outcome(handler, *args)
            self.finished += 1
            return result
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.active -= 1
            if self.gauge is not None:
                self.gauge.leave()


def _default_value(source: str) -> Callable[[ResourceKey, FetchContext], Any]:
    return lambda key, _ctx: {"source": source, "subject": key.subject}


class Single(_Base):
    """A single-key source. ``handler(key, context)`` gives the payload (may be async, may
    raise); by default ``{"source": name, "subject": key.subject}``."""

    def __init__(
        self,
        name: str,
        priority: int = 0,
        handler: Handler | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name, priority, **options)
        self.handler = handler if handler is not None else _default_value(name)
        self.calls: list[ResourceKey] = []

    async def fetch(self, key: ResourceKey, context: FetchContext) -> Any:
        self.calls.append(key)
        self.contexts.append(context)
        return await self._run(self.handler, key, context)


class Batch(_Base):
    """A batch source. ``handler(keys, context)`` gives the mapping; by default every key maps
    to ``{"source": name, "subject": key.subject}``."""

    def __init__(
        self,
        name: str,
        priority: int = 0,
        handler: Handler | None = None,
        *,
        max_batch_size: int | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name, priority, **options)
        self.max_batch_size = max_batch_size
        value = _default_value(name)
        self.handler = (
            handler if handler is not None else (lambda ks, ctx: {k: value(k, ctx) for k in ks})
        )
        self.calls: list[tuple[ResourceKey, ...]] = []

    async def fetch_many(
        self, keys: Collection[ResourceKey], context: FetchContext
    ) -> Mapping[ResourceKey, Any]:
        self.calls.append(tuple(keys))
        self.contexts.append(context)
        result: Mapping[ResourceKey, Any] = await self._run(self.handler, tuple(keys), context)
        return result


class Derived(_Base):
    """A derived source. ``deps(key)`` lists dependencies; ``handler(key, snapshot, context)``
    gives the payload (default: the sorted dependency values as a list)."""

    def __init__(
        self,
        name: str,
        priority: int = 0,
        deps: Callable[[ResourceKey], Collection[ResourceKey]] | None = None,
        handler: Handler | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name, priority, **options)
        self.deps = deps if deps is not None else (lambda _key: ())
        self.handler = (
            handler
            if handler is not None
            else (lambda _key, snap, _ctx: [snap[dep].value for dep in snap])
        )
        self.calls: list[ResourceKey] = []
        self.snapshots: list[Snapshot] = []
        self.dependency_calls = 0

    def dependencies(self, key: ResourceKey) -> Collection[ResourceKey]:
        self.dependency_calls += 1
        return self.deps(key)

    async def derive(self, key: ResourceKey, dependencies: Snapshot, context: FetchContext) -> Any:
        self.calls.append(key)
        self.snapshots.append(dependencies)
        self.contexts.append(context)
        return await self._run(self.handler, key, dependencies, context)


class Gate:
    """An event a source can park on, remembering how many callers reached it."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.reached = 0
        self.arrived = asyncio.Event()

    async def wait(self) -> None:
        self.reached += 1
        self.arrived.set()
        await self.event.wait()

    def open(self) -> None:
        self.event.set()


def payload(value: Any, observed_at: float | None = None, **metadata: Any) -> SourcePayload[Any]:
    return SourcePayload(value, observed_at=observed_at, metadata=metadata)


async def settle(rounds: int = 20) -> None:
    """Let every ready callback run without advancing virtual time."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def assert_quiet(builder: SnapshotBuilder) -> None:
    """Nothing left in use, waiting or in flight."""
    for name, snap in (await builder.capacity_snapshot()).items():
        assert (name, snap.in_use, snap.waiting) == (name, 0, 0)
    health = await builder.health_snapshot()
    assert health.singleflight_in_flight == 0
    assert health.active_dispatch_workers == 0
    assert health.waiting_for_capacity == 0


def make_builder(sources: list[Any], clock: VirtualClock, **options: Any) -> SnapshotBuilder:
    """A builder on virtual time without retries (unless ``retry_policy`` is given)."""
    if not any(
        name in options for name in ("retry_policy", "default_resilience", "resilience_resolver")
    ):
        options["retry_policy"] = NO_RETRY
    return SnapshotBuilder(sources, clock=clock, **options)


def timed_out(error: object) -> bool:
    """True for a key's error that says the deadline ended it: a ResourceResolutionError whose
    last failure is a SnapshotDeadlineExceededError (B-TIME-1: never a bare deadline error)."""
    from coalestra.core import ResourceResolutionError

    return (
        isinstance(error, ResourceResolutionError)
        and bool(error.failures)
        and error.failures[-1].error_type == "SnapshotDeadlineExceededError"
    )


# -- the session tests' shared set-up (test_session_derived.py, test_session_revalidate.py) -----


@pytest.fixture
def source() -> session_support.Source:
    """Account, position, open orders and price, as the risk rules need them."""
    return session_support.Source(
        {
            session_support.ACCOUNT: 100,
            session_support.POSITION: {"qty": 1},
            session_support.OPEN_ORDERS: [],
            session_support.PRICE: 10,
        }
    )


@pytest.fixture
def derived() -> session_support.Derived:
    return session_support.risk_rules()


@pytest.fixture
async def builder(
    clock: VirtualClock, source: session_support.Source, derived: session_support.Derived
) -> AsyncIterator[SnapshotBuilder]:
    built = session_support.make_builder(clock, source, derived)
    yield built
    await built.aclose()
