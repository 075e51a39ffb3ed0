"""Whether Redis answers, and what to do when it does not.

Every command of the cache goes through :meth:`Link.call`. A connection failure or timeout marks
Redis *down*: the call raises :class:`RedisUnavailable` (the cache then degrades: a read is a
miss, a write is skipped, a lease is granted locally), and for ``reconnect_interval`` seconds
later calls fail at once instead of each waiting for a connect timeout. The first call after
that interval tries again; its success marks Redis *up* and runs the recovery callbacks (the
tiered cache drops its L1 there, since invalidations may have been missed meanwhile).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar, final

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..._compat import timeout
from ...core import Clock

T = TypeVar("T")

_log = logging.getLogger("coalestra.integrations.redis")

CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError)
"""Failures that mean "Redis cannot be reached" (as opposed to a command it refused)."""


def _pool_exhausted(error: BaseException) -> bool:
    """True for redis-py's "no free connection in the pool" (a timeout waiting for the pool,
    raised as a ConnectionError although Redis itself may be fine)."""
    return isinstance(error, RedisConnectionError) and str(error).startswith(
        "No connection available"
    )


class RedisUnavailable(Exception):
    """Internal: this call did not reach Redis (or Redis refused it); degrade instead.

    ``sent`` is true when the command may have reached Redis (a timeout, a lost connection):
    Redis may still apply it later, which is what makes a lease request a possible ghost.
    """

    def __init__(self, message: str, *, sent: bool = False) -> None:
        super().__init__(message)
        self.sent = sent


@final
class Link:
    """The availability state of one Redis connection pool, with error counters.

    Args:
        clock: measures the reconnect interval (monotonic).
        reconnect_interval: seconds to fail fast after a connection failure.
        command_timeout: the most one command may take, waiting for a pooled connection
            included (``None``: no limit but the client's own).
    """

    __slots__ = (
        "_clock",
        "_reconnect",
        "_recovered",
        "_retry_at",
        "_timeout",
        "available",
        "errors",
        "last_error",
        "outages",
        "skipped",
    )

    def __init__(
        self, clock: Clock, reconnect_interval: float, command_timeout: float | None = None
    ) -> None:
        self._clock = clock
        self._reconnect = reconnect_interval
        self._timeout = command_timeout
        self._recovered: list[Callable[[], None]] = []
        self._retry_at = 0.0
        self.available = True
        self.errors = 0
        self.skipped = 0
        self.outages = 0
        self.last_error: str | None = None

    def on_recovered(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` each time Redis answers again after being down."""
        self._recovered.append(callback)

    async def call(self, command: Callable[[], Awaitable[T]], *, bounded: bool = True) -> T:
        """Run ``command()`` against Redis, within the command timeout when ``bounded`` (a
        long administrative walk such as ``clear()`` is not).

        Raises:
            RedisUnavailable: Redis is down (and still within the reconnect interval), could
                not be reached, or refused the command. ``CancelledError`` passes through.
        """
        if not self.available and self._clock.monotonic() < self._retry_at:
            self.skipped += 1
            raise RedisUnavailable("Redis is down; retrying later")
        try:
            if bounded and self._timeout is not None:
                async with timeout(self._timeout):
                    result = await command()
            else:
                result = await command()
        except CONNECTION_ERRORS as error:
            if _pool_exhausted(error):
                self._record(error)  # busy, not down: only this call degrades
                raise RedisUnavailable(str(error)) from error
            self._down(error)
            raise RedisUnavailable(str(error) or type(error).__name__, sent=True) from error
        except RedisError as error:
            # Reachable, but the command failed (out of memory, a busy script...): degrade
            # this call without declaring Redis down.
            self._record(error)
            raise RedisUnavailable(str(error)) from error
        if not self.available:
            self._up()
        return result

    def _record(self, error: BaseException) -> None:
        self.errors += 1
        self.last_error = f"{type(error).__name__}: {error}"

    def _down(self, error: BaseException) -> None:
        self._record(error)
        self._retry_at = self._clock.monotonic() + self._reconnect
        if self.available:
            self.available = False
            self.outages += 1
            _log.warning("coalestra: Redis unreachable, degrading to local work: %s", error)

    def _up(self) -> None:
        self.available = True
        _log.info("coalestra: Redis reachable again")
        for callback in self._recovered:
            callback()
