"""Cached functions: :func:`cached` turns a function into a source plus readers.

The function becomes a single-key source (a :class:`CachedFunction`) that is handed to a
builder with its other sources; :meth:`CachedFunction.bind` then gives a reader bound to that
builder. A call's arguments map to one :class:`ResourceKey`, so calls share the builder's cache,
single-flight, retries, circuits, capacity, metrics and events.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from enum import Enum
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, final, overload

from ..adapters import CallableSource
from ..core import FetchContext, ResourceKey, SourceProtocolError
from ..core._validation import check_int, check_str
from ..resilience import SourceResiliencePolicy
from ._builder import SnapshotBuilder

P = ParamSpec("P")
R = TypeVar("R")

_SCALARS = (str, int, float, bool, Decimal, Enum)
_Call = tuple[tuple[Any, ...], dict[str, Any]]


class BlockingBuilder(Protocol):
    """What a blocking reader needs of :class:`~coalestra.sync.SyncSnapshotBuilder` (named by
    its shape: the sync facade imports this package, so this package does not import it)."""

    @property
    def builder(self) -> SnapshotBuilder:
        """The async builder it drives."""
        ...

    def get(self, key: ResourceKey) -> Any:
        """Resolve one key and return its payload, blocking."""
        ...


@final
class CachedFunction(Generic[P, R]):
    """A function as a single-key source; pass it to ``SnapshotBuilder([...])`` like any source.

    Made by :func:`cached`. ``key_for(*args, **kwargs)`` is the key of one call;
    ``bind(builder)`` returns the reader that calls go through. Calling the function itself
    (``fn.function``) bypasses the builder.
    """

    __slots__ = (
        "_calls",
        "_max_calls",
        "_parameters",
        "_signature",
        "_source",
        "function",
        "key_name",
        "namespace",
        "subject",
    )

    def __init__(
        self,
        function: Callable[P, Awaitable[R]] | Callable[P, R],
        *,
        namespace: str,
        name: str,
        subject: str | None,
        source_name: str | None,
        priority: int,
        timeout_seconds: float | None,
        max_concurrency: int | None,
        resilience_policy: SourceResiliencePolicy | None,
        run_sync_in_thread: bool,
        max_remembered_calls: int,
    ) -> None:
        if not callable(function):
            raise TypeError(f"cached() needs a function, got {type(function).__name__}")
        probe = ResourceKey(namespace, name)  # checks and normalizes both parts
        self.function = function
        self.namespace, self.key_name = probe.namespace, probe.name
        self._signature = inspect.signature(function)
        self._parameters = _parameters_of(function, self._signature)
        if subject is not None and subject not in self._parameters:
            raise ValueError(f"subject {subject!r} is not a parameter of {_label(function)}")
        self.subject = subject
        self._max_calls = check_int("max_remembered_calls", max_remembered_calls, minimum=1)
        self._calls: dict[ResourceKey, _Call] = {}
        self._source = CallableSource(
            name=source_name or f"{probe.namespace}:{probe.name}",
            priority=priority,
            supports=self.supports,
            fetcher=self._fetcher(function),
            timeout_seconds=timeout_seconds,
            max_concurrency=max_concurrency,
            resilience_policy=resilience_policy,
            run_sync_in_thread=run_sync_in_thread,
        )

    # -- the source protocol (the builder reads these) ------------------------------------------

    @property
    def name(self) -> str:
        """The source name (default ``"<namespace>:<name>"``)."""
        return self._source.name

    @property
    def priority(self) -> int:
        return self._source.priority

    @property
    def timeout_seconds(self) -> float | None:
        return self._source.timeout_seconds

    @property
    def queue_timeout_seconds(self) -> float | None:
        return self._source.queue_timeout_seconds

    @property
    def max_concurrency(self) -> int | None:
        return self._source.max_concurrency

    @property
    def resilience_policy(self) -> SourceResiliencePolicy | None:
        return self._source.resilience_policy

    def supports(self, key: ResourceKey) -> bool:
        """True for this function's keys: its namespace and name."""
        return key.namespace == self.namespace and key.name == self.key_name

    async def fetch(self, key: ResourceKey, context: FetchContext) -> Any:
        """Call the function with the arguments of the call that made ``key``."""
        return await self._source.fetch(key, context)

    # -- keys and readers -----------------------------------------------------------------------

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> ResourceKey:
        """The key of the call ``function(*args, **kwargs)``.

        Arguments are bound to the signature (defaults applied); the ``subject`` parameter
        becomes the subject, every other one a qualifier named after it, and an argument that
        is ``None`` is left out. Values are rendered as key text (str, int, float, bool,
        Decimal, Enum), so ``f(42)`` and ``f("42")`` are the same call.

        Raises:
            TypeError: the arguments do not fit the signature, or one is of another type.
        """
        key, _ = self._key_and_call(args, kwargs)
        return key

    def _key_and_call(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[ResourceKey, _Call]:
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        subject = ""
        qualifiers: dict[str, Any] = {}
        for parameter, value in bound.arguments.items():
            if value is None:
                continue
            if not isinstance(value, _SCALARS):  # lists, dicts, objects: no stable text
                raise TypeError(
                    f"{_label(self.function)}: argument {parameter!r} is a "
                    f"{type(value).__name__}, which has no stable key text; pass str, int, "
                    "float, bool, Decimal, Enum or None"
                )
            if parameter == self.subject:
                text = value.value if isinstance(value, Enum) else value
                subject = text if isinstance(text, str) else str(text)
            else:
                qualifiers[parameter] = value
        key = ResourceKey(self.namespace, self.key_name, subject, qualifiers)
        return key, (bound.args, bound.kwargs)

    def remember(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> ResourceKey:
        """The key of a call, remembering its arguments for the source call (internal)."""
        key, call = self._key_and_call(args, kwargs)
        calls = self._calls
        calls.pop(key, None)  # re-inserted last: the oldest call is forgotten first
        calls[key] = call
        if len(calls) > self._max_calls:
            del calls[next(iter(calls))]
        return key

    @overload
    def bind(self, builder: SnapshotBuilder) -> CachedReader[P, R]: ...
    @overload
    def bind(self, builder: BlockingBuilder) -> SyncCachedReader[P, R]: ...

    def bind(
        self, builder: SnapshotBuilder | BlockingBuilder
    ) -> CachedReader[P, R] | SyncCachedReader[P, R]:
        """A reader of this function through ``builder`` (a :class:`SnapshotBuilder`: an async
        reader; a :class:`SyncSnapshotBuilder`: a blocking one).

        Raises:
            TypeError: ``builder`` is neither.
            ValueError: this function is not one of the builder's sources.
        """
        if isinstance(builder, SnapshotBuilder):
            self._check_registered(builder)
            return CachedReader(self, builder)
        # A SyncSnapshotBuilder, recognised by its shape: a blocking get() over a builder.
        if isinstance(getattr(builder, "builder", None), SnapshotBuilder) and callable(
            getattr(builder, "get", None)
        ):
            return SyncCachedReader(self, builder)
        raise TypeError(
            "builder must be a SnapshotBuilder or SyncSnapshotBuilder, "
            f"got {type(builder).__name__}"
        )

    def _check_registered(self, builder: SnapshotBuilder) -> None:
        if not any(source is self for source in builder.sources):
            raise ValueError(
                f"{_label(self.function)} is not a source of this builder: pass it in "
                "SnapshotBuilder([...]) first"
            )

    def _fetcher(self, function: Callable[..., Any]) -> Callable[[ResourceKey, FetchContext], Any]:
        if inspect.iscoroutinefunction(function):

            async def fetch_async(key: ResourceKey, _context: FetchContext) -> Any:
                args, kwargs = self._call_for(key)
                return await function(*args, **kwargs)

            return fetch_async

        def fetch_sync(key: ResourceKey, _context: FetchContext) -> Any:
            args, kwargs = self._call_for(key)
            return function(*args, **kwargs)

        return fetch_sync

    def _call_for(self, key: ResourceKey) -> _Call:
        call = self._calls.get(key)
        if call is None:
            raise SourceProtocolError(
                f"{_label(self.function)}: no call is known for {key}; read it through a "
                "reader (CachedFunction.bind) first"
            )
        return call

    def __repr__(self) -> str:
        return f"<CachedFunction {_label(self.function)} as {self.namespace}:{self.key_name}>"


@final
class CachedReader(Generic[P, R]):
    """Calls a :class:`CachedFunction` through a :class:`SnapshotBuilder`:
    ``await reader(*args, **kwargs)`` is ``await builder.get(fn.key_for(*args, **kwargs))``."""

    __slots__ = ("builder", "cached")

    def __init__(self, cached: CachedFunction[P, R], builder: SnapshotBuilder) -> None:
        self.cached = cached
        self.builder = builder

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """The function's result for these arguments, from the cache or one call.

        Raises:
            TypeError: the arguments do not fit (see :meth:`CachedFunction.key_for`).
            ResourceResolutionError: the call failed (as :meth:`SnapshotBuilder.get`).
        """
        key = self.cached.remember(args, kwargs)
        result: R = await self.builder.get(key)
        return result


@final
class SyncCachedReader(Generic[P, R]):
    """The blocking twin of :class:`CachedReader`, through a :class:`SyncSnapshotBuilder`."""

    __slots__ = ("builder", "cached")

    def __init__(self, cached: CachedFunction[P, R], builder: BlockingBuilder) -> None:
        self.cached = cached
        self.builder = builder

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """The function's result for these arguments (blocking; see :class:`CachedReader`)."""
        key = self.cached.remember(args, kwargs)
        result: R = self.builder.get(key)
        return result


def cached(
    namespace: str,
    name: str | None = None,
    *,
    subject: str | None = None,
    source_name: str | None = None,
    priority: int = 0,
    timeout_seconds: float | None = None,
    max_concurrency: int | None = None,
    resilience_policy: SourceResiliencePolicy | None = None,
    run_sync_in_thread: bool = True,
    max_remembered_calls: int = 10000,
) -> _Decorator:
    """Decorate a function (``async def`` or plain) to make it a cached source.

    Args:
        namespace / name: the keys' namespace and name (``name`` defaults to the function's
            ``__name__``).
        subject: the parameter whose value is the key's subject (default: none; every argument
            is a qualifier).
        source_name: the source's name in the builder (default ``"<namespace>:<name>"``).
        priority, timeout_seconds, max_concurrency, resilience_policy, run_sync_in_thread: as
            for :class:`CallableSource`.
        max_remembered_calls: how many calls' arguments are kept for source calls (the oldest
            is forgotten first).

    Raises:
        TypeError: the function takes ``*args`` or ``**kwargs``, or is not callable.
        ValueError: an empty namespace or name, or ``subject`` names no parameter.
    """
    check_str("namespace", namespace)
    return _Decorator(
        namespace=namespace,
        name=name,
        subject=subject,
        source_name=source_name,
        priority=priority,
        timeout_seconds=timeout_seconds,
        max_concurrency=max_concurrency,
        resilience_policy=resilience_policy,
        run_sync_in_thread=run_sync_in_thread,
        max_remembered_calls=max_remembered_calls,
    )


@final
class _Decorator:
    """What :func:`cached` returns: typed so that ``R`` is the result of an ``async def``."""

    __slots__ = ("_name", "_options")

    def __init__(self, *, name: str | None, **options: Any) -> None:
        self._name = name
        self._options = options

    @overload
    def __call__(self, function: Callable[P, Awaitable[R]]) -> CachedFunction[P, R]: ...
    @overload
    def __call__(self, function: Callable[P, R]) -> CachedFunction[P, R]: ...

    def __call__(self, function: Callable[P, Any]) -> CachedFunction[P, Any]:
        name = self._name if self._name is not None else getattr(function, "__name__", "")
        return CachedFunction(function, name=name, **self._options)


def _parameters_of(
    function: Callable[..., Any], signature: inspect.Signature
) -> Mapping[str, inspect.Parameter]:
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(
                f"{_label(function)}: *args and **kwargs cannot be mapped to a key; "
                "name every parameter"
            )
    return signature.parameters


def _label(function: object) -> str:
    return str(getattr(function, "__qualname__", None) or repr(function))
