"""The in-process cache: :class:`AsyncMemoryCache`."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
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
from ..core._validation import (
    check_bool,
    check_callable,
    check_float,
    check_str,
)
from ._checks import check_collection, check_key, check_keys, check_value, check_values
from ._config import CacheConfig
from ._copying import PayloadCopies
from ._store import MUTABLE, Entry, MemoryStore, PendingRead
from ._values import CacheStats

_WRITE = "cache write of"
_READ = "cache read of"


def _explain_bad_read(keys: Collection[Any], policies: Mapping[Any, Any]) -> None:
    """Raise the precise error for the keys/policies that made a batch read fail."""
    for key in keys:
        check_key(key, "keys item")
        if key not in policies:
            raise ValueError(f"policies has no FreshnessPolicy for key {key}")
        if not isinstance(policies[key], FreshnessPolicy):
            raise TypeError(
                f"policies[{key}] must be a FreshnessPolicy, got {type(policies[key]).__name__}"
            )


@final
class AsyncMemoryCache:
    """A bounded in-process LRU cache of snapshot values, with monotonic conditional writes.

    Reads judge freshness by ``observed_at`` under the caller's policy: within TTL a hit is fresh,
    within the stale window it is a stale hit, beyond that the entry is removed (an expiration).
    A derived value (non-empty ``dependency_versions``) is served only while every dependency is
    cached at the recorded version, transitively; otherwise it is dropped and read as a miss.

    Payloads are isolated both ways: writes store a private copy, reads return a copy (deeply
    immutable payloads are shared, never copied). Large default copies run in worker threads
    (see ``run_payload_copies_in_thread``); such a payload is read by that thread while the
    write awaits, so other tasks must not mutate it until the call returns. All bookkeeping
    runs synchronously between awaits, so each operation is atomic on its event loop.

    Args:
        max_entries: the LRU bound (>= 1), or ``None`` for no bound.
        payload_copier: copies mutable payloads; ``None`` means ``copy.deepcopy``.
        run_payload_copies_in_thread: ``None`` offloads large copies made by the default copier
            only; ``True`` offloads large copies whatever the copier (it must be thread-safe);
            ``False`` copies inline always. "Large" is a container with more than 256
            top-level items.
        max_copy_concurrency: the most copies running in threads at once (>= 1).

    Raises:
        TypeError, ValueError: for an argument of the wrong type or out of range.
    """

    validates_source_authority = True
    """Conditional writes compare ``authority_rank`` before ``observed_at``."""

    __slots__ = ("_config", "_copies", "_store")

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
        self._store = MemoryStore(config.max_entries)

    def __repr__(self) -> str:
        return f"AsyncMemoryCache(max_entries={self._config.max_entries}, size={len(self._store)})"

    @property
    def max_copy_concurrency(self) -> int:
        """The most payload copies running in worker threads at once."""
        return self._config.max_copy_concurrency

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, key: ResourceKey, *, now: float, policy: FreshnessPolicy) -> CacheLookup:
        """Look ``key`` up at wall-clock ``now`` under ``policy``.

        Returns:
            A hit (``from_cache=True``, ``age_seconds = max(0, now - observed_at)``, ``stale``
            past TTL, isolated payload) or a miss (``value=None``).

        Raises:
            TypeError, ValueError: ``key``, ``now`` or ``policy`` is invalid.
            PayloadIsolationError: the stored payload could not be copied.
        """
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
        check_collection("keys", keys)
        now = check_float("now", now, minimum=None)
        if not isinstance(policies, Mapping):
            raise TypeError(f"policies must be a mapping, got {type(policies).__name__}")
        try:
            results, pending = self._store.read(keys, now, policies)
        except (KeyError, AttributeError, TypeError):
            # Validating up front would double the cost of the hot loop; diagnose on failure.
            _explain_bad_read(keys, policies)
            raise
        if pending:
            await self._finish_reads(results, pending)
        return results

    async def _finish_reads(
        self, results: dict[ResourceKey, CacheLookup], pending: list[PendingRead]
    ) -> None:
        copies = await self._copies.isolate_values(
            [value for _key, value, _fresh, _age in pending], context=_READ
        )
        for (key, _value, fresh, age), copied in zip(pending, copies, strict=True):
            results[key] = CacheLookup(copied, fresh, True, age)

    # -- writes --------------------------------------------------------------------------------

    async def set(self, value: SnapshotValue[Any]) -> None:
        """Store a private copy of ``value`` unconditionally.

        Raises:
            TypeError: ``value`` is not a SnapshotValue.
            PayloadIsolationError: its payload or metadata cannot be copied (nothing is stored).
        """
        await self.set_many((check_value(value),))

    async def set_many(self, values: Collection[SnapshotValue[Any]]) -> None:
        """Store private copies of every value unconditionally, in order, in one atomic step.

        Raises:
            TypeError: ``values`` is not a collection of SnapshotValue.
            PayloadIsolationError: a payload cannot be copied; nothing of the batch is stored.
        """
        privates = await self._copies.isolate(check_values(values), context=_WRITE)
        for private, mutable in privates:
            self._store.put(private, mutable)

    async def set_if_newer(
        self, value: SnapshotValue[Any], *, force: bool = False, replace_equal: bool = False
    ) -> CacheWriteResult:
        """Store a private copy of ``value`` unless the cache holds a revision that wins.

        Rules, in order: ``force`` stores; a cached higher ``authority_rank`` wins
        (``IGNORED_LOWER_AUTHORITY``); a lower one loses (stored, even if observed later); with
        equal ranks a newer ``observed_at`` is stored, an older one is ``IGNORED_OLDER``, an equal
        one is ``IGNORED_DUPLICATE`` unless ``replace_equal``.

        Returns:
            The status, the offered ``value`` and an isolated copy of the revision held before.

        Raises:
            TypeError: an argument has the wrong type.
            PayloadIsolationError: the payload cannot be copied (nothing is stored).
        """
        check_value(value)
        check_bool("force", force)
        check_bool("replace_equal", replace_equal)
        copies = self._copies
        if copies.is_mutable(value):
            ((private, mutable),) = await copies.isolate((value,), context=_WRITE)
        else:
            private, mutable = value, False  # immutable all through: sharing it is safe
        status, entry = self._store.put_if_newer(
            private, mutable, force=force, replace_equal=replace_equal
        )
        previous = None
        if entry is not None:
            previous = entry[0]
            if entry[1] & MUTABLE:
                (previous,) = await copies.isolate_values((previous,), context=_READ)
        return CacheWriteResult(status, value, previous)

    async def set_many_if_newer(
        self,
        values: Collection[SnapshotValue[Any]],
        *,
        force: bool = False,
        replace_equal: bool = False,
    ) -> Mapping[ResourceKey, CacheWriteResult]:
        """``set_if_newer`` for every value, decided and committed in one atomic step.

        Values are applied in order, so a later value for the same key is compared with an
        earlier one of the batch; the mapping holds the last result per key. Every payload is
        copied before anything is decided, so a copy failure writes nothing.

        Raises:
            TypeError: an argument has the wrong type.
            PayloadIsolationError: a payload cannot be copied; nothing of the batch is stored.
        """
        checked = check_values(values)
        check_bool("force", force)
        check_bool("replace_equal", replace_equal)
        privates = await self._copies.isolate(checked, context=_WRITE)
        decisions: list[tuple[CacheWriteStatus, Entry | None]] = [
            self._store.put_if_newer(private, mutable, force=force, replace_equal=replace_equal)
            for private, mutable in privates
        ]
        previous = await self._isolate_previous([entry for _status, entry in decisions])
        return {
            offered.key: CacheWriteResult(status, offered, before)
            for offered, (status, _entry), before in zip(checked, decisions, previous, strict=True)
        }

    async def _isolate_previous(
        self, entries: list[Entry | None]
    ) -> list[SnapshotValue[Any] | None]:
        """Copy the revisions that writes replaced or kept, so no caller shares cache objects."""
        mutable = [entry[0] for entry in entries if entry is not None and entry[1] & MUTABLE]
        if not mutable:
            return [None if entry is None else entry[0] for entry in entries]
        copies = iter(await self._copies.isolate_values(mutable, context=_READ))
        return [
            None if entry is None else next(copies) if entry[1] & MUTABLE else entry[0]
            for entry in entries
        ]

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
        return self._store.remove_matching(_NamespaceMatcher(namespace, name, subject))

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


@final
class _NamespaceMatcher:
    """Matches keys by namespace, name and subject, normalized like each key's own parts."""

    __slots__ = ("_name", "_namespace", "_normalized", "_subject")

    def __init__(self, namespace: str, name: str | None, subject: str | None) -> None:
        self._namespace = namespace
        self._name = name
        self._subject = subject
        # One normalization per distinct normalizer, not one per key.
        self._normalized: dict[int, tuple[str, str | None, str | None]] = {}

    def __call__(self, key: ResourceKey) -> bool:
        normalizer = key._normalizer
        parts = self._normalized.get(id(normalizer))
        if parts is None:
            parts = (
                normalizer.namespace(self._namespace),
                None if self._name is None else normalizer.name(self._name),
                None if self._subject is None else normalizer.subject(self._subject),
            )
            self._normalized[id(normalizer)] = parts
        namespace, name, subject = parts
        return (
            key.namespace == namespace
            and (name is None or key.name == name)
            and (subject is None or key.subject == subject)
        )
