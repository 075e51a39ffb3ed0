"""Issue 16 item 7: errors that help -- a raising or async ``supports()``, batch keys returned as
text, timestamps in milliseconds, and ``to_dict(max_errors=...)``."""

from __future__ import annotations

import gc
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from coalestra import (
    CallableBatchSource,
    CallableSource,
    FreshnessPolicy,
    ObservationPolicy,
    ResourceKey,
    SnapshotBuilder,
    SnapshotBuildError,
    SourceFailure,
    SourcePayload,
    SourceProtocolError,
)
from coalestra.core import FetchContext
from coalestra.testing import VirtualClock

A = ResourceKey("m", "p", "A")
POLICY = FreshnessPolicy(ttl_seconds=5.0, max_stale_seconds=60.0)


def yes(_key: ResourceKey) -> bool:
    return True


def builder_of(*sources: Any, clock: VirtualClock, **options: Any) -> SnapshotBuilder:
    return SnapshotBuilder(sources, default_policy=POLICY, clock=clock, **options)


async def failure_of(builder: SnapshotBuilder, key: ResourceKey = A) -> SourceFailure:
    snapshot = await builder.build([key], strict=False)
    await builder.aclose()
    error = snapshot.errors[key]
    return error.failures[0]  # type: ignore[attr-defined, no-any-return]


# -- supports() --------------------------------------------------------------------------------


async def test_a_raising_supports_names_the_exception(clock: VirtualClock) -> None:
    def supports(key: ResourceKey) -> bool:
        raise KeyError(key.subject)

    source = CallableSource(name="s", priority=1, supports=supports, fetcher=lambda k, c: 1)
    builder = builder_of(source, clock=clock)
    snapshot = await builder.build([A], strict=False)
    await builder.aclose()
    assert snapshot.errors[A].failures == (  # type: ignore[attr-defined]
        SourceFailure("s", "KeyError", "'A'", 0),
    )
    assert "s: KeyError('A'; attempts=0)" in str(snapshot.errors[A])


async def test_an_async_supports_is_called_out_and_its_coroutine_closed(
    clock: VirtualClock,
) -> None:
    class AsyncSupports:
        name, priority = "async", 1

        async def supports(self, key: ResourceKey) -> bool:
            return True

        async def fetch(self, key: ResourceKey, context: FetchContext) -> int:
            return 1

    with no_never_awaited_warning():
        failure = await failure_of(builder_of(AsyncSupports(), clock=clock))
    assert failure.error_type == "SourceProtocolError"
    assert failure.message == (
        f"source async: supports({A}) must return a bool, got coroutine "
        "(supports() must be synchronous, not async def)"
    )


@contextmanager
def no_never_awaited_warning() -> Iterator[None]:
    """Fails when a 'coroutine ... was never awaited' warning is raised inside."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield
        gc.collect()
    assert not [w for w in seen if "never awaited" in str(w.message)]


# -- batch keys as text (inside B-SRC-4's message) ------------------------------------------------


async def test_batch_keys_returned_as_text_are_called_out(clock: VirtualClock) -> None:
    source = CallableBatchSource(
        name="quotes", priority=1, supports=yes, fetcher=lambda keys, ctx: {str(A): 1}
    )
    failure = await failure_of(builder_of(source, clock=clock))
    assert failure.error_type == "SourceProtocolError"
    assert failure.message == (
        "batch source quotes returned unrequested resources: 'm:p:A' (a str, not a ResourceKey)"
    )


async def test_a_requested_key_and_a_foreign_key_keep_the_contract_text(
    clock: VirtualClock,
) -> None:
    other = ResourceKey("m", "p", "Z")
    source = CallableBatchSource(
        name="quotes", priority=1, supports=yes, fetcher=lambda keys, ctx: {A: 1, other: 2}
    )
    failure = await failure_of(builder_of(source, clock=clock))
    assert failure.message == f"batch source quotes returned unrequested resources: {other}"


# -- timestamps in the wrong unit -----------------------------------------------------------------


def stamped(scale: float, clock: VirtualClock) -> CallableSource:
    async def fetch(key: ResourceKey, context: FetchContext) -> SourcePayload[int]:
        return SourcePayload(1, observed_at=clock.now() * scale)

    return CallableSource(name="feed", priority=1, supports=yes, fetcher=fetch)


@pytest.mark.parametrize(
    ("scale", "unit"),
    [(1e3, "milliseconds"), (1e6, "microseconds"), (1e9, "nanoseconds")],
)
async def test_a_timestamp_in_a_smaller_unit_is_called_out(
    clock: VirtualClock, scale: float, unit: str
) -> None:
    failure = await failure_of(builder_of(stamped(scale, clock), clock=clock))
    assert failure.message.startswith(f"source observation for {A} is ")
    assert f"s in the future (observed_at {clock.now() * scale!r} is probably {unit}" in (
        failure.message
    )


async def test_a_timestamp_merely_in_the_future_gets_no_hint(clock: VirtualClock) -> None:
    async def fetch(key: ResourceKey, context: FetchContext) -> SourcePayload[int]:
        return SourcePayload(1, observed_at=clock.now() + 5.0)

    source = CallableSource(name="feed", priority=1, supports=yes, fetcher=fetch)
    failure = await failure_of(builder_of(source, clock=clock))
    assert failure.message == f"source observation for {A} is 5.000000s in the future"


async def test_a_published_timestamp_in_milliseconds_is_called_out(clock: VirtualClock) -> None:
    builder = builder_of(stamped(1.0, clock), clock=clock)
    with pytest.raises(SourceProtocolError, match="is probably milliseconds since the epoch"):
        await builder.publisher.publish(A, 1, source="push", observed_at=clock.now() * 1000)
    await builder.aclose()


async def test_no_hint_without_rejection(clock: VirtualClock) -> None:
    observation = ObservationPolicy(reject_future_observations=False)
    builder = builder_of(stamped(1e3, clock), clock=clock, observation_policy=observation)
    assert (await builder.build([A])).value(A) == 1
    await builder.aclose()


# -- to_dict(max_errors=...) --------------------------------------------------------------------


async def build_error(clock: VirtualClock, count: int) -> SnapshotBuildError:
    async def fail(key: ResourceKey, context: FetchContext) -> int:
        raise ValueError("x" * 500)

    builder = builder_of(
        CallableSource(name="down", priority=1, supports=yes, fetcher=fail), clock=clock
    )
    keys = [ResourceKey("m", "p", f"K{i}") for i in range(count)]
    with pytest.raises(SnapshotBuildError) as caught:
        await builder.build(keys)
    await builder.aclose()
    return caught.value


CONTRACT_KEYS = {
    "schema",
    "schema_version",
    "error_type",
    "message",
    "partial_snapshot_available",
    "has_partial_snapshot",
    "errors",
}


async def test_to_dict_keeps_every_error_and_the_contract_keys_by_default(
    clock: VirtualClock,
) -> None:
    error = await build_error(clock, 30)
    document = error.to_dict()
    assert set(document) == CONTRACT_KEYS
    assert len(document["errors"]) == 30


async def test_to_dict_max_errors_keeps_the_first_n_and_counts_the_rest(
    clock: VirtualClock,
) -> None:
    error = await build_error(clock, 2000)
    document = error.to_dict(max_errors=10)
    assert set(document) == CONTRACT_KEYS | {"omitted_errors"}
    assert [entry["resource"] for entry in document["errors"]] == [f"m:p:K{i}" for i in range(10)]
    assert document["omitted_errors"] == 1990
    assert len(json.dumps(document)) < 20_000 < len(json.dumps(error.to_dict()))
    assert error.to_dict(max_errors=0)["errors"] == []
    whole = error.to_dict(max_errors=5000, extended=True)
    assert whole["omitted_errors"] == 0
    assert whole["error_count"] == 2000


@pytest.mark.parametrize(("bad", "kind"), [(-1, ValueError), (1.5, TypeError), (True, TypeError)])
async def test_to_dict_rejects_a_bad_max_errors(
    clock: VirtualClock, bad: object, kind: type[Exception]
) -> None:
    error = await build_error(clock, 2)
    with pytest.raises(kind, match="max_errors"):
        error.to_dict(max_errors=bad)  # type: ignore[arg-type]
