"""Direct event publication into the cache: :class:`ResourcePublisher`."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, final

from ..core import (
    AsyncCache,
    AuthorityPolicyResolver,
    Clock,
    EventSink,
    FreshnessPolicyProvider,
    MetricsSink,
    ObservationPolicy,
    PayloadCopier,
    PayloadIsolator,
    ResourceKey,
)
from ..core._copy_health import check_copy_settings
from ..core._validation import (
    EMPTY_MAPPING,
    check_str,
)
from ._checks import check_flags, check_key, check_keys, check_metadata, check_updates, require
from ._config import PublisherConfig, make_isolator
from ._copying import PayloadCopies
from ._decisions import reduce_batch
from ._lifecycle import PublisherCopies
from ._publishing import Publishing
from ._values import PublishResult, ResourceUpdate


@final
class ResourcePublisher(PublisherCopies):
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
        run_payload_copies_in_thread / max_copy_concurrency: as for :class:`AsyncMemoryCache`;
            :meth:`aclose` stops these copies (publishing afterwards raises
            :class:`PayloadCopySubsystemClosedError`).

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
        run_payload_copies_in_thread: bool | None = None,
        max_copy_concurrency: int = 4,
    ) -> None:
        check_copy_settings(run_payload_copies_in_thread, max_copy_concurrency)
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
        self._config = config
        self.cache = config.cache
        self.clock = config.clock
        self.policy_resolver = config.policy_resolver
        self.metrics = config.metrics
        self.events = config.events
        self.observation_policy = config.observation_policy
        self.authority_resolver = authority_resolver
        self.max_pending_tasks = config.max_pending_tasks
        self._copies = PayloadCopies(
            config.isolator,
            run_in_thread=run_payload_copies_in_thread,
            max_concurrency=max_copy_concurrency,
            component="publisher",
        )
        self._publishing = publishing = Publishing(config, self._copies)
        self._revisions, self._writer = publishing.revisions, publishing.writer
        self._report = publishing.report
        self._refusal: str | None = None  # set when the owning builder closes

    def _shut(self, message: str) -> None:
        """Refuse every later call with ``ClosedError(message)`` (the owning builder closed:
        a write now could restart a closed cache's connections and leak them)."""
        self._refusal = message

    def _check_open(self) -> None:
        if self._refusal is not None:
            self._refuse(self._refusal)

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
        if self._refusal is not None:
            self._refuse(self._refusal)
        check_flags(force, replace_equal)
        if metadata is not None:
            check_metadata(metadata)
        if self._routed(True):
            update = ResourceUpdate(key, value, source, observed_at, EMPTY_MAPPING)
            if metadata:
                # The update holds the caller's mapping as is; the publisher copies it deeply.
                object.__setattr__(update, "metadata", metadata)
            return await self.publish_update(update, force=force, replace_equal=replace_equal)
        # Both are ours: exactly what they would do for this one update, minus the batch.
        publishing = self._publishing
        if observed_at is None and metadata is None and publishing.direct:
            offer = publishing.offer(key, value, source)
        else:
            offer = self._revisions.checked(key, value, source, observed_at, metadata)
        result = publishing.write_now(offer, force, replace_equal)
        if result is None:
            result = await publishing.commit_one(offer, force, replace_equal)
        return result

    async def publish_update(
        self, update: ResourceUpdate[Any], *, force: bool = False, replace_equal: bool = False
    ) -> PublishResult:
        """Publish one :class:`ResourceUpdate` (see :meth:`publish`).

        Raises:
            TypeError: ``update`` is not a ResourceUpdate; otherwise as :meth:`publish`.
        """
        self._check_open()
        require("update", update, ResourceUpdate, "a ResourceUpdate")
        if self._routed(False):
            results = await self.publish_many((update,), force=force, replace_equal=replace_equal)
            return results[update.key]
        check_flags(force, replace_equal)
        revisions = self._revisions
        offer = revisions.build(
            update.key,
            update.value,
            update.source,
            update.observed_at,
            update.metadata,
            revisions.now(),
        )
        publishing = self._publishing
        result = publishing.write_now(offer, force, replace_equal)
        if result is None:
            result = await publishing.commit_one(offer, force, replace_equal)
        return result

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
        check_flags(force, replace_equal)
        checked = check_updates(updates)
        # A ResourceUpdate was validated when it was made: only the revision is built here.
        winners = reduce_batch(self._publishing.offers(checked))
        if not winners:
            return {}
        return await self._publishing.commit(winners, force, replace_equal)

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

    def _routed(self, through_update: bool) -> bool:
        """True when a call must go through ``self.publish_many`` (and ``self.publish_update``
        when ``through_update``) because one was replaced: reassigned on the instance, patched
        on the class or overridden in a subclass. Otherwise the direct path does exactly what
        the chain would."""
        own = self.__dict__
        kind = type(self)
        if "publish_many" in own or kind.publish_many is not _OWN_MANY:
            return True
        return through_update and (
            "publish_update" in own or kind.publish_update is not _OWN_UPDATE
        )


_OWN_UPDATE = ResourcePublisher.publish_update
_OWN_MANY = ResourcePublisher.publish_many
