"""What a session revalidation reads: the selected keys, then the pinned values derived from
them, in rounds until no derived value was computed from a revision other than the one it
would be committed beside. Committing (all or nothing) is the session's business."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, final

from ..core import ResourceKey, SnapshotValue
from ._inputs import declared_dependencies, is_derived
from ._machinery import Machinery
from ._pinning import (
    dependents,
    inputs_of,
    mixed_revision_errors,
    ordered_union,
    stale_dependencies,
)

Values = dict[ResourceKey, SnapshotValue[Any]]
Errors = dict[ResourceKey, Exception]
Acquire = Callable[[Sequence[ResourceKey], bool], Awaitable[tuple[Values, Errors]]]
"""``acquire(keys, force_refresh)``: resolve keys through the builder's engine."""

# Rounds a revalidation may take to catch a dependency that changed while a derived value was
# being recomputed from it; past that the derived value fails rather than mix two revisions.
_MAX_ROUNDS = 3


@final
@dataclass(frozen=True, slots=True)
class Refreshed:
    """The new revisions a revalidation read: ``order`` is every target (selected keys first,
    then their dependents), ``values`` what resolved, ``errors`` what did not."""

    order: list[ResourceKey]
    values: Values
    errors: Errors


async def refresh(
    selected: Sequence[ResourceKey],
    pinned: Mapping[ResourceKey, SnapshotValue[Any]],
    engine: Machinery,
    acquire: Acquire,
    *,
    force_refresh: bool,
    readings: Mapping[ResourceKey, SnapshotValue[Any]] | None = None,
) -> Refreshed:
    """Read the selected keys, then every pinned value derived from them.

    Dependencies are read first, then what derives from them: the cache drops a derived entry
    whose dependency revision changed, so it is re-derived from the revisions just written.
    With ``force_refresh`` both reads bypass the cache (every affected key is fetched or
    derived again); later rounds re-read, never force, what changed under a derived value.
    ``readings``: every revision the reads so far saw (updated by ``acquire``), through which
    a derived value is followed to the inputs of the derived values it was computed from.
    """
    via = {} if readings is None else readings

    def declared(key: ResourceKey) -> tuple[ResourceKey, ...]:
        return declared_dependencies(engine, key)

    order: list[ResourceKey] = list(selected)
    targets = set(selected)
    values: Values = {}
    wanted: Sequence[ResourceKey] = selected
    first, derived = _split(selected, pinned, engine, force_refresh)
    for _ in range(_MAX_ROUNDS):
        following = dependents(wanted, {**pinned, **values}, declared)
        targets.update(following)
        for batch in (first, [*derived, *following]):
            if not batch:
                continue
            order = ordered_union(order, batch)
            got, errors = await acquire(batch, force_refresh)
            values.update(got)
            if errors:
                return Refreshed(order, values, errors)
        wanted = stale_dependencies(values.values(), {**pinned, **values}, {**via, **values})
        if not wanted:
            return Refreshed(order, _needed(values, targets, via), {})
        first, derived, force_refresh = list(wanted), [], False
    return Refreshed(order, values, mixed_revision_errors(values, {**pinned, **values}))


def _needed(
    values: Values, targets: set[ResourceKey], via: Mapping[ResourceKey, SnapshotValue[Any]]
) -> Values:
    """The targets' new values, plus each dependency re-read because a new derived value was
    computed from it, transitively (not one a later round's derivation no longer uses)."""
    inputs = inputs_of(values.values(), {**via, **values})
    return {key: value for key, value in values.items() if key in targets or key in inputs}


def _split(
    selected: Sequence[ResourceKey],
    pinned: Mapping[ResourceKey, SnapshotValue[Any]],
    engine: Machinery,
    force_refresh: bool,
) -> tuple[list[ResourceKey], list[ResourceKey]]:
    """``(keys to read first, derived keys to read after them)``.

    With ``force_refresh`` a selected derived key is derived again only once the selected keys
    it may depend on have been fetched: deriving both at once could derive it from the cached
    revision the forced fetch is replacing.
    """
    if not force_refresh:
        return list(selected), []
    derived = [
        key
        for key in selected
        if (bool(pinned[key].dependency_versions) if key in pinned else is_derived(engine, key))
    ]
    return [key for key in selected if key not in derived], derived
