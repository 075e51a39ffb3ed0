"""The pub/sub listener: wakes lease waiters and keeps tiered caches' L1s in step.

One task per cache subscribes to the event channel and dispatches each message (see
``_scripts`` for the format) to the registered handlers and to the waiters of the named keys.
Lease waiters do not depend on it: they also poll, so a missed message only delays them.

Failure detection: a dropped connection raises at once; a connection that goes silent is caught
by a ``PING`` after ``heartbeat`` seconds without traffic, and declared dead when the ``PONG``
does not come within another ``heartbeat``. The listener then resubscribes every
``reconnect_interval`` seconds until Redis answers. Every (re)subscription runs the resync
handlers, because messages published while it was down are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, final

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from ..._compat import timeout
from ._link import CONNECTION_ERRORS

MessageHandler = Callable[[str, str, list[str]], Awaitable[None]]
"""Called with ``(kind, origin, names)`` for each message."""
ResyncHandler = Callable[[], Awaitable[None]]
"""Called after each (re)subscription."""

_log = logging.getLogger("coalestra.integrations.redis")
_CLOSE_TIMEOUT = 1.0  # the longest closing the listener may take


@final
class Waiters:
    """Events of tasks waiting for news about key names."""

    __slots__ = ("_by_name",)

    def __init__(self) -> None:
        self._by_name: dict[str, set[asyncio.Event]] = {}

    def register(self, names: Iterable[str]) -> asyncio.Event:
        """An event set by any news about one of ``names`` (until :meth:`unregister`)."""
        event = asyncio.Event()
        for name in names:
            self._by_name.setdefault(name, set()).add(event)
        return event

    def unregister(self, names: Iterable[str], event: asyncio.Event) -> None:
        """Stop waking ``event`` for ``names``."""
        for name in names:
            events = self._by_name.get(name)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._by_name[name]

    def wake(self, names: Iterable[str]) -> None:
        """Wake every waiter of any of ``names``."""
        for name in names:
            for event in self._by_name.get(name, ()):
                event.set()

    def wake_all(self) -> None:
        """Wake every waiter."""
        for events in self._by_name.values():
            for event in events:
                event.set()


def parse_message(data: bytes) -> tuple[str, str, list[str]]:
    """Split a channel message into ``(kind, origin, names)``.

    Raises:
        ValueError: not a message of this format.
    """
    head, _, rest = data.decode().partition("\n")
    kind, origin = head.split(" ", 1)
    return kind, origin, rest.split("\n") if rest else []


@final
class Notifier:
    """Owns the listener task of one cache (started on first need, ended by :meth:`aclose`).

    Args:
        client: the Redis client (the listener takes one connection of its own).
        channel: the event channel.
        heartbeat: seconds of silence before a ``PING`` (and again before giving up).
        reconnect_interval: seconds between resubscription attempts.
        connect_timeout: how long :meth:`start` waits for the first subscription.
    """

    def __init__(
        self,
        client: Redis,
        channel: str,
        *,
        heartbeat: float,
        reconnect_interval: float,
        connect_timeout: float,
    ) -> None:
        self._client = client
        self._channel = channel
        self._heartbeat = heartbeat
        self._reconnect = reconnect_interval
        self._connect_timeout = connect_timeout
        self._handlers: list[MessageHandler] = []
        self._resync: list[ResyncHandler] = []
        self._task: asyncio.Task[None] | None = None
        # Set by aclose: the listener's loops end on it even when the cancellation is lost.
        # redis-py can absorb a cancel that lands in a pub/sub read (seen with redis-py 8.2 on a
        # loaded machine: the read went on and aclose waited forever).
        self._closing = False
        self._tried = asyncio.Event()  # set by the first subscription or the first failure
        self.waiters = Waiters()
        self.subscribed = False
        self.subscriptions = 0
        self.messages = 0
        self.errors = 0

    def add_handlers(self, on_message: MessageHandler, on_resync: ResyncHandler) -> None:
        """Register handlers for messages and for (re)subscriptions."""
        self._handlers.append(on_message)
        self._resync.append(on_resync)

    @property
    def running(self) -> bool:
        """True once the listener task has been started (and until it is closed)."""
        return self._task is not None

    async def start(self) -> None:
        """Start listening if not yet; wait for the first attempt to subscribe (at most the
        connect timeout), so that messages published from now on are heard.

        Never raises for an unreachable Redis: the listener keeps retrying on its own.
        """
        if self._task is None:
            self._closing = False
            self._task = asyncio.get_running_loop().create_task(self._run())
        if not self._tried.is_set():
            with contextlib.suppress(TimeoutError):
                async with timeout(self._connect_timeout):
                    await self._tried.wait()

    async def aclose(self) -> None:
        """Stop the listener and close its connection."""
        task, self._task = self._task, None
        if task is not None:
            self._closing = True
            task.cancel()
            # redis-py can swallow a cancellation that lands while it closes the subscription
            # connection: never let that hang the caller's shutdown.
            await asyncio.wait({task}, timeout=_CLOSE_TIMEOUT)
        self.subscribed = False

    async def _run(self) -> None:
        while not self._closing:
            try:
                await self._listen()
            except CONNECTION_ERRORS as error:
                self._lost(error)
            except Exception as error:  # a handler failed: log, resubscribe, resync
                _log.exception("coalestra: Redis event handling failed")
                self._lost(error)
            if not self._closing:
                await asyncio.sleep(self._reconnect)

    def _lost(self, error: BaseException) -> None:
        self.errors += 1
        self._tried.set()
        if self.subscribed:
            _log.warning("coalestra: Redis event subscription lost: %s", error)
        self.subscribed = False

    async def _listen(self) -> None:
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self._channel)
            pinged = False
            while not self._closing:
                message = await pubsub.get_message(timeout=self._heartbeat)
                if message is None:
                    if pinged:
                        raise RedisConnectionError("no answer to the subscription heartbeat")
                    await pubsub.ping()
                    pinged = True
                    continue
                pinged = False
                await self._dispatch(message)
        finally:
            with contextlib.suppress(Exception):
                async with timeout(_CLOSE_TIMEOUT):
                    await pubsub.aclose()

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "subscribe":
            # redis-py resubscribes by itself after a reconnect: each confirmation means a gap.
            self.subscribed = True
            self.subscriptions += 1
            for resync in self._resync:
                await resync()
            self.waiters.wake_all()
            self._tried.set()
        elif kind == "message":
            self.messages += 1
            await self._deliver(message["data"])

    async def _deliver(self, data: bytes) -> None:
        try:
            kind, origin, names = parse_message(data)
        except ValueError:
            return  # not ours: someone else publishing on the channel
        if kind == "c":
            self.waiters.wake_all()
        else:
            self.waiters.wake(names)
        for handler in self._handlers:
            await handler(kind, origin, names)
