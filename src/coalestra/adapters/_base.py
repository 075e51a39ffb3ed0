"""What the three callable adapters share: one validated settings object and ``supports``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, final

from ..core._errors import SourceProtocolError
from ..core._keys import ResourceKey
from ..core._validation import (
    check_bool,
    check_callable,
    check_int,
    check_optional_float,
    check_optional_int,
    check_str,
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
        ValueError: an empty ``name``, a timeout that is not a finite number > 0, or a limit < 1.
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

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        check_str("name", self.name)
        check_int("priority", self.priority, minimum=None)
        for field_name in ("timeout_seconds", "queue_timeout_seconds"):
            value = check_optional_float(field_name, getattr(self, field_name), positive=True)
            set_(self, field_name, value)
        check_optional_int("max_concurrency", self.max_concurrency, minimum=1)
        check_optional_int("max_batch_size", self.max_batch_size, minimum=1)
        check_resilience_policy(self.resilience_policy)
        check_bool("cache_supports", self.cache_supports)
        check_bool("run_sync_in_thread", self.run_sync_in_thread)


class CallableSourceBase:
    """Settings properties and the ``supports`` test shared by the callable adapters.

    Every property is read-only, so the builder can read them once at registration.
    """

    __slots__ = ("_settings", "_supports")

    def __init__(self, settings: SourceSettings, supports: object) -> None:
        self._settings = settings
        self._supports = check_sync_callable("supports", supports)

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
        """Longest one call may wait for a capacity slot, or ``None``."""
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
