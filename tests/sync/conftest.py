"""Helpers for the synchronous facade tests.

These tests run in real time: the facade owns a real event loop in its own thread. Every wait
is tiny (sources answer at once; held work polls a ``threading.Event`` every millisecond), and
no test asserts on wall time. Test modules import helpers as ``from tests.sync.conftest import``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from tests.doubles import ForwardingBatchAtomicCache

from coalestra.core import (
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
)
from coalestra.orchestration import SnapshotBuilder
from coalestra.sync import SyncSnapshotBuilder

LONG = FreshnessPolicy(ttl_seconds=3600.0, max_stale_seconds=3600.0)
PRICE = ResourceKey("market", "price", "BTCUSDT")
POSITION = ResourceKey("account", "position", "BTCUSDT")
OPEN_ORDERS = ResourceKey("account", "orders", "BTCUSDT")
ACCOUNT = ResourceKey("account", "balance", "main")


def key(subject: str) -> ResourceKey:
    return ResourceKey("test", "value", subject)


class Source:
    """An async single-key source answering ``values[key]`` (or ``"value-<subject>"``) at once.

    ``hold`` (when set) makes fetches wait until it is released; ``on_fetch`` (when set)
    answers instead of ``values``. Every fetch records its key and its thread's name.
    """

    def __init__(self, values: Mapping[ResourceKey, Any] | None = None) -> None:
        self.name = "rest"
        self.priority = 10
        self.values = dict(values or {})
        self.calls: list[ResourceKey] = []
        self.threads: list[str] = []
        self.hold: Hold | None = None
        self.on_fetch: Callable[[ResourceKey], Any] | None = None
        self.lock = threading.Lock()

    def supports(self, key: ResourceKey) -> bool:
        return True

    async def fetch(self, key: ResourceKey, context: FetchContext) -> Any:
        with self.lock:
            self.calls.append(key)
            self.threads.append(threading.current_thread().name)
        if self.hold is not None:
            await self.hold.wait()
        if self.on_fetch is not None:
            return self.on_fetch(key)
        return self.values.get(key, f"value-{key.subject}")


class Hold:
    """A gate the loop waits on and test threads open; records cancelled waiters."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.entered = threading.Semaphore(0)
        self.cancelled = threading.Event()

    async def wait(self) -> None:
        self.entered.release()
        try:
            # Polled: the event is set from another thread (an asyncio.Event cannot be).
            while not self.released.is_set():  # noqa: ASYNC110
                await asyncio.sleep(0.001)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise

    def wait_entered(self, count: int = 1) -> None:
        for _ in range(count):
            assert self.entered.acquire(timeout=10), "the held work never started"

    def release(self) -> None:
        self.released.set()


class GatedCache(ForwardingBatchAtomicCache):
    """An AsyncMemoryCache whose writes and invalidations wait at ``hold`` while it is set."""

    validates_source_authority = True

    def __init__(self) -> None:
        super().__init__()
        self.hold: Hold | None = None

    async def before(self, call: str, count: int) -> None:
        if call not in ("get", "get_many", "clear"):
            await self._gate()

    async def _gate(self) -> None:
        if self.hold is not None:
            await self.hold.wait()


@contextlib.contextmanager
def frozen_loop(facade: SyncSnapshotBuilder, source: Source) -> Iterator[None]:
    """Block the facade's loop thread itself (a build whose source waits synchronously), so
    nothing submitted meanwhile can start before the block ends."""
    entered, release = threading.Event(), threading.Event()

    def block(key: ResourceKey) -> str:
        entered.set()
        release.wait(10)
        return "unfrozen"

    source.on_fetch = block
    builder = threading.Thread(target=facade.build, args=([ResourceKey("freeze", "loop")],))
    builder.start()
    assert entered.wait(10), "the loop was never frozen"
    source.on_fetch = None
    try:
        yield
    finally:
        release.set()
        builder.join(10)


def facade_threads() -> list[threading.Thread]:
    """The facades' loop threads alive now."""
    return [t for t in threading.enumerate() if t.name.startswith("coalestra-sync-")]


@pytest.fixture
def source() -> Source:
    return Source()


@pytest.fixture
def cache() -> GatedCache:
    return GatedCache()


@pytest.fixture
def builder(source: Source, cache: GatedCache) -> SnapshotBuilder:
    return SnapshotBuilder([source], default_policy=LONG, cache=cache)


@pytest.fixture
def facade(builder: SnapshotBuilder, cache: GatedCache) -> Iterator[SyncSnapshotBuilder]:
    sync_builder = SyncSnapshotBuilder(builder, shutdown_timeout_seconds=1.0)
    yield sync_builder
    if cache.hold is not None:
        cache.hold.release()  # never leave a test's held work blocking the shutdown
    sync_builder.close()
