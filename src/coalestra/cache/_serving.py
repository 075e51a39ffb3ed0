"""A build's read of the in-memory cache: its fresh hits, served in one synchronous loop.

The cache protocol's read (:meth:`MemoryStore.read`) returns one :class:`CacheLookup` per key,
each holding the stored revision as it is; a build then makes the value it serves from each.
Here a build's fresh hits become the values it serves directly -- restamped (``fetched_at``,
age, ``from_cache``, ``latency_ms``) and, if mutable, with their payload copied -- and nothing
else is allocated per key (``SnapshotValue._served`` is inlined: a call per key would be a
measurable share). Every key this loop does not serve -- a miss, a stale or expired value, a
derived value, one whose copy is slow -- is left, not counted nor touched, for
:meth:`MemoryStore.read`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from ..core import FreshnessPolicy, PayloadIsolationError, RefreshMode, ResourceKey, SnapshotValue
from ._store import MUTABLE, MemoryStore

Served: TypeAlias = tuple[
    dict[ResourceKey, SnapshotValue[Any]], list[ResourceKey], dict[ResourceKey, FreshnessPolicy]
]
"""What :func:`serve` returns: the fresh hits as served, the keys among them due a
refresh-ahead, and every other key with its policy (for :meth:`MemoryStore.read`)."""

_AHEAD = RefreshMode.REFRESH_AHEAD
_new = object.__new__
_Draft = SnapshotValue._draft_type()


def serve(
    store: MemoryStore,
    keys: Sequence[ResourceKey],
    now: float,
    policies: FreshnessPolicy | Sequence[FreshnessPolicy],
    copier: Callable[[Any], Any],
) -> Served:
    """Serve a build at ``now`` (see the module docstring); ``policies``: one for every key (its
    fields then read once), or each key's in key order. Raises PayloadIsolationError for the
    first payload that could not be copied, after every other key was served and counted."""
    find, touch = store._entries.get, store._entries.move_to_end
    served: dict[ResourceKey, SnapshotValue[Any]] = {}
    ahead: list[ResourceKey] = []
    rest: dict[ResourceKey, FreshnessPolicy] = {}
    failed: list[tuple[ResourceKey, Any, Exception]] = []
    policy, each = (policies, None) if type(policies) is FreshnessPolicy else (None, iter(policies))
    ttl, may_refresh = (policy.ttl_seconds, policy.refresh_mode is _AHEAD) if policy else (0, False)
    for key in keys:
        if each is not None:
            policy = next(each)
            ttl, may_refresh = policy.ttl_seconds, policy.refresh_mode is _AHEAD
        held = find(key)
        if held is not None:
            stored, flags = held if isinstance(held, tuple) else (held, 0)
            age = now - stored.observed_at
            if age < 0.0:  # a future stamp, kept as given (clock skew): it is age 0
                age = 0.0
            if flags <= MUTABLE and age <= ttl:
                touch(key)
                payload = stored.value
                if flags and (payload := _copied(copier, key, payload, failed)) is _FAILED:
                    continue
                new = _new(_Draft)
                new.key = key
                new.value = payload
                new.source = stored.source
                new.observed_at = stored.observed_at
                new.fetched_at = now
                new.age_seconds = age
                new.stale = False
                new.from_cache = True
                new.latency_ms = 0.0
                new.attempts = stored.attempts
                new.metadata = stored.metadata
                new.authority_rank = stored.authority_rank
                new.version = stored.version
                new.dependency_versions = stored.dependency_versions
                new.__class__ = SnapshotValue
                served[key] = new
                if may_refresh and policy.should_refresh_ahead(age):  # type: ignore[union-attr]
                    ahead.append(key)
                continue
        rest[key] = policy  # type: ignore[assignment]
    store.fresh_hits += len(served) + len(failed)
    if failed:
        key, payload, cause = failed[0]
        raise PayloadIsolationError(
            context=f"cache read of {key}", value_type=_type(payload)
        ) from cause
    return served, ahead, rest


_FAILED = object()


def _copied(
    copier: Callable[[Any], Any],
    key: ResourceKey,
    payload: Any,
    failed: list[tuple[ResourceKey, Any, Exception]],
) -> Any:
    """``copier(payload)``, or :data:`_FAILED` with the failure noted in ``failed``."""
    try:
        return copier(payload)
    except Exception as error:
        failed.append((key, payload, error))
        return _FAILED


def _type(payload: object) -> str:
    return type(payload).__name__
