"""Contract facts B-SRC-1 ... B-SRC-5 and B-SRC-9 (source lists, callable adapters, failure
records, batch results and circuits, lifecycle), checked through the public API only."""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import pytest

from coalestra import (
    AsyncMemoryCache,
    CallableBatchSource,
    CallableDerivedSource,
    CallableSource,
    CircuitBreakerPolicy,
    CircuitScope,
    FetchContext,
    FreshnessPolicy,
    ResourceKey,
    ResourceResolutionError,
    RetryPolicy,
    Snapshot,
    SnapshotBuilder,
    SourceFailure,
    SourcePayload,
    SourceResiliencePolicy,
)
from coalestra.testing import VirtualClock

POLICY = FreshnessPolicy(ttl_seconds=60.0, max_stale_seconds=60.0)
NO_RETRY = RetryPolicy(max_attempts=1)


def k(subject: str, name: str = "price") -> ResourceKey:
    return ResourceKey("market", name, subject)


def yes(_key: ResourceKey) -> bool:
    return True


def value_of(name: str) -> Any:
    async def fetch(_key: ResourceKey, _ctx: FetchContext) -> str:
        return name

    return fetch


def failing(error: Exception) -> Any:
    async def fetch(_key: ResourceKey, _ctx: FetchContext) -> str:
        raise error

    return fetch


def single(name: str, priority: int, fetcher: Any = None, **options: Any) -> CallableSource:
    return CallableSource(
        name=name,
        priority=priority,
        supports=options.pop("supports", yes),
        fetcher=fetcher or value_of(name),
        **options,
    )


def builder_of(*sources: Any, clock: VirtualClock, **options: Any) -> SnapshotBuilder:
    options.setdefault("default_policy", POLICY)
    options.setdefault("retry_policy", NO_RETRY)
    return SnapshotBuilder(list(sources), clock=clock, **options)


def failures(snapshot: Snapshot, key: ResourceKey) -> tuple[SourceFailure, ...]:
    error = snapshot.errors[key]
    assert isinstance(error, ResourceResolutionError)
    return error.failures


# -- B-SRC-1 -----------------------------------------------------------------------------------


def test_b_src_1_a_builder_needs_sources_with_unique_names() -> None:
    with pytest.raises(ValueError, match=r"^at least one source is required$"):
        SnapshotBuilder([])
    with pytest.raises(ValueError, match=r"^source names must be unique$"):
        SnapshotBuilder([single("s", 1), single("s", 2)])


async def test_b_src_1_sources_are_tried_in_descending_priority(clock: VirtualClock) -> None:
    builder = builder_of(
        single("low", 1, failing(ConnectionError("low down"))),
        single("high", 3, failing(ConnectionError("high down"))),
        single("mid", 2, failing(ConnectionError("mid down"))),
        clock=clock,
    )
    snapshot = await builder.build([k("a")], strict=False)
    assert [failure.source for failure in failures(snapshot, k("a"))] == ["high", "mid", "low"]
    await builder.aclose()
    working = builder_of(single("low", 1), single("high", 3), clock=clock)
    assert (await working.build([k("a")])).value(k("a")) == "high"
    await working.aclose()


# -- B-SRC-2 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["single", "batch", "derived"])
def test_b_src_2_adapter_attributes(kind: str) -> None:
    source = _adapter(kind, name=" s ", timeout_seconds=2.0)
    assert source.name == "s"
    assert source.timeout_seconds == 2.0
    assert source.queue_timeout_seconds == 2.0  # defaults to timeout_seconds
    explicit = _adapter(kind, name="s", timeout_seconds=2.0, queue_timeout_seconds=0.5)
    assert explicit.queue_timeout_seconds == 0.5
    assert _adapter(kind, name="s").queue_timeout_seconds is None


@pytest.mark.parametrize("kind", ["single", "batch", "derived"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "  "}, "source name cannot be empty"),
        ({"name": ""}, "source name cannot be empty"),
        ({"timeout_seconds": 0.0}, "timeout_seconds must be positive"),
        ({"timeout_seconds": -1.0}, "timeout_seconds must be positive"),
        ({"queue_timeout_seconds": 0}, "queue_timeout_seconds must be positive"),
        ({"max_concurrency": 0}, "max_concurrency must be at least 1 or None"),
    ],
)
def test_b_src_2_adapter_errors(kind: str, options: dict[str, Any], message: str) -> None:
    arguments = {"name": "s", **options}
    with pytest.raises(ValueError, match=f"^{message}$"):
        _adapter(kind, **arguments)


def test_b_src_2_max_batch_size_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match=r"^max_batch_size must be at least 1 or None$"):
        _adapter("batch", name="b", max_batch_size=0)


async def test_b_src_2_a_source_without_queue_timeout_queues_for_its_timeout(
    clock: VirtualClock,
) -> None:
    class Plain:
        name = "plain"
        priority = 1
        timeout_seconds = 0.05

        def supports(self, key: ResourceKey) -> bool:
            return True

        async def fetch(self, key: ResourceKey, context: FetchContext) -> str:
            return "v"

    builder = builder_of(Plain(), clock=clock, max_concurrency=1)
    lease = await builder.capacity.acquire("plain")
    snapshot = await builder.build([k("a")], strict=False)
    (failure,) = failures(snapshot, k("a"))
    assert failure.error_type == "SourceQueueTimeoutError"
    assert "waited more than 0.050s for capacity" in failure.message
    lease.release()
    await builder.aclose()


def _adapter(kind: str, **options: Any) -> Any:
    options.setdefault("priority", 1)
    if kind == "single":
        return CallableSource(supports=yes, fetcher=value_of("v"), **options)
    if kind == "batch":
        return CallableBatchSource(supports=yes, fetcher=lambda keys, ctx: {}, **options)
    return CallableDerivedSource(
        supports=yes, dependencies=lambda key: [], deriver=lambda key, deps, ctx: 1, **options
    )


# -- B-SRC-3 -----------------------------------------------------------------------------------


async def test_b_src_3_each_failed_source_adds_a_failure_in_order(clock: VirtualClock) -> None:
    retried = SourceResiliencePolicy(
        retry=RetryPolicy(max_attempts=2, base_delay_seconds=0.0, jitter_ratio=0.0)
    )
    builder = builder_of(
        single("first", 2, failing(ConnectionError("first down")), resilience_policy=retried),
        single("second", 1, failing(SourcePayloadError("bad payload"))),
        clock=clock,
    )
    snapshot = await builder.build([k("a")], strict=False)
    assert failures(snapshot, k("a")) == (
        SourceFailure("first", "ConnectionError", "first down", 2),
        SourceFailure("second", "SourcePayloadError", "bad payload", 1),
    )
    await builder.aclose()


class SourcePayloadError(Exception):
    """A user error type: its own class name is recorded."""


async def test_b_src_3_a_raising_supports_is_recorded_and_the_chain_continues(
    clock: VirtualClock,
) -> None:
    def broken(_key: ResourceKey) -> bool:
        raise RuntimeError("supports exploded")

    builder = builder_of(
        single("broken", 3, supports=broken),
        single("down", 2, failing(ConnectionError("down"))),
        single("last", 1, failing(ConnectionError("last down"))),
        clock=clock,
    )
    snapshot = await builder.build([k("a")], strict=False)
    assert failures(snapshot, k("a")) == (
        SourceFailure("broken", "RuntimeError", "supports exploded", 0),
        SourceFailure("down", "ConnectionError", "down", 1),
        SourceFailure("last", "ConnectionError", "last down", 1),
    )
    await builder.aclose()
    served = builder_of(single("broken", 3, supports=broken), single("ok", 1), clock=clock)
    assert (await served.build([k("a")])).value(k("a")) == "ok"
    await served.aclose()


async def test_b_src_3_an_open_circuit_is_recorded_with_zero_attempts(
    clock: VirtualClock,
) -> None:
    circuit = SourceResiliencePolicy(
        retry=NO_RETRY, circuit=CircuitBreakerPolicy(failure_threshold=1)
    )
    builder = builder_of(
        single("flaky", 1, failing(ConnectionError("down")), resilience_policy=circuit),
        clock=clock,
    )
    await builder.build([k("a")], strict=False)
    (failure,) = failures(await builder.build([k("a")], strict=False), k("a"))
    assert (failure.source, failure.error_type, failure.attempts) == (
        "flaky",
        "CircuitOpenError",
        0,
    )
    await builder.aclose()


async def test_b_src_3_a_stale_payload_is_recorded_as_stale_source_data(
    clock: VirtualClock,
) -> None:
    async def old(_key: ResourceKey, _ctx: FetchContext) -> SourcePayload[str]:
        return SourcePayload("old", observed_at=clock.now() - 5.0)

    builder = builder_of(
        single("old", 1, old),
        clock=clock,
        default_policy=FreshnessPolicy(ttl_seconds=1.0, max_stale_seconds=1.0),
    )
    snapshot = await builder.build([k("a")], strict=False)
    assert failures(snapshot, k("a")) == (
        SourceFailure("old", "StaleSourceData", "age 5.000s exceeds ttl 1.000s", 1),
    )
    await builder.aclose()


async def test_b_src_3_no_supporting_source_means_no_failures(clock: VirtualClock) -> None:
    builder = builder_of(single("none", 1, supports=lambda key: False), clock=clock)
    snapshot = await builder.build([k("a")], strict=False)
    assert failures(snapshot, k("a")) == ()
    await builder.aclose()


# -- B-SRC-4 -----------------------------------------------------------------------------------


def batch(name: str, priority: int, fetcher: Any, **options: Any) -> CallableBatchSource:
    return CallableBatchSource(
        name=name,
        priority=priority,
        supports=options.pop("supports", yes),
        fetcher=fetcher,
        **options,
    )


class RawBatch:
    """A batch source implementing the protocol directly (no adapter checks)."""

    def __init__(self, name: str, result: Any) -> None:
        self.name = name
        self.priority = 2
        self._result = result

    def supports(self, key: ResourceKey) -> bool:
        return True

    async def fetch_many(
        self, keys: Collection[ResourceKey], context: FetchContext
    ) -> Mapping[ResourceKey, Any]:
        return self._result(tuple(keys))  # type: ignore[no-any-return]


def _batch_sources(name: str, result: Any) -> list[Any]:
    async def fetcher(keys: Sequence[ResourceKey], _ctx: FetchContext) -> Any:
        return result(tuple(keys))

    return [batch(name, 2, fetcher), RawBatch(name, result)]


@pytest.mark.parametrize("index", [0, 1], ids=["adapter", "protocol"])
async def test_b_src_4_a_non_mapping_result_fails_the_call(clock: VirtualClock, index: int) -> None:
    source = _batch_sources("b", lambda keys: list(keys))[index]
    builder = builder_of(source, single("fallback", 1), clock=clock)
    snapshot = await builder.build([k("a")])
    assert snapshot.value(k("a")) == "fallback"
    builder = builder_of(source, clock=clock)
    (failure,) = failures(await builder.build([k("a")], strict=False), k("a"))
    assert failure.error_type == "SourceProtocolError"
    assert failure.message == "batch source b must return a mapping, got list"
    await builder.aclose()


@pytest.mark.parametrize("index", [0, 1], ids=["adapter", "protocol"])
async def test_b_src_4_an_unrequested_key_fails_the_whole_call(
    clock: VirtualClock, index: int
) -> None:
    extra = k("zzz")
    source = _batch_sources("b", lambda keys: {**dict.fromkeys(keys, 1), extra: 2})[index]
    builder = builder_of(source, clock=clock)
    snapshot = await builder.build([k("a"), k("b")], strict=False)
    for key in (k("a"), k("b")):
        (failure,) = failures(snapshot, key)
        assert failure.error_type == "SourceProtocolError"
        assert failure.message == f"batch source b returned unrequested resources: {extra}"
    await builder.aclose()


@pytest.mark.parametrize("index", [0, 1], ids=["adapter", "protocol"])
async def test_b_src_4_an_omitted_key_continues_down_the_chain(
    clock: VirtualClock, index: int
) -> None:
    source = _batch_sources("b", lambda keys: {key: "b" for key in keys if key != k("b")})[index]
    fallback = single("fallback", 1, failing(ConnectionError("down")))
    builder = builder_of(source, fallback, clock=clock)
    snapshot = await builder.build([k("a"), k("b")], strict=False)
    assert snapshot.value(k("a")) == "b"
    first, second = failures(snapshot, k("b"))
    assert (first.source, first.error_type) == ("b", "SourceUnavailableError")
    assert first.message == f"batch source b omitted resource {k('b')}"
    assert second.source == "fallback"
    await builder.aclose()


# -- B-SRC-5 -----------------------------------------------------------------------------------


def _subject_circuit() -> SourceResiliencePolicy:
    return SourceResiliencePolicy(
        retry=NO_RETRY,
        circuit=CircuitBreakerPolicy(scope=CircuitScope.SUBJECT, failure_threshold=1),
    )


async def test_b_src_5_an_open_group_is_not_sent_and_falls_through(
    clock: VirtualClock,
) -> None:
    sent: list[tuple[ResourceKey, ...]] = []

    async def fetcher(keys: Sequence[ResourceKey], _ctx: FetchContext) -> dict[ResourceKey, str]:
        sent.append(tuple(keys))
        return {key: "batch" for key in keys if key != k("BTC")}

    source = batch("b", 2, fetcher, resilience_policy=_subject_circuit())
    builder = builder_of(source, single("fallback", 1), clock=clock)
    wanted = [k("BTC"), k("ETH"), k("ETH", "volume")]
    first = await builder.build(wanted)
    assert first.value(k("BTC")) == "fallback"
    sent.clear()
    fresh = [k("BTC", "volume"), k("ETH", "bid")]
    snapshot = await builder.build(fresh)
    assert sent == [(k("ETH", "bid"),)]
    assert snapshot.value(k("BTC", "volume")) == "fallback"
    assert snapshot.value(k("ETH", "bid")) == "batch"
    await builder.aclose()


async def test_b_src_5_open_group_keys_fail_with_zero_attempts(clock: VirtualClock) -> None:
    async def fetcher(keys: Sequence[ResourceKey], _ctx: FetchContext) -> dict[ResourceKey, str]:
        return {key: "batch" for key in keys if key.subject != "BTC"}

    builder = builder_of(batch("b", 1, fetcher, resilience_policy=_subject_circuit()), clock=clock)
    await builder.build([k("BTC"), k("ETH")], strict=False)
    snapshot = await builder.build([k("BTC", "volume")], strict=False)
    (failure,) = failures(snapshot, k("BTC", "volume"))
    assert (failure.error_type, failure.attempts) == ("CircuitOpenError", 0)
    await builder.aclose()


async def test_b_src_5_one_good_key_is_a_success_for_its_group(clock: VirtualClock) -> None:
    sent: list[tuple[ResourceKey, ...]] = []

    async def fetcher(keys: Sequence[ResourceKey], _ctx: FetchContext) -> dict[ResourceKey, Any]:
        sent.append(tuple(keys))
        result: dict[ResourceKey, Any] = {}
        for key in keys:
            if key.name == "stale":
                result[key] = SourcePayload("old", observed_at=clock.now() - 600.0)
            elif key.name != "omitted":
                result[key] = "ok"
        return result

    builder = builder_of(batch("b", 1, fetcher, resilience_policy=_subject_circuit()), clock=clock)
    # BTC: one good key among an omitted one -> success; ETH: only stale -> failure.
    await builder.build([k("BTC"), k("BTC", "omitted"), k("ETH", "stale")], strict=False)
    sent.clear()
    await builder.build([k("BTC", "bid"), k("ETH", "bid")], strict=False)
    assert sent == [(k("BTC", "bid"),)]
    await builder.aclose()


# -- B-SRC-9 -----------------------------------------------------------------------------------


class Closable:
    """A sink (events and metrics) whose close() is synchronous or returns an awaitable."""

    def __init__(self, log: list[str], name: str, kind: str) -> None:
        self.log, self.name, self.kind = log, name, kind
        self.threads: list[bool] = []

    def emit(self, event_type: str, **payload: Any) -> None:
        pass

    def increment(self, name: str, value: float = 1.0, **labels: str) -> None:
        pass

    def observe(self, name: str, value: float, **labels: str) -> None:
        pass

    def close(self) -> Any:
        self.threads.append(threading.current_thread() is threading.main_thread())
        self.log.append(self.name)
        if self.kind == "awaitable":

            async def later() -> None:
                self.log.append(self.name + " awaited")

            return later()
        return None


class ClosableSource:
    def __init__(self, log: list[str], name: str, priority: int) -> None:
        self.log, self.name, self.priority = log, name, priority

    def supports(self, key: ResourceKey) -> bool:
        return True

    async def fetch(self, key: ResourceKey, context: FetchContext) -> str:
        return self.name

    async def aclose(self) -> None:
        self.log.append(self.name)


async def test_b_src_9_aclose_closes_components_once_in_order(clock: VirtualClock) -> None:
    log: list[str] = []
    sinks = SinkCloser(log, "sinks")

    class ClosingCache(AsyncMemoryCache):
        async def aclose(self) -> None:
            log.append("cache")

    builder = SnapshotBuilder(
        [ClosableSource(log, "s1", 2), ClosableSource(log, "s2", 1)],
        clock=clock,
        default_policy=POLICY,
        cache=ClosingCache(),
        events=sinks,
        metrics=sinks,  # one component in two roles: closed once
        manage_lifecycle=True,
    )
    await builder.build([ResourceKey("market", "price", "a")])
    await builder.aclose()
    assert log == ["s1", "s2", "cache", "sinks"]


class SinkCloser:
    """Both an event and a metrics sink, with a synchronous close()."""

    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name
        self.on_main_thread: list[bool] = []

    def emit(self, event_type: str, **payload: Any) -> None:
        pass

    def increment(self, name: str, value: float = 1.0, **labels: str) -> None:
        pass

    def observe(self, name: str, value: float, **labels: str) -> None:
        pass

    def close(self) -> None:
        self.on_main_thread.append(threading.current_thread() is threading.main_thread())
        self.log.append(self.name)


async def test_b_src_9_sync_closes_run_in_threads_and_awaitables_are_awaited(
    clock: VirtualClock,
) -> None:
    log: list[str] = []
    events = Closable(log, "events", "sync")
    metrics = Closable(log, "metrics", "awaitable")
    source = single("s", 1)
    builder = SnapshotBuilder(
        [source],
        clock=clock,
        default_policy=POLICY,
        events=events,
        metrics=metrics,
        manage_lifecycle=True,
    )
    await builder.aclose()
    assert log == ["events", "metrics", "metrics awaited"]
    assert events.threads == [False]
    assert metrics.threads == [False]


async def test_b_src_9_a_source_close_has_run_after_aclose(clock: VirtualClock) -> None:
    log: list[str] = []

    class SyncClosingSource:
        name, priority = "s", 1

        def supports(self, key: ResourceKey) -> bool:
            return True

        async def fetch(self, key: ResourceKey, context: FetchContext) -> str:
            return "v"

        def close(self) -> None:
            log.append("closed s")

    builder = SnapshotBuilder(
        [SyncClosingSource()], clock=clock, default_policy=POLICY, manage_lifecycle=True
    )
    await builder.aclose()
    assert log == ["closed s"]
    await builder.aclose()  # idempotent: nothing is closed twice
    assert log == ["closed s"]
