"""The builder's shutdown: ``SnapshotBuilder.aclose()`` and the waits for what a bounded close
left behind (:class:`BuilderLifecycle`, a base of the builder), run by :class:`BuilderShutdown`.

``aclose()`` goes, in order: the publisher refuses new work; the engine ends (refreshes
awaited or cancelled, in-flight resolutions cancelled); the observability buffers deliver
within their budget; payload copies stop within theirs; with ``manage_lifecycle`` the
components close (sources, cache, events, metrics: each distinct object once, B-SRC-9). A
sink behind a buffer that outlived its budget stays open until
:meth:`BuilderShutdown.wait_for_observability` has seen the buffer's worker end.
"""

from __future__ import annotations

import asyncio
import inspect
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar, final

from ..core import ObservabilityShutdownTimeoutError
from ..core._closed import BUILDER_CLOSED, ClosedError
from ..core._copy_runner import PayloadCopyShutdownTimeoutError
from ..observability._buffering import check_shutdown_budget
from ._attributes import BuilderAttributes
from ._background import shutdown, wait_for_refreshes
from ._options import BuilderOptions, check_close_timeout
from ._wiring import BuilderParts

if TYPE_CHECKING:
    from ._assembly import Builds


@final
class BuilderShutdown:
    """One builder's shutdown steps and the sinks a late buffer keeps open."""

    __slots__ = ("_components_closed", "_deferred_sinks", "_options", "_parts")

    def __init__(self, parts: BuilderParts, options: BuilderOptions) -> None:
        self._parts = parts
        self._options = options
        self._components_closed = False
        # Downstream sinks whose buffer outlived the shutdown budget: closed once it ends.
        self._deferred_sinks: list[object] = []

    async def close(
        self,
        *,
        cancel_refreshes: bool,
        timeout: float | None,
        copy_budget: float,
        observability_budget: float,
    ) -> None:
        """Every step of ``aclose()`` after its arguments were checked (see its docstring)."""
        parts = self._parts
        parts.publisher._shut(BUILDER_CLOSED)
        await shutdown(
            parts.engine,
            cancel_refreshes=cancel_refreshes,
            timeout=self._options.close_timeout_seconds if timeout is None else timeout,
        )
        late: ObservabilityShutdownTimeoutError | None = None
        try:
            await parts.observability.shutdown(observability_budget)
        except ObservabilityShutdownTimeoutError as error:
            late = error
        late_copies: PayloadCopyShutdownTimeoutError | None = None
        try:
            await parts.copies.aclose(copy_budget)
        except PayloadCopyShutdownTimeoutError as error:
            late_copies = error
        if self._options.manage_lifecycle and not self._components_closed:
            self._components_closed = True
            await self._close_components(deferring=late is not None)
        if late_copies is not None:
            raise late_copies
        if late is not None:
            raise late

    def components(self) -> tuple[object, ...]:
        """What ``aclose()`` closes with ``manage_lifecycle``: sources (highest priority first),
        cache, events, metrics; each distinct object once."""
        parts = self._parts
        sources = (source.origin for source in parts.sources)
        everything = (*sources, parts.cache, parts.given_events, parts.given_metrics)
        # One object in two roles (one sink for events and metrics, say) is closed once.
        return tuple({id(part): part for part in everything}.values())

    async def _close_components(self, *, deferring: bool) -> None:
        """Close the components in order; with ``deferring``, keep the sinks behind the
        builder's buffers for :meth:`wait_for_observability`."""
        parts = self._parts
        deferred = {id(parts.given_events), id(parts.given_metrics)} if deferring else set[int]()
        for owned in self.components():
            if id(owned) in deferred and parts.observability.delivers_to(owned):
                self._deferred_sinks.append(owned)
            else:
                await _close(owned)

    async def wait_for_observability(self) -> None:
        """Wait until the buffers have ended their workers, then close the sinks left open."""
        if self._parts.observability.incomplete:
            await self._parts.observability.wait()
        deferred, self._deferred_sinks = self._deferred_sinks, []
        for sink in deferred:
            await _close(sink)


class BuilderLifecycle(BuilderAttributes):
    """``aclose()`` and the waits after it, of :class:`~._builder.SnapshotBuilder`."""

    if TYPE_CHECKING:
        _builds: Builds
        _shutdown: BuilderShutdown

    async def wait_for_refreshes(self) -> None:
        """Wait until every background refresh started so far (and meanwhile) has ended."""
        await wait_for_refreshes(self._engine)

    async def aclose(
        self,
        *,
        cancel_refreshes: bool = False,
        timeout: float | None = None,
        copy_shutdown_timeout_seconds: float | None = None,
        observability_shutdown_timeout_seconds: float | None = None,
    ) -> None:
        """Close the builder: no new builds, session stages or publications (they raise
        ``RuntimeError("SnapshotBuilder is closed")``); background refreshes are awaited (or
        cancelled with ``cancel_refreshes=True``); in-flight resolutions are cancelled.
        Idempotent.

        Then the buffers the builder made around its sinks (``buffer_observability``) deliver
        what they hold (or discard it, ``observability_drain_on_shutdown=False``) and end their
        worker threads, within ``observability_shutdown_timeout_seconds`` (default: the
        builder's option, 5 s) for all of them together.

        ``timeout`` (default: the builder's ``close_timeout_seconds``, itself ``None`` by
        default) bounds the wait for refreshes: those still running after ``timeout`` seconds
        are cancelled, so a hung refresh cannot hang ``aclose()``. ``None`` waits for them.

        Then payload copies stop (the ``"builder"`` component and the default cache's): new
        copies are refused (:class:`PayloadCopySubsystemClosedError`), callers waiting for
        copy capacity fail at once, running copies get ``copy_shutdown_timeout_seconds``
        (default: the builder's option, 5 s).

        With ``manage_lifecycle=True`` the components are closed too, each distinct one once,
        in this order: sources, cache, events, metrics (B-SRC-9). Each one's ``aclose()`` is
        awaited if it has one, else its ``close()`` runs in a worker thread (an awaitable it
        returns is awaited). A sink behind a buffer that outlived its budget stays open until
        :meth:`wait_for_observability_shutdown` has seen the buffer's worker end.

        Raises:
            PayloadCopyShutdownTimeoutError: copies still ran when their budget ran out
                (everything else is closed; see :meth:`wait_for_payload_copy_shutdown`).
                Raised rather than the observability timeout when both budgets ran out.
            ObservabilityShutdownTimeoutError: a buffer's worker was still delivering when the
                budget passed (everything else is closed; health shows
                ``observability_shutdown_incomplete=True``).
            TypeError, ValueError: a bad ``timeout``, ``copy_shutdown_timeout_seconds`` or
                ``observability_shutdown_timeout_seconds`` (checked before anything closes).
        """
        bound = check_close_timeout(timeout)
        copy_budget = self._copy_budget(copy_shutdown_timeout_seconds)
        budget = (
            self._options.observability_shutdown_timeout_seconds
            if observability_shutdown_timeout_seconds is None
            else check_shutdown_budget(
                "observability_shutdown_timeout_seconds", observability_shutdown_timeout_seconds
            )
        )
        self._builds.closed = True
        await self._shutdown.close(
            cancel_refreshes=cancel_refreshes,
            timeout=bound,
            copy_budget=copy_budget,
            observability_budget=budget,
        )

    async def wait_for_observability_shutdown(self) -> None:
        """After an :meth:`aclose` that raised ``ObservabilityShutdownTimeoutError``: wait,
        without a budget, until the builder's buffers have ended their workers, then close
        the downstream sinks left open (``manage_lifecycle=True``). Returns at once when
        nothing is pending."""
        await self._shutdown.wait_for_observability()

    async def wait_for_background_shutdown(self) -> None:
        """Wait for every straggler a bounded :meth:`aclose` left behind (payload copies still
        running, observability buffers still delivering); returns at once when there is
        none."""
        await self.wait_for_payload_copy_shutdown()
        await self.wait_for_observability_shutdown()

    async def __aenter__(self: _Builder) -> _Builder:
        """Enter an open builder; ``aclose()`` runs on exit.

        Raises:
            RuntimeError: the builder is closed ("SnapshotBuilder is closed").
        """
        if self._builds.closed:
            raise ClosedError(BUILDER_CLOSED)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


_Builder = TypeVar("_Builder", bound=BuilderLifecycle)


async def _close(owned: object) -> None:
    closer = getattr(owned, "aclose", None)
    if callable(closer):
        await closer()
        return
    closer = getattr(owned, "close", None)
    if callable(closer):
        # A synchronous close may block (files, sockets): keep it off the event loop. At
        # interpreter exit no worker thread can start any more; close inline then.
        try:
            result = await asyncio.to_thread(closer)
        except RuntimeError as error:
            if "shutdown" not in str(error):
                raise
            result = closer()
        if inspect.isawaitable(result):
            await result
