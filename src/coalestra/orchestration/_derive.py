"""Derived sources: resolve each derived key's dependencies as their own flights, derive it
as soon as its own dependencies are done, and hand failures on at once.

A derived key may depend on a key of the same group (or of another build). So a key whose
derivation fails falls through to its next source immediately, not when the whole level is
done, and before waiting on a dependency's flight the wait-for graph is checked for a cycle:
two builds that each own a key the other's derivation needs can never deadlock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, final

from ..core import (
    DependencyCycleError,
    DependencyResolutionError,
    ResourceKey,
    Snapshot,
    SnapshotDeadlineExceededError,
    SnapshotValue,
    SourcePayload,
)
from ..core._snapshot import key_tuple
from ._cycles import wait_cycle
from ._flights import Flight, Outcome, Raised
from ._machinery import GroupResolution
from ._payloads import hand_out, normalize_payload
from ._sources import RegisteredSource

Deps = dict[ResourceKey, tuple[ResourceKey, ...]]


@final
class Deriver:
    """One derived level of one group run."""

    __slots__ = ("_fall_through", "_run", "_source")

    def __init__(
        self,
        run: GroupResolution,
        source: RegisteredSource,
        fall_through: Callable[[list[ResourceKey]], None],
    ):
        self._run = run
        self._source = source
        self._fall_through = fall_through

    async def derive(self, keys: list[ResourceKey]) -> None:
        """Derive ``keys``; each failure is handed on as soon as it happens."""
        run, source = self._run, self._source
        assert source.dependencies is not None
        deps_of: Deps = {}
        failed: list[ResourceKey] = []
        for key in keys:
            try:
                deps_of[key] = key_tuple("dependencies", source.dependencies(key))
            except Exception as error:
                run.ledger.fail(key, source.name, error)
                failed.append(key)
        self._fall_through(failed)
        if deps_of:
            await self._when_ready(deps_of)

    async def _when_ready(self, deps_of: Deps) -> None:
        run = self._run
        engine = run.engine
        union = list(dict.fromkeys(dep for deps in deps_of.values() for dep in deps))
        # The build's own reading of each dependency (read or claimed now if it has none).
        async with run.view.lock():
            hits, claims = await engine.lookup_and_claim(union, run.ctx, run.diag, run.view)
        outcomes: dict[ResourceKey, Outcome] = dict(hits)
        waiting = self._check_cycles(deps_of, claims)
        table = engine.flights
        try:
            with table.waiting(claims, run.group):
                await self._as_ready(waiting, outcomes, claims)
        finally:
            for key in deps_of:
                table.wait_on(run.flights[key], ())

    def _check_cycles(self, deps_of: Deps, claims: Mapping[ResourceKey, Flight]) -> Deps:
        """Fail keys whose wait would close a cycle; mark what the others wait on."""
        run, name = self._run, self._source.name
        table = run.engine.flights
        waiting: Deps = {}
        cycled: list[ResourceKey] = []
        for key, deps in deps_of.items():
            path = next(
                (p for dep in deps if dep in claims if (p := wait_cycle(table, key, claims[dep]))),
                None,
            )
            if path is not None:
                # Waiting would close the loop: this key closes it, and records the cycle as a
                # derivation path, from the key already on it to its repeat (A -> B -> A).
                run.ledger.fail_cycle(key, name, DependencyCycleError((*path[1:], path[1])))
                cycled.append(key)
                continue
            table.wait_on(run.flights[key], (dep for dep in deps if dep in claims))
            waiting[key] = deps
        self._fall_through(cycled)
        return waiting

    async def _as_ready(
        self,
        waiting: Deps,
        outcomes: dict[ResourceKey, Outcome],
        claims: Mapping[ResourceKey, Flight],
    ) -> None:
        run = self._run
        while waiting:
            for dep, flight in claims.items():
                if dep not in outcomes and flight.done:
                    outcomes[dep] = flight.outcome
            ready = {k: deps for k, deps in waiting.items() if all(d in outcomes for d in deps)}
            if ready:
                for key in ready:
                    del waiting[key]
                await self._derive_ready(ready, outcomes)
                continue
            pending = {
                claims[d].future for deps in waiting.values() for d in deps if d not in outcomes
            }
            done, _ = await asyncio.wait(
                pending, timeout=run.window.remaining(), return_when=asyncio.FIRST_COMPLETED
            )
            if not done and not run.window.expired():
                continue  # a joiner extended the deadline while we waited
            if not done:
                self._give_up(list(waiting))
                return

    def _give_up(self, keys: list[ResourceKey]) -> None:
        """The deadline passed while ``keys`` waited for dependencies: their derivation was
        never called, which is the deadline's doing (B-TIME-3's "before" case)."""
        name = self._source.name
        for key in keys:
            late = SnapshotDeadlineExceededError(
                f"snapshot deadline exceeded before calling the source for source {name} "
                f"while resolving {key}"
            )
            self._run.engine.counters.deadline_exceeded += 1
            self._run.ledger.fail(key, name, late)
        self._fall_through(keys)

    async def _derive_ready(self, ready: Deps, outcomes: Mapping[ResourceKey, Outcome]) -> None:
        """Derive the keys whose dependencies are done, then write them in one call (now, not
        with the whole level: another key of the level may be waiting on one of them)."""
        made: list[SnapshotValue[Any]] = []

        async def derive_one(key: ResourceKey) -> None:
            if not await self._try(key, ready[key], outcomes, made):
                self._fall_through([key])

        await self._run.pool(list(ready), derive_one)
        await self._run.commit(made)

    def _dependencies_failed(self, key: ResourceKey, errors: Mapping[ResourceKey, Any]) -> bool:
        """``key`` cannot be derived: its dependencies failed. No call was made: attempts 0,
        and the circuit does not hear of it."""
        name = self._source.name
        self._run.ledger.fail(key, name, DependencyResolutionError(key, name, errors), 0)
        return False

    async def _try(
        self,
        key: ResourceKey,
        deps: tuple[ResourceKey, ...],
        outcomes: Mapping[ResourceKey, Outcome],
        made: list[SnapshotValue[Any]],
    ) -> bool:
        run, source = self._run, self._source
        errors = {dep: o for dep in deps if isinstance(o := outcomes[dep], Exception)}
        raised = next((e for e in errors.values() if type(e) is Raised), None)
        if raised is not None:
            raise raised.error  # the cache failed under a dependency: this group fails too
        if errors:
            return self._dependencies_failed(key, errors)
        ctx = run.ctx
        ready = {
            dep: value
            for dep in deps
            if isinstance(value := outcomes[dep], SnapshotValue)  # all are: errors returned above
        }
        values: dict[ResourceKey, SnapshotValue[Any]] = {}
        # The deriver's own copies (large ones off the loop, in one job for all of them).
        await hand_out(run.engine, ready, ctx, (), values, errors)
        if errors:  # copying large dependencies missed the deadline: no call is made
            return self._dependencies_failed(key, errors)
        dependencies = Snapshot(ctx.snapshot_id, ctx.requested_at, values)
        derive = source.derive
        assert derive is not None

        async def invoke(_keys: tuple[ResourceKey, ...]) -> SourcePayload[Any]:
            return normalize_payload(await derive(key, dependencies, ctx))

        result = await run.engine.gate.call(
            source, (key,), run.window, run.diag, invoke, run.engine.factory.circuit_successes
        )
        if result.error is not None or result.value is None:
            run.ledger.fail_all(source, (key,), result)
            return False
        versions = {dep: value.version for dep, value in values.items()}
        # A plain derived value is stamped with its derivation time, unless the source opted
        # in to its oldest dependency's observation time.
        oldest = _oldest(values) if source.inherit_observed_at else None
        accepted = await run.engine.factory.accept(
            source,
            {key: result.value},
            result,
            made,
            lambda: run.ledger,
            run.diag,
            versions=versions,
            oldest=oldest,
            ctx=ctx,
        )
        return key in accepted


def _oldest(values: Mapping[ResourceKey, SnapshotValue[Any]]) -> float | None:
    """The oldest ``observed_at`` among dependency values (``None``: there are none)."""
    return min((value.observed_at for value in values.values()), default=None)
