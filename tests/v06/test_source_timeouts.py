"""Section 4 of the 0.6 API: blocking-source timeout declarations, the builder's checks before
a call starts, violation counters, metrics and events; async and sync, on virtual time."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.doubles import Events

import coalestra
from coalestra import (
    BlockingSourceTimeoutConfigured,
    CallableBatchSource,
    CallableDerivedSource,
    CallableSource,
    FetchContext,
    FreshnessPolicy,
    InMemoryMetrics,
    ResourceKey,
    RetryPolicy,
    SnapshotBuilder,
    SourcePayload,
    SourceTimeoutGuarantee,
    SourceTimeoutGuaranteeStatus,
    SyncSnapshotBuilder,
    capabilities,
    inspect_source_timeout_guarantee,
)
from coalestra.testing import VirtualClock

A, B, C = (ResourceKey("md", "quote", s) for s in "ABC")
ONCE = RetryPolicy(max_attempts=1)
Status = SourceTimeoutGuaranteeStatus
REJECTION = "source_transport_budget_rejection_total"
VIOLATION = "source_transport_timeout_violation_total"


class Declared:
    """A custom source with the declaration attributes; ``fetch`` sleeps ``delay`` on the loop
    (virtual time), then returns ``"v"`` or raises ``fail``."""

    def __init__(self, name: str = "db", priority: int = 10, **declared: Any) -> None:
        self.name, self.priority = name, priority
        self.delay = 0.0
        self.fail: Exception | None = None
        self.calls = 0
        for attribute, value in declared.items():
            setattr(self, attribute, value)

    def supports(self, key: ResourceKey) -> bool:
        return True

    async def fetch(self, key: ResourceKey, context: FetchContext) -> SourcePayload[str]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        return SourcePayload("v")


def protected(transport: float = 1.0, timeout: float | None = 5.0, **extra: Any) -> Declared:
    """A protected blocking source: offloaded, transport timeout below its own timeout."""
    return Declared(
        blocking_io=True,
        blocking_io_offloaded=True,
        transport_timeout_seconds=transport,
        timeout_seconds=timeout,
        **extra,
    )


def fetch(key: ResourceKey, context: FetchContext) -> str:
    return "v"


async def afetch(key: ResourceKey, context: FetchContext) -> str:
    return "v"


def callable_source(cls: type[Any] = CallableSource, **kwargs: Any) -> Any:
    base: dict[str, Any] = {"name": "c", "priority": 1, "supports": lambda key: True}
    if cls is CallableDerivedSource:
        base |= {"dependencies": lambda key: (), "deriver": lambda key, deps, ctx: "v"}
    elif cls is CallableBatchSource:
        base |= {"fetcher": lambda keys, ctx: dict.fromkeys(keys, "v")}
    else:
        base |= {"fetcher": fetch}
    return cls(**(base | kwargs))


ADAPTERS = [CallableSource, CallableBatchSource, CallableDerivedSource]


def builder(*sources: Any, **options: Any) -> SnapshotBuilder:
    options.setdefault("clock", VirtualClock())
    options.setdefault("retry_policy", ONCE)
    return SnapshotBuilder(list(sources), **options)


# -- the callable adapters ----------------------------------------------------------------


@pytest.mark.parametrize("cls", ADAPTERS)
def test_adapters_declare_non_blocking_by_default(cls: type[Any]) -> None:
    source = callable_source(cls)
    assert source.blocking_io is False
    assert source.transport_timeout_seconds is None
    assert source.blocking_io_offloaded is True  # a sync function in a worker thread
    assert isinstance(source, BlockingSourceTimeoutConfigured)
    assert inspect_source_timeout_guarantee(source).status is Status.NON_BLOCKING


@pytest.mark.parametrize("cls", ADAPTERS)
def test_adapters_declare_blocking_io_with_a_transport_timeout(cls: type[Any]) -> None:
    source = callable_source(cls, blocking_io=True, transport_timeout_seconds=2)
    assert source.blocking_io is True
    assert source.transport_timeout_seconds == 2.0
    assert type(source.transport_timeout_seconds) is float
    guarantee = inspect_source_timeout_guarantee(source)
    assert guarantee.status is Status.PROTECTED  # no timeout of its own: still protected


def test_offloaded_only_for_sync_functions_in_threads() -> None:
    assert callable_source(run_sync_in_thread=False).blocking_io_offloaded is False
    assert callable_source(fetcher=afetch).blocking_io_offloaded is False
    batch = callable_source(CallableBatchSource, run_sync_in_thread=False)
    assert batch.blocking_io_offloaded is False

    async def derive(key: ResourceKey, deps: Any, ctx: FetchContext) -> str:
        return "v"

    assert callable_source(CallableDerivedSource, deriver=derive).blocking_io_offloaded is False


@pytest.mark.parametrize("cls", ADAPTERS)
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"blocking_io": 1}, TypeError),
        ({"blocking_io": "yes"}, TypeError),
        ({"blocking_io": None}, TypeError),
        ({"blocking_io": True, "transport_timeout_seconds": "1"}, TypeError),
        ({"blocking_io": True, "transport_timeout_seconds": True}, TypeError),
        ({"blocking_io": True, "transport_timeout_seconds": math.nan}, ValueError),
        ({"blocking_io": True, "transport_timeout_seconds": math.inf}, ValueError),
        ({"blocking_io": True, "transport_timeout_seconds": 0}, ValueError),
        ({"blocking_io": True, "transport_timeout_seconds": -1.0}, ValueError),
        ({"transport_timeout_seconds": 1.0}, ValueError),  # not declared blocking
        ({"blocking_io": False, "transport_timeout_seconds": 1.0}, ValueError),
    ],
)
def test_adapters_reject_bad_declarations(
    cls: type[Any], kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error, match=r"blocking_io|transport_timeout_seconds"):
        callable_source(cls, **kwargs)


def test_a_blocking_adapter_without_transport_timeout_is_accepted_then_refused_by_the_builder() -> (
    None
):
    source = callable_source(blocking_io=True)
    assert source.transport_timeout_seconds is None
    assert inspect_source_timeout_guarantee(source).status is Status.UNSAFE_TIMEOUT_MISSING
    with pytest.raises(ValueError, match="unsafe_timeout_missing"):
        SnapshotBuilder([source])
    assert SnapshotBuilder([source], allow_unsafe_blocking_sources=True)


# -- inspect_source_timeout_guarantee -----------------------------------------------------


def test_status_values() -> None:
    assert issubclass(SourceTimeoutGuaranteeStatus, str)
    assert {member.name: member.value for member in Status} == {
        "UNDECLARED": "undeclared",
        "NON_BLOCKING": "non_blocking",
        "PROTECTED": "protected",
        "UNSAFE_NOT_OFFLOADED": "unsafe_not_offloaded",
        "UNSAFE_TIMEOUT_MISSING": "unsafe_timeout_missing",
        "UNSAFE_TIMEOUT_NOT_WITHIN_SOURCE": "unsafe_timeout_not_within_source",
    }


def test_undeclared_source() -> None:
    guarantee = inspect_source_timeout_guarantee(Declared(timeout_seconds=3))
    assert guarantee == SourceTimeoutGuarantee(
        source="db",
        status=Status.UNDECLARED,
        declaration_present=False,
        blocking_io=False,
        blocking_io_offloaded=False,
        transport_timeout_seconds=None,
        source_timeout_seconds=3.0,
    )
    assert not guarantee.safe
    assert not guarantee.protected
    assert not isinstance(Declared(), BlockingSourceTimeoutConfigured)


def test_guarantee_fields_in_order_and_frozen() -> None:
    assert [field.name for field in dataclasses.fields(SourceTimeoutGuarantee)] == [
        "source",
        "status",
        "declaration_present",
        "blocking_io",
        "blocking_io_offloaded",
        "transport_timeout_seconds",
        "source_timeout_seconds",
    ]
    guarantee = inspect_source_timeout_guarantee(protected())
    with pytest.raises(dataclasses.FrozenInstanceError):
        guarantee.status = Status.UNDECLARED  # type: ignore[misc]


def test_guarantees_validate_their_fields() -> None:
    fields: dict[str, Any] = {
        "source": "db",
        "status": "protected",
        "declaration_present": True,
        "blocking_io": True,
        "blocking_io_offloaded": True,
        "transport_timeout_seconds": 1,
        "source_timeout_seconds": None,
    }
    made = SourceTimeoutGuarantee(**fields)
    assert made.status is Status.PROTECTED
    assert made.transport_timeout_seconds == 1.0
    bad: list[tuple[dict[str, Any], type[Exception]]] = [
        ({"source": 1}, TypeError),
        ({"source": " "}, ValueError),
        ({"status": "safe"}, ValueError),
        ({"blocking_io": 1}, TypeError),
        ({"declaration_present": None}, TypeError),
        ({"transport_timeout_seconds": 0}, ValueError),
        ({"source_timeout_seconds": "5"}, TypeError),
    ]
    for change, error in bad:
        with pytest.raises(error, match=next(iter(change))):
            SourceTimeoutGuarantee(**(fields | change))


@pytest.mark.parametrize(
    ("declared", "status"),
    [
        ({"blocking_io": False}, Status.NON_BLOCKING),
        ({"blocking_io": False, "blocking_io_offloaded": True}, Status.NON_BLOCKING),
        ({"blocking_io": True, "transport_timeout_seconds": 1.0}, Status.UNSAFE_NOT_OFFLOADED),
        ({"blocking_io": True, "blocking_io_offloaded": True}, Status.UNSAFE_TIMEOUT_MISSING),
        (
            {"blocking_io": True, "blocking_io_offloaded": True, "transport_timeout_seconds": 5},
            Status.UNSAFE_TIMEOUT_NOT_WITHIN_SOURCE,  # equal to the source timeout
        ),
        (
            {"blocking_io": True, "blocking_io_offloaded": True, "transport_timeout_seconds": 9},
            Status.UNSAFE_TIMEOUT_NOT_WITHIN_SOURCE,
        ),
        (
            {"blocking_io": True, "blocking_io_offloaded": True, "transport_timeout_seconds": 4},
            Status.PROTECTED,
        ),
    ],
)
def test_statuses(declared: dict[str, Any], status: Status) -> None:
    guarantee = inspect_source_timeout_guarantee(Declared(timeout_seconds=5.0, **declared))
    assert guarantee.status is status
    assert guarantee.declaration_present
    assert guarantee.source_timeout_seconds == 5.0
    assert guarantee.safe is (status in (Status.NON_BLOCKING, Status.PROTECTED))
    assert guarantee.protected is (status is Status.PROTECTED)


def test_protected_without_a_source_timeout() -> None:
    guarantee = inspect_source_timeout_guarantee(protected(transport=100.0, timeout=None))
    assert guarantee.status is Status.PROTECTED
    assert guarantee.source_timeout_seconds is None
    assert guarantee.transport_timeout_seconds == 100.0


@pytest.mark.parametrize(
    ("declared", "error"),
    [
        ({"blocking_io": 1}, TypeError),
        ({"blocking_io": "false"}, TypeError),
        ({"blocking_io": True, "blocking_io_offloaded": 1}, TypeError),
        ({"blocking_io": True, "blocking_io_offloaded": None}, TypeError),
        ({"blocking_io": True, "transport_timeout_seconds": "1"}, TypeError),
        ({"blocking_io": True, "transport_timeout_seconds": math.inf}, ValueError),
        ({"blocking_io": True, "transport_timeout_seconds": math.nan}, ValueError),
        ({"blocking_io": True, "transport_timeout_seconds": 0.0}, ValueError),
        ({"blocking_io": False, "transport_timeout_seconds": 1.0}, ValueError),
        ({"blocking_io": False, "timeout_seconds": "5"}, TypeError),
        ({"blocking_io": False, "timeout_seconds": -5}, ValueError),
        ({"timeout_seconds": math.inf}, ValueError),  # undeclared: the timeout still counts
    ],
)
def test_inspection_rejects_bad_declarations(
    declared: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        inspect_source_timeout_guarantee(Declared(**declared))


def test_inspection_is_exported_where_0_6_puts_it() -> None:
    for name in (
        "BlockingSourceTimeoutConfigured",
        "SourceTimeoutGuarantee",
        "SourceTimeoutGuaranteeStatus",
        "inspect_source_timeout_guarantee",
    ):
        assert getattr(coalestra, name) is getattr(coalestra.core, name)
    assert capabilities().supports("blocking_source_timeout_guarantees")


# -- builder options and construction checks ----------------------------------------------


def test_builder_option_defaults_keep_0_5_7_behaviour() -> None:
    made = SnapshotBuilder([Declared()])  # an undeclared custom source is accepted
    assert made.require_source_timeout_declarations is None
    assert made.allow_unsafe_blocking_sources is False
    assert made.source_transport_timeout_grace_seconds == 0.05
    assert made.source_deadline_dispatch_grace_seconds == 0.0
    defaults = capabilities().defaults
    assert defaults["require_source_timeout_declarations"] is None
    assert defaults["allow_unsafe_blocking_sources"] is False


def test_builder_options_are_readable() -> None:
    made = SnapshotBuilder(
        [protected()],
        require_source_timeout_declarations=True,
        allow_unsafe_blocking_sources=True,
        source_transport_timeout_grace_seconds=1,
        source_deadline_dispatch_grace_seconds=0.25,
    )
    assert made.require_source_timeout_declarations is True
    assert made.allow_unsafe_blocking_sources is True
    assert made.source_transport_timeout_grace_seconds == 1.0
    assert made.source_deadline_dispatch_grace_seconds == 0.25
    assert SnapshotBuilder([Declared()], require_source_timeout_declarations=False)


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("require_source_timeout_declarations", 1, TypeError),
        ("require_source_timeout_declarations", "yes", TypeError),
        ("allow_unsafe_blocking_sources", None, TypeError),
        ("allow_unsafe_blocking_sources", 0, TypeError),
        ("source_transport_timeout_grace_seconds", True, TypeError),
        ("source_transport_timeout_grace_seconds", "0.1", TypeError),
        ("source_transport_timeout_grace_seconds", None, TypeError),
        ("source_transport_timeout_grace_seconds", -0.1, ValueError),
        ("source_transport_timeout_grace_seconds", math.nan, ValueError),
        ("source_transport_timeout_grace_seconds", math.inf, ValueError),
        ("source_deadline_dispatch_grace_seconds", False, TypeError),
        ("source_deadline_dispatch_grace_seconds", "0", TypeError),
        ("source_deadline_dispatch_grace_seconds", -1, ValueError),
        ("source_deadline_dispatch_grace_seconds", math.inf, ValueError),
        ("source_deadline_dispatch_grace_seconds", math.nan, ValueError),
    ],
)
def test_builder_rejects_bad_settings(option: str, value: object, error: type[Exception]) -> None:
    with pytest.raises(error, match=option):
        SnapshotBuilder([callable_source()], **{option: value})


def test_zero_graces_are_accepted() -> None:
    made = SnapshotBuilder([callable_source()], source_transport_timeout_grace_seconds=0)
    assert made.source_transport_timeout_grace_seconds == 0.0


def test_required_declarations_refuse_undeclared_sources() -> None:
    with pytest.raises(ValueError, match="source 'db' declares no blocking_io"):
        SnapshotBuilder([callable_source(), Declared()], require_source_timeout_declarations=True)
    # Callable adapters always declare (non-blocking by default), so they pass.
    assert SnapshotBuilder([callable_source()], require_source_timeout_declarations=True)


@pytest.mark.parametrize(
    ("source", "status"),
    [
        (Declared(blocking_io=True), "unsafe_not_offloaded"),
        (Declared(blocking_io=True, blocking_io_offloaded=True), "unsafe_timeout_missing"),
        (protected(transport=5.0, timeout=5.0), "unsafe_timeout_not_within_source"),
        (callable_source(fetcher=afetch, blocking_io=True), "unsafe_not_offloaded"),
    ],
)
def test_unsafe_blocking_sources_are_refused_unless_allowed(source: Any, status: str) -> None:
    with pytest.raises(ValueError, match=f"is not protected \\({status}\\)"):
        SnapshotBuilder([source])
    allowed = SnapshotBuilder([source], allow_unsafe_blocking_sources=True)
    assert allowed.allow_unsafe_blocking_sources


async def test_the_builder_default_source_timeout_bounds_the_transport_timeout() -> None:
    # Calls of a source without a timeout of its own end at default_source_timeout_seconds:
    # the transport timeout must be shorter than that.
    source = protected(transport=2.0, timeout=None)
    with pytest.raises(ValueError, match="unsafe_timeout_not_within_source"):
        SnapshotBuilder([source], default_source_timeout_seconds=2.0)
    made = SnapshotBuilder([source], default_source_timeout_seconds=3.0)
    guarantee = (await made.health_snapshot()).source_timeout_guarantees["db"]
    assert guarantee.status is Status.PROTECTED
    assert guarantee.source_timeout_seconds == 3.0
    assert inspect_source_timeout_guarantee(source).source_timeout_seconds is None


def test_custom_source_timeouts_must_be_finite_and_positive() -> None:
    for bad in (math.inf, math.nan, 0.0, -1.0):
        with pytest.raises(ValueError, match="source 'db' timeout_seconds"):
            SnapshotBuilder([Declared(blocking_io=False, timeout_seconds=bad)])
        with pytest.raises(ValueError, match="source 'db' queue_timeout_seconds"):
            SnapshotBuilder([Declared(blocking_io=False, queue_timeout_seconds=bad)])


def test_bad_declarations_of_custom_sources_fail_construction() -> None:
    with pytest.raises(TypeError, match="source 'db' blocking_io must be a bool"):
        SnapshotBuilder([Declared(blocking_io="no")])
    with pytest.raises(ValueError, match="requires blocking_io=True"):
        SnapshotBuilder([Declared(blocking_io=False, transport_timeout_seconds=1.0)])


# -- health -------------------------------------------------------------------------------


async def test_health_lists_guarantees_in_priority_order_with_counts() -> None:
    made = SnapshotBuilder(
        [
            Declared("plain", 1),
            callable_source(name="local", priority=5),
            protected(name="db", priority=9),
            Declared("legacy", 7, blocking_io=True),
        ],
        allow_unsafe_blocking_sources=True,
    )
    health = await made.health_snapshot()
    assert list(health.source_timeout_guarantees) == ["db", "legacy", "local", "plain"]
    statuses = {name: g.status for name, g in health.source_timeout_guarantees.items()}
    assert statuses == {
        "db": Status.PROTECTED,
        "legacy": Status.UNSAFE_NOT_OFFLOADED,
        "local": Status.NON_BLOCKING,
        "plain": Status.UNDECLARED,
    }
    assert health.blocking_source_count == 2
    assert health.protected_blocking_source_count == 1
    assert health.unsafe_blocking_source_count == 1
    assert health.undeclared_source_timeout_count == 1
    assert health.source_transport_timeout_violation_count == 0
    assert dict(health.source_transport_timeout_violations) == {}
    with pytest.raises(TypeError):
        health.source_timeout_guarantees["x"] = None  # type: ignore[index]


async def test_health_of_a_builder_without_declarations() -> None:
    health = await SnapshotBuilder([Declared("a"), Declared("b", 2)]).health_snapshot()
    assert health.undeclared_source_timeout_count == 2
    assert health.blocking_source_count == 0
    assert health.protected_blocking_source_count == 0
    assert health.unsafe_blocking_source_count == 0


def test_builder_health_defaults_for_the_new_fields() -> None:
    health = coalestra.BuilderHealth(
        closed=False,
        background_refreshes=0,
        singleflight_in_flight=0,
        source_support_cache_entries=0,
    )
    assert dict(health.source_timeout_guarantees) == {}
    assert health.blocking_source_count == 0
    assert health.protected_blocking_source_count == 0
    assert health.unsafe_blocking_source_count == 0
    assert health.undeclared_source_timeout_count == 0
    assert health.source_transport_timeout_violation_count == 0
    assert dict(health.source_transport_timeout_violations) == {}
    with pytest.raises(ValueError, match="blocking_source_count"):
        dataclasses.replace(health, blocking_source_count=-1)


# -- pre-flight -----------------------------------------------------------------------------


async def test_a_call_that_fits_runs_without_events() -> None:
    events, metrics = Events(), InMemoryMetrics()
    source = protected(transport=1.0, timeout=5.0)
    made = builder(source, events=events, metrics=metrics)
    snapshot = await made.build([A], deadline_seconds=1.5)
    assert snapshot.value(A) == "v"
    assert source.calls == 1
    transport_events = [kind for kind, _ in events.records if "transport" in kind]
    assert transport_events == []
    assert not events.of("source_dispatch_under_deadline_pressure")
    assert metrics.counter(REJECTION, source="db", reason="snapshot_deadline") == 0


async def test_the_deadline_leaving_too_little_time_rejects_the_call(clock: VirtualClock) -> None:
    events, metrics = Events(), InMemoryMetrics()
    source = protected(transport=1.0, timeout=5.0, max_concurrency=1)
    made = builder(source, events=events, metrics=metrics, clock=clock)
    snapshot = await made.build([A], strict=False, deadline_seconds=0.75)
    assert source.calls == 0  # never started
    error = snapshot.errors[A]
    failure = error.failures[0]
    assert failure.source == "db"
    assert failure.error_type == "SnapshotDeadlineExceededError"
    message = failure.message
    assert "budget=0.750s" in message
    assert "transport_timeout=1.000s" in message
    assert "gap=0.250s" in message
    assert metrics.counter(REJECTION, source="db", reason="snapshot_deadline") == 1
    assert events.of("source_transport_budget_rejected") == [
        {
            "source": "db",
            "resource": str(A),
            "transport_timeout_seconds": 1.0,
            "available_budget_seconds": 0.75,
        }
    ]
    health = await made.health_snapshot()
    assert health.deadline_exceeded_count == 1
    assert health.source_transport_timeout_violation_count == 0
    assert health.capacity["db"].in_use == 0  # the slot was given back
    assert health.capacity["__global__"].in_use == 0


async def test_a_rejection_falls_through_to_the_next_source() -> None:
    fallback = callable_source(name="fallback", priority=1, fetcher=lambda key, ctx: "fb")
    made = builder(protected(transport=1.0), fallback)
    snapshot = await made.build([A], deadline_seconds=0.5)
    assert snapshot.value(A) == "fb"


async def test_the_source_timeout_is_the_budget_when_it_is_shorter() -> None:
    # 4 s of the 10 s deadline: the source timeout (2 s) limits and the transport (1 s) fits.
    source = protected(transport=1.0, timeout=2.0)
    made = builder(source, events=Events())
    assert (await made.build([A], deadline_seconds=10.0)).value(A) == "v"
    assert source.calls == 1


async def test_dispatch_under_deadline_pressure_within_the_grace(clock: VirtualClock) -> None:
    events, metrics = Events(), InMemoryMetrics()
    source = protected(transport=1.0, timeout=5.0)
    made = builder(
        source,
        events=events,
        metrics=metrics,
        clock=clock,
        source_deadline_dispatch_grace_seconds=0.5,
    )
    snapshot = await made.build([A], deadline_seconds=0.75)
    assert snapshot.value(A) == "v"
    assert source.calls == 1
    (event,) = events.of("source_dispatch_under_deadline_pressure")
    assert event == {
        "source": "db",
        "resource": str(A),
        "transport_timeout_seconds": 1.0,
        "available_budget_seconds": 0.75,
        "deadline_dispatch_grace_seconds": 0.5,
        "gap_seconds": 0.25,
    }
    assert metrics.counter(REJECTION, source="db", reason="snapshot_deadline") == 0


async def test_pressure_beyond_the_grace_is_rejected() -> None:
    events = Events()
    source = protected(transport=1.0, timeout=5.0)
    made = builder(source, events=events, source_deadline_dispatch_grace_seconds=0.25)
    snapshot = await made.build([A], strict=False, deadline_seconds=0.75)  # gap 0.25: not < 0.25
    assert source.calls == 0
    assert snapshot.errors[A].failures[0].error_type == "SnapshotDeadlineExceededError"
    assert not events.of("source_dispatch_under_deadline_pressure")
    assert len(events.of("source_transport_budget_rejected")) == 1


async def test_the_budget_is_what_is_left_after_waiting_for_capacity(clock: VirtualClock) -> None:
    # The first build holds the only slot for 1 s; the second waits, then has 0.5 s of its
    # 1.5 s deadline left: too little for a 1 s transport timeout.
    events = Events()
    source = protected(transport=1.0, timeout=5.0, max_concurrency=1)
    source.delay = 0.9
    made = builder(source, events=events, clock=clock)
    first = asyncio.ensure_future(made.build([A]))
    await asyncio.sleep(0.1)
    second = await made.build([B], strict=False, deadline_seconds=1.3)
    assert (await first).value(A) == "v"
    assert second.errors[B].failures[0].error_type == "SnapshotDeadlineExceededError"
    (event,) = events.of("source_transport_budget_rejected")
    assert event["resource"] == str(B)
    assert event["available_budget_seconds"] == pytest.approx(0.5)
    assert source.calls == 1


async def test_sources_without_protection_are_never_checked() -> None:
    events = Events()
    unsafe = Declared("unsafe", 9, blocking_io=True)  # not offloaded
    plain = Declared("plain", 8)
    plain.delay = unsafe.delay = 3.0
    made = builder(unsafe, plain, events=events, allow_unsafe_blocking_sources=True)
    snapshot = await made.build([A], deadline_seconds=3.5)
    assert snapshot.value(A) == "v"
    assert events.records == [] or all("transport" not in kind for kind, _ in events.records)
    health = await made.health_snapshot()
    assert health.source_transport_timeout_violation_count == 0
    assert health.deadline_exceeded_count == 0


# -- violations -----------------------------------------------------------------------------


def _violated(events: Events) -> list[dict[str, Any]]:
    return events.of("source_transport_timeout_violated")


async def test_a_late_result_is_used_and_counted_completed_late(clock: VirtualClock) -> None:
    events, metrics = Events(), InMemoryMetrics()
    source = protected(transport=1.0, timeout=5.0)
    source.delay = 1.5
    made = builder(source, events=events, metrics=metrics, clock=clock)
    assert (await made.build([A])).value(A) == "v"  # still used
    assert metrics.counter(VIOLATION, source="db", outcome="completed_late") == 1
    (event,) = _violated(events)
    assert event == {
        "source": "db",
        "resource": str(A),
        "outcome": "completed_late",
        "declared_transport_timeout_seconds": 1.0,
        "observed_elapsed_seconds": pytest.approx(1.5),
        "grace_seconds": 0.05,
    }
    health = await made.health_snapshot()
    assert health.source_transport_timeout_violation_count == 1
    assert dict(health.source_transport_timeout_violations) == {"db": 1}


async def test_a_late_failure_is_counted_failed_late() -> None:
    events, metrics = Events(), InMemoryMetrics()
    source = protected(transport=1.0, timeout=5.0)
    source.delay, source.fail = 2.0, ConnectionError("reset")
    made = builder(source, events=events, metrics=metrics)
    snapshot = await made.build([A], strict=False)
    assert snapshot.errors[A].failures[0].error_type == "ConnectionError"
    assert metrics.counter(VIOLATION, source="db", outcome="failed_late") == 1
    assert [event["outcome"] for event in _violated(events)] == ["failed_late"]


async def test_our_own_timeout_is_always_a_violation() -> None:
    events, metrics = Events(), InMemoryMetrics()
    source = protected(transport=1.0, timeout=2.0)
    source.delay = 10.0
    made = builder(source, events=events, metrics=metrics)
    snapshot = await made.build([A], strict=False)
    assert snapshot.errors[A].failures[0].error_type == "SourceTimeoutError"
    assert metrics.counter(VIOLATION, source="db", outcome="coalestra_timeout") == 1
    (event,) = _violated(events)
    assert event["outcome"] == "coalestra_timeout"
    assert event["observed_elapsed_seconds"] == pytest.approx(2.0)
    health = await made.health_snapshot()
    assert health.source_timeout_count == 1
    assert health.source_transport_timeout_violation_count == 1


async def test_a_deadline_under_pressure_that_fires_is_a_coalestra_timeout() -> None:
    events = Events()
    source = protected(transport=1.0, timeout=5.0)
    source.delay = 1.0  # the transport would give up at 1 s; the deadline fires at 0.9 s
    made = builder(source, events=events, source_deadline_dispatch_grace_seconds=0.5)
    snapshot = await made.build([A], strict=False, deadline_seconds=0.9)
    assert snapshot.errors[A].failures[0].error_type == "SnapshotDeadlineExceededError"
    assert [event["outcome"] for event in _violated(events)] == ["coalestra_timeout"]


async def test_within_the_grace_is_no_violation() -> None:
    events, metrics = Events(), InMemoryMetrics()
    source = protected(transport=1.0, timeout=5.0)
    source.delay = 1.04
    made = builder(source, events=events, metrics=metrics)
    await made.build([A])
    source.delay = 1.5
    made_lenient = builder(
        source, events=events, metrics=metrics, source_transport_timeout_grace_seconds=0.6
    )
    await made_lenient.build([A])
    assert _violated(events) == []
    assert (await made.health_snapshot()).source_transport_timeout_violation_count == 0


async def test_violations_are_counted_per_source_and_per_attempt() -> None:
    first, second = protected(name="one", priority=2), protected(name="two", priority=1)
    first.delay, first.fail = 1.5, ConnectionError("down")
    second.delay = 1.2
    made = builder(first, second, retry_policy=RetryPolicy(max_attempts=2, base_delay_seconds=0.01))
    assert (await made.build([A])).value(A) == "v"
    health = await made.health_snapshot()
    assert dict(health.source_transport_timeout_violations) == {"one": 2, "two": 1}
    assert health.source_transport_timeout_violation_count == 3


async def test_a_cancelled_call_is_not_judged() -> None:
    events = Events()
    source = protected(transport=1.0, timeout=5.0)
    source.delay = 3.0
    made = builder(source, events=events)
    task = asyncio.ensure_future(made.build([A]))
    await asyncio.sleep(2.0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _violated(events) == []


class StepClock:
    """The injected clock: loop-independent time that a source moves forward by itself."""

    def __init__(self) -> None:
        self.offset = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def now(self) -> float:
        return time.time() + self.offset


async def test_elapsed_time_is_read_on_the_injected_clock() -> None:
    # The fetcher takes no loop time at all; the injected clock says it took 3 s.
    clock = StepClock()

    def slow(keys: Any, context: FetchContext) -> dict[ResourceKey, str]:
        clock.offset += 3.0
        return dict.fromkeys(keys, "v")

    events = Events()
    batch = CallableBatchSource(
        name="bulk",
        priority=1,
        supports=lambda key: True,
        fetcher=slow,
        timeout_seconds=30.0,
        blocking_io=True,
        transport_timeout_seconds=2.0,
    )
    made = SnapshotBuilder([batch], clock=clock, events=events)
    snapshot = await made.build([A, B])
    assert snapshot.value(B) == "v"
    (event,) = _violated(events)
    assert event["outcome"] == "completed_late"
    assert event["resource"] == f"{A}, {B}"
    assert event["observed_elapsed_seconds"] == pytest.approx(3.0, abs=0.5)


async def test_derived_sources_are_checked_like_the_others() -> None:
    clock = StepClock()

    def derive(key: ResourceKey, dependencies: Any, context: FetchContext) -> str:
        clock.offset += 4.0  # the injected clock sees the derivation take 4 s
        return "d"

    events = Events()
    derived = CallableDerivedSource(
        name="calc",
        priority=1,
        supports=lambda key: key.namespace == "calc",
        dependencies=lambda key: (),
        deriver=derive,
        timeout_seconds=30.0,
        blocking_io=True,
        transport_timeout_seconds=2.0,
    )
    made = SnapshotBuilder([derived], clock=clock, events=events)
    key = ResourceKey("calc", "total", "x")
    rejected = await made.build([key], strict=False, deadline_seconds=1.0)
    assert rejected.errors[key].failures[0].error_type == "SnapshotDeadlineExceededError"
    assert (await made.build([key])).value(key) == "d"
    assert [event["outcome"] for event in _violated(events)] == ["completed_late"]
    assert len(events.of("source_transport_budget_rejected")) == 1


async def test_a_batch_call_rejected_by_the_deadline_names_all_its_keys() -> None:
    events = Events()
    batch = callable_source(
        CallableBatchSource, blocking_io=True, transport_timeout_seconds=2.0, timeout_seconds=9.0
    )
    made = builder(batch, events=events)
    snapshot = await made.build([A, B], strict=False, deadline_seconds=1.0)
    assert set(snapshot.errors) == {A, B}
    message = snapshot.errors[A].failures[0].message
    assert "while resolving" not in message  # a batch call names no key (B-TIME-3)
    (event,) = events.of("source_transport_budget_rejected")
    assert event["resource"] == f"{A}, {B}"


# -- the sync facade --------------------------------------------------------------------------


@pytest.fixture
def step_clock() -> StepClock:
    return StepClock()


@pytest.fixture
def facade(step_clock: StepClock) -> Iterator[tuple[SyncSnapshotBuilder, InMemoryMetrics]]:
    def fetch_slowly(key: ResourceKey, context: FetchContext) -> str:
        if key == C:
            step_clock.offset += 5.0  # a call the injected clock sees take 5 s
        return key.subject

    source = CallableSource(
        name="db",
        priority=1,
        supports=lambda key: True,
        fetcher=fetch_slowly,
        timeout_seconds=30.0,
        blocking_io=True,
        transport_timeout_seconds=2.0,
    )
    metrics = InMemoryMetrics()
    made = SnapshotBuilder(
        [source],
        clock=step_clock,
        metrics=metrics,
        default_policy=FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0),
        require_source_timeout_declarations=True,
    )
    with SyncSnapshotBuilder(made, shutdown_timeout_seconds=5.0) as sync_builder:
        yield sync_builder, metrics


def test_sync_facade_rejects_and_counts(
    facade: tuple[SyncSnapshotBuilder, InMemoryMetrics],
) -> None:
    sync_builder, metrics = facade
    assert sync_builder.build([A]).value(A) == "A"
    snapshot = sync_builder.build([B], strict=False, deadline_seconds=1.0)
    assert snapshot.errors[B].failures[0].error_type == "SnapshotDeadlineExceededError"
    assert sync_builder.build([C]).value(C) == "C"  # late, still used
    health = sync_builder.health_snapshot()
    assert health.protected_blocking_source_count == 1
    assert health.source_timeout_guarantees["db"].protected
    assert health.deadline_exceeded_count == 1
    assert dict(health.source_transport_timeout_violations) == {"db": 1}
    assert metrics.counter(REJECTION, source="db", reason="snapshot_deadline") == 1
    assert metrics.counter(VIOLATION, source="db", outcome="completed_late") == 1
    assert sync_builder.builder.require_source_timeout_declarations is True


async def test_health_serializes_guarantees_and_assess_flags_unsafe_sources() -> None:
    made = SnapshotBuilder(
        [protected(), Declared("legacy", 1, blocking_io=True)], allow_unsafe_blocking_sources=True
    )
    health = await made.health_snapshot()
    wire = health.to_dict()
    assert wire["source_timeout_guarantees"]["db"] == {
        "source": "db",
        "status": "protected",
        "declaration_present": True,
        "blocking_io": True,
        "blocking_io_offloaded": True,
        "transport_timeout_seconds": 1.0,
        "source_timeout_seconds": 5.0,
    }
    assert wire["unsafe_blocking_source_count"] == 1
    (finding,) = health.assess().findings
    assert (finding.reason.value, finding.severity.value) == ("unsafe_blocking_source", "critical")
    assert finding.component == "legacy"
