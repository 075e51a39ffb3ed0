"""How a group's keys end when no source resolved them: the last resort (no source is left for
a key) and the abandoned keys of a group that stopped.

The engine (:mod:`._engine`) comes here only for keys every source of their chain failed (or
none supports). They get, in order: a stale payload a source returned that is no older than
``max_stale_seconds`` (written, except by a background refresh or a forced revalidation); the
usable cached value the build read, with ``allow_stale_on_error`` (marked with why it is served);
else their error. A key no source has is remembered as not found (negative caching, opt-in).
"""

from __future__ import annotations

from typing import Any

from ..core import ResourceKey, ResourceNotFoundError, SnapshotValue, SourceUnavailableError
from ._flights import Outcome, Raised
from ._ledger import as_resolution_error, raised_error, stale_fallback
from ._machinery import GroupResolution


async def finish_failed(run: GroupResolution, keys: list[ResourceKey]) -> None:
    """No source is left for ``keys``: serve allowed stale data, else their errors.

    A stale source payload kept as a last resort is served first (and written, except by a
    background refresh or a forced revalidation); else the usable cached value the build
    read (its candidate), marked with why it is served."""
    engine = run.engine
    now = engine.clock.now()
    last_resort = run.ledger.take_usable_stale(keys, engine.policy_for, now)
    bypass = run.force or run.refresh_for is not None
    await run.commit(last_resort, write=not bypass)
    served: list[SnapshotValue[Any]] = list(last_resort)
    rest = [key for key in keys if not run.flights[key].done]
    for key in rest:
        error = run.ledger.error_for(key)
        outcome: Outcome = error
        candidate = None if bypass else run.candidates.get(key)
        if isinstance(error, ResourceNotFoundError):
            engine.not_found.remember(error)
            candidate = None  # it no longer exists: an older value is no fallback
        if candidate is not None:
            fallback = stale_fallback(candidate, error, now, engine.policy_for(key))
            if fallback is not None:
                served.append(fallback)
                outcome = fallback
        engine.flights.resolve(run.flights[key], outcome)
    if run.refresh_for is not None:
        for value in served:
            run.served_instead[value.key] = run.ledger.error_for(value.key)
    if engine.report.enabled:
        for value in served:
            engine.report.stale_fallback(value.key, run.ledger.last_error_type(value.key))


def abandon(run: GroupResolution, reason: BaseException | None) -> None:
    """Resolve what is left: with the error the work raised (a cache call failed, say),
    which its waiters re-raise, or as stopped when it was cancelled."""
    flights = run.engine.flights
    raised = raised_error(reason)
    for key, flight in run.flights.items():
        if not flight.done:
            if raised is not None:
                flights.resolve(flight, Raised(raised))
                continue
            why = "cancelled" if reason is None else repr(reason)
            stopped = SourceUnavailableError(f"resolution of {key} stopped: {why}")
            flights.resolve(flight, as_resolution_error(key, stopped))
