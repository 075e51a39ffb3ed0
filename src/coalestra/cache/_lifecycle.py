"""The payload-copy side of a cache or publisher: settings, copy health and controlled shutdown.

A mixin over an owner's :class:`~coalestra.cache._copying.PayloadCopies` (attribute
``_copies``), so :class:`AsyncMemoryCache` and :class:`ResourcePublisher` share one
implementation of ``copy_health_snapshot`` / ``aclose_payload_copies`` / ``aclose``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core._closed import ClosedError
from ..core._copy_runner import (
    PayloadCopyHealth,
    PayloadCopyRunner,
    PayloadCopySubsystemClosedError,
    check_copy_timeout,
    shut_down_runners,
)

if TYPE_CHECKING:
    from ._copying import PayloadCopies


class CopyLifecycle:
    """Copy settings, health and shutdown of an owner holding ``_copies``."""

    __slots__ = ()

    if TYPE_CHECKING:
        _copies: PayloadCopies

    @property
    def run_payload_copies_in_thread(self) -> bool:
        """Whether copies may run in worker threads (as given; ``None`` was resolved to True
        without a custom copier and to False with one)."""
        return self._copies.runner.run_in_thread

    @property
    def max_copy_concurrency(self) -> int:
        """The most copies running in worker threads at once."""
        return self._copies.runner.max_concurrency

    def copy_health_snapshot(self) -> PayloadCopyHealth:
        """The state and counters of this owner's worker-thread copies (inline copies of small
        or immutable payloads are not counted: they cost no bookkeeping)."""
        return self._copies.runner.health()

    async def aclose_payload_copies(self, *, timeout_seconds: float = 5.0) -> None:
        """Refuse new copies (later reads and writes raise
        :class:`PayloadCopySubsystemClosedError`), then give running worker-thread copies
        ``timeout_seconds``. Idempotent.

        Raises:
            TypeError, ValueError: ``timeout_seconds`` is not a finite number > 0.
            PayloadCopyShutdownTimeoutError: copies still ran when the budget ran out.
        """
        budget = check_copy_timeout("timeout_seconds", timeout_seconds)
        runner = self._copies.runner
        await shut_down_runners({runner.component: runner}, budget)

    async def aclose(self) -> None:
        """:meth:`aclose_payload_copies` with its default budget; a second call does nothing."""
        if not self._copies.runner.shutdown_started:
            await self.aclose_payload_copies()

    @property
    def _payload_copy_runner(self) -> PayloadCopyRunner:
        """The runner of this owner's worker-thread copies (a builder shuts it down)."""
        return self._copies.runner

    def _check_copies_open(self) -> None:
        runner = self._copies.runner
        if not runner.accepting:
            raise PayloadCopySubsystemClosedError(component=runner.component)


_CLOSED_BY_ACLOSE = "\0publisher closed"
"""The publisher's refusal after its own ``aclose()`` (not a message: it selects the error)."""


class PublisherCopies(CopyLifecycle):
    """:class:`CopyLifecycle` for a publisher, whose runner may be its builder's (no
    ``__slots__``: publishers take attribute reassignment)."""

    if TYPE_CHECKING:
        _refusal: str | None

    def _share_copy_runner(self, runner: PayloadCopyRunner) -> None:
        """Copy through ``runner`` (the owning builder's): :meth:`aclose` then closes only this
        publisher, never the runner."""
        self._copies.runner = runner

    async def aclose(self, *, timeout_seconds: float = 5.0) -> None:
        """Refuse later publications and invalidations (they raise
        :class:`PayloadCopySubsystemClosedError`), then give this publisher's running
        worker-thread copies ``timeout_seconds``. The publisher of a builder shares the
        builder's copies: closing it does not stop the builder. Idempotent.

        Raises:
            TypeError, ValueError: ``timeout_seconds`` is not a finite number > 0.
            PayloadCopyShutdownTimeoutError: copies still ran when the budget ran out.
        """
        budget = check_copy_timeout("timeout_seconds", timeout_seconds)
        if self._refusal is None:
            self._refusal = _CLOSED_BY_ACLOSE
        runner = self._copies.runner
        if runner.component == "publisher":
            await shut_down_runners({runner.component: runner}, budget)

    def _refuse(self, refusal: str) -> None:
        if refusal is _CLOSED_BY_ACLOSE:
            raise PayloadCopySubsystemClosedError(component="publisher")
        raise ClosedError(refusal)
