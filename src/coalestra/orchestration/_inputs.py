"""The input revisions of the derived values a session stage serves (issue 12, defect 1).

A stage may serve a derived value it did not derive itself: a cache hit, another build's flight,
a stale fallback. It never read that value's inputs, so a later stage asking for one would read
it anew and could show another revision beside the pinned derived value. So a session stage
(never a plain build: their hit path stays one read) does two things:

* its batched cache read also reads the declared inputs of the derived keys it asks for,
  transitively, whatever their age (:func:`declared_inputs`); they are not requested keys, so
  they count nowhere (diagnostics, metrics, events);
* once its keys are resolved, it keeps as remembered inputs of the view, for each served derived
  value, the exact revision of each input it was computed from (:func:`keep_inputs`), re-reading
  once what the first read did not hold at that revision (a flight that finished after it).

An input whose revision is no longer held (replaced, or gone) cannot be shown beside that
derived value: the view then marks the value as mixed, and the build's reconciliation derives
it again from the revision the stage reads now (or fails the key if that cannot be done), as it
does for a build that read both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..core import CacheLookup, FreshnessPolicy, ResourceKey, SnapshotValue
from ._cache_access import ANY_AGE
from ._machinery import Machinery
from ._sources import SourceKind
from ._view import BuildView


def is_derived(engine: Machinery, key: ResourceKey) -> bool:
    """True when the highest-priority source supporting ``key`` is a derived source."""
    supported, _broken = engine.chains.chain(key)
    return bool(supported) and engine.sources[min(supported)].kind is SourceKind.DERIVED


def derived_sources(engine: Machinery) -> frozenset[int]:
    """The indices of the engine's derived sources."""
    return frozenset(s.index for s in engine.sources if s.kind is SourceKind.DERIVED)


def declared_dependencies(
    engine: Machinery, key: ResourceKey, derived: frozenset[int] | None = None
) -> tuple[ResourceKey, ...]:
    """The dependencies every derived source supporting ``key`` declares for it (none for a
    key no derived source supports). ``supports()`` or ``dependencies()`` failures count as
    "no dependencies": they fail the derivation, not this lookup. ``derived``: the indices
    of :func:`derived_sources`, when the caller looks many keys up."""
    supported, _broken = engine.chains.chain(key)
    if derived is not None and supported.isdisjoint(derived):
        return ()
    found: dict[ResourceKey, None] = {}
    for index in sorted(supported):
        source = engine.sources[index]
        if source.kind is not SourceKind.DERIVED or source.dependencies is None:
            continue
        try:
            declared = tuple(source.dependencies(key))
        except Exception:  # a broken dependencies() fails the derivation, not this lookup
            continue
        found.update((dep, None) for dep in declared if isinstance(dep, ResourceKey))
    return tuple(found)


def declared_inputs(
    engine: Machinery, keys: Sequence[ResourceKey], view: BuildView
) -> list[ResourceKey]:
    """The declared inputs of ``keys``, transitively, that neither ``keys`` nor ``view`` hold:
    what a session stage reads beside ``keys`` in the same batched cache read."""
    derived = derived_sources(engine)
    if not derived:
        return []
    skipped = set(keys)
    found: list[ResourceKey] = []
    pending = list(keys)
    while pending:
        for dep in declared_dependencies(engine, pending.pop(), derived):
            if dep not in skipped:
                skipped.add(dep)
                if view.get(dep) is None:
                    found.append(dep)
                    pending.append(dep)
    return found


async def read_with_inputs(
    engine: Machinery,
    keys: Sequence[ResourceKey],
    now: float,
    policies: Mapping[ResourceKey, FreshnessPolicy],
    view: BuildView,
) -> Mapping[ResourceKey, CacheLookup]:
    """A session stage's cache read: ``keys``, and in the same batch the declared inputs of
    its derived keys (whatever their age), kept aside in ``view``, counted nowhere."""
    inputs = declared_inputs(engine, keys, view)
    if not inputs:
        return await engine.cache.read(keys, now, policies)
    lookups = await engine.cache.read(
        [*keys, *inputs], now, {**policies, **dict.fromkeys(inputs, ANY_AGE)}
    )
    view.keep_read(inputs, lookups)
    return lookups


async def keep_inputs(
    engine: Machinery, view: BuildView, served: Iterable[SnapshotValue[Any]]
) -> None:
    """Keep in ``view`` the input revisions of the ``served`` derived values, transitively.

    An input the view already holds a value of is left to the reconciliation (which derives
    again a value computed from another revision), and followed to its own inputs. Any other
    input is taken from the stage's
    first read when it holds the recorded revision, else from one more read of those inputs;
    still another revision: it is kept all the same (so the value is seen as mixed and derived
    again); not held at all: the view marks it lost (same outcome).
    """
    pending = [value for value in served if value.dependency_versions]
    reread: set[ResourceKey] = set()
    seen: set[ResourceKey] = set()  # inputs the view holds, already followed
    while pending:
        wanted: dict[ResourceKey, str] = {}
        following: list[SnapshotValue[Any]] = []
        for value in pending:
            for dep, version in value.dependency_versions.items():
                held = view.value_of(dep)
                if held is None:
                    if dep not in view.lost:
                        wanted.setdefault(dep, version)
                elif dep not in seen:  # follow it to its own inputs
                    seen.add(dep)
                    if held.version == version:
                        following.append(held)
        # Read once more what the first read did not hold at the recorded revision (a flight
        # may have written it since), or did not read at all (an undeclared input).
        again = [
            dep
            for dep, version in wanted.items()
            if dep not in reread and not _matches(view.prefetched.get(dep), version)
        ]
        if again:
            reread.update(again)
            await _read(engine, view, again)
        now = engine.clock.now()
        pending = following
        for dep, version in wanted.items():
            held = view.prefetched.get(dep)
            if held is None:
                view.lost.add(dep)
                continue
            view.inputs[dep] = _as_served(engine, held, now)
            seen.add(dep)
            if held.version == version:
                pending.append(held)


async def _read(engine: Machinery, view: BuildView, keys: list[ResourceKey]) -> None:
    """Read ``keys`` again, whatever their age, into the view's first-read inputs."""
    lookups = await engine.cache.read(keys, engine.clock.now(), dict.fromkeys(keys, ANY_AGE))
    view.keep_read(keys, lookups)


def _matches(value: SnapshotValue[Any] | None, version: str) -> bool:
    return value is not None and value.version == version


def _as_served(engine: Machinery, value: SnapshotValue[Any], now: float) -> SnapshotValue[Any]:
    """``value`` as a stage would serve it from the cache at ``now`` (age and staleness by its
    own policy)."""
    age = max(0.0, now - value.observed_at)
    return value._served(now, age, not engine.policy_for(value.key).is_fresh(age))
