"""The last step of resolving a build's keys: no derived value may show a dependency revision
other than the one the build shows (see :mod:`._view`).

A derived value the build did not derive itself (it joined another build's flight, read it
from the cache, or got a stale fallback) may have been computed from another revision of a
dependency. Such a value is derived again, privately, from the build's own reading of its
dependencies (nobody else can join that derivation). If it still disagrees after a few rounds
(its source fell back to a mismatched revision again), the key fails instead of mixing
revisions.
"""

from __future__ import annotations

from typing import Any, final

from ..core import (
    DependencyResolutionError,
    DiagnosticsCollector,
    FetchContext,
    ResourceKey,
    ResourceResolutionError,
    SnapshotValue,
    SourceFailure,
    SourceUnavailableError,
)
from ._flights import Raised
from ._machinery import Machinery
from ._payloads import consume
from ._view import BuildView

_ROUNDS = 3


@final
class Reconciler:
    """Re-derives the mixed-revision values of one build."""

    __slots__ = ("_ctx", "_diag", "_engine", "_view")

    def __init__(
        self, engine: Machinery, ctx: FetchContext, diag: DiagnosticsCollector, view: BuildView
    ) -> None:
        self._engine = engine
        self._ctx = ctx
        self._diag = diag
        self._view = view

    async def reconcile(
        self,
        values: dict[ResourceKey, SnapshotValue[Any]],
        errors: dict[ResourceKey, Exception],
    ) -> None:
        """Replace (in place) every value of ``values`` derived from a revision the build does
        not show; a key that cannot be made consistent moves to ``errors``."""
        view = self._view
        for _ in range(_ROUNDS):
            mixed = [key for key, value in values.items() if view.mixed(value)]
            if not mixed:
                return
            if view.session:  # their mixed inputs too, in the same private group
                mixed = list(
                    dict.fromkeys(
                        [*mixed, *(dep for key in mixed for dep in view.mixed_inputs(values[key]))]
                    )
                )
            await self._rederive(mixed, values, errors)
        for key, value in list(values.items()):
            if view.mixed(value):
                del values[key]
                errors[key] = _mixed_error(value)

    async def _rederive(
        self,
        keys: list[ResourceKey],
        values: dict[ResourceKey, SnapshotValue[Any]],
        errors: dict[ResourceKey, Exception],
    ) -> None:
        engine, ctx, view = self._engine, self._ctx, self._view
        started = engine.flights.start(keys, register=False)
        view.entries.update(started)
        view.joined.difference_update(keys)
        engine.start(started, ctx, self._diag, view, private=True)
        outcomes = await engine.flights.wait(started, ctx, engine.clock, engine.counters)
        for key, outcome in outcomes.items():
            if isinstance(outcome, Exception):
                if type(outcome) is Raised:
                    raise outcome.error
                if key in values:  # else a mixed input: the values derived from it tell
                    del values[key]
                    errors[key] = outcome
            elif key in values:
                values[key] = consume(engine, outcome, ctx)


def _mixed_error(value: SnapshotValue[Any]) -> ResourceResolutionError:
    changed = {
        dep: SourceUnavailableError(f"{dep} changed while {value.key} was derived from it")
        for dep in value.dependency_versions
    }
    failure = DependencyResolutionError(value.key, value.source, changed)
    failures = (SourceFailure.from_exception(value.source, failure, 0),)
    return ResourceResolutionError(value.key, failures)
