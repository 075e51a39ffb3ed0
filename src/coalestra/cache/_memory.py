"""The in-process cache: :class:`AsyncMemoryCache`."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, final

from ..core import (
    CacheLookup,
    CacheWriteResult,
    CacheWriteStatus,
    FreshnessPolicy,
    FreshnessPolicyProvider,
    PayloadCopier,
    PayloadIsolator,
    ResourceKey,
    SnapshotValue,
)
from ..core._lookups import make_lookup
from ..core._validation import (
    check_bool,
    check_callable,
    check_float,
    check_str,
)
from ._checks import (
    check_collection,
    check_key,
    check_keys,
    check_value,
    check_values,
    explain_bad_read,
)
from ._config import CacheConfig
from ._copying import PayloadCopies
from ._decisions import reduce_batch
from ._lifecycle import CopyLifecycle
from ._matching import NamespaceMatcher
from ._memory_writes import BUILT, LENT, MemoryWrites
from ._serving import Served, serve
from ._store import MemoryStore, PendingRead
from ._values import CacheStats

_READ = "cache read of"


@final
class AsyncMemoryCache(CopyLifecycle):
    """A bounded in-process LRU cache of snapshot values; every write is monotonic.

    Reads judge a value's age (from ``observed_at``) under the caller's policy: up to the TTL a
    hit is fresh, up to ``max_stale_seconds`` it is a stale hit, beyond that the entry is removed
    (an expiration). A hit returns a copy of the stored revision with every field unchanged
    (``age_seconds``, ``stale``, ``from_cache`` ...); the builder restamps what it serves. A
    derived value (non-empty ``dependency_versions``) is served only while every dependency is
    cached at the recorded version, transitively; otherwise it is dropped and read as a miss.

    Writes follow the monotonic rules (see :meth:`set_if_newer`); ``set`` and ``set_many`` are
    ``set_if_newer`` and ``set_many_if_newer`` without the result. Decisions are made
    synchronously (atomically on the event loop) and copies outside them: only a candidate
    that currently wins is copied, and the decision is checked again after the copy.

    Payloads are isolated both ways: writes store a private copy, results and reads return
    copies (with the built-in copier deeply immutable payloads are shared; a custom copier is
    called for every payload). Metadata is always copied with ``copy.deepcopy``. Copies in
    worker threads read the caller's payload while the write awaits, so other tasks must not
    mutate it until the call returns.

    Args:
        max_entries: the LRU bound (>= 1), or ``None`` for no bound.
        payload_copier: copies payloads; ``None`` means ``copy.deepcopy``.
        run_payload_copies_in_thread: ``None`` (reads ``True`` without a custom copier, else
            ``False``) offloads large copies made by the built-in copier only; ``True`` offloads
            every copy whatever its size and whatever the copier (it must be thread-safe);
            ``False`` copies inline always.
        max_copy_concurrency: the most copies running in threads at once (>= 1).

    ``aclose()`` (or ``aclose_payload_copies()``) stops the worker-thread copies; reads and
    writes then raise :class:`PayloadCopySubsystemClosedError` (``component="cache"``).

    Raises:
        TypeError, ValueError: for an argument of the wrong type or out of range.
    """

    validates_source_authority = True
    """Conditional writes compare ``authority_rank`` before ``observed_at``."""

    validates_dependency_versions = True
    """Reads check derived values' ``dependency_versions`` themselves, transitively."""

    __slots__ = ("_config", "_copies", "_store", "_writes")

    def __init__(
        self,
        *,
        max_entries: int | None = 10000,
        payload_copier: PayloadCopier | None = None,
        run_payload_copies_in_thread: bool | None = None,
        max_copy_concurrency: int = 4,
    ) -> None:
        config = CacheConfig(
            max_entries, payload_copier, run_payload_copies_in_thread, max_copy_concurrency
        )
        self._config = config
        self._copies = PayloadCopies(
            PayloadIsolator(config.payload_copier),
            run_in_thread=config.run_payload_copies_in_thread,
            max_concurrency=config.max_copy_concurrency,
        )
        self._store = MemoryStore(config.max_entries, self._copies.copy_flags)
        self._writes = MemoryWrites(self._store, self._copies)

    def __repr__(self) -> str:
        return f"AsyncMemoryCache(max_entries={self._config.max_entries}, size={len(self._store)})"

    @property
    def max_entries(self) -> int | None:
        """The LRU bound, or ``None``."""
        return self._config.max_entries

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> CacheLookup:
        """Look ``key`` up at wall-clock ``now`` under ``policy``.

        Returns:
            A hit (a copy of the stored revision, every field unchanged; the lookup's
            ``age_seconds`` is ``max(0, now - observed_at)``) or a miss (``value=None``).

        Raises:
            TypeError, ValueError: ``key``, ``now`` or ``policy`` is invalid.
            PayloadIsolationError: the stored payload could not be copied.
        """
        self._check_copies_open()
        check_key(key)
        now = check_float("now", now, minimum=None)
        if not isinstance(policy, FreshnessPolicy):
            raise TypeError(f"policy must be a FreshnessPolicy, got {type(policy).__name__}")
        results, pending = self._store.read((key,), now, {key: policy})
        if pending:
            await self._finish_reads(results, pending)
        return results[key]

    async def get_many(
        self,
        keys: Collection[ResourceKey],
        *,
        now: float,
        policies: Mapping[ResourceKey, FreshnessPolicy],
    ) -> Mapping[ResourceKey, CacheLookup]:
        """Look every key up at ``now``, each under ``policies[key]``, in one atomic step.

        Returns:
            A new mapping with one lookup per distinct key, in the order of ``keys``.

        Raises:
            TypeError, ValueError: ``keys`` is not a collection of ResourceKey, ``now`` is not
                finite, or ``policies`` lacks a FreshnessPolicy for a key.
            PayloadIsolationError: a stored payload could not be copied.
        """
        self._check_copies_open()
        check_collection("keys", keys)
        now = check_float("now", now, minimum=None)
        if not isinstance(policies, Mapping):
            raise TypeError(f"policies must be a mapping, got {type(policies).__name__}")
        try:
            results, pending = self._store.read(keys, now, policies)
        except (KeyError, AttributeError, TypeError):
            # Validating up front would double the cost of the hot loop; diagnose on failure.
            explain_bad_read(keys, policies)
            raise
        if pending:
            await self._finish_reads(results, pending)
        return results

    def _serve(
        self,
        keys: Sequence[ResourceKey],
        now: float,
        policies: FreshnessPolicy | Sequence[FreshnessPolicy],
    ) -> Served:
        """A build's read (internal, for the engine): see :func:`._serving.serve`. Synchronous:
        the fresh hits need no await; the engine reads the other keys with :meth:`get_many`."""
        return serve(self._store, keys, now, policies, self._copies.isolator.payload_copier)

    async def _finish_reads(
        self, results: dict[ResourceKey, CacheLookup], pending: list[PendingRead]
    ) -> None:
        copies = await self._copies.isolate_values(
            [value for _key, value, _fresh, _age in pending], context=_READ
        )
        for (key, _value, fresh, age), copied in zip(pending, copies, strict=True):
            results[key] = make_lookup(copied, fresh, True, age)

    # -- writes --------------------------------------------------------------------------------

    async def set(self, value: SnapshotValue[Any]) -> None:
        """Store a private copy of ``value`` unless the cache holds a revision that wins
        (exactly :meth:`set_if_newer`, without the result).

        Raises:
            TypeError: ``value`` is not a SnapshotValue.
            PayloadIsolationError: its payload or metadata cannot be copied (nothing is stored).
        """
        await self.set_if_newer(check_value(value))

    async def set_many(self, values: Collection[SnapshotValue[Any]]) -> None:
        """:meth:`set_many_if_newer`, without the results.

        Raises:
            TypeError: ``values`` is not a collection of SnapshotValue.
            PayloadIsolationError: a winning payload cannot be copied; nothing is stored.
        """
        await self.set_many_if_newer(values)

    async def set_if_newer(
        self, value: SnapshotValue[Any], *, force: bool = False, replace_equal: bool = False
    ) -> CacheWriteResult:
        """Store a private copy of ``value`` unless the cache holds a revision that wins.

        Rules, in order: nothing cached or ``force``: stored; a cached higher ``authority_rank``
        wins (``IGNORED_LOWER_AUTHORITY``); a lower one loses (stored, even if observed later);
        with equal ranks an older ``observed_at`` is ``IGNORED_OLDER``, an equal one is
        ``IGNORED_DUPLICATE`` unless ``replace_equal``, a newer one is stored.

        Returns:
            Stored: a copy of the stored value and the replaced revision (or ``None``).
            Ignored: the revision the cache keeps, as both ``value`` and ``previous``.

        Raises:
            TypeError: an argument has the wrong type.
            PayloadIsolationError: a winning payload cannot be copied (nothing is stored).
        """
        self._check_copies_open()
        check_value(value)
        check_bool("force", force)
        check_bool("replace_equal", replace_equal)
        written = self._writes.write_now(value, force, replace_equal, LENT)
        if written is None:
            return (await self._write((value,), force=force, replace_equal=replace_equal))[
                value.key
            ]
        return CacheWriteResult(*written)

    async def set_many_if_newer(
        self,
        values: Collection[SnapshotValue[Any]],
        *,
        force: bool = False,
        replace_equal: bool = False,
    ) -> Mapping[ResourceKey, CacheWriteResult]:
        """``set_if_newer`` for every value, decided and committed together.

        Several values for one key are first reduced to one: the highest ``authority_rank``,
        then the newest ``observed_at``, then the later value. Winning payloads are all copied
        before anything is committed, so a copy failure writes nothing.

        Returns:
            One result per distinct key, in order of first appearance.

        Raises:
            TypeError: an argument has the wrong type.
            PayloadIsolationError: a winning payload cannot be copied; nothing is stored.
        """
        self._check_copies_open()
        checked = check_values(values)
        check_bool("force", force)
        check_bool("replace_equal", replace_equal)
        return await self._write(reduce_batch(checked), force=force, replace_equal=replace_equal)

    async def _write_for_build(
        self, values: Collection[SnapshotValue[Any]]
    ) -> Mapping[ResourceKey, CacheWriteResult]:
        """:meth:`set_many_if_newer` as the builder writes what it fetched: decided, stored and
        counted alike, but its values are handed over as the builder's own (``BUILT`` in
        :mod:`._memory_writes`): with the built-in copier the cache keeps each value itself.

        Returns:
            The result of each write that did not store (a losing write's carries a copy of the
            revision kept); a stored key has none: the builder serves its own value then, and
            reads nothing else of a stored write.
        """
        self._check_copies_open()
        candidates = reduce_batch(values)  # the builder's own values: no checks needed
        lost = await self._writes.write_built(candidates)
        if lost is not None:
            return lost
        written = await self._writes.write_all(candidates, False, False, BUILT)
        stored = CacheWriteStatus.STORED
        return {
            value.key: CacheWriteResult(status, value, previous)
            for status, value, previous in written
            if status is not stored
        }

    async def _write(
        self,
        candidates: Sequence[SnapshotValue[Any]],
        *,
        force: bool,
        replace_equal: bool,
    ) -> dict[ResourceKey, CacheWriteResult]:
        """Write candidates of distinct keys (see :mod:`._memory_writes`): a result per key."""
        results: dict[ResourceKey, CacheWriteResult] = {}
        for status, value, previous in await self._writes.write_all(
            candidates, force, replace_equal, LENT
        ):
            results[value.key] = CacheWriteResult(status, value, previous)
        return results

    # -- removal and housekeeping --------------------------------------------------------------

    async def invalidate(self, key: ResourceKey) -> None:
        """Drop ``key`` (nothing happens if it is not cached).

        Raises:
            TypeError: ``key`` is not a ResourceKey.
        """
        self._store.remove(check_key(key))

    async def invalidate_many(self, keys: Collection[ResourceKey]) -> None:
        """Drop every key of ``keys``.

        Raises:
            TypeError: ``keys`` is not a collection of ResourceKey (nothing is dropped).
        """
        for key in check_keys(keys):
            self._store.remove(key)

    async def invalidate_matching(
        self, predicate: Callable[[ResourceKey], bool]
    ) -> tuple[ResourceKey, ...]:
        """Drop every cached key for which ``predicate(key)`` is true.

        Returns:
            The removed keys, least recently used first.

        Raises:
            TypeError: ``predicate`` is not callable.
            Exception: whatever ``predicate`` raises; nothing is dropped then.
        """
        check_callable("predicate", predicate)
        return self._store.remove_matching(predicate)

    async def invalidate_namespace(
        self, namespace: str, *, name: str | None = None, subject: str | None = None
    ) -> tuple[ResourceKey, ...]:
        """Drop every key in ``namespace`` (narrowed to ``name`` and/or ``subject`` if given).

        Each part is normalized the way each cached key was, so ``"Tenant-A"`` matches keys made
        with a case-insensitive normalizer.

        Returns:
            The removed keys, least recently used first.

        Raises:
            TypeError, ValueError: ``namespace`` or ``name`` is not a non-empty string, or
                ``subject`` is not a string.
        """
        check_str("namespace", namespace)
        if name is not None:
            check_str("name", name)
        if subject is not None:
            check_str("subject", subject, allow_empty=True)
        return self._store.remove_matching(NamespaceMatcher(namespace, name, subject))

    async def prune(
        self, *, now: float, policy_resolver: FreshnessPolicyProvider
    ) -> tuple[ResourceKey, ...]:
        """Drop every entry past its TTL plus stale window at ``now``.

        Returns:
            The removed keys (counted as expirations).

        Raises:
            TypeError, ValueError: ``now`` is not finite, ``policy_resolver`` has no
                ``resolve(key)``, or it returns something other than a FreshnessPolicy.
        """
        now = check_float("now", now, minimum=None)
        if not isinstance(policy_resolver, FreshnessPolicyProvider):
            raise TypeError("policy_resolver must provide resolve(key) -> FreshnessPolicy")
        return self._store.prune(now, policy_resolver)

    async def size(self) -> int:
        """The number of entries held."""
        return len(self._store)

    async def stats(self) -> CacheStats:
        """The current statistics (a cheap synchronous read of counters)."""
        return self._store.stats()

    async def clear(self) -> None:
        """Drop every entry; statistics keep counting."""
        self._store.clear()
