"""The builder's copies off the loop: the jobs of its bounded copy runner, their health and
shutdown (a plain miss runs none of this; its copies are inline, see :mod:`._payloads`).

A value a source returns is copied before the build keeps it (the source may mutate what it
returned). Most copies stay inline: immutable payloads need none, and a small mutable one costs
less to copy than a thread hop. With ``run_payload_copies_in_thread`` resolved to True, the
payloads of one source call that are large (``cache._copying.is_large``; every mutable one when
the option was ``True`` explicitly) are copied together in **one** job of the builder's
:class:`~coalestra.core._copy_runner.PayloadCopyRunner`: one thread hop per call, never per
key, bounded by ``max_copy_concurrency`` and by what is left of the snapshot deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any, final

from ..cache import AsyncMemoryCache
from ..core import (
    PayloadIsolationError,
    PayloadIsolator,
    ResourceKey,
    SnapshotValue,
    SourcePayload,
)
from ..core._copy_runner import (
    PayloadCopyHealth,
    PayloadCopyRunner,
    PayloadCopyShutdownTimeoutError,
    PayloadCopySubsystemClosedError,
    check_copy_timeout,
    shut_down_runners,
)

if TYPE_CHECKING:
    from ._counters import EngineCounters
    from ._options import BuilderOptions
from ..core._errors import SnapshotDeadlineExceededError
from ._ledger import as_resolution_error


@final
class CopyFailed:
    """Why a payload has no copy: :meth:`ValueFactory.make` raises ``error`` for its key."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


Copied = Mapping[ResourceKey, Any]
"""Key -> the payload's copy (an immutable payload itself), or a :class:`CopyFailed`."""

COPY_FAILURES = (SnapshotDeadlineExceededError, PayloadCopySubsystemClosedError)
"""Why a copy job did not run or end in time: its keys fail (at their source, or as a whole)."""


class CopyJobs:
    """The jobs of the builder's copy runner: payloads copied off the loop (a base of
    :class:`~._payloads.SourceCopies`, which decides which payloads go there)."""

    __slots__ = ("_counters", "_isolator", "_offload_all", "runner")

    def __init__(
        self,
        isolator: PayloadIsolator,
        runner: PayloadCopyRunner,
        counters: EngineCounters,
        *,
        offload_all: bool,
    ) -> None:
        self._isolator = isolator
        self.runner = runner
        self._counters = counters
        self._offload_all = offload_all

    def wanted_for(self, values: Iterable[SnapshotValue[Any]]) -> bool:
        """True when copying ``values`` should go to the runner: it offloads, and one of them
        holds a mutable payload or metadata (immutable values are shared, never copied)."""
        if not self.runner.run_in_thread:
            return False
        isolator = self._isolator
        return any(
            isolator.needs_copy(value.value) or isolator.metadata_needs_copy(value.metadata)
            for value in values
        )

    async def offload(
        self,
        source: str,
        payloads: Mapping[ResourceKey, SourcePayload[Any]],
        keys: list[ResourceKey],
        made: dict[ResourceKey, Any],
        timeout: float | None,
    ) -> None:
        """Copy the payloads of ``keys`` into ``made`` in one runner job within ``timeout``
        seconds (a payload handed to a worker thread must be left alone until the copy is
        done, as with any offloaded copy). If the job missed the deadline or was refused
        because the builder is closing, each of them maps to a :class:`CopyFailed`."""
        copy = self._isolator.copy

        def copies() -> dict[ResourceKey, Any]:
            done: dict[ResourceKey, Any] = {}
            for key in keys:
                try:
                    done[key] = copy(payloads[key].value, context=f"{key} from source {source!r}")
                except PayloadIsolationError as error:
                    done[key] = CopyFailed(error)
            return done

        try:
            made.update(await self.runner.run(copies, timeout=timeout))
        except COPY_FAILURES as error:
            self.count_failure(error, len(keys))
            made.update(dict.fromkeys(keys, CopyFailed(error)))

    async def hand_out(
        self,
        copies: list[Callable[[], SnapshotValue[Any]]],
        keys: Collection[ResourceKey],
        timeout: float | None,
        values: dict[ResourceKey, SnapshotValue[Any]],
        errors: dict[ResourceKey, Exception],
    ) -> None:
        """The reader ``copies`` of ``keys`` (in that order) into ``values``, made in one job
        within ``timeout`` seconds; a job that misses the deadline (or is refused at shutdown)
        fails its keys instead."""
        try:
            made = await self.runner.run(lambda: [copy() for copy in copies], timeout=timeout)
        except COPY_FAILURES as error:
            self.count_failure(error, len(keys))
            errors.update((key, as_resolution_error(key, error)) for key in keys)
            return
        values.update(zip(keys, made, strict=True))

    def count_failure(self, error: Exception, keys: int) -> None:
        """A job that missed the deadline fails its keys: each counts as an exceeded deadline
        (``BuilderHealth.deadline_exceeded_count``), as a key cut by the deadline elsewhere."""
        if isinstance(error, SnapshotDeadlineExceededError):
            self._counters.deadline_exceeded += keys


@final
class BuilderCopies:
    """The builder's copy components (``"builder"``, and ``"cache"`` for the default cache it
    made): their health and their controlled shutdown."""

    __slots__ = ("_ended", "components")

    def __init__(self, runner: PayloadCopyRunner, cache: object, *, owns_cache: bool) -> None:
        self.components: dict[str, PayloadCopyRunner] = {"builder": runner}
        if owns_cache and isinstance(cache, AsyncMemoryCache):
            self.components["cache"] = cache._payload_copy_runner
        self._ended = False

    def health(self) -> dict[str, Any]:
        """The ``BuilderHealth`` copy fields: per component, sums, and "any incomplete"."""
        parts: dict[str, PayloadCopyHealth] = {
            name: runner.health() for name, runner in self.components.items()
        }
        every = parts.values()
        return {
            "payload_copy_components": parts,
            "active_payload_copies": sum(h.active_copies for h in every),
            "waiting_for_copy_capacity": sum(h.waiting_for_capacity for h in every),
            "payload_copy_started_count": sum(h.started_count for h in every),
            "payload_copy_completed_count": sum(h.completed_count for h in every),
            "payload_copy_failure_count": sum(h.failure_count for h in every),
            "payload_copy_timeout_count": sum(h.timeout_count for h in every),
            "payload_copy_capacity_timeout_count": sum(h.capacity_timeout_count for h in every),
            "payload_copy_shutdown_incomplete": any(h.shutdown_incomplete for h in every),
            "payload_copy_shutdown_timeout_count": sum(h.shutdown_timeout_count for h in every),
            "payload_copy_active_at_last_shutdown_timeout": sum(
                h.active_at_last_shutdown_timeout for h in every
            ),
        }

    async def aclose(self, timeout: float) -> None:
        """Shut every component down within ``timeout``. Once it has ended (done or timed out)
        later calls return at once; a call cancelled while waiting leaves it to the next one.

        Raises:
            PayloadCopyShutdownTimeoutError: copies still ran when the budget ran out.
        """
        if self._ended:
            return
        try:
            await shut_down_runners(self.components, timeout)
        except PayloadCopyShutdownTimeoutError:
            self._ended = True
            raise
        self._ended = True

    async def wait_closed(self) -> None:
        """Wait, without a budget, until no component runs a copy."""
        for runner in self.components.values():
            await runner.wait_closed()


class CopyShutdown:
    """The builder's payload-copy attributes and its waits for late copies (a base of
    :class:`SnapshotBuilder`, kept here with the rest of its copy machinery)."""

    if TYPE_CHECKING:
        _copies: BuilderCopies
        _options: BuilderOptions

    @property
    def run_payload_copies_in_thread(self) -> bool:
        """Whether the builder's copies may run in worker threads (``None`` resolved: True with
        the built-in copier, False with a custom one)."""
        return self._copies.components["builder"].run_in_thread

    @property
    def max_copy_concurrency(self) -> int:
        """The most builder copy jobs running at once."""
        return self._copies.components["builder"].max_concurrency

    @property
    def copy_shutdown_timeout_seconds(self) -> float:
        """How long :meth:`aclose` gives running copies, by default."""
        return self._options.copy_shutdown_timeout_seconds

    def _copy_budget(self, given: object) -> float:
        """The copy budget of one ``aclose()``: ``given``, checked (before anything closes),
        or the builder's ``copy_shutdown_timeout_seconds``."""
        if given is None:
            return self._options.copy_shutdown_timeout_seconds
        return check_copy_timeout("copy_shutdown_timeout_seconds", given)

    async def wait_for_payload_copy_shutdown(self) -> None:
        """Wait, without a budget, until copies still running after :meth:`aclose` have ended
        (each component then reports ``shutdown_complete=True``)."""
        await self._copies.wait_closed()
