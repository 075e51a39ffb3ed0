"""What the three callable adapters share: one validated settings object and ``supports``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

from ..core._errors import SourceProtocolError
from ..core._keys import ResourceKey
from ..core._source_timeouts import check_transport_timeout
from ..core._validation import (
    check_bool,
    check_callable,
    check_float,
    check_int,
    check_source_name,
)
from ._invoke import discard_awaitable, is_async_callable

if TYPE_CHECKING:
    from ..resilience import SourceResiliencePolicy


def check_resilience_policy(value: object) -> SourceResiliencePolicy | None:
    """Return ``value`` when it is a ``SourceResiliencePolicy`` or ``None``.

    ``coalestra.resilience`` is imported here, at construction, not at module import: it keeps
    the adapters importable on their own and rules out an import cycle.

    Raises:
        TypeError: ``value`` is something else.
    """
    if value is None:
        return None
    module = importlib.import_module("coalestra.resilience")
    policy_type: type[SourceResiliencePolicy] = module.SourceResiliencePolicy
    if not isinstance(value, policy_type):
        raise TypeError(
            "resilience_policy must be a SourceResiliencePolicy or None, "
            f"got {type(value).__name__}"
        )
    return value


def check_sync_callable(name: str, value: object) -> Callable[..., object]:
    """Return ``value`` when it is a callable that is not ``async def``.

    Raises:
        TypeError: ``value`` is not callable, or is asynchronous.
    """
    checked: Callable[..., object] = check_callable(name, value)
    if is_async_callable(checked):
        raise TypeError(f"{name} must be a synchronous callable, got an async function")
    return checked


@final
@dataclass(frozen=True, slots=True)
class SourceSettings:
    """The validated configuration of a callable adapter, built once in its constructor.

    The fields mean what the adapters' keyword arguments of the same names mean; timeouts and
    limits are enforced by the builder's call gate, not by the adapter.

    Raises:
        TypeError: a field has the wrong type.
        ValueError: a blank ``name`` (``"source name cannot be empty"``), a timeout <= 0
            (``"<field> must be positive"``) or not finite, or a limit < 1
            (``"<field> must be at least 1 or None"``).
    """

    name: str
    priority: int
    timeout_seconds: float | None = None
    queue_timeout_seconds: float | None = None
    max_concurrency: int | None = None
    max_batch_size: int | None = None
    resilience_policy: SourceResiliencePolicy | None = None
    cache_supports: bool = True
    run_sync_in_thread: bool = True
    blocking_io: bool = False
    transport_timeout_seconds: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "name", check_source_name(self.name))
        check_int("priority", self.priority, minimum=None)
        timeout = _check_timeout("timeout_seconds", self.timeout_seconds)
        set_(self, "timeout_seconds", timeout)
        queued = _check_timeout("queue_timeout_seconds", self.queue_timeout_seconds)
        # B-SRC-2: the capacity wait defaults to the call's own timeout.
        set_(self, "queue_timeout_seconds", timeout if queued is None else queued)
        _check_limit("max_concurrency", self.max_concurrency)
        _check_limit("max_batch_size", self.max_batch_size)
        check_resilience_policy(self.resilience_policy)
        check_bool("cache_supports", self.cache_supports)
        check_bool("run_sync_in_thread", self.run_sync_in_thread)
        blocking = check_bool("blocking_io", self.blocking_io)
        transport = check_transport_timeout(self.transport_timeout_seconds, blocking)
        set_(self, "transport_timeout_seconds", transport)


def _check_timeout(name: str, value: object) -> float | None:
    """``None``, or a finite number > 0 as a float (``"<name> must be positive"``)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or None, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive")
    return check_float(name, value, positive=True)


def _check_limit(name: str, value: object) -> None:
    """``None``, or an int >= 1 (``"<name> must be at least 1 or None"``)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1 or None")


class CallableSourceBase:
    """Settings properties and the ``supports`` test shared by the callable adapters.

    Every property is read-only, so the builder can read them once at registration.
    """

    __slots__ = ("_offloaded", "_settings", "_supports")

    def __init__(self, settings: SourceSettings, supports: object) -> None:
        self._settings = settings
        self._supports = check_sync_callable("supports", supports)
        self._offloaded = False  # set by the subclass once its function's kind is known

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, priority={self.priority})"

    @property
    def name(self) -> str:
        """The source's unique, stable name."""
        return self._settings.name

    @property
    def priority(self) -> int:
        """Higher priorities are tried first."""
        return self._settings.priority

    @property
    def timeout_seconds(self) -> float | None:
        """Longest one call may run (the build deadline may cut it shorter), or ``None``."""
        return self._settings.timeout_seconds

    @property
    def queue_timeout_seconds(self) -> float | None:
        """Longest one call may wait for a capacity slot (default: ``timeout_seconds``), or
        ``None``."""
        return self._settings.queue_timeout_seconds

    @property
    def max_concurrency(self) -> int | None:
        """The source's own concurrency limit, or ``None`` for the builder-wide limit only."""
        return self._settings.max_concurrency

    @property
    def resilience_policy(self) -> SourceResiliencePolicy | None:
        """The source's retry and circuit policy, or ``None`` for the builder's."""
        return self._settings.resilience_policy

    @property
    def cache_supports(self) -> bool:
        """True when the builder may cache ``supports(key)`` answers."""
        return self._settings.cache_supports

    @property
    def run_sync_in_thread(self) -> bool:
        """True when synchronous functions run in worker threads (False: inline on the loop)."""
        return self._settings.run_sync_in_thread

    @property
    def blocking_io(self) -> bool:
        """True when the source declared that its function does blocking I/O."""
        return self._settings.blocking_io

    @property
    def blocking_io_offloaded(self) -> bool:
        """True when the function runs in a worker thread (``run_sync_in_thread`` and the
        function is not ``async``): blocking I/O in it never stalls the event loop."""
        return self._offloaded

    @property
    def transport_timeout_seconds(self) -> float | None:
        """The timeout the function's transport enforces (declared with ``blocking_io``), or
        ``None``."""
        return self._settings.transport_timeout_seconds

    def supports(self, key: ResourceKey) -> bool:
        """Return whether this source can serve ``key`` (the ``supports`` function's answer).

        Raises:
            TypeError: ``key`` is not a :class:`ResourceKey`.
            SourceProtocolError: the function returned something other than a ``bool``.
        """
        check_key("key", key)
        result = self._supports(key)
        if result is True or result is False:
            return result
        discard_awaitable(result)
        raise SourceProtocolError(
            f"source {self.name!r}: supports({key}) must return a bool, got {type(result).__name__}"
        )


def check_key(name: str, value: object) -> ResourceKey:
    """Return ``value`` when it is a :class:`ResourceKey`.

    Raises:
        TypeError: it is not.
    """
    if not isinstance(value, ResourceKey):
        raise TypeError(f"{name} must be a ResourceKey, got {type(value).__name__}")
    return value
