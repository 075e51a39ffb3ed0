"""The engine as the modules around it see it: :class:`Machinery`.

Steps 2-3 of a build (:mod:`._assembly`), derivations (:mod:`._derive`), reconciliations
(:mod:`._reconcile`) and background work (:mod:`._background`) use the engine's shared parts, and
start the resolution of the keys they own through it (:meth:`Machinery.start`). They name the
engine by this protocol, so none of them imports the engine module, which imports some of them:
no import circle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeAlias, TypeVar

from ..core import (
    Clock,
    DiagnosticsCollector,
    FetchContext,
    FreshnessPolicy,
    PayloadIsolator,
    ResourceKey,
    SnapshotValue,
)
from ..observability._instrumentation import Instrumentation
from ._batching import BatchCollector
from ._cache_access import BuildView, CacheAccess
from ._counters import EngineCounters
from ._flights import Flight, FlightGroup, FlightWindow, SingleFlight
from ._gate import SourceGate
from ._ledger import KeyLedger
from ._notfound import NotFoundMemory
from ._payloads import SourceCopies, ValueFactory
from ._sources import RegisteredSource, SourceChains

T = TypeVar("T")

Refresh: TypeAlias = tuple[DiagnosticsCollector, Mapping[ResourceKey, str]]
"""A background refresh: the diagnostics of the build that scheduled it, and why each key is
refreshed (``"stale_while_revalidate"`` or ``"refresh_ahead"``)."""


class Machinery(Protocol):
    """The engine as steps 2-3, a derivation, a reconciliation or background work sees it."""

    active_workers: int  # the pool's workers busy now (the builder's health reads it)
    closed: bool  # set by shutdown: no background refresh starts after it
    tasks: set[asyncio.Task[None]]  # the groups resolving flights (not refreshes)
    refresh_tasks: set[asyncio.Task[None]]  # the background refreshes

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

    @property
    def constant_policy(self) -> FreshnessPolicy | None:
        """Every key's policy, when no rule can pick another (else ``None``)."""
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

    def start(
        self,
        flights: dict[ResourceKey, Flight],
        ctx: FetchContext,
        diag: DiagnosticsCollector,
        view: BuildView,
        *,
        refresh_for: Refresh | None = None,
        force: bool = False,
        candidates: Mapping[ResourceKey, SnapshotValue[Any]] | None = None,
        private: bool = False,
    ) -> None:
        """Start the one task that resolves the owned ``flights``; ``refresh_for``: a
        background refresh; ``force``: no cached fallback (a forced revalidation);
        ``candidates``: usable cached values, served if every source fails; ``private``: nobody
        else can join them (a build re-deriving a mixed-revision value)."""

    @property
    def copies(self) -> SourceCopies:
        """Copies off the loop, through the builder's copy runner."""
        ...

    @property
    def isolator(self) -> PayloadIsolator:
        """Makes the private copies of payloads."""
        ...


class GroupResolution(Protocol):
    """One group's resolution (:class:`._engine.GroupRun`) as its derived levels, its last
    resort and its cross-process leases see it."""

    engine: Machinery
    view: BuildView  # the owning build's reading: derivations take dependencies from it
    diag: DiagnosticsCollector
    window: FlightWindow
    flights: dict[ResourceKey, Flight]
    group: FlightGroup
    refresh_for: Refresh | None  # a background refresh: the scheduling build's diagnostics
    force: bool  # a forced revalidation: no cached fallback
    candidates: Mapping[ResourceKey, SnapshotValue[Any]]  # served if every source fails
    served_instead: dict[ResourceKey, Exception]  # keys served stale, with their error

    @property
    def ledger(self) -> KeyLedger:
        """Why the group's keys failed, source by source (made when first needed)."""
        ...

    @property
    def ctx(self) -> FetchContext:
        """The group's context (its deadline moves when a caller with more time joins)."""
        ...

    async def commit(self, values: Sequence[SnapshotValue[Any]], *, write: bool = True) -> None:
        """Write ``values`` in one call and resolve their flights."""

    async def walk(self, keys: list[ResourceKey], start: int) -> None:
        """Try ``keys`` at sources ``start..`` of their chains."""

    async def pool(self, items: Sequence[T], work: Callable[[T], Awaitable[None]]) -> None:
        """Run ``work`` over ``items`` with at most ``max_pending_tasks`` workers."""
