"""The engine's background work: refreshes a build schedules (``refresh_ahead``,
``stale_while_revalidate``), how each refreshed key ended, and the end of every task the engine
owns (``wait_for_refreshes``, ``aclose``). None of it is on the path of a cache miss.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..core import (
    DiagnosticsCollector,
    FetchContext,
    ResourceKey,
    SnapshotValue,
    SourceUnavailableError,
)
from ..core._validation import ReadOnlyDict
from ..observability._names import STALE_WHILE_REVALIDATE as _STALE_WHILE_REVALIDATE
from ._cache_access import BuildView
from ._flights import Flight
from ._machinery import Machinery, Refresh


def refresh_served(
    engine: Machinery,
    hits: dict[ResourceKey, SnapshotValue[Any]],
    ahead: Sequence[ResourceKey],
    swr: Sequence[ResourceKey],
    ctx: FetchContext,
    diag: DiagnosticsCollector,
) -> None:
    """Schedule the refreshes a build's first read asked for: its fresh hits due a
    refresh-ahead, and the stale values it serves while they are revalidated; the served
    copies in ``hits`` say so in their metadata."""
    if ahead and refresh(engine, ahead, ctx, diag, "refresh_ahead"):
        for key in ahead:
            hits[key] = _with_metadata(hits[key], refresh_scheduled=True)
    if swr:
        scheduled = refresh(engine, swr, ctx, diag, "stale_while_revalidate")
        for key in swr:
            hits[key] = _with_metadata(
                hits[key], refresh_mode="stale_while_revalidate", refresh_scheduled=scheduled
            )


def refresh(
    engine: Machinery,
    keys: Sequence[ResourceKey],
    ctx: FetchContext,
    diag: DiagnosticsCollector,
    reason: str,
) -> bool:
    """Refresh ``keys`` in an owned background task; return whether refreshes are scheduled.

    At most one refresh runs per key: a key already in flight is not started or counted
    again (but counts as scheduled). Nothing is scheduled once the builder is closed.
    """
    if engine.closed:
        return False
    wanted = [key for key in keys if key not in engine.flights]
    if not wanted:
        return True
    diag.refresh_scheduled += len(wanted)
    if engine.report.enabled:
        for key in wanted:
            engine.report.refresh_scheduled(key, reason, ctx.snapshot_id)
    started = engine.flights.start(wanted, keep_alive=True)
    background = FetchContext(
        requested_at=engine.clock.now(),
        metadata={
            **ctx.metadata,
            "background_refresh": True,
            "refresh_reason": reason,
            "parent_snapshot_id": ctx.snapshot_id,
        },
        snapshot_id=f"{ctx.snapshot_id}:refresh:{uuid.uuid4().hex[:8]}",
    )
    refresh_for = (diag, dict.fromkeys(wanted, reason))
    engine.start(started, background, DiagnosticsCollector(), BuildView(), refresh_for=refresh_for)
    return True


def count_refreshes(
    engine: Machinery,
    flights: Iterable[Flight],
    refresh: Refresh,
    cancelled: bool,
    failed: Mapping[ResourceKey, Exception],
) -> None:
    """Called when a refresh group ends: count each key's outcome in the diagnostics of the
    build that scheduled it (they show there if it ends before that build does) and in
    the refresh metric. Only a fresh value from a source completes a refresh; ``failed``:
    keys whose sources all failed, served stale instead."""
    scheduled_by, reasons = refresh
    report = engine.report
    for flight in flights:
        outcome = flight.outcome if flight.done else None
        if flight.key in failed:
            outcome = failed[flight.key]
        done = isinstance(outcome, SnapshotValue) and not outcome.stale
        if done:
            scheduled_by.refresh_completed += 1
        else:
            scheduled_by.refresh_failed += 1
        if not report.enabled:
            continue
        why = reasons.get(flight.key, _STALE_WHILE_REVALIDATE)
        if isinstance(outcome, SnapshotValue) and done:
            report.refresh_completed(flight.key, outcome.source, why)
        elif cancelled:
            report.refresh_cancelled(flight.key)
        else:
            error = outcome if isinstance(outcome, Exception) else None
            report.refresh_failed(flight.key, why, error or SourceUnavailableError("no value"))


async def wait_for_refreshes(engine: Machinery) -> None:
    """Wait until no background refresh is running (including ones started meanwhile)."""
    while engine.refresh_tasks:
        await _ended(list(engine.refresh_tasks), engine.refresh_tasks)


async def shutdown(engine: Machinery, *, cancel_refreshes: bool, timeout: float | None) -> None:
    """End every task ``engine`` owns: refreshes are awaited (or cancelled; with ``timeout``,
    those still running after ``timeout`` seconds are cancelled), flights cancelled."""
    engine.closed = True
    if cancel_refreshes:
        for task in engine.refresh_tasks:
            task.cancel()
    if timeout is None:
        await wait_for_refreshes(engine)
    else:
        await _wait_or_cancel_refreshes(engine, timeout)
    while engine.tasks:
        pending = list(engine.tasks)
        for task in pending:
            task.cancel()
        await _ended(pending, engine.tasks)


async def _wait_or_cancel_refreshes(engine: Machinery, timeout: float) -> None:
    """Wait up to ``timeout`` seconds for the refreshes, then cancel what still runs: a
    hung refresh must not hang ``aclose()``."""
    # The engine is closed: no refresh starts any more (B-DIAG-3), so one wait covers all.
    if engine.refresh_tasks and timeout > 0.0:
        await asyncio.wait(list(engine.refresh_tasks), timeout=timeout)
    while engine.refresh_tasks:
        hung = list(engine.refresh_tasks)
        for task in hung:
            task.cancel()
        await _ended(hung, engine.refresh_tasks)


async def _ended(tasks: list[asyncio.Task[None]], owner: set[asyncio.Task[None]]) -> None:
    """Wait for ``tasks`` to end, then drop them from ``owner`` at once. Their done callbacks
    would drop them too, but on Python 3.12+ ``gather`` of tasks that are already done returns
    without yielding to the loop, so a ``while owner:`` loop relying on those callbacks would
    spin forever."""
    await asyncio.gather(*tasks, return_exceptions=True)
    owner.difference_update(tasks)


def _with_metadata(value: SnapshotValue[Any], **extra: Any) -> SnapshotValue[Any]:
    """``value`` (a private copy) with ``extra`` added to its metadata."""
    return value._served(
        value.fetched_at, value.age_seconds, value.stale, ReadOnlyDict({**value.metadata, **extra})
    )
