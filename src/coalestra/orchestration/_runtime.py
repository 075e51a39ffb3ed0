"""What a session needs from its builder, without importing the builder (no import cycle)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, final

from ..core import (
    Clock,
    DiagnosticsCollector,
    FetchContext,
    PayloadIsolator,
    ResourceKey,
    SnapshotValue,
)
from ..observability._instrumentation import Instrumentation
from ._inputs import declared_dependencies
from ._sources import SourceKind
from ._view import BuildView

if TYPE_CHECKING:
    from ._builder import SnapshotBuilder
    from ._counters import EngineCounters
    from ._engine import Engine


@final
class ResolutionRuntime:
    """The shared resolution machinery of one builder, as sessions see it."""

    __slots__ = ("_builder", "counters", "engine")

    def __init__(self, builder: SnapshotBuilder, engine: Engine, counters: EngineCounters):
        self._builder = builder
        self.engine = engine
        self.counters = counters

    @property
    def closed(self) -> bool:
        """True once the builder is closed."""
        return self._builder.closed

    @property
    def clock(self) -> Clock:
        """The builder's clock (deadlines and stage durations)."""
        return self.engine.clock

    @property
    def report(self) -> Instrumentation:
        """The builder's metrics and events."""
        return self.engine.report

    @property
    def isolator(self) -> PayloadIsolator:
        """The builder's payload isolator (sessions hand out copies of their pinned values)."""
        return self.engine.isolator

    async def resolve(
        self,
        keys: Sequence[ResourceKey],
        ctx: FetchContext,
        diag: DiagnosticsCollector,
        *,
        force_refresh: bool = False,
        pinned: Mapping[ResourceKey, SnapshotValue[Any]] | None = None,
    ) -> tuple[dict[ResourceKey, SnapshotValue[Any]], dict[ResourceKey, Exception], BuildView]:
        """Resolve ``keys`` under ``ctx`` (cache, single-flight, sources) into private values
        and per-key errors; ``force_refresh`` bypasses the cache for ``keys`` themselves;
        derivations take their dependencies from ``pinned`` first (the session's values), so
        a stage never derives from a revision other than the one the session shows. The
        returned view holds every revision the resolution read, dependencies included."""
        view = BuildView(pinned, session=True)
        values, errors = await self._builder.resolve_keys(
            keys, ctx, diag, force_refresh=force_refresh, view=view
        )
        return values, errors, view

    def is_derived(self, key: ResourceKey) -> bool:
        """True when the highest-priority source supporting ``key`` is a derived source."""
        engine = self.engine
        supported, _broken = engine.chains.chain(key)
        return bool(supported) and engine.sources[min(supported)].kind is SourceKind.DERIVED

    def declared_dependencies(self, key: ResourceKey) -> tuple[ResourceKey, ...]:
        """The dependencies every derived source supporting ``key`` declares for it.

        Sessions use it for keys they have not pinned (intermediate derived values), to find
        which pinned values a revalidated key reaches. A superset is harmless there: re-reading
        a derived value whose dependencies did not change returns the same cached revision.
        ``supports()`` or ``dependencies()`` failures count as "no dependencies".
        """
        return declared_dependencies(self.engine, key)
