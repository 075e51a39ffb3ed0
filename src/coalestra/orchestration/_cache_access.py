"""How the engine talks to whatever cache it was given, and what a build holds of each key
(:class:`BuildView`: the build's one reading).

The cache's capabilities (batch reads and writes, atomic conditional writes, authority and
dependency validation) are read once here. Reads use ``get_many`` when the cache has it, else one
``get`` per key; writes use the first of ``set_many_if_newer``, ``set_many``, ``set_if_newer`` and
``set`` the cache has. Per-key calls run in ``min(max_pending_tasks, n)`` concurrent workers, in
input order. An exception the cache raises is not wrapped or swallowed: it propagates to the
caller (the first failure of per-key calls cancels the calls in flight and starts no more).
The cross-process lease calls, which degrade instead, are in :mod:`._leases`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any, final

from ..cache import AsyncMemoryCache
from ..concurrency._bounded import run_bounded
from ..core import (
    AsyncCache,
    CacheLookup,
    CacheWriteResult,
    CacheWriteStatus,
    Clock,
    FreshnessPolicy,
    RefreshMode,
    ResourceKey,
    SnapshotValue,
)
from ..core._isolation import PayloadIsolator
from ..core._protocols import LeasingCache
from ..core._validation import ReadOnlyDict
from ..observability._names import FRESH as _FRESH
from ..observability._names import STALE_WHILE_REVALIDATE as _STALE_WHILE_REVALIDATE
from ._flights import Flight
from ._outdated import drop_outdated
from ._per_key import get_each, write_each
from ._policy import PolicyResolver

Served = tuple[
    dict[ResourceKey, SnapshotValue[Any]], list[ResourceKey], dict[ResourceKey, FreshnessPolicy]
]
"""A build's first read: fresh hits as served, the keys among them due a refresh-ahead, and
every other key with its policy (to :meth:`CacheAccess.read`)."""

Reading = tuple[
    dict[ResourceKey, SnapshotValue[Any]],
    list[ResourceKey],
    list[ResourceKey],
    dict[ResourceKey, SnapshotValue[Any]],
    list[ResourceKey],
]
"""A build's first read, in key order: ``(hits, ahead, needed, candidates, swr)``: values served,
those due a refresh-ahead, keys that need a source, their usable cached values (served if every
source fails), keys served stale while revalidated."""

_SWR = RefreshMode.STALE_WHILE_REVALIDATE
_FETCH = "fetch"
_REFRESH_AHEAD = RefreshMode.REFRESH_AHEAD.value


def _method(cache: object, name: str) -> Callable[..., Any] | None:
    method = getattr(cache, name, None)
    return method if callable(method) else None


def _constant_policy(
    policy_for: Callable[[ResourceKey], FreshnessPolicy],
) -> FreshnessPolicy | None:
    """The one policy ``policy_for`` gives every key, when it is known without asking."""
    resolver = getattr(policy_for, "__self__", None)
    return resolver.constant if isinstance(resolver, PolicyResolver) else None


@final
class CacheAccess:
    """The engine's single door to the cache."""

    __slots__ = (
        "_get_many",
        "_invalidate_many",
        "_isolator",
        "_limit",
        "_memory",
        "_set_if_newer",
        "_set_many",
        "_set_many_if_newer",
        "batch_reads",
        "batch_writes",
        "cache",
        "leases",
        "validates_authority",
        "validates_dependencies",
    )

    def __init__(
        self,
        cache: AsyncCache,
        *,
        max_pending_tasks: int = 8,
        isolator: PayloadIsolator | None = None,
    ) -> None:
        for required in ("get", "set", "invalidate", "clear"):
            if _method(cache, required) is None:
                raise TypeError(f"cache must implement AsyncCache: it has no {required}() method")
        self.cache = cache
        self._get_many = _method(cache, "get_many")
        self._invalidate_many = _method(cache, "invalidate_many")
        # Per-key calls on single-key caches run bounded: neither one by one nor unbounded.
        self._limit = max_pending_tasks
        self._set_many_if_newer = _method(cache, "set_many_if_newer")
        self._set_many = _method(cache, "set_many")
        self._set_if_newer = _method(cache, "set_if_newer")
        # Batch-capable caches (get_many, set_many and invalidate_many): only their batch calls
        # count in the diagnostics' cache_batch_reads / cache_batch_writes.
        batch = all(_method(cache, n) for n in ("get_many", "set_many", "invalidate_many"))
        self.batch_reads = batch and self._get_many is not None
        self.batch_writes = batch and (
            self._set_many_if_newer is not None or self._set_many is not None
        )
        self.validates_authority = getattr(cache, "validates_source_authority", False) is True
        self.validates_dependencies = getattr(cache, "validates_dependency_versions", False) is True
        self.leases: LeasingCache | None = cache if isinstance(cache, LeasingCache) else None
        # The built-in cache serves a build's fresh hits itself, in one synchronous loop (not a
        # subclass: it may override get_many, which that loop does not call).
        self._memory = cache if type(cache) is AsyncMemoryCache else None
        # B-CACHE-11: a payload read from a cache crosses a boundary. The built-in caches hand
        # out private copies themselves (the memory cache copies, Redis decodes anew); any other
        # cache's hits are copied here, unless it declares ``returns_private_copies = True``.
        private = isinstance(cache, AsyncMemoryCache) or (
            getattr(cache, "returns_private_copies", False) is True
        )
        self._isolator = None if private else isolator

    def serve(
        self,
        keys: Sequence[ResourceKey],
        now: float,
        policy_for: Callable[[ResourceKey], FreshnessPolicy],
    ) -> Served:
        """A build's first read of ``keys`` at ``now``: the fresh hits the cache can serve at
        once (each a new value restamped as served, see ``cache._serving.serve``); every other key
        comes back with its policy, for :meth:`read`. Only the built-in cache serves; with any
        other cache every key comes back.

        Raises:
            Exception: whatever the policy resolver or the cache raised.
        """
        constant = _constant_policy(policy_for)
        if self._memory is None:
            if constant is not None:
                return {}, [], dict.fromkeys(keys, constant)
            return {}, [], {key: policy_for(key) for key in keys}
        policies = constant if constant is not None else list(map(policy_for, keys))
        return self._memory._serve(keys, now, policies)

    async def first_read(
        self,
        keys: Sequence[ResourceKey],
        now: float,
        policy_for: Callable[[ResourceKey], FreshnessPolicy],
    ) -> Reading:
        """A build's one read of ``keys`` (:meth:`serve`, then :meth:`read` for the rest), each
        answer judged (see :func:`_judge`). Raises whatever the policy resolver or the cache
        raised, as it is."""
        hits, ahead, rest = self.serve(keys, now, policy_for)
        if not rest:
            return hits, ahead, [], {}, []
        if self._memory is None:
            lookups = await self.read(list(rest), now, rest)
        else:  # the built-in cache needs none of read's steps (no coroutine between)
            lookups = await self._memory.get_many(list(rest), now=now, policies=rest)
        return _take_rest(keys, rest, lookups, now, hits, ahead)

    async def read(
        self,
        keys: Sequence[ResourceKey],
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> Mapping[ResourceKey, CacheLookup]:
        """Look every key up (one batched call when the cache supports it).

        A cache that does not declare ``validates_dependency_versions = True`` gets its derived
        hits checked here (see :func:`._outdated.drop_outdated`).

        Raises:
            Exception: whatever the cache raised, as it is.
        """
        if self._get_many is not None:
            found: Mapping[ResourceKey, CacheLookup] = await self._get_many(
                keys, now=now, policies=policies
            )
        else:
            found = await get_each(self.cache, keys, now, policies, self._limit)
        if not self.validates_dependencies:
            found = await drop_outdated(self.cache, found, now, self.invalidate)
        if self._isolator is not None:
            return self._isolator.isolate_lookups(found)
        return found

    async def write(
        self, values: Sequence[SnapshotValue[Any]]
    ) -> Mapping[ResourceKey, CacheWriteResult | None]:
        """Store ``values`` with the first write method the cache has. A key that is absent from
        the result or maps to ``None`` was stored: the built-in cache returns only the writes
        that did not store; ``None`` is a plain ``set``/``set_many`` (no comparison made).

        Raises:
            Exception: whatever the cache raised (``PayloadIsolationError`` included).
        """
        if self._memory is not None:
            # The built-in cache skips the copies of stored values it would hand back: the
            # engine serves its own value and reads only a stored write's status.
            return await self._memory._write_for_build(values)
        if self._set_many_if_newer is not None:
            written: Mapping[ResourceKey, CacheWriteResult] = await self._set_many_if_newer(values)
            return written
        if self._set_many is None:
            return await write_each(self.cache, values, self._set_if_newer, self._limit)
        await self._set_many(values)
        return dict.fromkeys((value.key for value in values), None)

    async def invalidate(self, keys: Sequence[ResourceKey]) -> None:
        """Drop ``keys``: one ``invalidate_many`` call, or bounded per-key ``invalidate``."""
        if not keys:
            return
        if self._invalidate_many is not None:
            await self._invalidate_many(keys)
            return
        await run_bounded(keys, self.cache.invalidate, self._limit)

    @property
    def coordinates_fetches(self) -> bool:
        """True when the cache leases fetches across processes (see :mod:`._leases`)."""
        return self.leases is not None


@final
class BuildView:
    """What one build has read (a value) or claimed (a flight) for each key so far.

    A build reads each key once: from the cache, or from the flight it owns or joins. Its
    derivations take their dependencies from the same reading, never from a second cache read
    or another flight, so a dependency is read once per build and every derived value in a
    snapshot was computed from exactly the dependency revisions that snapshot shows. A derived
    value the build did not compute itself (a joined flight, a cache hit, a stale fallback) is
    checked against that reading before it is served (:mod:`._reconcile`).

    A session stage's view also keeps the input revisions of the derived values it serves
    without having read those inputs (see :mod:`._inputs`): they count as the stage's reading
    for those checks and are remembered by the session, but they are not entries, so a
    derivation of the stage still reads such a key itself.
    """

    __slots__ = (
        "_lock",
        "entries",
        "first_read",
        "first_stale",
        "inputs",
        "joined",
        "lost",
        "session",
    )

    def __init__(
        self,
        pinned: Mapping[ResourceKey, SnapshotValue[Any]] | None = None,
        *,
        session: bool = False,
    ) -> None:
        # key -> the value read or pinned, or the flight owned or joined
        self.entries: dict[ResourceKey, SnapshotValue[Any] | Flight] = (
            {} if pinned is None else dict(pinned)
        )
        # The values the build's first cache read served, kept as they are (not copied into
        # ``entries``: the warm path of a build is that one read).
        self.first_read: Mapping[ResourceKey, SnapshotValue[Any]] = {}
        self.first_stale = 0  # how many of them are stale (served while revalidated)
        self.joined: set[ResourceKey] = set()  # keys whose flight another build owns
        self._lock: asyncio.Lock | None = None
        # A session stage's: it keeps the inputs of the derived values it serves (._inputs).
        self.session = session
        # Inputs the served derived values were computed from (or the revision now held).
        self.inputs: dict[ResourceKey, SnapshotValue[Any]] = {}
        # Inputs of served derived values that are no longer held at all.
        self.lost: set[ResourceKey] = set()

    @property
    def empty(self) -> bool:
        """True before the build has read or claimed anything."""
        return not self.entries and not self.first_read

    def get(self, key: ResourceKey) -> SnapshotValue[Any] | Flight | None:
        """The build's reading of ``key``: a value, a flight, or None (not read yet)."""
        entry = self.entries.get(key)
        return self.first_read.get(key) if entry is None else entry

    def lock(self) -> asyncio.Lock:
        """Serializes the build's later lookups (its derivations'), so two of them never read
        or claim the same key twice; never held while waiting on a flight."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def value_of(self, key: ResourceKey) -> SnapshotValue[Any] | None:
        """The revision of ``key`` this build shows (a kept input's included), if it has one."""
        entry = self.entries.get(key)
        if entry is None:  # the first read holds values only
            entry = self.first_read.get(key)
        elif type(entry) is Flight:
            outcome = entry.outcome if entry.done else None
            entry = outcome if isinstance(outcome, SnapshotValue) else None
        if entry is None:
            return self.inputs.get(key) if self.inputs else None
        assert isinstance(entry, SnapshotValue)
        return entry


def _take_rest(
    keys: Sequence[ResourceKey],
    rest: Mapping[ResourceKey, FreshnessPolicy],
    lookups: Mapping[ResourceKey, CacheLookup],
    now: float,
    hits: dict[ResourceKey, SnapshotValue[Any]],
    ahead: list[ResourceKey],
) -> Reading:
    """Judge the keys the cache did not serve at once (see :func:`_judge`), adding to the
    served ``hits`` and ``ahead``: a :data:`Reading`."""
    needed: list[ResourceKey] = []
    candidates: dict[ResourceKey, SnapshotValue[Any]] = {}
    swr: list[ResourceKey] = []
    served_first = len(hits)
    for key, policy in rest.items():
        lookup = lookups.get(key)
        if lookup is None or lookup.value is None:  # a miss: nothing to judge
            needed.append(key)
            continue
        verdict, value = _judge(lookup, policy, now)
        if verdict is _FETCH:
            needed.append(key)
            if value is not None:
                candidates[key] = value
            continue
        hits[key] = value  # type: ignore[assignment]  # a hit: never None
        if verdict is _REFRESH_AHEAD:
            ahead.append(key)
        elif verdict is _STALE_WHILE_REVALIDATE:
            swr.append(key)
    if served_first and len(hits) > served_first:  # hits in request order again
        hits = {key: hits[key] for key in keys if key in hits}
        due = set(ahead)
        ahead = [key for key in keys if key in due]
    return hits, ahead, needed, candidates, swr


def _judge(
    lookup: CacheLookup, policy: FreshnessPolicy, now: float
) -> tuple[str, SnapshotValue[Any] | None]:
    """What a build does with a key the cache did not serve at once: ``(FRESH, served)``,
    ``(REFRESH_AHEAD, served)`` (a fresh hit due a refresh), ``(STALE_WHILE_REVALIDATE,
    served stale)``, or ``("fetch", the usable value to serve if every source fails, or
    None)``."""
    value = lookup.value
    assert value is not None  # a miss is never judged
    age = lookup.age_seconds
    if age is None:  # a custom cache need not say
        age = max(0.0, now - value.observed_at)
    if lookup.fresh:
        verdict = _REFRESH_AHEAD if policy.should_refresh_ahead(age) else _FRESH
        return verdict, value._served(now, age, False)
    if lookup.usable_stale and policy.refresh_mode is _SWR:
        return _STALE_WHILE_REVALIDATE, value._served(now, age, True)
    usable = lookup.usable_stale and policy.allow_stale_on_error
    return _FETCH, value if usable else None


def served(
    ours: SnapshotValue[Any],
    written: CacheWriteResult | None,
    clock: Clock,
    policy_for: Callable[[ResourceKey], FreshnessPolicy],
) -> SnapshotValue[Any]:
    """What a build serves after writing ``ours``: its own value, unless the cache kept a
    fresh revision of higher authority; that winner is served instead, marked with the
    source whose fetch it superseded. An older or duplicate write still serves ours."""
    if written is None or written.status is not CacheWriteStatus.IGNORED_LOWER_AUTHORITY:
        return ours
    # The kept revision (older caches report it as ``previous`` only).
    held = written.previous if written.previous is not None else written.value
    now = clock.now()
    age = max(0.0, now - held.observed_at)
    if not policy_for(ours.key).is_fresh(age):
        return ours
    metadata = ReadOnlyDict({**held.metadata, "superseded_source": ours.source})
    return held._served(now, age, False, metadata)
