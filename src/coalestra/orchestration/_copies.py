"""The builder's payload copies at the source boundary, through its bounded copy runner.

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
from typing import TYPE_CHECKING, Any, Protocol, final

from ..cache import AsyncMemoryCache
from ..cache._copying import is_large
from ..core import (
    Clock,
    FetchContext,
    FreshnessPolicy,
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
from ..core._isolation import isolation_error

if TYPE_CHECKING:
    from ._counters import EngineCounters
    from ._options import BuilderOptions
from ..core._errors import SnapshotDeadlineExceededError
from ..core._isolation import located
from ..core._validation import ReadOnlyDict
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


@final
class SourceCopies:
    """Decides which source payloads are copied off the loop, and copies them in one job."""

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

    def offloads(self, values: Iterable[SnapshotValue[Any]]) -> bool:
        """True when copying ``values`` goes to the runner: it offloads, and one of them is
        large (with ``True``: mutable) -- small and immutable values are copied inline."""
        if not self.runner.run_in_thread:
            return False
        needs_copy = self._isolator.needs_copy
        return any(
            needs_copy(value.value) and (self._offload_all or is_large(value.value))
            for value in values
        )

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

    def copy(
        self, source: str, payloads: Mapping[ResourceKey, SourcePayload[Any]]
    ) -> tuple[dict[ResourceKey, Any], list[ResourceKey]]:
        """The copy of every payload copied on the loop (an immutable one with the built-in
        copier: itself), made at once, before the caller yields (a source may mutate what it
        returned from its next loop callback on); and the keys whose payloads go to the
        runner instead (:meth:`offload`): large ones, or with ``True`` every mutable one.
        Each payload is judged once: immutable, large.

        A key whose copy failed maps to a :class:`CopyFailed`: it fails at this source only.
        """
        isolator = self._isolator
        copier, needs_copy = isolator.payload_copier, isolator.needs_copy
        offload, offload_all = self.runner.run_in_thread, self._offload_all
        made: dict[ResourceKey, Any] = {}
        offloaded: list[ResourceKey] = []
        for key, payload in payloads.items():
            value = payload.value
            if not needs_copy(value):
                made[key] = value
            elif offload and (offload_all or is_large(value)):
                offloaded.append(key)
            else:
                try:
                    made[key] = copier(value)
                except Exception as error:  # named here: no text is made per key otherwise
                    where = f"{key} from source {source!r}"
                    made[key] = CopyFailed(isolation_error(where, value, error))
        return made, offloaded

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


class Readers(Protocol):
    """What a reader's copy needs of the engine (the engine's ``Machinery`` has it)."""

    @property
    def copies(self) -> SourceCopies: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def isolator(self) -> PayloadIsolator: ...

    def policy_for(self, key: ResourceKey, /) -> FreshnessPolicy: ...

    @property
    def constant_policy(self) -> FreshnessPolicy | None: ...


async def hand_out(
    engine: Readers,
    ready: Mapping[ResourceKey, SnapshotValue[Any]],
    ctx: FetchContext,
    joined: Collection[ResourceKey],
    values: dict[ResourceKey, SnapshotValue[Any]],
    errors: dict[ResourceKey, Exception],
) -> None:
    """The reader copies of a build's resolved flights (:func:`consume`) into ``values``:
    inline, or in one job of the copy runner when one of them is large; a job that misses the
    deadline (or is refused at shutdown) fails its keys instead. They are handed out together:
    one reading of the clock for all."""
    now = engine.clock.now()
    isolator, snapshot_id = engine.isolator, ctx.snapshot_id
    # Each payload is judged once: immutable ones (a stampede's) are never offloaded.
    mutable = [isolator.needs_copy(value.value) for value in ready.values()]
    if not any(mutable) or not engine.copies.offloads(ready.values()):
        constant, policy_for = engine.constant_policy, engine.policy_for
        for (key, value), copy in zip(ready.items(), mutable, strict=True):
            observed = value.observed_at
            age = now - observed if now > observed else 0.0
            stale = value.stale or not (constant or policy_for(key)).is_fresh(age)
            clone = _reader_clone(isolator, value, snapshot_id, age, stale, copy)
            values[key] = _marked(clone) if joined and key in joined else clone
        return
    copies = [reader_copy(engine, value, ctx, key in joined, now) for key, value in ready.items()]
    try:
        made = await engine.copies.runner.run(
            lambda: [copy() for copy in copies], timeout=ctx.remaining_seconds(engine.clock)
        )
    except (SnapshotDeadlineExceededError, PayloadCopySubsystemClosedError) as error:
        engine.copies.count_failure(error, len(ready))
        errors.update((key, as_resolution_error(key, error)) for key in ready)
        return
    values.update(zip(ready, made, strict=True))


def consume(
    engine: Readers, outcome: SnapshotValue[Any], ctx: FetchContext, *, coalesced: bool = False
) -> SnapshotValue[Any]:
    """A private copy of a flight's value for one reader, with its age as of now;
    ``coalesced``: the reader joined another build's flight (so the metadata says)."""
    age, stale = _reading(engine, outcome, engine.clock.now())
    isolator = engine.isolator
    mutable = isolator.needs_copy(outcome.value)
    clone = _reader_clone(isolator, outcome, ctx.snapshot_id, age, stale, mutable)
    return _marked(clone) if coalesced else clone


def reader_copy(
    engine: Readers, outcome: SnapshotValue[Any], ctx: FetchContext, coalesced: bool, now: float
) -> Callable[[], SnapshotValue[Any]]:
    """:func:`consume` at ``now`` in two steps: the policy is read now, on the loop; the
    returned function only copies (so it may run in a worker thread)."""
    age, stale = _reading(engine, outcome, now)
    isolator, snapshot_id = engine.isolator, ctx.snapshot_id
    mutable = isolator.needs_copy(outcome.value)

    def copy() -> SnapshotValue[Any]:
        clone = _reader_clone(isolator, outcome, snapshot_id, age, stale, mutable)
        return _marked(clone) if coalesced else clone

    return copy


def _reading(engine: Readers, outcome: SnapshotValue[Any], now: float) -> tuple[float, bool]:
    """What a reader's copy of ``outcome`` says at ``now``: its age, and whether it is stale."""
    observed = outcome.observed_at
    age = now - observed if now > observed else 0.0
    policy = engine.constant_policy or engine.policy_for(outcome.key)
    return age, outcome.stale or not policy.is_fresh(age)


def _reader_clone(
    isolator: PayloadIsolator,
    outcome: SnapshotValue[Any],
    snapshot_id: str,
    age: float,
    stale: bool,
    mutable: bool,
) -> SnapshotValue[Any]:
    """A reader's private copy of ``outcome`` read at ``age``; ``mutable``: its payload must be
    copied (:meth:`PayloadIsolator.needs_copy`)."""
    payload = outcome.value
    metadata = outcome.metadata
    if not mutable and not (metadata and isolator.metadata_needs_copy(metadata)):
        # Nothing to copy (an immutable payload, metadata of immutable values): a new value
        # read as of now sharing both, as clone_snapshot_value would make it, in one step.
        from_cache = outcome.from_cache
        return outcome._evolve(payload, age_seconds=age, stale=stale, from_cache=from_cache)
    try:
        clone = isolator.clone_snapshot_value(
            outcome,
            context="",  # named below on failure: no text is made per key otherwise
            age_seconds=age,
            stale=stale,
        )
    except PayloadIsolationError as error:
        where = f"{outcome.key} in snapshot {snapshot_id!r}"
        raise located(error, where) from error.__cause__
    return clone


def _marked(clone: SnapshotValue[Any]) -> SnapshotValue[Any]:
    """``clone`` marked as read from another build's flight. The clone is new and unshared, and
    its metadata is already isolated (copied, or of immutable values): the mark is added
    without copying the metadata again; with no other metadata, every such clone shares one
    read-only mapping (of an immutable value, as shared metadata always is)."""
    metadata = clone.metadata
    marked = ReadOnlyDict({**metadata, "coalesced_request": True}) if metadata else _JOINED
    _set(clone, "metadata", marked)
    return clone


_JOINED: Mapping[str, Any] = ReadOnlyDict({"coalesced_request": True})
_set = object.__setattr__


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
