"""Source registration: each plug-in is checked once, when the builder is made.

What a source can do (single, batch or derived), its timeouts, limits and resilience policy are
read here into a :class:`RegisteredSource`; the engine never probes a source's attributes again.
The :class:`SourceChains` table caches, per key, which sources support it, in priority order.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from itertools import islice
from typing import Any, final

from ..core import (
    DiagnosticsCollector,
    FetchContext,
    ResourceKey,
    Snapshot,
    SourceProtocolError,
)
from ..core._source_timeouts import SourceTimeoutGuarantee, guarantee_of
from ..core._validation import check_bool, check_optional_float, check_optional_int
from ..resilience import ResiliencePolicyResolver, SourceResiliencePolicy


class SourceKind(Enum):
    """How a source is called."""

    SINGLE = "single"
    BATCH = "batch"
    DERIVED = "derived"


@final
@dataclass(frozen=True, slots=True)
class RegisteredSource:
    """Everything the engine needs to know about one source, read once at registration."""

    index: int
    name: str
    priority: int
    kind: SourceKind
    supports: Callable[[ResourceKey], bool]
    fetch: Callable[[ResourceKey, FetchContext], Awaitable[Any]] | None
    fetch_many: Callable[[Collection[ResourceKey], FetchContext], Awaitable[Any]] | None
    dependencies: Callable[[ResourceKey], Collection[ResourceKey]] | None
    derive: Callable[[ResourceKey, Snapshot, FetchContext], Awaitable[Any]] | None
    timeout_seconds: float | None
    queue_timeout_seconds: float | None
    max_concurrency: int | None
    max_batch_size: int | None
    cache_supports: bool
    resilience: SourceResiliencePolicy
    # What its timeout declarations guarantee, with the timeout that bounds its calls.
    timeout_guarantee: SourceTimeoutGuarantee = field(compare=False)
    origin: object = field(default=None, compare=False)  # the source object as given
    # Derived sources only: stamp a value without observed_at with the oldest dependency's
    # observed_at (opt-in ``observed_at_from_dependencies``) instead of the derivation time.
    inherit_observed_at: bool = False
    # Batch sources only (opt-in): an omitted key means "not found", not a failure (issue 16).
    omitted_means_not_found: bool = False
    # Batch sources only (opt-in): share calls across concurrent builds; None: the builder's.
    batch_window_seconds: float | None = None
    # Set for protected blocking sources only (0.6 section 4): the gate checks their calls
    # before and after (see _transport.py), and no other source's.
    transport_timeout: float | None = None


def _is_async(function: object) -> bool:
    if inspect.iscoroutinefunction(function):
        return True
    call = getattr(function, "__call__", None)  # noqa: B004 - callable objects with async __call__
    return inspect.iscoroutinefunction(call) or asyncio.iscoroutinefunction(function)


def _method(source: object, name: str, label: str, *, must_be_async: bool) -> Any:
    method = getattr(source, name, None)
    if method is None:
        return None
    if not callable(method):
        raise TypeError(f"source {label!r}: {name} must be callable")
    if must_be_async and not _is_async(method):
        raise TypeError(f"source {label!r}: {name} must be an async method (async def)")
    return method


def _kind(source: object, label: str) -> tuple[SourceKind, dict[str, Any]]:
    derive = _method(source, "derive", label, must_be_async=True)
    dependencies = _method(source, "dependencies", label, must_be_async=False)
    if derive is not None or dependencies is not None:
        if derive is None or dependencies is None:
            raise TypeError(f"source {label!r}: a derived source needs dependencies() and derive()")
        return SourceKind.DERIVED, {"derive": derive, "dependencies": dependencies}
    fetch_many = _method(source, "fetch_many", label, must_be_async=True)
    if fetch_many is not None:
        return SourceKind.BATCH, {"fetch_many": fetch_many}
    fetch = _method(source, "fetch", label, must_be_async=True)
    if fetch is not None:
        return SourceKind.SINGLE, {"fetch": fetch}
    raise TypeError(
        f"source {label!r} has no fetch(), fetch_many() or dependencies()/derive(): "
        "it implements none of SnapshotSource, BatchSnapshotSource, DerivedSource"
    )


def _identity(source: object, position: int) -> tuple[str, int, Callable[[ResourceKey], bool]]:
    name = getattr(source, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"source #{position} must have a non-empty str name, got {name!r}")
    priority = getattr(source, "priority", None)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"source {name!r}: priority must be an int, got {priority!r}")
    supports = getattr(source, "supports", None)
    if not callable(supports):
        raise TypeError(f"source {name!r}: supports must be callable")
    return name, priority, supports


def register_source(
    source: object,
    position: int,
    resilience: ResiliencePolicyResolver,
    default_timeout: float | None = None,
) -> RegisteredSource:
    """Check one source and read its capabilities; ``default_timeout`` (the builder's opt-in
    ``default_source_timeout_seconds``) bounds the calls of a source that declares no timeout.

    Raises:
        TypeError, ValueError: the source is malformed; the message names it and the attribute.
    """
    name, priority, supports = _identity(source, position)
    kind, methods = _kind(source, name)
    label = f"source {name!r}"
    timeout, queue_timeout = _timeouts(source, label)
    guarantee = guarantee_of(source, default_timeout)
    declared = getattr(source, "resilience_policy", None)
    if declared is not None and not isinstance(declared, SourceResiliencePolicy):
        raise TypeError(f"{label}: resilience_policy must be a SourceResiliencePolicy or None")
    return RegisteredSource(
        index=position,
        name=name,
        priority=priority,
        kind=kind,
        supports=supports,
        fetch=methods.get("fetch"),
        fetch_many=methods.get("fetch_many"),
        dependencies=methods.get("dependencies"),
        derive=methods.get("derive"),
        # Only the call is bounded by the default: the capacity wait keeps what the source
        # declared (B-SRC-2), as a queue wait is already bounded by the calls it waits for.
        timeout_seconds=default_timeout if timeout is None else timeout,
        queue_timeout_seconds=queue_timeout,
        max_concurrency=check_optional_int(
            f"{label} max_concurrency", getattr(source, "max_concurrency", None), minimum=1
        ),
        max_batch_size=check_optional_int(
            f"{label} max_batch_size", getattr(source, "max_batch_size", None), minimum=1
        ),
        cache_supports=check_bool(
            f"{label} cache_supports", getattr(source, "cache_supports", True)
        ),
        resilience=resilience.resolve(name, declared=declared),
        origin=source,
        timeout_guarantee=guarantee,
        transport_timeout=guarantee.transport_timeout_seconds if guarantee.protected else None,
        **_kind_options(source, kind, label),
    )


def _timeouts(source: object, label: str) -> tuple[float | None, float | None]:
    """The source's declared call timeout and capacity-queue timeout."""
    timeout = check_optional_float(
        f"{label} timeout_seconds", getattr(source, "timeout_seconds", None), positive=True
    )
    if not hasattr(source, "queue_timeout_seconds"):
        return timeout, timeout  # B-SRC-2: it queues for as long as it may run
    queued = getattr(source, "queue_timeout_seconds", None)
    return timeout, check_optional_float(f"{label} queue_timeout_seconds", queued, positive=True)


def _kind_options(source: object, kind: SourceKind, label: str) -> dict[str, Any]:
    """The opt-in settings only one kind of source has (the others keep the defaults)."""
    if kind is SourceKind.DERIVED:
        inherit = getattr(source, "observed_at_from_dependencies", False)
        return {
            "inherit_observed_at": check_bool(f"{label} observed_at_from_dependencies", inherit)
        }
    if kind is SourceKind.BATCH:
        omitted = getattr(source, "omitted_means_not_found", False)
        window = getattr(source, "batch_window_seconds", None)
        return {
            "omitted_means_not_found": check_bool(f"{label} omitted_means_not_found", omitted),
            "batch_window_seconds": check_optional_float(f"{label} batch_window_seconds", window),
        }
    return {}


def register_sources(
    sources: Iterable[object],
    resilience: ResiliencePolicyResolver,
    default_timeout: float | None = None,
) -> tuple[RegisteredSource, ...]:
    """Register every source, ordered by priority (highest first; ties keep the given order).

    Raises:
        TypeError: ``sources`` is not iterable, or a source is malformed.
        ValueError: no source (``"at least one source is required"``), or two sources share a
            name (``"source names must be unique"``).
    """
    if isinstance(sources, (str, bytes, Mapping)) or not isinstance(sources, Iterable):
        raise TypeError("sources must be an iterable of sources")
    given = list(sources)
    if not given:
        raise ValueError("at least one source is required")
    ordered = sorted(enumerate(given), key=lambda item: -_priority_of(item[1]))
    registered: list[RegisteredSource] = []
    seen: set[str] = set()
    for position, (_, source) in enumerate(ordered):
        entry = register_source(source, position, resilience, default_timeout)
        if entry.name in seen:
            raise ValueError("source names must be unique")
        seen.add(entry.name)
        registered.append(entry)
    return tuple(registered)


def _priority_of(source: object) -> int:
    priority = getattr(source, "priority", 0)
    return priority if isinstance(priority, int) and not isinstance(priority, bool) else 0


Broken = tuple[tuple[str, Exception], ...]
"""``(source name, error)`` for each source whose ``supports()`` failed for a key."""


_MAX_ORDERS = 1024
"""Distinct chains kept sorted (most builders see a handful; the bound guards odd ones)."""


@final
class SourceChains:
    """Which sources support a key, in priority order, with a bounded cache of the answers.

    Sources that opted out (``cache_supports=False``) are asked every time; the others are
    asked once per key while the key stays in the table (when it is full, its oldest sixteenth
    is dropped).
    """

    __slots__ = (
        "_asked",
        "_by_bits",
        "_cache",
        "_dynamic",
        "_enabled",
        "_live",
        "_max_entries",
        "_orders",
        "_sources",
        "hits",
        "misses",
    )

    def __init__(
        self,
        sources: tuple[RegisteredSource, ...],
        *,
        enabled: bool,
        max_entries: int | None,
    ) -> None:
        self._sources = sources
        self._enabled = check_bool("cache_source_support", enabled)
        self._max_entries = check_optional_int(
            "source_support_cache_max_entries", max_entries, minimum=1
        )
        self._dynamic = any(not source.cache_supports for source in sources)
        self._asked = tuple(source for source in sources if source.cache_supports)
        self._live = tuple(source for source in sources if not source.cache_supports)
        self._cache: dict[ResourceKey, tuple[frozenset[int], Broken]] = {}
        # One answer object per set of supporting sources (a bit per source), shared by every
        # key that gets it: most keys of a builder get one of a handful of answers, and a tuple
        # and frozenset per key cost ~300 bytes (a third of a cached entry's memory).
        self._by_bits: dict[int, tuple[frozenset[int], Broken]] = {}
        # Each distinct answer's chain, in priority order: sorted once, shared by its keys.
        self._orders: dict[frozenset[int], tuple[int, ...]] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> None:
        """Forget every cached answer."""
        self._cache.clear()
        self._orders.clear()

    def _drop_oldest(
        self, cache: dict[ResourceKey, tuple[frozenset[int], Broken]], max_entries: int
    ) -> dict[ResourceKey, tuple[frozenset[int], Broken]]:
        """Drop the oldest sixteenth of the full table (at least one entry); return the table.

        Why a batch, in a new dict: deleting a dict's first entry one at a time leaves deleted
        slots at its front that ``next(iter(...))`` walks over on every later eviction, so a
        table at its bound cost ~20 us per new key; a rebuild is one pass per sixteenth.
        """
        kept = dict(islice(cache.items(), max(1, max_entries // 16), None))
        self._cache = kept
        return kept

    def sorted_chains(
        self,
        keys: Iterable[ResourceKey],
        diag: DiagnosticsCollector,
        broken: Callable[[ResourceKey, str, Exception, int], None],
    ) -> dict[ResourceKey, tuple[int, ...]]:
        """Each key's chain (source indexes, highest priority first), counting support-cache
        hits and misses in ``diag``; ``broken(key, source, error, 0)`` for each source whose
        ``supports()`` failed (B-SRC-3: no call was made, so no attempt)."""
        hits, misses = self.hits, self.misses
        chains: dict[ResourceKey, tuple[int, ...]] = {}
        orders, chain = self._orders, self.chain
        for key in keys:
            supported, failed = chain(key)
            order = orders.get(supported)
            if order is None:
                order = tuple(sorted(supported))
                if len(orders) < _MAX_ORDERS:
                    orders[supported] = order
            chains[key] = order
            for name, error in failed:
                broken(key, name, error, 0)
        diag.support_cache_hits += self.hits - hits
        diag.support_cache_misses += self.misses - misses
        return chains

    def chain(self, key: ResourceKey) -> tuple[frozenset[int], Broken]:
        """Return ``(indices of supporting sources, (name, error) of each source whose
        supports() raised or answered something other than a bool)``."""
        if not self._enabled:
            self.misses += 1
            return self._ask(key, self._sources)
        cache = self._cache
        cached = cache.get(key)
        if cached is None:
            self.misses += 1
            cached = self._ask(key, self._asked)
            if not cached[1]:  # a supports() that raised may succeed next time: not kept
                if self._max_entries is not None and len(cache) >= self._max_entries:
                    cache = self._drop_oldest(cache, self._max_entries)
                cache[key] = cached  # shared with every key of the same answer (see _ask)
        else:
            self.hits += 1
        if not self._dynamic:
            return cached
        live = self._ask(key, self._live)
        return cached[0] | live[0], cached[1] + live[1]

    def _ask(
        self, key: ResourceKey, sources: Iterable[RegisteredSource]
    ) -> tuple[frozenset[int], Broken]:
        supported = 0  # a bit per supporting source: the answer is looked up, not built per key
        broken: list[tuple[str, Exception]] = []
        for source in sources:
            try:
                answer: object = source.supports(key)
            except Exception as error:
                broken.append((source.name, error))
                continue
            if answer is True:
                supported |= 1 << source.index
            elif answer is not False:
                wrong = SourceProtocolError(
                    f"source {source.name}: supports({key}) must return a bool, "
                    f"got {type(answer).__name__}{_async_hint(answer)}"
                )
                broken.append((source.name, wrong))
        answer_of = self._by_bits.get(supported)
        if answer_of is None:
            indexes = frozenset(i for i in range(supported.bit_length()) if supported >> i & 1)
            answer_of = self._by_bits[supported] = (indexes, ())
        return answer_of if not broken else (answer_of[0], tuple(broken))


def _async_hint(answer: object) -> str:
    """An ``async def supports`` returns a coroutine: close it (no "never awaited" warning) and
    say what went wrong."""
    if inspect.iscoroutine(answer):
        answer.close()
        return " (supports() must be synchronous, not async def)"
    return ""
