"""A fault-injection soak on virtual time: many misbehaving sources, many concurrent callers.

``run_soak(operations, seed)`` drives one :class:`~coalestra.orchestration.SnapshotBuilder` on a
:class:`~coalestra.testing.VirtualTimeLoop` through ``operations`` random steps and returns a
:class:`SoakSummary`. Run it from the repository root::

    python -m tests.reliability.soak --operations 100000 [--seed 7]

The builder has single, batch, derived (also derived from derived, and a dependency cycle),
threaded and inline sources. Every source call draws a fault: success, failure, slowness, a
timeout, a hang until cancelled, a spurious ``CancelledError``, an uncopyable payload, a payload
mutated after it was returned, a large payload (copied in threads), an ``observed_at`` that is
NaN, far in the future, slightly in the future or long past, and for batches a non-mapping,
unrequested keys or omitted keys. Steps start builds, ``build_request``s (some with a
consistency policy), multi-stage sessions (``resolve``, ``resolve_request``, ``revalidate``),
publications (some forced, some refused), invalidations and bad-input calls, with random
deadlines; they cancel random running operations and let virtual time pass.

Checked after every step:

* every value in the cache (read back through the public cache API) is one a source or a
  publication produced for that very key (payloads carry a registered token), equal to what was
  produced (later mutation leaked nowhere), always with the same version wherever it is seen,
  never observed in the future, with the authority rank of its source; and no cached value was
  replaced by an older one of the same authority rank (nor by a lower rank) unless it could
  have been removed in between;
* inside every snapshot a build or a session stage returned, each derived value was derived from
  exactly the dependency revisions the same snapshot shows (issue 12, defect 1);
* every finished operation either returned a snapshot consistent with its request (the keys it
  asked for, required ones resolved, each value valid as above) or raised a documented error
  carrying what was resolved; only operations the soak cancelled end cancelled, and none of
  them swallows its cancellation; sessions keep their pins and revalidate atomically.

At the end, after ``aclose()``: no task left, no capacity in use or waited for, no single-flight
entry, no dispatch worker, and, once the default executor is shut down, no extra thread.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import itertools
import math
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.orchestration.conftest import Batch, Derived, Single
from tests.reliability.conftest import leftovers, task_baseline, thread_leftovers

from coalestra.adapters import CallableBatchSource, CallableDerivedSource, CallableSource
from coalestra.cache import PublishStatus, ResourceUpdate
from coalestra.core import (
    CoalestraError,
    FreshnessPolicy,
    ObservationPolicy,
    RefreshMode,
    ResourceKey,
    SessionClosedError,
    Snapshot,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotRequest,
    SnapshotValue,
    SourceAuthorityPolicy,
    SourcePayload,
    SourceProtocolError,
)
from coalestra.orchestration import PolicyResolver, SnapshotBuilder
from coalestra.resilience import (
    CircuitBreakerPolicy,
    CircuitScope,
    RetryPolicy,
    SourceResiliencePolicy,
)
from coalestra.testing import VirtualClock, VirtualTimeRunner

__all__ = ["SoakSummary", "run_soak"]

# The builders use the default observation policy: stamps up to this far ahead are kept.
_FUTURE_TOLERANCE = ObservationPolicy().future_tolerance_seconds


def _keys(name: str, count: int, prefix: str) -> list[ResourceKey]:
    return [ResourceKey("soak", name, f"{prefix}{i}") for i in range(count)]


SINGLE = _keys("single", 5, "s")
BATCH = _keys("batch", 5, "b")
DERIVED = _keys("derived", 3, "d")
CHAIN = _keys("chain", 1, "c")
CYCLE = _keys("cycle", 2, "y")
ORPHAN = _keys("orphan", 1, "o")
ALL_KEYS = [*SINGLE, *BATCH, *DERIVED, *CHAIN, *CYCLE, *ORPHAN]
COMMON_KEYS = [*SINGLE, *BATCH, *DERIVED, *CHAIN]
PUBLISHABLE = [*SINGLE, *BATCH]
DEPENDENCIES: dict[ResourceKey, tuple[ResourceKey, ...]] = {
    **{d: (SINGLE[i], BATCH[i]) for i, d in enumerate(DERIVED)},
    CHAIN[0]: (DERIVED[0], DERIVED[1]),
    CYCLE[0]: (CYCLE[1],),
    CYCLE[1]: (CYCLE[0],),
}
RANKS = {"admin": 3, "stream": 2, "stream-hi": 1}
AUTHORITY = SourceAuthorityPolicy(source_ranks=RANKS)
POLICIES = {
    "single": FreshnessPolicy(ttl_seconds=2.0, max_stale_seconds=22.0),
    "batch": FreshnessPolicy(
        ttl_seconds=3.0, max_stale_seconds=13.0, refresh_mode=RefreshMode.STALE_WHILE_REVALIDATE
    ),
    "derived": FreshnessPolicy(
        ttl_seconds=4.0,
        max_stale_seconds=14.0,
        refresh_mode=RefreshMode.REFRESH_AHEAD,
        refresh_ahead_seconds=1.0,
    ),
    "chain": FreshnessPolicy(ttl_seconds=0.0, max_stale_seconds=5.0),
}
DEFAULT_POLICY = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=35.0)
READ_ALL = FreshnessPolicy(ttl_seconds=1e9, max_stale_seconds=1e9, allow_stale_on_error=False)
SOURCE_TIMEOUT = 1.5
MAX_RUNNING = 48
LARGE_FIELDS = 300  # more top-level items than the cache copies inline

Table = Sequence[tuple[str, int]]
SINGLE_FAULTS: Table = (
    ("ok", 50),
    ("slow", 10),
    ("error", 8),
    ("timeout", 3),
    ("hang", 2),
    ("cancelled", 1),
    ("uncopyable", 2),
    ("generator", 1),
    ("mutate", 5),
    ("large", 2),
    ("future", 3),
    ("skew", 3),
    ("nan", 2),
    ("old", 3),
)
BATCH_CALL_FAULTS: Table = (
    ("ok", 70),
    ("error", 8),
    ("timeout", 3),
    ("hang", 2),
    ("cancelled", 1),
    ("not_mapping", 2),
    ("wrong_key", 3),
    ("omit", 5),
)
DERIVE_FAULTS: Table = (
    ("ok", 60),
    ("slow", 8),
    ("error", 8),
    ("hang", 2),
    ("cancelled", 1),
    ("uncopyable", 2),
    ("mutate", 5),
    ("future", 3),
    ("skew", 3),
    ("nan", 2),
)
THREAD_FAULTS: Table = (("ok", 80), ("error", 10), ("future", 5), ("skew", 5))
STEPS: Table = (
    ("build", 26),
    ("build_request", 16),
    ("session", 8),
    ("publish", 14),
    ("publish_many", 4),
    ("invalidate", 3),
    ("bad_input", 2),
    ("cancel", 8),
    ("advance", 10),
)


def _policy_for(key: ResourceKey) -> FreshnessPolicy | None:
    return POLICIES.get(key.name)


def policy_of(key: ResourceKey) -> FreshnessPolicy:
    return POLICIES.get(key.name, DEFAULT_POLICY)


class Uncopyable:
    """A payload ``copy.deepcopy`` refuses."""

    def __deepcopy__(self, memo: dict[int, Any]) -> Uncopyable:
        raise RuntimeError("this payload cannot be copied")


def forged(value: Any, observed_at: float) -> SourcePayload[Any]:
    """A payload whose ``observed_at`` skipped validation (NaN cannot be made honestly)."""
    made = SourcePayload(value)
    object.__setattr__(made, "observed_at", observed_at)
    return made


@dataclass
class SoakSummary:
    """What one soak did and found."""

    operations: int
    seed: int
    builds: int = 0
    build_requests: int = 0
    sessions: int = 0
    publishes: int = 0
    invalidations: int = 0
    bad_inputs: int = 0
    cancellations: int = 0
    returned: int = 0
    documented_errors: int = 0
    cancelled: int = 0
    source_calls: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    invariant_checks: int = 0
    violations: list[str] = field(default_factory=list)
    virtual_seconds: float = 0.0

    def report(self) -> str:
        """The summary as text."""
        faults = ", ".join(f"{kind}={count}" for kind, count in sorted(self.faults.items()))
        lines = [
            f"soak: {self.operations} operations, seed {self.seed}, "
            f"{self.virtual_seconds:.1f} virtual seconds",
            f"  builds: {self.builds}, build_requests: {self.build_requests}, "
            f"sessions: {self.sessions}, publishes: {self.publishes}, "
            f"invalidations: {self.invalidations}, bad inputs: {self.bad_inputs}",
            f"  outcomes: {self.returned} returned, {self.documented_errors} documented errors, "
            f"{self.cancelled} cancelled ({self.cancellations} cancellations requested)",
            f"  source calls: {self.source_calls}",
            f"  faults injected: {faults}",
            f"  invariant checks: {self.invariant_checks}",
            f"  violations: {len(self.violations)}",
        ]
        lines.extend(f"    {violation}" for violation in self.violations[:50])
        return "\n".join(lines)


@dataclass(frozen=True)
class Produced:
    """A payload some source or publication produced (a deep copy taken at that moment)."""

    key: ResourceKey
    source: str
    payload: Any
    valid: bool  # False: it must be refused (future or NaN stamp, rejected publication)


@dataclass(frozen=True)
class Seen:
    """A cached revision as the previous check saw it."""

    token: int
    observed_at: float
    rank: int


@dataclass
class Operation:
    """One running step."""

    number: int
    kind: str
    where: str
    task: asyncio.Task[None]
    cancel_requested: bool = False


class Soak:
    """The soak's state: the builder, the registry of produced payloads, the checks."""

    def __init__(self, operations: int, seed: int, clock: VirtualClock) -> None:
        self.summary = SoakSummary(operations, seed)
        self.rng = random.Random(seed)
        self.thread_rng = random.Random(seed + 1)
        self.thread_lock = threading.Lock()
        self.clock = clock
        self.tokens = itertools.count(1)
        self.produced: dict[int, Produced] = {}
        self.versions: dict[int, str] = {}
        self.last_seen: dict[ResourceKey, Seen] = {}
        self.reset: set[ResourceKey] = set()
        self.last_removals: tuple[int, int, int] | None = None
        self.running: list[Operation] = []
        self.serial = 0
        self.builder = self._make_builder()

    # -- the builder and its sources ----------------------------------------------------------

    def _make_builder(self) -> SnapshotBuilder:
        resilient = SourceResiliencePolicy(
            retry=RetryPolicy(max_attempts=2, base_delay_seconds=0.05),
            circuit=CircuitBreakerPolicy(
                scope=CircuitScope.SUBJECT, failure_threshold=3, recovery_timeout_seconds=5.0
            ),
        )
        sources: list[Any] = [
            Single(
                "stream-hi",
                50,
                self._single,
                supports=lambda k: k.name == "single",
                timeout_seconds=SOURCE_TIMEOUT,
                resilience_policy=resilient,
            ),
            CallableBatchSource(
                name="batch-main",
                priority=40,
                supports=lambda k: k.name == "batch",
                fetcher=self._batch,
                timeout_seconds=SOURCE_TIMEOUT,
                max_batch_size=3,
                max_concurrency=3,
            ),
            CallableDerivedSource(
                name="derived-main",
                priority=30,
                supports=lambda k: k.name == "derived",
                dependencies=lambda k: DEPENDENCIES[k],
                deriver=self._derive,
                timeout_seconds=SOURCE_TIMEOUT,
            ),
            Derived(
                "derived-chain",
                30,
                deps=lambda k: DEPENDENCIES[k],
                handler=self._derive,
                supports=lambda k: k.name in {"chain", "cycle"},
                timeout_seconds=SOURCE_TIMEOUT,
            ),
            CallableSource(
                name="thread-lo",
                priority=10,
                supports=lambda k: k.name in {"single", "batch", "derived"},
                fetcher=self._threaded,
                queue_timeout_seconds=2.0,
            ),
            Batch(
                "inline-lo",
                5,
                self._inline,
                supports=lambda k: k.name in {"single", "batch", "derived", "chain"},
            ),
        ]
        return SnapshotBuilder(
            sources,
            clock=self.clock,
            policy_resolver=PolicyResolver(DEFAULT_POLICY, dynamic=_policy_for),
            authority_policy=AUTHORITY,
            retry_policy=RetryPolicy(max_attempts=1),
            max_concurrency=6,
            max_pending_tasks=4,
        )

    def draw(self, table: Table, rng: random.Random | None = None) -> str:
        names = [name for name, _weight in table]
        weights = [weight for _name, weight in table]
        return (rng or self.rng).choices(names, weights)[0]

    def payload(
        self,
        key: ResourceKey,
        source: str,
        *,
        large: bool = False,
        valid: bool = True,
        **extra: Any,
    ) -> dict[str, Any]:
        token = next(self.tokens)
        made: dict[str, Any] = {"token": token, "key": str(key), "by": source, "data": [token]}
        made.update(extra)
        if large:
            made.update({f"f{i}": i for i in range(LARGE_FIELDS)})
        self.produced[token] = Produced(key, source, copy.deepcopy(made), valid)
        return made

    def count_call(self, fault: str) -> None:
        self.summary.source_calls += 1
        self.summary.faults[fault] += 1

    async def _misbehave(self, fault: str) -> None:
        """The faults that do not produce a payload (they raise or never return)."""
        if fault == "error":
            raise RuntimeError("injected source failure")
        if fault == "timeout":
            await asyncio.sleep(SOURCE_TIMEOUT * 20)
            raise AssertionError("a source call outlived its timeout")
        if fault == "hang":
            await asyncio.Event().wait()
        if fault == "cancelled":
            raise asyncio.CancelledError  # nobody cancelled this call

    def shaped(
        self, fault: str, key: ResourceKey, source: str, **extra: Any
    ) -> SourcePayload[Any] | Any:
        """A payload for ``key`` shaped by ``fault`` (a timestamp fault, a copy fault...)."""
        if fault == "uncopyable":
            return Uncopyable()
        if fault == "generator":
            return (item for item in range(3))
        now = self.clock.now()
        refused = fault in {"future", "nan"}
        value = self.payload(key, source, large=fault == "large", valid=not refused, **extra)
        if fault == "future":
            return SourcePayload(value, observed_at=now + 100.0)
        if fault == "nan":
            return forged(value, math.nan)
        if fault == "skew":
            return SourcePayload(value, observed_at=now + 0.4)
        if fault == "old":
            return SourcePayload(value, observed_at=now - self.rng.choice([3.0, 15.0, 500.0]))
        if fault == "mutate":
            self._mutate_later(value)
        return SourcePayload(value, observed_at=now - self.rng.uniform(0.0, 0.5))

    def _mutate_later(self, value: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()

        def mutate() -> None:
            value["data"].append("mutated")
            value["key"] = "mutated"

        loop.call_soon(mutate)  # races the engine's copy
        loop.call_later(self.rng.uniform(0.0, 2.0), mutate)

    async def _single(self, key: ResourceKey, _context: Any) -> Any:
        fault = self.draw(SINGLE_FAULTS)
        self.count_call(f"single:{fault}")
        if fault == "slow":
            await asyncio.sleep(self.rng.uniform(0.05, 1.0))
        await self._misbehave(fault)
        return self.shaped(fault, key, "stream-hi")

    async def _batch(self, keys: tuple[ResourceKey, ...], _context: Any) -> Any:
        fault = self.draw(BATCH_CALL_FAULTS)
        self.count_call(f"batch:{fault}")
        await asyncio.sleep(self.rng.choice([0.0, 0.05, 0.3]))
        await self._misbehave(fault)
        if fault == "not_mapping":
            return [self.payload(k, "batch-main", valid=False) for k in keys]
        answer: dict[Any, Any] = {}
        for k in keys:
            shape = self.draw(SINGLE_FAULTS[:1] + SINGLE_FAULTS[6:])
            self.summary.faults[f"batch-item:{shape}"] += 1
            answer[k] = self.shaped(shape, k, "batch-main")
        if fault == "wrong_key":
            stranger = self.rng.choice([k for k in PUBLISHABLE if k not in keys])
            answer[stranger] = self.payload(stranger, "batch-main", valid=False)
            for k in keys:  # the whole answer is refused
                item = answer[k]
                inner = item.value if isinstance(item, SourcePayload) else item
                if isinstance(inner, dict):
                    old = self.produced[inner["token"]]
                    self.produced[inner["token"]] = Produced(
                        old.key, old.source, old.payload, False
                    )
        if fault == "omit" and len(answer) > 1:
            del answer[self.rng.choice(list(answer))]
        return answer

    async def _derive(self, key: ResourceKey, snapshot: Snapshot, _context: Any) -> Any:
        fault = self.draw(DERIVE_FAULTS)
        source = "derived-main" if key.name == "derived" else "derived-chain"
        self.count_call(f"derive:{fault}")
        if fault == "slow":
            await asyncio.sleep(self.rng.uniform(0.05, 1.0))
        await self._misbehave(fault)
        used = {str(dep): value.value.get("token") for dep, value in snapshot.items()}
        for dep, value in snapshot.items():  # the deriver got valid, isolated dependencies
            self.check_value(dep, value, f"dependency of {key}")
            value.value["data"].append("deriver scribbles on its copy")
        return self.shaped(fault, key, source, inputs=used)

    def _threaded(self, key: ResourceKey, _context: Any) -> Any:
        with self.thread_lock:  # a worker thread: the loop's random generator is not ours
            fault = self.draw(THREAD_FAULTS, self.thread_rng)
            self.summary.source_calls += 1
            self.summary.faults[f"thread:{fault}"] += 1
            if fault == "error":
                raise RuntimeError("injected failure in a worker thread")
            now = self.clock.now()
            value = self.payload(key, "thread-lo", valid=fault != "future")
        if fault == "future":
            return SourcePayload(value, observed_at=now + 100.0)
        if fault == "skew":
            return SourcePayload(value, observed_at=now + 0.4)
        return value

    def _inline(self, keys: tuple[ResourceKey, ...], _context: Any) -> Any:
        self.count_call("inline:ok")
        return {k: self.payload(k, "inline-lo") for k in keys}

    # -- checks ------------------------------------------------------------------------------

    def violation(self, message: str) -> None:
        self.summary.violations.append(f"[t={self.clock.monotonic():.2f}] {message}")

    def check(self, condition: bool, message: str | Callable[[], str]) -> bool:
        """Count one invariant check; record a violation when it fails."""
        self.summary.invariant_checks += 1
        if not condition:
            self.violation(message() if callable(message) else message)
        return condition

    def check_value(self, key: ResourceKey, value: SnapshotValue[Any], where: str) -> None:
        """``value`` is one a source or a publication produced for ``key``, unaltered."""
        if not self.check(value.key == key, f"{where}: {value.key} served for {key}"):
            return
        payload = value.value
        token = payload.get("token") if isinstance(payload, dict) else None
        produced = self.produced.get(token) if isinstance(token, int) else None
        if not self.check(produced is not None, f"{where}: {key} holds unknown {payload!r:.80}"):
            return
        assert produced is not None
        self.check(produced.key == key, f"{where}: {key} holds a payload made for {produced.key}")
        self.check(produced.valid, f"{where}: {key} holds a payload that should have been refused")
        self.check(
            produced.source == value.source,
            f"{where}: {key} from {value.source} but produced by {produced.source}",
        )
        self.check(payload == produced.payload, f"{where}: {key} payload altered: {payload!r:.80}")
        version = self.versions.setdefault(token, value.version)  # one revision, one version
        self.check(
            value.version == version,
            f"{where}: {key} token {token} seen as versions {version} and {value.version}",
        )
        now = self.clock.now()
        # Future stamps within the tolerance are kept as given (B-VAL-4), never clamped to now.
        self.check(
            math.isfinite(value.observed_at) and value.observed_at <= now + _FUTURE_TOLERANCE,
            f"{where}: {key} observed at {value.observed_at} (now {now})",
        )
        self.check(value.age_seconds >= 0.0, f"{where}: {key} age {value.age_seconds} < 0")
        if value.source in {"derived-main", "derived-chain"}:
            self.check(
                set(value.dependency_versions) == set(DEPENDENCIES[key]),
                f"{where}: {key} records dependencies {list(value.dependency_versions)}",
            )

    def check_snapshot(
        self,
        snapshot: Snapshot | None,
        requested: Sequence[ResourceKey],
        where: str,
        *,
        overlap: bool = False,
    ) -> None:
        if not self.check(snapshot is not None, f"{where}: an error without its snapshot"):
            return
        assert snapshot is not None
        wanted = set(requested)
        resources, errors = set(snapshot.resources), set(snapshot.errors)
        self.check(resources <= wanted, f"{where}: values for unrequested {resources - wanted}")
        self.check(errors <= wanted, f"{where}: errors for unrequested {errors - wanted}")
        self.check(
            resources | errors == wanted,
            f"{where}: nothing said about {wanted - resources - errors}",
        )
        if not overlap:
            self.check(
                not resources & errors, f"{where}: both value and error for {resources & errors}"
            )
        for key, value in snapshot.resources.items():
            self.check_value(key, value, where)
        for key, error in snapshot.errors.items():
            self.check(
                isinstance(error, CoalestraError),
                f"{where}: undocumented error {error!r} for {key}",
            )

    def check_revisions(self, snapshot: Snapshot | BaseException | None, where: str) -> None:
        """Issue 12, defect 1: every derived value of one snapshot was derived from exactly the
        dependency revisions the same snapshot shows (by version, and by the tokens the deriver
        saw)."""
        if not isinstance(snapshot, Snapshot):
            return
        for key, value in snapshot.resources.items():
            inputs = value.value.get("inputs") if isinstance(value.value, dict) else None
            for dep, version in value.dependency_versions.items():
                shown = snapshot.resources.get(dep)
                if shown is None:
                    continue
                self.check(
                    shown.version == version,
                    f"{where}: {key} derived from {dep} version {version}, "
                    f"the snapshot shows {shown.version}",
                )
                if isinstance(inputs, dict) and isinstance(shown.value, dict):
                    self.check(
                        inputs.get(str(dep)) == shown.value.get("token"),
                        f"{where}: {key} derived from {dep} token {inputs.get(str(dep))}, "
                        f"the snapshot shows {shown.value.get('token')}",
                    )

    def check_build(
        self,
        result: Snapshot | BaseException,
        requested: Sequence[ResourceKey],
        required: Sequence[ResourceKey],
        where: str,
        policy: SnapshotConsistencyPolicy | None = None,
        optional: Sequence[ResourceKey] = (),
        *,
        revisions: bool = True,
    ) -> None:
        if revisions:
            self.check_revisions(
                result.snapshot if isinstance(result, SnapshotBuildError) else result, where
            )
        if isinstance(result, Snapshot):
            self.summary.returned += 1
            self.check_snapshot(result, requested, where)
            missing = [key for key in required if key in result.errors]
            self.check(not missing, f"{where}: returned although required {missing} failed")
            if policy is not None:
                skew = self.skew(result, policy, required, optional)
                self.check(
                    skew <= policy.max_observation_skew_seconds,
                    f"{where}: skew {skew} above {policy.max_observation_skew_seconds}",
                )
            return
        if not isinstance(result, SnapshotBuildError):
            self.violation(f"{where}: undocumented {result!r}")
            return
        self.summary.documented_errors += 1
        self.check_snapshot(result.snapshot, requested, where)
        if isinstance(result, SnapshotConsistencyError):
            self.check(policy is not None, f"{where}: a consistency error without a policy")
            if policy is not None and result.snapshot is not None:
                skew = self.skew(result.snapshot, policy, required, optional)
                self.check(
                    skew > policy.max_observation_skew_seconds
                    and math.isclose(skew, result.observation_skew_seconds),
                    f"{where}: consistency error with skew {skew} ({result})",
                )
            return
        failed = set(result.errors)
        self.check(
            bool(failed) and failed <= set(required),
            f"{where}: raised for {failed}, required {list(required)}",
        )
        if result.snapshot is not None:
            self.check(
                all(result.snapshot.errors.get(k) is e for k, e in result.errors.items()),
                f"{where}: the error and its snapshot disagree",
            )

    @staticmethod
    def skew(
        snapshot: Snapshot,
        policy: SnapshotConsistencyPolicy,
        required: Sequence[ResourceKey],
        optional: Sequence[ResourceKey],
    ) -> float:
        scope = list(required)
        if policy.include_optional_resources:
            scope += list(optional)
        stamps = [snapshot[key].observed_at for key in scope if key in snapshot]
        return max(stamps) - min(stamps) if len(stamps) > 1 else 0.0

    async def check_cache(self) -> None:
        """Every cached value is valid, and none replaced a newer one of its rank."""
        cache: Any = self.builder.cache
        before = await cache.stats()
        removals = (before.invalidations, before.expirations, before.evictions)
        found = await cache.get_many(
            ALL_KEYS, now=self.clock.now(), policies=dict.fromkeys(ALL_KEYS, READ_ALL)
        )
        now = self.clock.now()
        for key in ALL_KEYS:
            value = found[key].value
            if value is None:
                self.last_seen.pop(key, None)
                continue
            self.check_value(key, value, "cache")
            self.check(
                value.authority_rank == RANKS.get(value.source, 0),
                f"cache: {key} from {value.source} has rank {value.authority_rank}",
            )
            token = value.value.get("token") if isinstance(value.value, dict) else None
            if not isinstance(token, int):
                continue
            previous = self.last_seen.get(key)
            if previous is not None and previous.token != token and key not in self.reset:
                if key.name in {"derived", "chain"}:
                    comparable = removals == self.last_removals  # derived values are dropped
                else:  # nothing removed it unless it could expire (or we removed it ourselves)
                    comparable = policy_of(key).is_usable(now - previous.observed_at)
                if comparable:
                    self.check(
                        value.authority_rank > previous.rank
                        or (
                            value.authority_rank == previous.rank
                            and value.observed_at >= previous.observed_at
                        ),
                        f"cache: {key} went from rank {previous.rank} observed "
                        f"{previous.observed_at} to rank {value.authority_rank} observed "
                        f"{value.observed_at}",
                    )
            self.last_seen[key] = Seen(token, value.observed_at, value.authority_rank)
        self.reset.clear()
        after = await cache.stats()
        self.last_removals = (after.invalidations, after.expirations, after.evictions)

    # -- operations ----------------------------------------------------------------------------

    def sample(self, low: int = 1, high: int = 5) -> list[ResourceKey]:
        pool = ALL_KEYS if self.rng.random() < 0.1 else COMMON_KEYS
        return self.rng.sample(pool, self.rng.randint(low, min(high, len(pool))))

    def deadline(self) -> float | None:
        return self.rng.choice([None, None, 0.3, 1.0, 3.0, 10.0])

    async def op_build(self, where: str) -> None:
        self.summary.builds += 1
        keys = self.sample()
        strict = self.rng.random() < 0.5
        result: Snapshot | BaseException
        try:
            result = await self.builder.build(
                keys, strict=strict, deadline_seconds=self.deadline(), metadata={"op": where}
            )
        except SnapshotBuildError as error:
            result = error
        self.check_build(result, keys, keys if strict else (), where)

    async def op_build_request(self, where: str) -> None:
        self.summary.build_requests += 1
        keys = self.sample(1, 6)
        cut = self.rng.randint(0, len(keys))
        required, optional = keys[:cut], keys[cut:]
        policy = None
        if self.rng.random() < 0.3:
            policy = SnapshotConsistencyPolicy(
                max_observation_skew_seconds=self.rng.choice([0.5, 5.0, 1000.0]),
                include_optional_resources=self.rng.random() < 0.5,
            )
        request = SnapshotRequest(required=required, optional=optional, consistency_policy=policy)
        result: Snapshot | BaseException
        try:
            result = await self.builder.build_request(request, deadline_seconds=self.deadline())
        except SnapshotBuildError as error:
            result = error
        self.check_build(result, keys, required, where, policy, optional)

    async def op_session(self, where: str) -> None:
        self.summary.sessions += 1
        async with self.builder.session(deadline_seconds=self.deadline()) as session:
            first = self.sample()
            snapshot = await session.resolve(first, strict=False)
            self.check_build(snapshot, first, (), f"{where} stage 1")
            pinned = {key: value.version for key, value in snapshot.resources.items()}
            await asyncio.sleep(self.rng.choice([0.0, 0.2, 1.0]))
            second = list(dict.fromkeys([*self.sample(), *first[:2]]))
            request = SnapshotRequest(required=second[:1], optional=second[1:])
            result: Snapshot | BaseException
            try:
                result = await session.resolve_request(request)
            except SnapshotBuildError as error:
                result = error
            # Every stage returns the whole session so far (B-SESS-1). A key an earlier stage read
            # only as a dependency (or the input of a derived value it served from the cache or
            # another build's flight) shows the revision that derived value was computed from.
            session_keys = list(dict.fromkeys([*first, *second]))
            self.check_build(result, session_keys, second[:1], f"{where} stage 2")
            later = result if isinstance(result, Snapshot) else result.snapshot
            for key, version in pinned.items():
                if later is not None and key in later.resources:
                    self.check(
                        later[key].version == version,
                        f"{where}: pinned {key} changed between stages",
                    )
            await self._revalidate(session, first, where)

    async def _revalidate(self, session: Any, first: list[ResourceKey], where: str) -> None:
        held = session.snapshot()
        before = {key: value.version for key, value in held.resources.items()}
        selected = self.rng.sample(first, self.rng.randint(1, len(first)))
        policy = SnapshotConsistencyPolicy(5.0) if self.rng.random() < 0.2 else None
        try:
            updated = await session.revalidate(
                selected,
                strict=False,
                force_refresh=self.rng.random() < 0.3,
                consistency_policy=policy,
            )
        except SnapshotConsistencyError as error:
            self.summary.documented_errors += 1
            after = {key: value.version for key, value in session.snapshot().resources.items()}
            self.check(after == before, f"{where}: a rejected revalidation changed the pins")
            self.check(error.snapshot is not None, f"{where}: consistency error without snapshot")
            return
        self.summary.returned += 1
        # The whole session: retained (plus this call's errors) or committed (B-SESS-1, 7).
        self.check_snapshot(
            updated, list(updated.resources) + list(updated.errors), where, overlap=True
        )
        lost = set(selected) - set(updated.resources) - set(updated.errors)
        self.check(not lost, f"{where}: revalidation said nothing about {lost}")
        after = {key: value.version for key, value in session.snapshot().resources.items()}
        returned = {key: value.version for key, value in updated.resources.items()}
        self.check(
            after == returned,
            f"{where}: a revalidation returned other values than the session holds",
        )
        if set(updated.errors) != set(session.snapshot().errors):  # transient errors: failed
            self.check(after == before, f"{where}: a failed revalidation changed the pins")
        replaced = [key for key, version in after.items() if before.get(key) != version]
        # Selected keys, values derived from them, and a dependency a derived value of the
        # session was computed from, directly or through an intermediate derived value
        # (committed with it, so the session never mixes revisions).
        derived = {
            key
            for key in replaced
            if updated[key].dependency_versions
            or (key in held.resources and held[key].dependency_versions)
        }
        inputs = {dep for value in updated.values() for dep in value.dependency_versions}
        inputs.update(
            dep
            for key in replaced
            if key in held.resources
            for dep in held[key].dependency_versions
        )
        pending = list(inputs)
        while pending:  # through intermediate derived values, by the declared graph
            for dep in DEPENDENCIES.get(pending.pop(), ()):
                if dep not in inputs:
                    inputs.add(dep)
                    pending.append(dep)
        self.check(
            all(key in selected or key in inputs or key in derived for key in replaced),
            f"{where}: a revalidation changed values it did not select",
        )

    async def op_publish(self, where: str) -> None:
        self.summary.publishes += 1
        key = self.rng.choice(PUBLISHABLE)
        source = self.rng.choice(["stream", "stream", "admin", "events"])
        shape = self.rng.choice(["now", "past", "past", "skew", "future", "nan"])
        now = self.clock.now()
        observed = {
            "now": None,
            "past": now - self.rng.uniform(0.0, 4.0),
            "skew": now + 0.4,
            "future": now + 50.0,
            "nan": math.nan,
        }[shape]
        force = self.rng.random() < 0.03
        value = self.payload(key, source, valid=shape not in {"future", "nan"})
        if force:
            self.reset.add(key)  # force may legitimately replace a newer revision
        self.summary.faults[f"publish:{shape}{':force' if force else ''}"] += 1
        try:
            result = await self.builder.publisher.publish(
                key,
                value,
                source=source,
                observed_at=observed,
                force=force,
                replace_equal=self.rng.random() < 0.2,
            )
        except (SourceProtocolError, ValueError) as error:
            self.summary.documented_errors += 1
            expected = SourceProtocolError if shape == "future" else ValueError
            self.check(
                shape in {"future", "nan"} and isinstance(error, expected),
                f"{where}: publication ({shape}) refused: {error!r}",
            )
            return
        self.summary.returned += 1
        self.check(shape not in {"future", "nan"}, f"{where}: a {shape} publication was accepted")
        self.check(isinstance(result.status, PublishStatus), f"{where}: status {result.status!r}")
        self.check_value(key, result.value, f"{where} result")
        if result.previous is not None:
            self.check_value(key, result.previous, f"{where} previous")
        value["data"].append("mutated by the publisher's caller")
        result.value.value["data"].append("mutated by the result's reader")

    async def op_publish_many(self, where: str) -> None:
        self.summary.publishes += 1
        now = self.clock.now()
        refused = self.rng.random() < 0.1
        updates = []
        for index in range(self.rng.randint(1, 4)):
            key = self.rng.choice(PUBLISHABLE)
            future = refused and index == 0
            value = self.payload(key, "stream", valid=not refused)
            stamp = now + 50.0 if future else now - self.rng.uniform(0.0, 3.0)
            updates.append(ResourceUpdate(key, value, "stream", observed_at=stamp))
        self.summary.faults[f"publish_many:{'refused' if refused else 'ok'}"] += 1
        try:
            results = await self.builder.publisher.publish_many(updates)
        except SourceProtocolError:
            self.summary.documented_errors += 1
            self.check(refused, f"{where}: a valid batch was refused")
            return
        self.summary.returned += 1
        self.check(not refused, f"{where}: a batch with a future stamp was accepted")
        self.check(
            list(results) == list(dict.fromkeys(u.key for u in updates)),
            f"{where}: results {list(results)} for {[u.key for u in updates]}",
        )
        for key, result in results.items():
            self.check_value(key, result.value, f"{where} result")

    async def op_invalidate(self, where: str) -> None:
        self.summary.invalidations += 1
        if self.rng.random() < 0.7:
            key = self.rng.choice(ALL_KEYS)
            self.reset.add(key)
            await self.builder.publisher.invalidate(key, reason=where)
        else:
            name = self.rng.choice(["single", "batch", "derived"])
            self.reset.update(key for key in ALL_KEYS if key.name == name)
            cache: Any = self.builder.cache
            removed = await cache.invalidate_namespace("soak", name=name)
            self.check(all(k.name == name for k in removed), f"{where}: removed {removed}")

    async def op_bad_input(self, where: str) -> None:
        self.summary.bad_inputs += 1
        size = await self.builder.cache.size()  # type: ignore[attr-defined]
        attempts: list[tuple[Callable[[], Any], type[Exception], str]] = [
            (
                lambda: self.builder.build(SINGLE[:1], deadline_seconds=math.nan),
                ValueError,
                "deadline_seconds",
            ),
            (lambda: self.builder.build([SINGLE[0], "s1"]), TypeError, "keys"),  # type: ignore[list-item]
            (lambda: self.builder.publisher.publish(SINGLE[0], 1, source=""), ValueError, "source"),
            (lambda: self.builder.build_request(SnapshotRequest()), ValueError, "request"),
        ]
        call, expected, name = self.rng.choice(attempts)
        try:
            await call()
        except expected as error:
            self.summary.documented_errors += 1
            self.check(name in str(error), f"{where}: {error!r} does not name {name}")
        except Exception as error:
            self.violation(f"{where}: bad input raised {error!r}, expected {expected.__name__}")
        else:
            self.violation(f"{where}: bad input ({name}) was accepted")
        self.check(
            await self.builder.cache.size() == size,  # type: ignore[attr-defined]
            f"{where}: a refused call changed the cache",
        )

    # -- driving -------------------------------------------------------------------------------

    def launch(self, kind: str) -> None:
        self.serial += 1
        where = f"op {self.serial} ({kind})"
        runner = getattr(self, f"op_{kind}")
        task = asyncio.get_running_loop().create_task(runner(where))
        self.running.append(Operation(self.serial, kind, where, task))

    def harvest(self) -> None:
        for operation in [op for op in self.running if op.task.done()]:
            self.running.remove(operation)
            task, where = operation.task, operation.where
            if task.cancelled():
                self.summary.cancelled += 1
                self.check(operation.cancel_requested, f"{where}: cancelled by nobody")
                continue
            self.check(not operation.cancel_requested, f"{where}: swallowed its cancellation")
            error = task.exception()
            if error is not None:
                self.violation(f"{where}: unexpected {error!r}")

    async def step(self) -> None:
        kind = self.draw(STEPS)
        if kind in {"advance", "cancel"} or len(self.running) >= MAX_RUNNING:
            if kind == "cancel" and self.running:
                operation = self.rng.choice(self.running)
                self.summary.cancellations += 1
                operation.cancel_requested = operation.task.cancel() or operation.cancel_requested
            else:
                await asyncio.sleep(self.rng.uniform(0.1, 3.0))
        else:
            self.launch(kind)
        await asyncio.sleep(self.rng.choice([0.0, 0.0, 0.01, 0.05, 0.2]))
        self.harvest()
        await self.check_cache()

    async def finish(self, baseline: set[asyncio.Task[Any]]) -> None:
        for _ in range(3600):
            if not self.running:
                break
            await asyncio.sleep(1.0)
            self.harvest()
        for operation in self.running:
            self.violation(f"{operation.where} never finished")
            operation.task.cancel()
        await self.builder.wait_for_refreshes()
        await self.check_cache()
        await self.builder.aclose()
        for problem in await leftovers(self.builder, baseline):
            self.violation(f"after aclose: {problem}")
        self.summary.invariant_checks += 5
        try:
            await self.builder.build(SINGLE[:1])
        except SessionClosedError:
            pass
        else:
            self.violation("a closed builder still builds")


async def _soak(operations: int, seed: int, threads: set[threading.Thread]) -> SoakSummary:
    loop = asyncio.get_running_loop()
    baseline = task_baseline()
    soak = Soak(operations, seed, VirtualClock(loop))
    start = loop.time()
    for _ in range(operations):
        await soak.step()
    await soak.finish(baseline)
    await loop.shutdown_default_executor()
    for problem in thread_leftovers(threads):
        soak.violation(problem)
    soak.summary.virtual_seconds = loop.time() - start
    return soak.summary


def run_soak(operations: int, seed: int) -> SoakSummary:
    """Run ``operations`` random steps against one builder on virtual time (see the module
    docstring) and return what happened; ``summary.violations`` lists every broken invariant."""
    threads = set(threading.enumerate())
    with VirtualTimeRunner() as runner:
        return runner.run(_soak(operations, seed, threads))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20_240_601)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    summary = run_soak(args.operations, args.seed)
    print(summary.report())
    print(f"  real seconds: {time.perf_counter() - started:.1f}")
    return 1 if summary.violations else 0


if __name__ == "__main__":
    sys.exit(main())
