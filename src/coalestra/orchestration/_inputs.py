"""The input revisions of the derived values a session stage serves (issue 12, defect 1).

A stage may serve a derived value it did not derive itself: a cache hit, another build's flight,
a stale fallback. It never read that value's inputs, so a later stage asking for one would read
it anew and could show another revision beside the pinned derived value. So a session stage
(never a plain build: its hit path stays one read), once its keys are resolved, keeps as
remembered inputs of the view, for each served derived value, the exact revision of each input
it was computed from (:func:`keep_inputs`): the inputs its ``dependency_versions`` names that
the view does not hold yet (pinned, read or derived by the stage) are read in one batched cache
read per level of derivation, whatever their age; they are not requested keys, so they count
nowhere (diagnostics, metrics, events). A stage reading derived values and their inputs from
the built-in cache sees both at once (no other task runs between its reads when it has nothing
to wait for); any other interleaving only costs a derivation.

An input whose revision is no longer held (replaced, or gone) cannot be shown beside that
derived value: the view then marks the value as mixed, and the build's reconciliation derives
it again from the revision the stage reads now (or fails the key if that cannot be done), as it
does for a build that read both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..core import ResourceKey, SnapshotValue
from ._cache_access import BuildView
from ._machinery import Machinery
from ._outdated import ANY_AGE
from ._sources import SourceKind


def is_derived(engine: Machinery, key: ResourceKey) -> bool:
    """True when the highest-priority source supporting ``key`` is a derived source."""
    supported, _broken = engine.chains.chain(key)
    return bool(supported) and engine.sources[min(supported)].kind is SourceKind.DERIVED


def declared_dependencies(engine: Machinery, key: ResourceKey) -> tuple[ResourceKey, ...]:
    """The dependencies every derived source supporting ``key`` declares for it (none for a
    key no derived source supports). ``supports()`` or ``dependencies()`` failures count as
    "no dependencies": they fail the derivation, not this lookup."""
    supported, _broken = engine.chains.chain(key)
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


async def keep_inputs(
    engine: Machinery, view: BuildView, served: Iterable[SnapshotValue[Any]]
) -> None:
    """Keep in ``view`` the input revisions of the ``served`` derived values, transitively.

    The inputs are the keys a value's ``dependency_versions`` names (no ``dependencies()``
    call). An input the view already holds a value of (pinned, read, derived, or kept) is left
    to the reconciliation (which derives again a value computed from another revision), and
    followed to its own inputs. The others are read in one batched cache read per level,
    whatever their age, and counted nowhere: at the recorded revision they are kept and
    followed; at another revision they are kept all the same (so the value is seen as mixed
    and derived again); not held at all, the view marks them lost (same outcome).
    """
    pending = [value for value in served if value.dependency_versions]
    seen: set[ResourceKey] = set()  # inputs the view holds, already followed
    lost = view.lost
    while pending:
        wanted: dict[ResourceKey, str] = {}
        following: list[SnapshotValue[Any]] = []
        for value in pending:
            for dep, version in value.dependency_versions.items():
                held = view.value_of(dep)
                if held is None:
                    if dep not in lost:
                        wanted.setdefault(dep, version)
                elif dep not in seen:  # follow it to its own inputs
                    seen.add(dep)
                    if held.version == version:
                        following.append(held)
        pending = following
        if wanted:
            await _read(engine, view, wanted, pending)
            seen.update(wanted)


async def _read(
    engine: Machinery,
    view: BuildView,
    wanted: Mapping[ResourceKey, str],
    following: list[SnapshotValue[Any]],
) -> None:
    """Read the ``wanted`` inputs (key -> recorded version) whatever their age into the view's
    kept inputs; add those held at the recorded version to ``following``."""
    keys = list(wanted)
    lookups = await engine.cache.read(keys, engine.clock.now(), dict.fromkeys(keys, ANY_AGE))
    now = engine.clock.now()
    inputs = view.inputs
    for key, version in wanted.items():
        lookup = lookups.get(key)
        held = None if lookup is None else lookup.value
        if held is None:
            view.lost.add(key)
            continue
        inputs[key] = _as_served(engine, held, now)
        if held.version == version:
            following.append(held)


def _as_served(engine: Machinery, value: SnapshotValue[Any], now: float) -> SnapshotValue[Any]:
    """``value`` as a stage would serve it from the cache at ``now`` (age and staleness by its
    own policy)."""
    age = max(0.0, now - value.observed_at)
    return value._served(now, age, not engine.policy_for(value.key).is_fresh(age))
