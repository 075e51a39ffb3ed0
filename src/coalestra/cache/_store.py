"""The synchronous heart of :class:`~coalestra.cache.AsyncMemoryCache`: an LRU of private values.

Every decision (freshness, expiry, dependency validation, LRU order, compare-and-write) is made
here, in plain synchronous code. The async cache calls one method per operation with no ``await``
inside it, so the event loop itself makes each operation atomic; no lock is needed. Payload copies
happen outside, before a write is committed and after a read is decided.

Each entry is ``(value, flags)``: the cache's private :class:`SnapshotValue` and bit flags
computed once at write time (:data:`MUTABLE`, :data:`DERIVED`, :data:`SLOW_COPY`, :data:`FLAT`),
so a read of a plain immutable value tests one int instead of inspecting the payload again. An
entry without flags (the common case) is held as the bare value: a tuple per entry is ~56 bytes;
:func:`entry` reads either form. The entries live in an :class:`._lru.LruTable` (exact LRU
order in two plain dicts, without an ``OrderedDict``'s 53 bytes per entry).

:meth:`MemoryStore.read` answers the cache protocol (one :class:`CacheLookup` per key, every
field of the stored revision unchanged); :func:`._serving.serve` answers a build. Which revision
a write keeps is :mod:`._decisions`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeAlias, final

from ..core import (
    CacheLookup,
    CacheWriteStatus,
    FreshnessPolicy,
    FreshnessPolicyProvider,
    ResourceKey,
    SnapshotValue,
)
from ..core._deep_copy import SHARED
from ..core._lookups import MISS, make_lookup
from ._decisions import decide_write
from ._lru import LruTable
from ._values import CacheStats

Entry: TypeAlias = tuple[SnapshotValue[Any], int]
"""A stored value and its flags (:data:`MUTABLE`, :data:`DERIVED`, :data:`SLOW_COPY`,
:data:`FLAT`)."""

Held: TypeAlias = "SnapshotValue[Any] | Entry"
"""What the store's table holds per key: the bare value when it has no flags, else an entry."""


def entry(held: Held) -> Entry:
    """``held`` as a ``(value, flags)`` entry."""
    return held if type(held) is tuple else (held, 0)  # type: ignore[return-value]


MUTABLE = 1
"""Entry flag: the payload or metadata holds mutable objects, so reads must copy it."""
DERIVED = 2
"""Entry flag: the value records dependency versions, so reads must validate them."""
SLOW_COPY = 4
"""Entry flag (with :data:`MUTABLE`): the copy is not just the payload copier run inline (the
metadata needs a copy too, or the copy belongs in a worker thread)."""
FLAT = 8
"""Entry flag (with :data:`MUTABLE`): the payload is a dict or list of shared atoms (see
:func:`is_flat`), so the built-in copier's copy of it is its ``copy()``."""


_FEW = 8
"""Up to this many items, :func:`is_flat` walks a dict in a loop (faster than two ``map``)."""


def is_flat(payload: Any) -> bool:
    """Whether ``payload`` is an exact dict or list whose keys and items are all shared atoms
    (``core._deep_copy.SHARED``): :func:`~coalestra.core._deep_copy.deep_copy` returns exactly
    ``payload.copy()`` for it. Checked once, when the entry is stored (C-level iteration)."""
    kind = type(payload)
    if kind is dict:
        shared = SHARED
        if len(payload) <= _FEW:  # a loop needs no map objects: ~0.1 us less for a few items
            for key, item in payload.items():
                if type(item) not in shared or type(key) not in shared:
                    return False
            return True
        # issuperset walks an iterable in C, stopping at the first type outside SHARED (~0.2 us
        # less per small dict than all(map(...)) over a chain).
        return shared.issuperset(map(type, payload.values())) and shared.issuperset(
            map(type, payload)
        )
    if kind is list:
        return SHARED.issuperset(map(type, payload))
    return False


_STORED_ANEW: tuple[CacheWriteStatus, None] = (CacheWriteStatus.STORED, None)

PendingRead: TypeAlias = tuple[ResourceKey, SnapshotValue[Any], bool, float]
"""A hit whose payload must be copied before it is returned: key, read value, fresh, age."""


@final
class MemoryStore:
    """An LRU of cache entries with cumulative statistics.

    Args:
        max_entries: the most entries kept (least recently used are evicted), ``None`` for no
            bound. Validated by the caller.
        copy_flags: judges how a mutable value's copies are made (:data:`SLOW_COPY`,
            :data:`FLAT` or 0) as it is stored; without it every one is :data:`SLOW_COPY`.
    """

    __slots__ = (
        "_copy_flags",
        "_table",
        "evictions",
        "expirations",
        "fresh_hits",
        "invalidations",
        "max_entries",
        "misses",
        "sets",
        "stale_hits",
    )

    def __init__(
        self,
        max_entries: int | None,
        copy_flags: Callable[[SnapshotValue[Any]], int] | None = None,
    ) -> None:
        self._table: LruTable[ResourceKey, Held] = LruTable()
        self.max_entries = max_entries
        self._copy_flags = copy_flags
        self.fresh_hits = self.stale_hits = self.misses = 0
        self.sets = self.invalidations = self.evictions = self.expirations = 0

    # -- reads ---------------------------------------------------------------------------------

    def read(
        self,
        keys: Iterable[ResourceKey],
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> tuple[dict[ResourceKey, CacheLookup], list[PendingRead]]:
        """Look every key up at wall-clock ``now``: the cache protocol's hot loop, one function
        (a call per key would be a measurable share of it). Returns the lookups in key order and
        the hits whose payload must still be copied (a placeholder holds their slot till then).

        Raises:
            KeyError, AttributeError, TypeError: bad keys or policies; the caller turns these
                into a precise error. Hit counters are only committed when the loop completes.
        """
        recent, older = self._table.recent, self._table.older  # LruTable.get and .use, inlined
        self._table.tail = None  # hits are used: the order changes (see _lru)
        results: dict[ResourceKey, CacheLookup] = {}
        pending: list[PendingRead] = []
        hits = fresh_hits = misses = 0
        memo: dict[ResourceKey, bool] = {}  # dependency answers, shared by this read's keys
        for key in keys:
            held = recent.get(key)
            if held is None and older:
                held = older.get(key)
            if held is None:
                if key.__class__ is not ResourceKey or key not in policies:
                    raise KeyError(key)
                misses += 1
                results[key] = MISS
                continue
            stored, flags = held if isinstance(held, tuple) else (held, 0)
            age = now - stored.observed_at
            if age < 0.0:  # a future stamp, kept as given (clock skew): it is age 0
                age = 0.0
            policy = policies[key]
            # FreshnessPolicy.is_fresh / is_usable, inlined (the class is final, so it is exact).
            fresh = age <= policy.ttl_seconds
            if not fresh and age > policy.max_stale_seconds:
                self._expire(key)
            elif flags & DERIVED and not self._dependencies_current(key, memo):
                self._drop(key)
            else:
                if recent.pop(key, None) is None and older:
                    older.pop(key, None)
                recent[key] = held
                hits += 1
                fresh_hits += fresh
                # The stored revision as is: only the builder restamps what it serves.
                if flags & MUTABLE:
                    results[key] = MISS  # placeholder keeping key order; filled after the copy
                    pending.append((key, stored, fresh, age))
                else:
                    results[key] = make_lookup(stored, fresh, True, age)
                continue
            misses += 1
            results[key] = CacheLookup(None, False, False, age)
        self.fresh_hits += fresh_hits
        self.stale_hits += hits - fresh_hits
        self.misses += misses
        return results, pending

    def _dependencies_current(self, key: ResourceKey, memo: dict[ResourceKey, bool]) -> bool:
        """True when ``key`` is cached and every dependency it records is cached at the recorded
        version and is itself current (transitively). ``memo`` holds answers for one read."""
        known = memo.get(key)
        if known is not None:
            return known
        memo[key] = False  # while in progress: a dependency cycle counts as not current
        held = self._table.get(key)
        if held is None:
            return False
        for dependency, version in entry(held)[0].dependency_versions.items():
            found = self._table.get(dependency)
            if found is None:
                return False
            value = entry(found)[0]
            if value.version != version:
                return False
            if value.dependency_versions and not self._dependencies_current(dependency, memo):
                return False
        memo[key] = True
        return True

    def _expire(self, key: ResourceKey) -> None:
        self._table.pop(key)
        self.expirations += 1

    def _drop(self, key: ResourceKey) -> None:
        self._table.pop(key)
        self.invalidations += 1

    # -- writes --------------------------------------------------------------------------------

    def put(self, value: SnapshotValue[Any], mutable: bool, flat: bool = False) -> None:
        """Store ``value`` (already private to the cache) as the most recently used entry.

        ``mutable`` says whether its payload or metadata holds mutable objects; ``flat`` that
        the writer already knows it :data:`FLAT` and its copy inline and payload-only (its
        metadata all atoms), so it is not judged again.
        """
        table = self._table
        flags = self._flags(value, mutable, flat)
        table.use(value.key, (value, flags) if flags else value)
        self.sets += 1
        limit = self.max_entries
        if limit is not None:
            while len(table) > limit:
                table.pop_oldest()
                self.evictions += 1

    def _flags(self, value: SnapshotValue[Any], mutable: bool, flat: bool) -> int:
        """The entry flags of ``value`` (see :meth:`put`), judged once, as it is stored."""
        flags = DERIVED if value.dependency_versions else 0
        if flat:
            return flags | MUTABLE | FLAT
        if mutable:
            judge = self._copy_flags
            return flags | MUTABLE | (SLOW_COPY if judge is None else judge(value))
        return flags

    def put_many(self, staged: Sequence[tuple[SnapshotValue[Any], bool, bool]]) -> None:
        """:meth:`put` for each ``(value, mutable, flat)``, in order. When nothing can be
        evicted (no size limit, or room for all), with ``LruTable.use`` inlined and the size
        limit checked once: fewer calls per value. Else one :meth:`put` at a time (an eviction
        between two stores may drop what a later one would have used)."""
        table, limit = self._table, self.max_entries
        if limit is not None and len(table) + len(staged) > limit:
            for value, mutable, flat in staged:
                self.put(value, mutable, flat)
            return
        recent, older, judge = table.recent, table.older, self._copy_flags
        table.tail = None  # the order changes (see _lru)
        for value, mutable, flat in staged:
            if mutable and not flat:  # _flags, inline: one call less per value
                flags = MUTABLE | (SLOW_COPY if judge is None else judge(value))
                if value.dependency_versions:
                    flags |= DERIVED
            elif value.dependency_versions:
                flags = MUTABLE | FLAT | DERIVED if flat else DERIVED
            else:
                flags = MUTABLE | FLAT if flat else 0
            key = value.key
            if recent.pop(key, None) is None and older:
                older.pop(key, None)
            recent[key] = (value, flags) if flags else value
        self.sets += len(staged)

    def decide(
        self, value: SnapshotValue[Any], *, force: bool, replace_equal: bool
    ) -> tuple[CacheWriteStatus, Entry | None]:
        """What :meth:`put_if_newer` would do now, without storing: the decision and the entry
        held (``None`` if there is none)."""
        table = self._table  # LruTable.get, inlined
        found = table.recent.get(value.key)
        if found is None:
            found = table.older.get(value.key)
            if found is None:
                return _STORED_ANEW  # nothing held: stored whatever the flags (decide_write)
        held: Entry = found if type(found) is tuple else (found, 0)  # type: ignore[assignment]
        return decide_write(held[0], value, force=force, replace_equal=replace_equal), held

    def decide_many(
        self, values: Sequence[SnapshotValue[Any]], *, force: bool, replace_equal: bool
    ) -> list[tuple[CacheWriteStatus, Entry | None]]:
        """:meth:`decide` for each of ``values`` (distinct keys), in one call: a key held by
        nothing is stored without asking :func:`decide_write`."""
        recent, older = self._table.recent, self._table.older  # LruTable.get, inlined
        decided: list[tuple[CacheWriteStatus, Entry | None]] = []
        for value in values:
            key = value.key
            found = recent.get(key)
            if found is None:
                found = older.get(key)
                if found is None:
                    decided.append(_STORED_ANEW)  # shared: nothing held
                    continue
            held = entry(found)
            status = decide_write(held[0], value, force=force, replace_equal=replace_equal)
            decided.append((status, held))
        return decided

    def put_if_newer(
        self, value: SnapshotValue[Any], mutable: bool, *, force: bool, replace_equal: bool
    ) -> tuple[CacheWriteStatus, Entry | None]:
        """Decide (see :func:`decide_write`) and store when the decision is to store.

        Returns the decision and the entry held before (``None`` if there was none).
        """
        found = self._table.get(value.key)
        previous = None if found is None else entry(found)
        status = decide_write(
            None if previous is None else previous[0],
            value,
            force=force,
            replace_equal=replace_equal,
        )
        if status is CacheWriteStatus.STORED:
            self.put(value, mutable)
        return status, previous

    # -- removal -------------------------------------------------------------------------------

    def remove(self, key: ResourceKey) -> bool:
        """Drop ``key``; True when it was cached."""
        if self._table.pop(key) is None:
            return False
        self.invalidations += 1
        return True

    def remove_matching(self, predicate: Callable[[ResourceKey], bool]) -> tuple[ResourceKey, ...]:
        """Drop every key ``predicate`` accepts; if it raises, nothing is dropped."""
        doomed = tuple(key for key in self._table.oldest_first() if predicate(key))
        for key in doomed:
            self._table.pop(key)
        self.invalidations += len(doomed)
        return doomed

    def prune(self, now: float, resolver: FreshnessPolicyProvider) -> tuple[ResourceKey, ...]:
        """Drop every entry older than its policy's ``max_stale_seconds`` at ``now``.

        Raises:
            TypeError: the resolver returned something other than a FreshnessPolicy; nothing
                is dropped then.
        """
        doomed: list[ResourceKey] = []
        for key, held in self._table.entries_oldest_first():
            value = entry(held)[0]
            policy = resolver.resolve(key)
            if not isinstance(policy, FreshnessPolicy):
                raise TypeError(
                    f"policy_resolver.resolve({key}) must return a FreshnessPolicy, "
                    f"got {type(policy).__name__}"
                )
            if not policy.is_usable(now - value.observed_at):
                doomed.append(key)
        for key in doomed:
            self._table.pop(key)
        self.expirations += len(doomed)
        return tuple(doomed)

    def clear(self) -> None:
        """Drop every entry, each counted as an invalidation (statistics are kept)."""
        self.invalidations += len(self._table)
        self._table.clear()

    def __len__(self) -> int:
        return len(self._table)

    def stats(self) -> CacheStats:
        """Return the current statistics."""
        return CacheStats(
            size=len(self._table),
            max_entries=self.max_entries,
            hits=self.fresh_hits + self.stale_hits,
            misses=self.misses,
            fresh_hits=self.fresh_hits,
            stale_hits=self.stale_hits,
            sets=self.sets,
            invalidations=self.invalidations,
            evictions=self.evictions,
            expirations=self.expirations,
        )
