"""A build's read of the in-memory cache: its fresh hits, served in one synchronous loop.

The cache protocol's read (:meth:`MemoryStore.read`) returns one :class:`CacheLookup` per key,
each holding the stored revision as it is; a build then makes the value it serves from each.
Here a build's fresh hits become the values it serves directly -- restamped (``fetched_at``,
age, ``from_cache``, ``latency_ms``) and, if mutable, with their payload copied -- and nothing
else is allocated per key. Every key this loop does not serve -- a miss, a stale or expired
value, a derived value, one whose copy is slow -- is left, uncounted, for
:meth:`MemoryStore.read`. Taking an entry out of the LRU table is the lookup, so such a key is
put back as used; that read then uses it again or drops it, so the LRU order ends the same.

The loop body is the warm build's whole per-key cost, so it is written out in one function:
per fresh hit one pop and one insert (the lookup and the LRU touch, see ``_lru``; none when
the build repeats the previous one, see :func:`_finders`), one freshness comparison (one policy
for every key is read once, see :func:`_policy_reader`), the served value and its slot in the
result (a helper call per key would cost a fifth of it). A mutable payload is copied by the
cache's copier -- with the built-in one, a flat dict or list (``_store.is_flat``, known since it
was stored) by its own ``copy()``, which is what that copier returns for it. A payload that
cannot be copied raises PayloadIsolationError (the first one, after every other key was served
and counted). The served value is made as a draft and retyped (``core._values.draft_of``):
measured against ``copy.copy`` (20x slower) and ``object.__setattr__`` per field (4x slower),
this is the cheapest way to make one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import repeat
from typing import Any, TypeAlias

from ..core import FreshnessPolicy, PayloadIsolationError, RefreshMode, ResourceKey, SnapshotValue
from ..core._deep_copy import deep_copy
from ._lru import LruTable
from ._store import FLAT, MUTABLE, Held, MemoryStore

Served: TypeAlias = tuple[
    dict[ResourceKey, SnapshotValue[Any]], list[ResourceKey], dict[ResourceKey, FreshnessPolicy]
]
"""What :func:`serve` returns: the fresh hits as served, the keys among them due a
refresh-ahead, and every other key with its policy (for :meth:`MemoryStore.read`)."""

_AHEAD = RefreshMode.REFRESH_AHEAD
_Value = SnapshotValue
_Draft = SnapshotValue._draft_type()  # a slot-less subclass: see core._values.draft_of

_INLINE = (MUTABLE, MUTABLE | FLAT)  # entry flags of the mutable payloads copied here
_FLAT = MUTABLE | FLAT
_PLACEHOLDER = FreshnessPolicy(0.0, 0.0)  # see _policy_reader

Policies: TypeAlias = "FreshnessPolicy | Sequence[FreshnessPolicy]"
"""The policies :func:`serve` is given: one for every key, or each key's."""
Copier: TypeAlias = Callable[[Any], Any]

Finders: TypeAlias = tuple[
    dict[ResourceKey, "Held"],
    dict[ResourceKey, "Held"],
    Iterable["Held | None"],
    Callable[[ResourceKey, None], "Held | None"],
    bool,
]
"""See :func:`_finders`."""


def serve(
    store: MemoryStore, keys: Sequence[ResourceKey], now: float, policies: Policies, copier: Copier
) -> Served:
    """Serve a build at ``now`` (see the module docstring); ``policies``: one, or each key's."""
    recent, older, entries, find_older, touch = _finders(store._table, keys)  # see _lru
    served: dict[ResourceKey, SnapshotValue[Any]] = {}
    ahead: list[ResourceKey] = []
    rest: dict[ResourceKey, FreshnessPolicy] = {}
    failed: list[tuple[ResourceKey, Any, Exception]] = []
    policy, ttl, each, maybe_ahead = _policy_reader(policies)  # one: read once
    builtin = copier is deep_copy  # a flat payload's copy is then its copy() (_store.is_flat)
    for key, held in zip(keys, entries, strict=False):
        if each is not None:  # a policy per key
            ttl = (policy := each()).ttl_seconds
        if held is None and (not older or (held := find_older(key, None)) is None):
            rest[key] = policy
            continue
        if touch:  # used now (a key left for MemoryStore.read: used there)
            recent[key] = held
        if type(held) is _Value:  # a plain immutable revision: served as it is
            stored = held
            if (age := now - stored.observed_at) > ttl:
                rest[key] = policy
                continue
            payload = stored.value
        else:  # (value, flags): copied here, or (derived, slow to copy) for MemoryStore.read
            stored, flags = held  # type: ignore[misc]  # an Entry (_store.Held)
            if flags not in _INLINE or (age := now - stored.observed_at) > ttl:
                rest[key] = policy
                continue
            payload = stored.value
            try:
                payload = payload.copy() if flags == _FLAT and builtin else copier(payload)
            except Exception as error:
                failed.append((key, payload, error))
                continue
        if age < 0.0:  # a future stamp, kept as given (clock skew): it is age 0
            age = 0.0
        new = _Draft()  # calling the class: ~35 ns less than object.__new__(_Draft)
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
        new.__class__ = _Value
        served[key] = new
        if maybe_ahead and policy.refresh_mode is _AHEAD and policy.should_refresh_ahead(age):
            ahead.append(key)
    _finish(store, keys, touch and not rest, len(served), failed)
    return served, ahead, rest


def _policy_reader(
    policies: Policies,
) -> tuple[FreshnessPolicy, float, Callable[[], FreshnessPolicy] | None, bool]:
    """How :func:`serve` reads each key's policy: ``(policy, ttl, each, maybe_ahead)``.

    One policy shared by every key is read once: its TTL, and whether a refresh-ahead can apply
    at all (only under ``REFRESH_AHEAD``), so a key costs no policy read (``each`` is ``None``).
    With a policy per key, ``each()`` returns the next one (``policy`` and ``ttl`` are then
    placeholders, replaced before the first key is looked at).
    """
    if type(policies) is FreshnessPolicy:
        return policies, policies.ttl_seconds, None, policies.refresh_mode is _AHEAD
    return _PLACEHOLDER, 0.0, iter(policies).__next__, True


def _finders(table: LruTable[ResourceKey, Held], keys: Sequence[ResourceKey]) -> Finders:
    """How :func:`serve` finds each key's entry: ``(recent, older, entries, find_older, touch)``.

    Taking an entry out (``pop``, ``entries`` pops each key in turn) and putting it back is the
    lookup and the LRU touch in one. But when ``keys`` are the table's ``tail`` -- the keys last
    served, still the most recently used entries in this order: a build that repeats the
    previous one, the common warm case -- touching each would leave the order as it is: their
    entries are only read, looked up once (``get``) and then kept in the tail, which every
    change of an entry resets (see ``_lru``). Comparing the keys with the tail is one pointer
    test per key; a lookup hashes the key (~35 ns: a ResourceKey's hash is a Python-level call).
    """
    recent, older, tail = table.recent, table.older, table.tail
    if tail is not None and tuple(keys) == tail[0]:  # a tuple (the engine's keys): not copied
        entries = tail[1]
        if entries is None:  # the first repeat: looked up here, kept for the next ones
            entries = list(map(recent.get, keys))
            table.tail = (tail[0], entries)
        return recent, older, entries, older.get, False
    table.tail = None  # the pops and puts change the order (see _finish for the new tail)
    return recent, older, map(recent.pop, keys, repeat(None)), older.pop, True


def _finish(
    store: MemoryStore,
    keys: Sequence[ResourceKey],
    new_tail: bool,
    served: int,
    failed: list[tuple[ResourceKey, Any, Exception]],
) -> None:
    """Count the fresh hits; with ``new_tail`` (every key was popped and put back, in order),
    ``keys`` are the table's new ``tail`` (see :func:`_finders`); raise PayloadIsolationError
    for the first failed copy, if any (every other key was served)."""
    if new_tail:
        store._table.tail = (tuple(keys), None)
    store.fresh_hits += served + len(failed)
    if not failed:
        return
    key, payload, cause = failed[0]
    raise PayloadIsolationError(
        context=f"cache read of {key}", value_type=type(payload).__name__
    ) from cause
