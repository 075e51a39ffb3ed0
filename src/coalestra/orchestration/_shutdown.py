"""The builder's shutdown: :class:`BuilderShutdown` runs ``SnapshotBuilder.aclose()`` and the
waits for what a bounded close left behind.

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
from typing import final

from ..core import ObservabilityShutdownTimeoutError
from ..core._closed import BUILDER_CLOSED
from ..core._copy_runner import PayloadCopyShutdownTimeoutError
from ._options import BuilderOptions
from ._wiring import BuilderParts


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
        await parts.engine.shutdown(
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
