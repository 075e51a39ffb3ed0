"""What one session carries across its operations, and the two steps every operation takes:
acquire keys through the builder's engine, and show the whole session as a snapshot."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, final

from ..core import DiagnosticsCollector, FetchContext, ResourceKey, Snapshot, SnapshotValue
from ..core._closed import BUILDER_CLOSED, ClosedError, session_closed
from ._cache_access import BuildView
from ._flights import Flight
from ._inputs import declared_dependencies
from ._pinning import PinnedMemo, ordered_union
from ._revalidation import Errors, Values
from ._wiring import Engine


@final
class SessionState:
    """One session's context, engine, pinned memo, diagnostics and requested keys.

    Only the session that owns it touches it, one operation at a time (under ``lock``).
    """

    __slots__ = ("closed", "context", "diag", "engine", "lock", "memo", "requested")

    def __init__(self, engine: Engine, context: FetchContext) -> None:
        self.context = context
        self.engine = engine
        self.memo = PinnedMemo()
        self.diag = DiagnosticsCollector()  # accumulates across the session's operations
        self.requested: dict[ResourceKey, None] = {}  # distinct keys requested so far
        self.closed = False  # closed by the session itself (the builder's state is the engine's)
        self.lock = asyncio.Lock()  # binds to a loop only when an operation has to wait

    @property
    def snapshot_id(self) -> str:
        """The id of every snapshot the session returns."""
        return self.context.snapshot_id

    def check_open(self) -> None:
        """Raise when the session or its builder is closed."""
        if self.closed:
            raise session_closed()
        if self.engine.closed:
            raise ClosedError(BUILDER_CLOSED)

    def declared_dependencies(self, key: ResourceKey) -> tuple[ResourceKey, ...]:
        """The dependencies the derived sources supporting ``key`` declare for it."""
        return declared_dependencies(self.engine, key)

    async def acquire(
        self,
        keys: Sequence[ResourceKey],
        *,
        force_refresh: bool,
        pinned: Values | None = None,
    ) -> tuple[Values, Errors, Values]:
        """Resolve ``keys`` under the session's context (and so its deadline): the values,
        the errors, and every revision read on the way (dependencies included)."""
        engine = self.engine
        if engine.closed:
            raise ClosedError(BUILDER_CLOSED)
        # Derivations take their dependencies from ``pinned`` first (the session's values), so
        # a stage never derives from a revision other than the one the session shows.
        view = BuildView(pinned, session=True)
        values, errors = await engine.resolve(
            keys, self.context, self.diag, view, force_refresh=force_refresh
        )
        return values, errors, _readings(view)

    def accumulated(
        self, started: float | None, transient: Mapping[ResourceKey, Exception] | None = None
    ) -> Snapshot:
        """The whole session as a snapshot of isolated copies: pinned values and stored
        errors (plus ``transient`` errors of a failed revalidation, which are not stored)."""
        memo, engine = self.memo, self.engine
        errors = memo.errors if not transient else {**memo.errors, **transient}
        keys = ordered_union(list(memo.values), list(errors))
        resources = memo.copies(keys, engine.isolator, self.snapshot_id)
        observed = [value.observed_at for value in resources.values()]
        diag = self.diag
        diag.requested_resources = len(self.requested)
        diag.resolved_resources = len(resources)
        diag.failed_resources = len(errors)
        duration = 0.0 if started is None else (engine.clock.monotonic() - started) * 1000.0
        return Snapshot(
            snapshot_id=self.snapshot_id,
            created_at=self.context.requested_at,
            resources=resources,
            errors={key: errors[key] for key in keys if key in errors},
            diagnostics=diag.freeze(
                duration_ms=duration,
                observation_skew_ms=(max(observed) - min(observed)) * 1000.0 if observed else 0.0,
            ),
        )


def _readings(view: BuildView) -> dict[ResourceKey, SnapshotValue[Any]]:
    """Every value the build has read or resolved so far, its finished flights' included
    (a session keeps the revisions its derived values were computed from), the inputs
    kept for its served derived values included."""
    found = {**view.inputs, **view.first_read}
    for key, entry in view.entries.items():
        if type(entry) is Flight:
            future = entry.future
            if not future.done() or future.cancelled() or future.exception() is not None:
                continue
            outcome = future.result()
            if isinstance(outcome, SnapshotValue):
                found[key] = outcome
        else:
            assert isinstance(entry, SnapshotValue)
            found[key] = entry
    return found
