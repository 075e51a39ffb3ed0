"""A single-key source call through the gate's attempt loop (retries, timeouts, capacity,
circuits): every call that is not plain (see ``SourceGate.plain``), and a plain call that
failed. Off the plain miss path of :mod:`._engine`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..core import DiagnosticsCollector, ResourceKey, SnapshotValue, SourcePayload
from ._flights import FlightWindow
from ._gate import Invoke
from ._ledger import KeyLedger
from ._machinery import Machinery
from ._sources import RegisteredSource


class FetchOne(Protocol):
    """:func:`fetch_one` bound to a level (all but its last three arguments)."""

    def __call__(
        self, made: list[SnapshotValue[Any]], key: ResourceKey, failed: Exception | None = None, /
    ) -> Awaitable[None]: ...


async def fetch_one(
    engine: Machinery,
    window: FlightWindow,
    diag: DiagnosticsCollector,
    ledger: Callable[[], KeyLedger],
    source: RegisteredSource,
    invoke: Invoke[SourcePayload[Any]],
    fall_through: Callable[[list[ResourceKey]], None],
    made: list[SnapshotValue[Any]],
    key: ResourceKey,
    failed: Exception | None = None,
) -> None:
    """One key's call to a single source (one level's calls share ``invoke``); a key that got
    no value falls through at once. ``failed``: its first attempt failed so already (a plain
    call, see ``GroupRun._fetch_plain``). ``ledger``: the group's, made when first needed."""
    called = (key,)
    factory = engine.factory
    result = await engine.gate.call(
        source, called, window, diag, invoke, factory.circuit_successes, failed
    )
    if result.error is not None or result.value is None:
        ledger().fail_all(source, called, result)
    elif await factory.accept(
        source, {key: result.value}, result, made, ledger, diag, ctx=window.ctx
    ):
        return
    fall_through([key])
