"""A session's pinned-value memo, and the dependency walk its revalidation needs.

The memo holds the session's private copies of every value it has pinned (in pin order) and the
errors it remembers. It is only touched between awaits by the session that owns it, so it needs
no lock of its own: the event loop is the lock, and the session serializes its stages.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any, final

from ..core import (
    DependencyResolutionError,
    PayloadIsolator,
    ResourceKey,
    SnapshotValue,
    SourceUnavailableError,
)

DependencyLookup = Callable[[ResourceKey], Collection[ResourceKey]]
"""Declared dependencies of a key the memo has not pinned."""


@final
class PinnedMemo:
    """Pinned values and remembered errors of one session."""

    __slots__ = ("errors", "inputs", "values")

    def __init__(self) -> None:
        self.values: dict[ResourceKey, SnapshotValue[Any]] = {}
        self.errors: dict[ResourceKey, Exception] = {}
        # Revisions read only as dependencies (not shown): what the derived values were
        # computed from, so a later stage that asks for such a key shows that revision.
        self.inputs: dict[ResourceKey, SnapshotValue[Any]] = {}

    def missing(self, keys: Iterable[ResourceKey], *, retry_errors: bool) -> list[ResourceKey]:
        """The keys a stage must acquire: not pinned, and not failed unless ``retry_errors``."""
        values, errors = self.values, self.errors
        return [key for key in keys if key not in values and (retry_errors or key not in errors)]

    def promote(self, keys: Iterable[ResourceKey]) -> None:
        """Show the remembered input revision of each of ``keys`` that has one."""
        inputs = self.inputs
        if inputs:
            for key in keys:
                value = inputs.pop(key, None)
                if value is not None and key not in self.values:
                    self.values[key] = value
                    self.errors.pop(key, None)

    def remember_inputs(
        self,
        pinned: Iterable[SnapshotValue[Any]],
        readings: Mapping[ResourceKey, SnapshotValue[Any]],
    ) -> None:
        """After a stage: keep, for each input of the values it pinned (transitively), the
        revision they were computed from, taken from ``readings``. Other revisions the stage
        read (an input of a derivation that failed, say) are not kept: a later stage reads
        them anew."""
        self._follow(pinned, readings, forget=False)

    def follow_inputs(
        self,
        committed: Iterable[SnapshotValue[Any]],
        readings: Mapping[ResourceKey, SnapshotValue[Any]],
    ) -> None:
        """After a revalidation: remember, for each input of the committed derived values
        (transitively), the revision they were computed from, taken from ``readings``; an input
        whose revision was not read is forgotten, so a later stage reads it anew."""
        self._follow(committed, readings, forget=True)

    def _follow(
        self,
        derived: Iterable[SnapshotValue[Any]],
        readings: Mapping[ResourceKey, SnapshotValue[Any]],
        *,
        forget: bool,
    ) -> None:
        pending = list(derived)
        while pending:
            value = pending.pop()
            for dep, version in value.dependency_versions.items():
                if dep in self.values or dep in self.errors:
                    continue
                read = readings.get(dep)
                if read is not None and read.version == version:
                    if self.inputs.get(dep) is not read:
                        self.inputs[dep] = read
                        pending.append(read)
                elif forget:
                    self.inputs.pop(dep, None)

    def pin(
        self,
        values: Mapping[ResourceKey, SnapshotValue[Any]],
        errors: Mapping[ResourceKey, Exception],
    ) -> None:
        """Record a stage's outcomes: values for keys :meth:`missing` returned (so not pinned
        yet), errors to remember (replacing an earlier error of a retried key)."""
        for key, value in values.items():
            self.values[key] = value
            self.errors.pop(key, None)
        self.errors.update(errors)

    def commit(self, values: Mapping[ResourceKey, SnapshotValue[Any]]) -> None:
        """Replace pinned values all at once (a revalidation); keys keep their pin order."""
        for key, value in values.items():
            self.values[key] = value
            self.errors.pop(key, None)

    def shows(self, key: ResourceKey) -> bool:
        """True when the session's snapshots show ``key`` (a value or a stored error): it was
        requested by a stage, not only resolved as a dependency."""
        return key in self.values or key in self.errors

    def clear(self) -> None:
        """Forget everything (the session closed)."""
        self.values.clear()
        self.errors.clear()
        self.inputs.clear()

    def copies(
        self,
        keys: Iterable[ResourceKey],
        isolator: PayloadIsolator,
        snapshot_id: str,
        source: Mapping[ResourceKey, SnapshotValue[Any]] | None = None,
    ) -> dict[ResourceKey, SnapshotValue[Any]]:
        """Isolated copies of the values of ``keys`` (from ``source``, default the pinned
        values), so a returned snapshot never shares a mutable payload with the memo."""
        held = self.values if source is None else source
        return {
            key: isolator.clone_snapshot_value(
                held[key], context=f"{key} in session {snapshot_id!r}"
            )
            for key in keys
            if key in held
        }


def dependents(
    targets: Collection[ResourceKey],
    state: Mapping[ResourceKey, SnapshotValue[Any]],
    declared: DependencyLookup,
) -> list[ResourceKey]:
    """The derived values of ``state`` that depend on a key of ``targets``, transitively, in
    ``state`` order (targets themselves excluded).

    A value's dependencies are the keys of its ``dependency_versions``; a key absent from
    ``state`` (an intermediate derived value nobody pinned) contributes its declared ones.
    """
    wanted = set(targets)
    reaches: dict[ResourceKey, bool] = {}

    def reaches_target(key: ResourceKey) -> bool:
        if key in wanted:
            return True
        known = reaches.get(key)
        if known is not None:
            return known
        reaches[key] = False  # while in progress: a cycle does not reach by itself
        value = state.get(key)
        deps = declared(key) if value is None else value.dependency_versions.keys()
        result = any(reaches_target(dep) for dep in deps)
        reaches[key] = result
        return result

    return [
        key
        for key, value in state.items()
        if value.dependency_versions and key not in wanted and reaches_target(key)
    ]


def resolved_closure(
    values: Mapping[ResourceKey, SnapshotValue[Any]],
    errors: Mapping[ResourceKey, Exception],
    declared: DependencyLookup,
) -> set[ResourceKey]:
    """Every key a session resolved: the keys it shows, and their dependencies, transitively.

    A pinned value's dependencies are the keys of its ``dependency_versions``; any other key
    (an intermediate derived value, or a failed one) contributes its declared ones.
    """
    known = set(values) | set(errors)
    pending = list(known)
    while pending:
        key = pending.pop()
        value = values.get(key)
        for dep in declared(key) if value is None else value.dependency_versions:
            if dep not in known:
                known.add(dep)
                pending.append(dep)
    return known


def stale_dependencies(
    derived: Iterable[SnapshotValue[Any]],
    state: Mapping[ResourceKey, SnapshotValue[Any]],
    via: Mapping[ResourceKey, SnapshotValue[Any]] | None = None,
) -> list[ResourceKey]:
    """Dependencies whose revision in ``state`` differs from the one a value of ``derived``
    was computed from: committing those values as they are would mix revisions. A dependency
    ``state`` lacks but ``via`` holds at the recorded revision (an intermediate derived value
    that was read) is followed to its own dependencies."""
    stale: dict[ResourceKey, None] = {}
    seen: set[ResourceKey] = set()
    pending = list(derived)
    while pending:
        for dep, version in pending.pop().dependency_versions.items():
            held = state.get(dep)
            if held is not None:
                if held.version != version:
                    stale[dep] = None
            elif via is not None and dep not in seen:
                seen.add(dep)
                read = via.get(dep)
                if read is not None and read.version == version:
                    pending.append(read)
    return list(stale)


def inputs_of(
    values: Iterable[SnapshotValue[Any]], via: Mapping[ResourceKey, SnapshotValue[Any]]
) -> set[ResourceKey]:
    """Every key ``values`` were computed from, transitively through ``via``."""
    found: set[ResourceKey] = set()
    pending = list(values)
    while pending:
        for dep in pending.pop().dependency_versions:
            if dep not in found:
                found.add(dep)
                read = via.get(dep)
                if read is not None:
                    pending.append(read)
    return found


def inconsistent(
    derived: Iterable[SnapshotValue[Any]], state: Mapping[ResourceKey, SnapshotValue[Any]]
) -> list[SnapshotValue[Any]]:
    """The values of ``derived`` computed from a revision other than ``state`` holds."""
    return [value for value in derived if stale_dependencies((value,), state)]


def ordered_union(*groups: Sequence[ResourceKey]) -> list[ResourceKey]:
    """The keys of every group, first occurrence first."""
    return list(dict.fromkeys(key for group in groups for key in group))


def mixed_revision_errors(
    values: Mapping[ResourceKey, SnapshotValue[Any]],
    state: Mapping[ResourceKey, SnapshotValue[Any]],
) -> dict[ResourceKey, Exception]:
    """Errors for derived values whose dependencies kept changing under them."""
    errors: dict[ResourceKey, Exception] = {}
    for value in inconsistent(values.values(), state):
        changed = stale_dependencies((value,), state)
        errors[value.key] = DependencyResolutionError(
            value.key,
            value.source,
            {
                dep: SourceUnavailableError(f"{dep} kept changing during revalidation")
                for dep in changed
            },
        )
    return errors
