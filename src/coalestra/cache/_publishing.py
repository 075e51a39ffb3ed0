"""Where a publisher's revisions are written, and how they come back as results and reports.

* The default in-memory cache (exactly :class:`AsyncMemoryCache`) is written directly, minus its
  public checks, and without an await when every copy runs inline: :meth:`Publishing.write_now`
  for one revision, :meth:`Publishing.commit` for a batch (``MemoryWrites`` with ``OWNED``
  revisions: see :mod:`._memory_writes` for the copies each write makes).
* Any other cache goes through :class:`~._writers.CacheWriter` with the copies the publisher
  owes it.

The commonest publication -- stamped now, without metadata or authority rules: a small flat dict
(or an immutable payload) replacing a publication or nothing -- is built in one step
(:meth:`Publishing.offer`, :meth:`Publishing.offers`), then decided and stored here
(:meth:`Publishing.write_now`) with the very decision and copies ``MemoryWrites`` would make:
``publish`` takes a few microseconds, and every call counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, final

from ..core import CacheWriteStatus, ResourceKey, SnapshotValue
from ..core._validation import EMPTY_MAPPING, check_float, check_source_name
from ..core._values import draft_of, new_version
from ..observability._instrumentation import Instrumentation
from ._checks import check_key
from ._config import PublisherConfig
from ._copying import PayloadCopies
from ._memory import AsyncMemoryCache
from ._memory_writes import OWNED
from ._revisions import PUBLISHED, Revisions
from ._store import MUTABLE
from ._values import PublishResult, PublishStatus, ResourceUpdate
from ._writers import CacheWriter

_STATUS = {
    CacheWriteStatus.STORED: PublishStatus.PUBLISHED,
    CacheWriteStatus.IGNORED_LOWER_AUTHORITY: PublishStatus.IGNORED_LOWER_AUTHORITY,
    CacheWriteStatus.IGNORED_OLDER: PublishStatus.IGNORED_OLDER,
    CacheWriteStatus.IGNORED_DUPLICATE: PublishStatus.IGNORED_DUPLICATE,
}
_STATUS_TEXT = {status: published.value for status, published in _STATUS.items()}
_STORED = CacheWriteStatus.STORED
_FLAT_KINDS = frozenset((dict, list))
"""The payload types ``PayloadCopies.copy_owned_flat`` can accept."""

_EMPTY = EMPTY_MAPPING  # a publication's dependency versions; an update's empty metadata
_trusted = SnapshotValue._trusted


_ResultDraft = draft_of(PublishResult)
"""A PublishResult while it is filled in: every part is the library's own (a status of
_STATUS, revisions it made or holds), so results are made unchecked (~0.2 us less each)."""


@final
class Publishing:
    """Writes one publisher's revisions into its cache, then makes the results and reports.

    Args:
        config: the publisher's configuration.
        copies: the publisher's copies (for a cache other than an ``AsyncMemoryCache``).

    Attributes:
        revisions: builds the publisher's revisions.
        writer: writes into a cache other than the default in-memory one, and invalidates.
        report: the publisher's instrumentation.
    """

    __slots__ = (
        "_clock",
        "_copies",
        "_listening",
        "_memory",
        "_policies",
        "_ranked",
        "_trusted",
        "direct",
        "report",
        "revisions",
        "writer",
    )

    def __init__(self, config: PublisherConfig, copies: PayloadCopies) -> None:
        cache = config.cache
        self.revisions = Revisions(config)
        self.writer = CacheWriter(
            cache, config.clock, config.lock_stripes, config.max_pending_tasks
        )
        self.report = Instrumentation(config.metrics, config.events)
        # The sinks are fixed here, so is whether anything listens.
        self._listening = self.report if self.report.enabled else None
        self._policies = config.policy_resolver
        self._clock = config.clock
        self._copies = copies
        # AsyncMemoryCache copies what it stores and returns (other caches are not trusted to);
        # the default cache itself (no subclass) is written directly, minus its public checks.
        self._trusted = isinstance(cache, AsyncMemoryCache)
        self._memory = cache if type(cache) is AsyncMemoryCache else None
        self._ranked = config.authority_resolver is not None
        # Whether offer() may build a revision stamped now, without metadata (a plain
        # attribute, read once per publication): for the default cache, without authority rules.
        self.direct = self._memory is not None and not self._ranked

    def offer(self, key: object, value: Any, source: object) -> SnapshotValue[Any]:
        """``Revisions.checked(key, value, source, None, None)`` when :attr:`direct`: the same
        checks, clock read and policy lookup in the same order, one call instead of seven."""
        checked = key if isinstance(key, ResourceKey) else check_key(key)
        name = source.strip() if isinstance(source, str) else ""
        if not name:
            name = check_source_name(source)  # raises: not a str, or blank
        now = self._clock.now()
        if now.__class__ is not float or now - now != 0.0:  # Revisions.now(), inline
            now = check_float("clock.now()", now, minimum=None)
        # Stamped now, so its age is 0 (stale only past a negative TTL, as build() judges it).
        stale = self._policies.resolve(checked).ttl_seconds < 0.0
        return _trusted(checked, value, name, now, now, 0.0, stale, 0.0, 0, PUBLISHED, 0, _EMPTY)

    def offers(self, updates: Sequence[ResourceUpdate[Any]]) -> list[SnapshotValue[Any]]:
        """The revisions of valid updates at one clock reading: ``Revisions.build`` of each,
        in order, the commonest (stamped now, no metadata, no authority ranks) built here."""
        revisions = self.revisions
        now = revisions.now()
        build, resolve, ranked = revisions.build, self._policies.resolve, self._ranked
        offers: list[SnapshotValue[Any]] = []
        add = offers.append
        # One version for the batch (a version tells revisions of one key apart): a key's
        # updates beyond one are reduced away before anything is written, reported or returned.
        one = new_version()
        for update in updates:
            key, value, source = update.key, update.value, update.source
            # An update's empty metadata is EMPTY_MAPPING (frozen_mapping): tested once, in build.
            if ranked or update.observed_at is not None or update.metadata is not _EMPTY:
                add(build(key, value, source, update.observed_at, update.metadata, now))
                continue
            stale = resolve(key).ttl_seconds < 0.0  # age 0, as in offer()
            add(
                _trusted(
                    key, value, source, now, now, 0.0, stale, 0.0, 0, PUBLISHED, 0, _EMPTY, one
                )
            )
        return offers

    def write_now(
        self, offer: SnapshotValue[Any], force: bool, replace_equal: bool
    ) -> PublishResult | None:
        """Publish one revision into the default in-memory cache without awaiting, and report
        it; ``None`` when that is not possible (another cache, or a copy that belongs in a
        thread): then :meth:`commit` does it."""
        memory = self._memory
        if memory is None:
            return None
        memory._check_copies_open()  # what its set_many_if_newer checks first
        store = memory._store
        status, held = store.decide(offer, force=force, replace_equal=replace_equal)
        value = None
        # MemoryWrites' own staging for a stored revision replacing nothing or a revision that
        # no build shares (an immutable one, or a publication): one copy of a flat payload to
        # keep and one for the result, or nothing at all to copy (an immutable payload).
        if status is _STORED and (held is None or not (held[1] & MUTABLE and held[0].attempts)):
            copies = memory._copies
            if type(offer.value) in _FLAT_KINDS:
                value = copies.copy_owned_flat(offer)
                if value is not None:
                    store.put(offer, True, True)
            elif not copies.is_mutable(offer):
                value = offer
                store.put(offer, False)
        if value is None:  # any other write: as the cache makes it
            written = memory._writes.write_now(offer, force, replace_equal, OWNED)
            if written is None:
                return None
            status, value, previous = written
        else:
            previous = None if held is None else held[0]
        result = _ResultDraft()
        result.status = _STATUS[status]
        result.value = value
        result.previous = previous
        result.__class__ = PublishResult
        if self._listening is not None:
            self._listening.published(offer, previous, _STATUS_TEXT[status], force)
        return result  # type: ignore[no-any-return]  # retyped: a PublishResult

    async def commit_one(
        self, offer: SnapshotValue[Any], force: bool, replace_equal: bool
    ) -> PublishResult:
        """:meth:`commit` of one revision, where :meth:`write_now` could not write it."""
        results = await self.commit((offer,), force, replace_equal)
        return results[offer.key]

    async def commit(
        self, offered: Sequence[SnapshotValue[Any]], force: bool, replace_equal: bool
    ) -> dict[ResourceKey, PublishResult]:
        """Offer revisions of distinct keys to the cache, then report and return."""
        memory = self._memory
        if memory is not None:
            memory._check_copies_open()
            done = self._commit_inline(memory, offered, force, replace_equal)
            if done is not None:
                return done
            written = await memory._writes.write_all(offered, force, replace_equal, OWNED)
        else:
            written = await self.writer.write_isolated(
                offered,
                self._copies,
                trusted=self._trusted,
                force=force,
                replace_equal=replace_equal,
            )
        results: dict[ResourceKey, PublishResult] = {}
        status_of, draft, final = _STATUS, _ResultDraft, PublishResult
        for offer, (status, value, previous) in zip(offered, written, strict=True):
            result = draft()
            result.status = status_of[status]
            result.value = value
            result.previous = previous
            result.__class__ = final
            results[offer.key] = result
        report = self._listening
        if report is not None:  # after every result is made: the sinks are looked up once
            text = _STATUS_TEXT
            replaced = [outcome[2] for outcome in written]
            statuses = [text[outcome[0]] for outcome in written]
            # zip's tuples are reused as they are unpacked: no tuple per update.
            report.published_many(zip(offered, replaced, statuses, strict=True), forced=force)
        return results

    def _commit_inline(
        self,
        memory: AsyncMemoryCache,
        offered: Sequence[SnapshotValue[Any]],
        force: bool,
        replace_equal: bool,
    ) -> dict[ResourceKey, PublishResult] | None:
        """:meth:`commit` into the default cache when every revision is stored as in
        :meth:`write_now` (a small flat dict or an immutable payload replacing nothing or a
        revision no build shares): all staged, then stored in one call, then the results and
        reports made, in one pass each. ``None`` as soon as one is not: ``write_all`` then
        does the batch (a flat payload already given its private copy is copied again there,
        which nobody can tell: only the built-in copier copies so)."""
        store, copies = memory._store, memory._copies
        decided = store.decide_many(offered, force=force, replace_equal=replace_equal)
        kept: list[tuple[SnapshotValue[Any], bool, bool]] = []
        values: list[SnapshotValue[Any]] = []
        copy_flat, is_mutable = copies.copy_owned_flat, copies.is_mutable
        for offer, (status, held) in zip(offered, decided, strict=True):
            if status is not _STORED or (
                held is not None and held[1] & MUTABLE and held[0].attempts
            ):
                return None
            if type(offer.value) not in _FLAT_KINDS:
                if is_mutable(offer):
                    return None
                values.append(offer)
                kept.append((offer, False, False))
                continue
            theirs = copy_flat(offer)
            if theirs is None:
                return None
            values.append(theirs)
            kept.append((offer, True, True))
        store.put_many(kept)
        results: dict[ResourceKey, PublishResult] = {}
        draft, final, status_of = _ResultDraft, PublishResult, _STATUS[_STORED]
        for offer, value, (_stored, held) in zip(offered, values, decided, strict=True):
            result = draft()
            result.status = status_of
            result.value = value
            result.previous = None if held is None else held[0]
            result.__class__ = final
            results[offer.key] = result
        report = self._listening
        if report is not None:  # after every result is made
            one, text = report.published, _STATUS_TEXT[_STORED]
            for offer, (_stored, held) in zip(offered, decided, strict=True):
                one(offer, None if held is None else held[0], text, force)
        return results
