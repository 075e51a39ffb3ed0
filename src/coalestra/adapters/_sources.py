"""Sources made from plain functions: single-key, batch, and derived."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeAlias, final

from ..core._errors import SourceProtocolError
from ..core._keys import ResourceKey
from ..core._snapshot import Snapshot
from ..core._validation import check_bool, check_callable, check_optional_float
from ..core._values import FetchContext, SourcePayload
from ._base import CallableSourceBase, SourceSettings, check_key, check_sync_callable
from ._invoke import Invoker, check_call_shape, discard_awaitable, to_payload

if TYPE_CHECKING:
    from ..resilience import SourceResiliencePolicy

SupportsFunction: TypeAlias = Callable[[ResourceKey], bool]
"""``supports(key) -> bool``: a synchronous test."""
BatchSupportsFunction: TypeAlias = SupportsFunction
DerivedSupportsFunction: TypeAlias = SupportsFunction
FetcherFunction: TypeAlias = Callable[[ResourceKey, FetchContext], object]
"""``fetcher(key, context)``, sync or async, returning a value or a :class:`SourcePayload`."""
BatchFetcherFunction: TypeAlias = Callable[[tuple[ResourceKey, ...], FetchContext], object]
"""``fetcher(keys, context)``, sync or async, returning a mapping of key to value or payload."""
DependenciesFunction: TypeAlias = Callable[[ResourceKey], Iterable[ResourceKey]]
"""``dependencies(key)``: a synchronous function returning the keys ``key`` is derived from."""
DeriverFunction: TypeAlias = Callable[[ResourceKey, Snapshot, FetchContext], object]
"""``deriver(key, dependencies, context)``, sync or async, returning a value or a payload."""


@final
class CallableSource(CallableSourceBase):
    """A single-key source made from a ``supports`` test and a ``fetcher`` function.

    ``fetcher(key, context)`` may be ``async def`` (or an object with an async ``__call__``) or
    synchronous; which one is decided once, here. Synchronous fetchers run in a worker thread
    unless ``run_sync_in_thread=False``, which runs them inline on the event loop: only for
    non-blocking local reads. A fetcher may return a bare value (wrapped as
    ``SourcePayload(value)``) or a :class:`SourcePayload`.

    Args:
        name: the source's unique name (non-empty).
        priority: higher priorities are tried first.
        supports: synchronous ``supports(key) -> bool``.
        fetcher: ``fetcher(key, context)``.
        timeout_seconds: longest one call may run (finite, > 0), or ``None``.
        queue_timeout_seconds: longest one call may wait for capacity (finite, > 0); defaults to
            ``timeout_seconds``.
        max_concurrency: the source's own concurrency limit (>= 1), or ``None``.
        resilience_policy: the source's retry and circuit policy, or ``None``.
        cache_supports: let the builder cache ``supports`` answers.
        run_sync_in_thread: run a synchronous fetcher in a worker thread.
        blocking_io: declare that the fetcher does blocking I/O (see
            :func:`~coalestra.inspect_source_timeout_guarantee`).
        transport_timeout_seconds: the timeout the fetcher's transport enforces (finite,
            > 0; only with ``blocking_io=True``), or ``None``.

    Raises:
        TypeError: an argument has the wrong type (``supports`` or ``fetcher`` not callable,
            ``supports`` asynchronous, a flag not a ``bool``, ...).
        ValueError: an empty name, a non-finite or non-positive timeout, a limit < 1, or a
            transport timeout without ``blocking_io=True``.
    """

    __slots__ = ("_fetcher",)

    def __init__(
        self,
        *,
        name: str,
        priority: int,
        supports: SupportsFunction,
        fetcher: FetcherFunction,
        timeout_seconds: float | None = None,
        queue_timeout_seconds: float | None = None,
        max_concurrency: int | None = None,
        resilience_policy: SourceResiliencePolicy | None = None,
        cache_supports: bool = True,
        run_sync_in_thread: bool = True,
        blocking_io: bool = False,
        transport_timeout_seconds: float | None = None,
    ) -> None:
        settings = SourceSettings(
            name=name,
            priority=priority,
            timeout_seconds=timeout_seconds,
            queue_timeout_seconds=queue_timeout_seconds,
            max_concurrency=max_concurrency,
            resilience_policy=resilience_policy,
            cache_supports=cache_supports,
            run_sync_in_thread=run_sync_in_thread,
            blocking_io=blocking_io,
            transport_timeout_seconds=transport_timeout_seconds,
        )
        super().__init__(settings, supports)
        self._fetcher = Invoker(
            _fetcher_of(fetcher, ("key", "context")), run_sync_in_thread=run_sync_in_thread
        )
        self._offloaded = self._fetcher.offloaded

    async def fetch(self, key: ResourceKey, context: FetchContext) -> SourcePayload[Any]:
        """Fetch ``key`` with the fetcher.

        Raises:
            TypeError: ``key`` is not a :class:`ResourceKey`.
            Exception: whatever the fetcher raises, unchanged.
        """
        check_key("key", key)
        return to_payload(await self._fetcher(key, context))


@final
class CallableBatchSource(CallableSourceBase):
    """A batch source made from a ``supports`` test and a batch ``fetcher`` function.

    ``fetcher(keys, context)`` receives a tuple of distinct keys (never more than
    ``max_batch_size``: a larger request is fetched in consecutive chunks) and returns a mapping
    from some of those keys to values or :class:`SourcePayload` objects. Keys it omits are
    absent from the result, so they fall through to lower-priority sources. Sync/async handling
    is as for :class:`CallableSource`; one batch call takes one capacity slot.

    Args:
        name, priority, supports, timeout_seconds, queue_timeout_seconds, max_concurrency,
        resilience_policy, cache_supports, run_sync_in_thread, blocking_io,
        transport_timeout_seconds: as for :class:`CallableSource`.
        fetcher: ``fetcher(keys, context) -> Mapping[ResourceKey, value]``.
        max_batch_size: the most keys per fetcher call (>= 1), or ``None`` for no cap.
        omitted_means_not_found: a key the fetcher leaves out does not exist: it fails with
            :class:`ResourceNotFound` (never retried, a success for its circuit) instead of
            ``SourceUnavailableError`` (the default, B-SRC-4 and B-SRC-5).
        batch_window_seconds: opt-in: share this source's calls across concurrent builds
            (``0.0``: keys sent in the same loop turn; more: wait up to that long for more);
            ``None`` (the default): the builder's ``batch_window_seconds`` applies.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: an empty name, a non-finite or non-positive timeout, a limit < 1, or a
            transport timeout without ``blocking_io=True``.
    """

    __slots__ = ("_fetcher", "batch_window_seconds", "omitted_means_not_found")

    def __init__(
        self,
        *,
        name: str,
        priority: int,
        supports: BatchSupportsFunction,
        fetcher: BatchFetcherFunction,
        timeout_seconds: float | None = None,
        queue_timeout_seconds: float | None = None,
        max_concurrency: int | None = None,
        max_batch_size: int | None = None,
        resilience_policy: SourceResiliencePolicy | None = None,
        cache_supports: bool = True,
        run_sync_in_thread: bool = True,
        blocking_io: bool = False,
        transport_timeout_seconds: float | None = None,
        omitted_means_not_found: bool = False,
        batch_window_seconds: float | None = None,
    ) -> None:
        self.omitted_means_not_found = check_bool(
            "omitted_means_not_found", omitted_means_not_found
        )
        self.batch_window_seconds = check_optional_float(
            "batch_window_seconds", batch_window_seconds
        )
        settings = SourceSettings(
            name=name,
            priority=priority,
            timeout_seconds=timeout_seconds,
            queue_timeout_seconds=queue_timeout_seconds,
            max_concurrency=max_concurrency,
            max_batch_size=max_batch_size,
            resilience_policy=resilience_policy,
            cache_supports=cache_supports,
            run_sync_in_thread=run_sync_in_thread,
            blocking_io=blocking_io,
            transport_timeout_seconds=transport_timeout_seconds,
        )
        super().__init__(settings, supports)
        self._fetcher = Invoker(
            _fetcher_of(fetcher, ("keys", "context")), run_sync_in_thread=run_sync_in_thread
        )
        self._offloaded = self._fetcher.offloaded

    @property
    def max_batch_size(self) -> int | None:
        """The most keys one fetcher call receives, or ``None`` for no cap."""
        return self._settings.max_batch_size

    async def fetch_many(
        self, keys: Collection[ResourceKey], context: FetchContext
    ) -> Mapping[ResourceKey, SourcePayload[Any]]:
        """Fetch ``keys`` (duplicates are fetched once); omitted keys are absent from the result.

        Raises:
            TypeError: ``keys`` is not a collection of :class:`ResourceKey`.
            SourceProtocolError: the fetcher returned a non-mapping, or a key it was not asked
                for in that call.
            Exception: whatever the fetcher raises, unchanged.
        """
        requested = _unique_keys(keys)
        size = self._settings.max_batch_size
        if size is None or len(requested) <= size:
            if not requested:
                return {}
            return await self._fetch_chunk(tuple(requested), requested, context)
        batch = tuple(requested)
        results: dict[ResourceKey, SourcePayload[Any]] = {}
        for start in range(0, len(batch), size):
            chunk = batch[start : start + size]
            results.update(await self._fetch_chunk(chunk, frozenset(chunk), context))
        return results

    async def _fetch_chunk(
        self,
        chunk: tuple[ResourceKey, ...],
        requested: Collection[ResourceKey],
        context: FetchContext,
    ) -> dict[ResourceKey, SourcePayload[Any]]:
        raw = await self._fetcher(chunk, context)
        return check_batch_result(self.name, requested, raw)


def _fetcher_of(fetcher: object, shape: tuple[str, ...]) -> Callable[..., object]:
    """``fetcher`` when it is callable with ``shape``'s arguments (checked at construction)."""
    checked: Callable[..., object] = check_callable("fetcher", fetcher)
    check_call_shape("fetcher", checked, shape)
    return checked


def check_batch_result(
    name: str, requested: Collection[ResourceKey], raw: object
) -> dict[ResourceKey, SourcePayload[Any]]:
    """Return a batch source's result as payloads, or raise as B-SRC-4 says: the whole call
    fails on a non-mapping or on keys that were not asked for. Omitted keys are simply absent.

    Raises:
        SourceProtocolError: ``"batch source <name> must return a mapping, got <type>"`` or
            ``"batch source <name> returned unrequested resources: <keys>"``; a returned key
            that is not a :class:`ResourceKey` is listed as
            ``"'m:p:A' (a str, not a ResourceKey)"``.
    """
    if not isinstance(raw, Mapping):
        raise SourceProtocolError(
            f"batch source {name} must return a mapping, got {type(raw).__name__}"
        )
    results: dict[ResourceKey, SourcePayload[Any]] = {}
    unrequested: list[str] = []
    for key, value in raw.items():
        if key in requested:
            results[key] = to_payload(value)
        elif isinstance(key, ResourceKey):
            unrequested.append(str(key))
        else:
            # The usual slip: keys returned as their text (or a tuple) instead of the
            # ResourceKey objects asked for. Say so, or the key text looks requested.
            unrequested.append(f"{key!r} (a {type(key).__name__}, not a ResourceKey)")
    if unrequested:
        raise SourceProtocolError(
            f"batch source {name} returned unrequested resources: {', '.join(unrequested)}"
        )
    return results


def _unique_keys(keys: object) -> dict[ResourceKey, None]:
    """``keys`` without duplicates, in order, as dict keys (cheap membership tests later)."""
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
        raise TypeError(f"keys must be a collection of ResourceKey, got {type(keys).__name__}")
    unique: dict[ResourceKey, None] = {}
    for key in keys:
        unique[check_key("every item of keys", key)] = None
    return unique


@final
class CallableDerivedSource(CallableSourceBase):
    """A derived source: computes a key from a snapshot of the keys it depends on.

    ``dependencies(key)`` (synchronous) names the keys ``key`` is computed from; the builder
    resolves them through the normal priority chain and hands them to
    ``deriver(key, dependencies, context)`` as an immutable :class:`Snapshot`. The deriver is
    called like a :class:`CallableSource` fetcher (sync or async; a bare value is wrapped).

    Args:
        name, priority, supports, timeout_seconds, queue_timeout_seconds, max_concurrency,
        resilience_policy, cache_supports, run_sync_in_thread, blocking_io,
        transport_timeout_seconds: as for :class:`CallableSource`.
        dependencies: synchronous ``dependencies(key) -> Iterable[ResourceKey]``.
        deriver: ``deriver(key, dependencies_snapshot, context)``.
        observed_at_from_dependencies: opt-in: stamp a derived value that has no
            ``observed_at`` of its own with its oldest dependency's ``observed_at`` (our 0.x
            behaviour) instead of the derivation time (the default).

    Raises:
        TypeError: an argument has the wrong type (``dependencies`` asynchronous, ...).
        ValueError: an empty name, a non-finite or non-positive timeout, a limit < 1, or a
            transport timeout without ``blocking_io=True``.
    """

    __slots__ = ("_dependencies", "_deriver", "observed_at_from_dependencies")

    def __init__(
        self,
        *,
        name: str,
        priority: int,
        supports: DerivedSupportsFunction,
        dependencies: DependenciesFunction,
        deriver: DeriverFunction,
        timeout_seconds: float | None = None,
        queue_timeout_seconds: float | None = None,
        max_concurrency: int | None = None,
        resilience_policy: SourceResiliencePolicy | None = None,
        cache_supports: bool = True,
        run_sync_in_thread: bool = True,
        blocking_io: bool = False,
        transport_timeout_seconds: float | None = None,
        observed_at_from_dependencies: bool = False,
    ) -> None:
        settings = SourceSettings(
            name=name,
            priority=priority,
            timeout_seconds=timeout_seconds,
            queue_timeout_seconds=queue_timeout_seconds,
            max_concurrency=max_concurrency,
            resilience_policy=resilience_policy,
            cache_supports=cache_supports,
            run_sync_in_thread=run_sync_in_thread,
            blocking_io=blocking_io,
            transport_timeout_seconds=transport_timeout_seconds,
        )
        super().__init__(settings, supports)
        self.observed_at_from_dependencies = check_bool(
            "observed_at_from_dependencies", observed_at_from_dependencies
        )
        self._dependencies = check_sync_callable("dependencies", dependencies)
        checked: Callable[..., object] = check_callable("deriver", deriver)
        check_call_shape("deriver", checked, ("key", "dependencies", "context"))
        self._deriver = Invoker(checked, run_sync_in_thread=run_sync_in_thread)
        self._offloaded = self._deriver.offloaded

    def dependencies(self, key: ResourceKey) -> tuple[ResourceKey, ...]:
        """Return the distinct keys ``key`` is derived from, in the order the function gave.

        Raises:
            TypeError: ``key`` is not a :class:`ResourceKey`.
            SourceProtocolError: the function returned something other than an iterable of
                :class:`ResourceKey`.
        """
        check_key("key", key)
        raw = self._dependencies(key)
        if isinstance(raw, (str, bytes, ResourceKey)) or not isinstance(raw, Iterable):
            discard_awaitable(raw)
            raise SourceProtocolError(
                f"derived source {self.name!r}: dependencies({key}) must return a collection "
                f"of ResourceKey, got {type(raw).__name__}"
            )
        unique: dict[ResourceKey, None] = {}
        for item in raw:
            if not isinstance(item, ResourceKey):
                raise SourceProtocolError(
                    f"derived source {self.name!r}: dependencies({key}) returned a "
                    f"{type(item).__name__}, not a ResourceKey"
                )
            unique[item] = None
        return tuple(unique)

    async def derive(
        self, key: ResourceKey, dependencies: Snapshot, context: FetchContext
    ) -> SourcePayload[Any]:
        """Compute ``key`` from the resolved ``dependencies`` with the deriver.

        Raises:
            TypeError: ``key`` is not a :class:`ResourceKey`.
            Exception: whatever the deriver raises, unchanged.
        """
        check_key("key", key)
        return to_payload(await self._deriver(key, dependencies, context))
