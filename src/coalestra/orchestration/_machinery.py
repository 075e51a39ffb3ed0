"""What the resolution of a group reads from the engine that runs it: :class:`Machinery`.

The engine (:mod:`._engine`) starts group runs (:mod:`._group`), derivations (:mod:`._derive`)
and reconciliations (:mod:`._reconcile`); they use its shared parts and its steps 2-3 (a
derivation resolves its dependencies through them). They name the engine by this protocol, so
none of them imports the engine module, which imports them: no import circle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias, TypeVar

from .._compat import TaskGroup
from ..core import (
    CacheWriteResult,
    Clock,
    DiagnosticsCollector,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    SnapshotValue,
)
from ..observability._instrumentation import Instrumentation
from ._batching import BatchCollector
from ._cache_access import CacheAccess
from ._copies import SourceCopies
from ._counters import EngineCounters
from ._flights import Flight, Outcome, SingleFlight
from ._gate import SourceGate
from ._notfound import NotFoundMemory
from ._payloads import ValueFactory
from ._sources import RegisteredSource, SourceChains
from ._view import BuildView

Refresh: TypeAlias = tuple[DiagnosticsCollector, Mapping[ResourceKey, str]]
"""A background refresh: the diagnostics of the build that scheduled it, and why each key is
refreshed (``"stale_while_revalidate"`` or ``"refresh_ahead"``)."""


T = TypeVar("T")


class Machinery(Protocol):
    """The engine as a group run, a derivation or a reconciliation sees it."""

    active_workers: int  # the pool's workers busy now (the builder's health reads it)

    @property
    def sources(self) -> tuple[RegisteredSource, ...]:
        """The registered sources, highest priority first."""
        ...

    @property
    def source_order(self) -> Mapping[str, int]:
        """Each source's index in :attr:`sources`, by name."""
        ...

    @property
    def chains(self) -> SourceChains:
        """Which sources support a key."""
        ...

    @property
    def cache(self) -> CacheAccess:
        """The cache, as the engine calls it."""
        ...

    @property
    def gate(self) -> SourceGate:
        """Where every source call passes."""
        ...

    @property
    def batches(self) -> BatchCollector:
        """Batch calls shared across concurrent builds (the batch window)."""
        ...

    @property
    def factory(self) -> ValueFactory:
        """Makes snapshot values of payloads."""
        ...

    @property
    def flights(self) -> SingleFlight:
        """The single-flight table."""
        ...

    @property
    def not_found(self) -> NotFoundMemory:
        """Keys remembered as not found."""
        ...

    @property
    def clock(self) -> Clock:
        """The builder's clock."""
        ...

    @property
    def report(self) -> Instrumentation:
        """Metrics and events."""
        ...

    @property
    def counters(self) -> EngineCounters:
        """The builder's health counters."""
        ...

    @property
    def max_pending_tasks(self) -> int:
        """Workers per dispatch."""
        ...

    def policy_for(self, key: ResourceKey, /) -> FreshnessPolicy:
        """``key``'s freshness policy."""
        ...

    async def lookup_and_claim(
        self,
        keys: Sequence[ResourceKey],
        ctx: FetchContext,
        diag: DiagnosticsCollector,
        view: BuildView,
        *,
        force_refresh: bool = False,
    ) -> tuple[dict[ResourceKey, SnapshotValue[Any]], dict[ResourceKey, Flight]]:
        """Steps 2-3 for ``keys``: serve what ``view`` or the cache holds, claim the rest."""
        ...

    async def wait(
        self, claims: Mapping[ResourceKey, Flight], ctx: FetchContext
    ) -> dict[ResourceKey, Outcome]:
        """Wait for the claimed flights until ``ctx``'s deadline."""
        ...

    def spawn_private(
        self,
        flights: dict[ResourceKey, Flight],
        ctx: FetchContext,
        diag: DiagnosticsCollector,
        view: BuildView,
    ) -> None:
        """Resolve flights nobody else can join."""

    def count_refreshes(
        self,
        flights: Iterable[Flight],
        refresh: Refresh,
        *,
        cancelled: bool,
        failed: Mapping[ResourceKey, Exception],
    ) -> None:
        """Count how a refresh group's keys ended."""

    def served(
        self, ours: SnapshotValue[Any], written: CacheWriteResult | None, source: str
    ) -> SnapshotValue[Any]:
        """What a build serves after writing ``ours``."""
        ...

    def consume(
        self, outcome: SnapshotValue[Any], ctx: FetchContext, *, coalesced: bool = False
    ) -> SnapshotValue[Any]:
        """A private copy of a flight's value for one reader."""
        ...

    def reader_copy(
        self, outcome: SnapshotValue[Any], ctx: FetchContext, coalesced: bool
    ) -> Callable[[], SnapshotValue[Any]]:
        """:meth:`consume` whose clock reads are done: the copy alone, to run anywhere."""
        ...

    @property
    def copies(self) -> SourceCopies:
        """Copies off the loop, through the builder's copy runner."""
        ...


async def run_pool(
    engine: Machinery, items: Sequence[T], work: Callable[[T], Awaitable[None]]
) -> None:
    """Run ``work`` over ``items`` in order with at most ``max_pending_tasks`` workers; the
    first worker is the calling task itself, so one item costs no task at all."""
    pending = iter(items)

    async def worker() -> None:
        engine.active_workers += 1
        try:
            for item in pending:
                await work(item)
        finally:
            engine.active_workers -= 1

    extra = min(engine.max_pending_tasks, len(items)) - 1
    if extra <= 0:
        await worker()
        return
    async with TaskGroup() as group:
        for _ in range(extra):
            group.create_task(worker())
        await worker()
