"""The last step of resolving a build's keys: no derived value may show a dependency revision
other than the one the build shows (see :class:`._cache_access.BuildView`).

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
from ._cache_access import BuildView
from ._flights import Raised
from ._machinery import Machinery
from ._payloads import consume

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
            mixed = [key for key, value in values.items() if _is_mixed(view, value)]
            if not mixed:
                return
            if view.session:  # their mixed inputs too, in the same private group
                mixed = list(
                    dict.fromkeys(
                        [
                            *mixed,
                            *(dep for key in mixed for dep in _mixed_inputs(view, values[key])),
                        ]
                    )
                )
            await self._rederive(mixed, values, errors)
        for key, value in list(values.items()):
            if _is_mixed(view, value):
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


def _is_mixed(view: BuildView, value: SnapshotValue[Any]) -> bool:
    """True when ``value`` was derived from a revision other than the one ``view`` shows (or
    from an input a session stage found no longer held). A session stage also checks the
    derived values it was computed from, transitively (:func:`_mixed_inputs`): a later stage
    may show them."""
    if not value.dependency_versions:
        return False
    mixed, nested = _check(view, value)
    return mixed or (nested and view.session and bool(_mixed_inputs(view, value)))


def _mixed_inputs(view: BuildView, value: SnapshotValue[Any]) -> list[ResourceKey]:
    """The derived values ``value`` was computed from, transitively, that ``view`` holds at
    the recorded revision but that were themselves computed from another revision than the
    view shows: they must be derived again with it."""
    found: list[ResourceKey] = []
    seen: set[ResourceKey] = set()
    pending = [value]
    while pending:
        for dep, version in pending.pop().dependency_versions.items():
            if dep in seen:
                continue
            seen.add(dep)
            held = view.value_of(dep)
            if held is None or held.version != version or not held.dependency_versions:
                continue
            if _check(view, held)[0]:
                found.append(dep)
            pending.append(held)
    return found


def _check(view: BuildView, value: SnapshotValue[Any]) -> tuple[bool, bool]:
    """``(mixed, nested)``: whether ``value`` names a dependency revision ``view`` does not
    show (or an input found no longer held), and whether an input it shows at the recorded
    revision is itself derived (so far)."""
    nested = False
    for dep, version in value.dependency_versions.items():
        shown = view.value_of(dep)
        if shown is None:
            if dep in view.lost:
                return True, nested
        elif shown.version != version:
            return True, nested
        elif shown.dependency_versions:
            nested = True
    return False, nested
