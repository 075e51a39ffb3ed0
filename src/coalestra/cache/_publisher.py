"""Direct event publication into the cache: :class:`ResourcePublisher`."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, final

from ..core import (
    AsyncCache,
    AuthorityPolicyResolver,
    CacheWriteStatus,
    Clock,
    EventSink,
    FreshnessPolicyProvider,
    MetricsSink,
    ObservationPolicy,
    PayloadCopier,
    PayloadIsolator,
    ResourceKey,
    SnapshotValue,
)
from ..core._closed import ClosedError
from ..core._validation import (
    EMPTY_MAPPING,
    ReadOnlyDict,
    check_bool,
    check_float,
    check_int,
    check_optional_timestamp,
    check_source_name,
    check_str,
)
from ..observability._instrumentation import Instrumentation
from ._checks import check_collection, check_key, check_keys, require
from ._config import PublisherConfig, make_isolator
from ._copying import PayloadCopies
from ._memory import AsyncMemoryCache
from ._store import reduce_batch
from ._values import PublishResult, PublishStatus, ResourceUpdate
from ._writers import CacheWriter

_STATUS = {
    CacheWriteStatus.STORED: PublishStatus.PUBLISHED,
    CacheWriteStatus.IGNORED_LOWER_AUTHORITY: PublishStatus.IGNORED_LOWER_AUTHORITY,
    CacheWriteStatus.IGNORED_OLDER: PublishStatus.IGNORED_OLDER,
    CacheWriteStatus.IGNORED_DUPLICATE: PublishStatus.IGNORED_DUPLICATE,
}

# The publisher's own large copies (of results) share this many worker threads.
_COPY_THREADS = 4
_INGRESS = "publication of"
_EGRESS = "publication result of"


def _check_flags(force: object, replace_equal: object) -> None:
    if force.__class__ is not bool or replace_equal.__class__ is not bool:
        check_bool("force", force)
        check_bool("replace_equal", replace_equal)


def _check_updates(updates: object) -> tuple[ResourceUpdate[Any], ...]:
    checked = tuple(check_collection("updates", updates))
    for update in checked:
        require("updates item", update, ResourceUpdate, "a ResourceUpdate")
    return checked


@final
class ResourcePublisher:
    """Publishes pushed events straight into a cache, monotonically.

    A publication is compared with whatever the cache holds at write time (fetched values, stale
    fallbacks, refreshes, publications alike; the publisher keeps no record of its own): an
    older ``observed_at`` is ignored, an equal one is a duplicate, a lower-authority source never
    replaces a higher one; ``force=True`` overrides all of that, ``replace_equal=True`` lets an
    equal timestamp replace. An ignored publication's result carries the revision the cache
    keeps, as ``value`` and ``previous``. Results carry isolated copies: they share no mutable
    object with the cache or the input.

    ``publish`` calls ``self.publish_update``, which calls ``self.publish_many``; every public
    attribute, methods included, may be reassigned on an instance (the sync facade drives the
    same instance).

    Args:
        cache: where to publish (see ``coalestra.cache._writers`` for how each kind of cache is
            written).
        clock: gives "now" (``observed_at=None``, ``fetched_at`` and the observation check).
        policy_resolver: gives each key's policy, which decides whether a published value is
            ``stale`` (``age > ttl_seconds``).
        metrics: receives ``resource_publish_total`` / ``resource_invalidation_total``.
        events: receives ``resource_published`` / ``resource_invalidated``.
        observation_policy: how future ``observed_at`` values are treated (default
            ``ObservationPolicy()``).
        lock_stripes: locks of the emulated compare-and-write (>= 1).
        payload_copier: copies mutable payloads (default ``copy.deepcopy``).
        payload_isolator: a ready isolator, instead of ``payload_copier``.
        authority_resolver: gives each (key, source) its authority rank (default: rank 0).
        max_pending_tasks: the most per-key cache calls of one batch in flight (>= 1).
        health_tracker: reserved; accepted and currently unused.

    Raises:
        TypeError, ValueError: for an argument of the wrong type or out of range, or both
            ``payload_copier`` and ``payload_isolator``; ``lock_stripes < 1`` and
            ``max_pending_tasks < 1`` say "must be at least 1"; authority rules on a cache that
            does not declare ``validates_source_authority = True``.
    """

    # No __slots__: users reassign attributes, methods included, on an instance (0.5.7).

    def __init__(
        self,
        *,
        cache: AsyncCache,
        clock: Clock,
        policy_resolver: FreshnessPolicyProvider,
        metrics: MetricsSink,
        events: EventSink,
        observation_policy: ObservationPolicy | None = None,
        lock_stripes: int = 64,
        payload_copier: PayloadCopier | None = None,
        payload_isolator: PayloadIsolator | None = None,
        authority_resolver: AuthorityPolicyResolver | None = None,
        max_pending_tasks: int = 8,
        health_tracker: object | None = None,
    ) -> None:
        config = PublisherConfig(
            cache=cache,
            clock=clock,
            policy_resolver=policy_resolver,
            metrics=metrics,
            events=events,
            observation_policy=(
                ObservationPolicy() if observation_policy is None else observation_policy
            ),
            lock_stripes=lock_stripes,
            isolator=make_isolator(payload_copier, payload_isolator),
            authority_resolver=authority_resolver,
            max_pending_tasks=max_pending_tasks,
            health_tracker=health_tracker,
        )
        resolver = config.authority_resolver
        if getattr(resolver, "has_rules", resolver is not None) and (
            getattr(config.cache, "validates_source_authority", False) is not True
        ):
            raise ValueError(
                "authority policies require a cache that declares validates_source_authority = True"
            )
        self._config = config
        self.cache = config.cache
        self.clock = config.clock
        self.policy_resolver = config.policy_resolver
        self.metrics = config.metrics
        self.events = config.events
        self.observation_policy = config.observation_policy
        self.authority_resolver = authority_resolver
        self.max_pending_tasks = config.max_pending_tasks
        self._writer = CacheWriter(
            config.cache,
            clock=config.clock,
            lock_stripes=config.lock_stripes,
            max_pending_tasks=config.max_pending_tasks,
        )
        self._report = Instrumentation(config.metrics, config.events)
        self._copies = PayloadCopies(
            config.isolator, run_in_thread=None, max_concurrency=_COPY_THREADS
        )
        # AsyncMemoryCache stores private copies and returns isolated previous revisions, so
        # the publisher need not copy into it or out of it; other caches are not trusted to.
        self._trusted_cache = isinstance(config.cache, AsyncMemoryCache)
        self._refusal: str | None = None  # set when the owning builder closes

    def _shut(self, message: str) -> None:
        """Refuse every later call with ``ClosedError(message)`` (the owning builder closed:
        a write now could restart a closed cache's connections and leak them)."""
        self._refusal = message

    def _check_open(self) -> None:
        if self._refusal is not None:
            raise ClosedError(self._refusal)

    async def publish(
        self,
        key: ResourceKey,
        value: Any,
        *,
        source: str,
        observed_at: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        force: bool = False,
        replace_equal: bool = False,
    ) -> PublishResult:
        """Publish ``value`` for ``key`` as observed by ``source``.

        Args:
            key: the resource.
            value: the payload; the cache and the result get their own copies.
            source: the producer's stable name (a metric label).
            observed_at: wall-clock observation time; ``None`` means now. A timestamp slightly
                ahead of the clock is kept as given (never clamped) and the skew recorded as
                ``clock_skew_seconds`` metadata.
            metadata: extra provenance (copied).
            force: replace whatever is cached, ignoring timestamps and authority.
            replace_equal: let an equal ``observed_at`` replace the cached revision.

        Returns:
            The outcome, with the offered and the previous revision.

        Raises:
            TypeError, ValueError: an argument is invalid (nothing is written).
            SourceProtocolError: ``observed_at`` is too far in the future (nothing is written).
            PayloadIsolationError: the payload or metadata cannot be copied (nothing is written).
            RuntimeError: the builder owning this publisher is closed ("SnapshotBuilder is
                closed").
        """
        self._check_open()
        _check_flags(force, replace_equal)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping or None, got {type(metadata).__name__}")
        update = ResourceUpdate(key, value, source, observed_at, EMPTY_MAPPING)
        if metadata:
            # The update holds the caller's mapping as is; the publisher copies it deeply.
            object.__setattr__(update, "metadata", metadata)
        return await self.publish_update(update, force=force, replace_equal=replace_equal)

    async def publish_update(
        self, update: ResourceUpdate[Any], *, force: bool = False, replace_equal: bool = False
    ) -> PublishResult:
        """Publish one :class:`ResourceUpdate` (see :meth:`publish`).

        Raises:
            TypeError: ``update`` is not a ResourceUpdate; otherwise as :meth:`publish`.
        """
        self._check_open()
        require("update", update, ResourceUpdate, "a ResourceUpdate")
        results = await self.publish_many((update,), force=force, replace_equal=replace_equal)
        return results[update.key]

    async def publish_many(
        self,
        updates: Collection[ResourceUpdate[Any]],
        *,
        force: bool = False,
        replace_equal: bool = False,
    ) -> Mapping[ResourceKey, PublishResult]:
        """Publish several updates together (one batch write when the cache supports it).

        Every update is validated before anything is written. Updates for the same key are
        reduced to one first: the highest ``(authority rank, observed_at)`` wins, ties go to the
        later update. Only that winner is written, reported and returned.

        Returns:
            One result per distinct key, in the order keys first appear.

        Raises:
            TypeError, ValueError, SourceProtocolError, PayloadIsolationError: as
                :meth:`publish`, for any update; nothing of the batch is written then.
        """
        self._check_open()
        _check_flags(force, replace_equal)
        checked = _check_updates(updates)
        now = self._now()
        offered = [
            self._offer(u.key, u.value, u.source, u.observed_at, u.metadata, now) for u in checked
        ]
        winners = reduce_batch(offered)
        if not winners:
            return {}
        results = await self._commit(winners, force=force, replace_equal=replace_equal)
        return {value.key: result for value, result in zip(winners, results, strict=True)}

    async def invalidate(self, key: ResourceKey, *, reason: str = "") -> None:
        """Drop ``key`` from the cache (e.g. after a stream gap).

        Raises:
            TypeError: ``key`` is not a ResourceKey or ``reason`` is not a string.
        """
        self._check_open()
        check_key(key)
        check_str("reason", reason, allow_empty=True)
        await self._writer.invalidate(key)
        self._report.invalidation(key, reason)

    async def invalidate_many(self, keys: Collection[ResourceKey], *, reason: str = "") -> None:
        """Drop every key of ``keys`` from the cache.

        Raises:
            TypeError: ``keys`` is not a collection of ResourceKey or ``reason`` is not a string
                (nothing is dropped).
        """
        self._check_open()
        checked = check_keys(keys)
        check_str("reason", reason, allow_empty=True)
        await self._writer.invalidate_many(checked)
        for key in checked:
            self._report.invalidation(key, reason)

    def _now(self) -> float:
        now = self._config.clock.now()
        # ``now - now`` is 0.0 only for a finite float: one cheap test before the full check.
        if now.__class__ is not float or now - now != 0.0:
            now = check_float("clock.now()", now, minimum=None)
        return now

    def _offer(
        self,
        key: object,
        value: Any,
        source: object,
        observed_at: object,
        metadata: object,
        now: float,
    ) -> SnapshotValue[Any]:
        """Validate one publication and build the revision to offer (holding ``value`` as is)."""
        key = check_key(key)
        source = check_source_name(source)
        stamp = check_optional_timestamp("observed_at", observed_at)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping or None, got {type(metadata).__name__}")
        config = self._config
        skew = 0.0
        if stamp is None:
            stamp = now
        else:
            # Kept as given, never clamped to now; too far ahead raises and writes nothing.
            skew = config.observation_policy.future_skew(
                stamp, now, what=f"published observation for {key}"
            )
        context = f"{_INGRESS} {key} from {source!r}"
        extra = config.isolator.copy_metadata(metadata, context=context) if metadata else {}
        extra["published"] = True
        if skew > 0.0:
            extra["clock_skew_seconds"] = skew
        authority = config.authority_resolver
        rank = 0
        if authority is not None:
            rank = check_int("authority rank", authority.rank_for(key, source))
        # As a build would serve it now: its age, and stale once past the key's TTL.
        age = now - stamp if now > stamp else 0.0
        stale = age > config.policy_resolver.resolve(key).ttl_seconds
        # Every part is validated above, so the unvalidated constructor is safe (and ~5x cheaper).
        return SnapshotValue._trusted(
            key,
            value,
            source,
            stamp,
            now,
            age,
            stale,
            0.0,
            0,
            ReadOnlyDict(extra),
            rank,
            EMPTY_MAPPING,
        )

    async def _commit(
        self, offered: list[SnapshotValue[Any]], *, force: bool, replace_equal: bool
    ) -> list[PublishResult]:
        """Offer revisions of distinct keys to the cache, then isolate, report and return."""
        trusted = self._trusted_cache
        copies = self._copies
        # AsyncMemoryCache copies what it stores and what it returns; other caches get a
        # copy of their own, and what they return is copied again (their isolation is unknown).
        stored = offered if trusted else await copies.isolate_values(offered, context=_INGRESS)
        written, held = await self._writer.write_many(
            stored, force=force, replace_equal=replace_equal
        )
        statuses: list[CacheWriteStatus] = []
        values: list[SnapshotValue[Any]] = []
        previous: list[SnapshotValue[Any] | None] = []
        for offer in offered:
            result = written[offer.key]
            statuses.append(result.status)
            if result.status is CacheWriteStatus.STORED:
                values.append(result.value if trusted else offer)
                previous.append(result.previous)
                continue
            # Ignored: the result describes the revision the cache keeps.
            kept = result.value if trusted else result.previous or held.get(offer.key)
            values.append(offer if kept is None else kept)
            previous.append(kept)
        if not trusted:
            # One isolation call for everything, so large copies run in threads side by side.
            extra = [value for value in previous if value is not None]
            isolated = iter(await copies.isolate_values(values + extra, context=_EGRESS))
            values = [next(isolated) for _ in values]
            previous = [None if value is None else next(isolated) for value in previous]
            for index, status in enumerate(statuses):
                if status is not CacheWriteStatus.STORED:
                    values[index] = previous[index] or values[index]
        return [
            self._outcome(offer, status, value, before, force)
            for offer, status, value, before in zip(
                offered, statuses, values, previous, strict=True
            )
        ]

    def _outcome(
        self,
        offered: SnapshotValue[Any],
        status: CacheWriteStatus,
        value: SnapshotValue[Any],
        previous: SnapshotValue[Any] | None,
        force: bool,
    ) -> PublishResult:
        result = PublishResult(_STATUS[status], value, previous)
        if self._report.enabled:
            self._report.published(offered, previous, status=result.status.value, forced=force)
        return result
