"""Contract facts B-KEYS-1, B-VAL-1..7 and B-ERR-1..8: key, value and error behaviour that
programs written for the published 0.5.7 API rely on (exact messages included)."""

from __future__ import annotations

import json
import math
import pickle
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from coalestra import (
    ERROR_DIAGNOSTICS_SCHEMA,
    ERROR_DIAGNOSTICS_SCHEMA_VERSION,
    LEGACY_KEY_NORMALIZER,
    CallableSource,
    DependencyCycleError,
    FetchContext,
    FreshnessPolicy,
    ObservationPolicy,
    PayloadIsolationError,
    PublishStatus,
    ResourceKey,
    ResourceResolutionError,
    ResourceUpdate,
    Snapshot,
    SnapshotBuilder,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotRequest,
    SnapshotValue,
    SourceFailure,
    SourcePayload,
    SourceProtocolError,
    SubmissionBacklogFullError,
)
from coalestra.testing import VirtualClock

A = ResourceKey("market", "price", "A")
B = ResourceKey("market", "price", "B")
POLICY = FreshnessPolicy(ttl_seconds=10.0, max_stale_seconds=10.0)


def exactly(message: str) -> str:
    """A ``pytest.raises(match=...)`` pattern for exactly ``message``."""
    return f"^{re.escape(message)}$"


def _value(**overrides: Any) -> SnapshotValue[Any]:
    fields: dict[str, Any] = {
        "key": A,
        "value": 1,
        "source": "s",
        "observed_at": 100.0,
        "fetched_at": 100.0,
        "age_seconds": 0.0,
        "stale": False,
        "from_cache": False,
        "latency_ms": 0.0,
    }
    fields.update(overrides)
    return SnapshotValue(**fields)


def _source(
    name: str, priority: int, fetch: Callable[[ResourceKey], Any], **options: Any
) -> CallableSource:
    async def fetcher(key: ResourceKey, _context: FetchContext) -> Any:
        return fetch(key)

    return CallableSource(
        name=name, priority=priority, supports=lambda _key: True, fetcher=fetcher, **options
    )


def _builder(clock: VirtualClock, *sources: CallableSource, **options: Any) -> SnapshotBuilder:
    options.setdefault("default_policy", POLICY)
    return SnapshotBuilder(sources, clock=clock, **options)


def _failing(message: str) -> Callable[[ResourceKey], Any]:
    def fetch(_key: ResourceKey) -> Any:
        raise RuntimeError(message)

    return fetch


# --- B-KEYS-1 -----------------------------------------------------------------------------------


def test_b_keys_1_qualifiers_equal_after_normalization_are_duplicates() -> None:
    with pytest.raises(ValueError, match=exactly("duplicate qualifier name: interval")):
        ResourceKey(
            "m", "candles", "X", [("Interval", "1m"), ("interval", "5m")],
            normalizer=LEGACY_KEY_NORMALIZER,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        (("  ", "price"), "namespace cannot be empty"),
        (("market", ""), "name cannot be empty"),
    ],
)
def test_b_keys_1_empty_parts_have_exact_messages(parts: tuple[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=exactly(message)):
        ResourceKey(*parts)


def test_b_keys_1_an_empty_qualifier_name_has_an_exact_message() -> None:
    with pytest.raises(ValueError, match=exactly("qualifier name cannot be empty")):
        ResourceKey("market", "price", "A", {" ": "1m"})


# --- B-VAL-1 ------------------------------------------------------------------------------------

_NON_FINITE = [float("inf"), float("-inf"), float("nan")]

_TIMESTAMP_FIELDS: list[tuple[str, Callable[[Any], object]]] = [
    ("observed_at", lambda t: SourcePayload(1, observed_at=t)),
    ("observed_at", lambda t: ResourceUpdate(A, 1, "s", observed_at=t)),
    ("observed_at", lambda t: _value(observed_at=t)),
    ("fetched_at", lambda t: _value(fetched_at=t)),
    ("requested_at", lambda t: FetchContext(requested_at=t)),
    ("deadline_at", lambda t: FetchContext(requested_at=1.0, deadline_at=t)),
    ("deadline_monotonic", lambda t: FetchContext(requested_at=1.0, deadline_monotonic=t)),
    ("created_at", lambda t: Snapshot("id", t, {})),
    ("future_tolerance_seconds", lambda t: ObservationPolicy(future_tolerance_seconds=t)),
]


@pytest.mark.parametrize(("field", "make"), _TIMESTAMP_FIELDS)
@pytest.mark.parametrize("bad", _NON_FINITE)
def test_b_val_1_non_finite_timestamps_are_refused(
    field: str, make: Callable[[Any], object], bad: float
) -> None:
    with pytest.raises(ValueError, match=exactly(f"{field} must be finite")):
        make(bad)


@pytest.mark.parametrize(("field", "make"), _TIMESTAMP_FIELDS)
@pytest.mark.parametrize("bad", ["soon", object(), [1]])
def test_b_val_1_unconvertible_timestamps_are_refused(
    field: str, make: Callable[[Any], object], bad: object
) -> None:
    with pytest.raises(ValueError, match=exactly(f"{field} must be a finite number")):
        make(bad)


def test_b_val_1_observe_inf_observed_at() -> None:
    with pytest.raises(ValueError, match="observed_at must be finite"):
        SourcePayload(1, observed_at=float("inf"))


def test_b_val_1_timestamps_are_stored_as_floats() -> None:
    stamps = [
        SourcePayload(1, observed_at=123).observed_at,
        ResourceUpdate(A, 1, "s", observed_at=123).observed_at,
        _value(observed_at=123).observed_at,
        _value(fetched_at=Decimal("123")).fetched_at,
        FetchContext(requested_at=123).requested_at,
        FetchContext(requested_at=1, deadline_at=123).deadline_at,
        FetchContext(requested_at=1, deadline_monotonic=123).deadline_monotonic,
        Snapshot("id", 123, {}).created_at,
        ObservationPolicy(future_tolerance_seconds=123).future_tolerance_seconds,
    ]
    for stamp in stamps:
        assert type(stamp) is float
        assert stamp == 123.0


# --- B-VAL-2 ------------------------------------------------------------------------------------


def test_b_val_2_a_negative_future_tolerance_is_refused() -> None:
    with pytest.raises(ValueError, match=exactly("future_tolerance_seconds cannot be negative")):
        ObservationPolicy(future_tolerance_seconds=-0.5)
    assert ObservationPolicy(future_tolerance_seconds=0).future_tolerance_seconds == 0.0


# --- B-VAL-3 ------------------------------------------------------------------------------------


def test_b_val_3_equality_ignores_rank_version_and_dependency_versions() -> None:
    first = _value(authority_rank=1, version="v1", dependency_versions={B: "x"})
    second = _value(authority_rank=9, version="v2", dependency_versions={})
    assert first == second
    assert _value(authority_rank=1) == _value(authority_rank=2)
    assert _value(value=1) != _value(value=2)
    assert _value(observed_at=1.0) != _value(observed_at=2.0)


@pytest.mark.parametrize("blank", ["", "   "])
def test_b_val_3_a_blank_version_is_refused(blank: str) -> None:
    with pytest.raises(ValueError, match=exactly("version cannot be empty")):
        _value(version=blank)


# --- B-VAL-4 ------------------------------------------------------------------------------------


async def test_b_val_4_a_source_future_stamp_is_kept_with_its_skew(clock: VirtualClock) -> None:
    now = clock.now()
    source = _source("skewed", 1, lambda _key: SourcePayload("v", observed_at=now + 0.5))
    async with _builder(
        clock, source, observation_policy=ObservationPolicy(future_tolerance_seconds=1.0)
    ) as builder:
        value = (await builder.build([A]))[A]
        assert value.observed_at == now + 0.5
        assert value.age_seconds == 0.0
        assert not value.stale
        assert value.metadata["clock_skew_seconds"] == pytest.approx(0.5)

        later = await builder.publisher.publish(A, "pushed", source="push", observed_at=now + 0.2)
        assert later.status is PublishStatus.IGNORED_OLDER
        assert (await builder.build([A])).value(A) == "v"


async def test_b_val_4_a_published_future_stamp_is_kept_with_its_skew(
    clock: VirtualClock,
) -> None:
    now = clock.now()
    async with _builder(clock, _source("rest", 1, lambda _key: "rest")) as builder:
        result = await builder.publisher.publish(A, "v", source="push", observed_at=now + 0.75)
        assert result.status is PublishStatus.PUBLISHED
        assert result.value.observed_at == now + 0.75
        assert result.value.metadata["clock_skew_seconds"] == pytest.approx(0.75)
        served = (await builder.build([A]))[A]
        assert served.observed_at == now + 0.75
        assert served.age_seconds == 0.0


async def test_b_val_4_a_source_stamp_beyond_tolerance_fails_over(clock: VirtualClock) -> None:
    now = clock.now()
    liar = _source("liar", 5, lambda _key: SourcePayload("lie", observed_at=now + 5.0))
    honest = _source("honest", 1, lambda _key: "honest")
    async with _builder(
        clock, liar, honest, observation_policy=ObservationPolicy(future_tolerance_seconds=1.0)
    ) as builder:
        snapshot = await builder.build([A])
    assert snapshot.value(A) == "honest"
    assert snapshot.diagnostics.future_timestamp_rejections == 1


async def test_b_val_4_a_rejected_source_stamp_has_an_exact_message(
    clock: VirtualClock,
) -> None:
    now = clock.now()
    liar = _source("liar", 5, lambda _key: SourcePayload("lie", observed_at=now + 5.0))
    async with _builder(clock, liar) as builder:
        snapshot = await builder.build([B], strict=False)
    error = snapshot.errors[B]
    assert isinstance(error, ResourceResolutionError)
    (failure,) = error.failures
    assert failure.error_type == "SourceProtocolError"
    assert failure.message == f"source observation for {B} is 5.000000s in the future"
    assert snapshot.diagnostics.future_timestamp_rejections == 1


async def test_b_val_4_a_publication_beyond_tolerance_raises_and_writes_nothing(
    clock: VirtualClock,
) -> None:
    now = clock.now()
    async with _builder(clock, _source("rest", 1, lambda _key: "rest")) as builder:
        with pytest.raises(
            SourceProtocolError,
            match=exactly(f"published observation for {A} is 2.500000s in the future"),
        ):
            await builder.publisher.publish(A, "v", source="push", observed_at=now + 2.5)
        assert (await builder.build([A])).value(A) == "rest"


async def test_b_val_4_without_rejection_every_stamp_is_kept(clock: VirtualClock) -> None:
    now = clock.now()
    source = _source("skewed", 1, lambda _key: SourcePayload("v", observed_at=now + 30.0))
    lenient = ObservationPolicy(future_tolerance_seconds=1.0, reject_future_observations=False)
    async with _builder(clock, source, observation_policy=lenient) as builder:
        snapshot = await builder.build([A])
        assert snapshot[A].observed_at == now + 30.0
        assert snapshot[A].age_seconds == 0.0
        assert snapshot.diagnostics.future_timestamp_rejections == 0
        published = await builder.publisher.publish(B, 1, source="p", observed_at=now + 60.0)
        assert published.value.observed_at == now + 60.0


# --- B-VAL-5 ------------------------------------------------------------------------------------


async def test_b_val_5_a_failed_key_raises_key_error_and_keeps_its_error(
    clock: VirtualClock,
) -> None:
    source = _source("rest", 1, lambda key: 1 if key == A else _failing("down")(key))
    async with _builder(clock, source) as builder:
        snapshot = await builder.build([A, B], strict=False)
    with pytest.raises(KeyError):
        snapshot.value(B)
    with pytest.raises(KeyError):
        snapshot.value(ResourceKey("never", "requested"))
    error = snapshot.errors[B]
    assert isinstance(error, ResourceResolutionError)
    assert snapshot.error_for(B) is error
    assert snapshot.maybe_value(B) is None


def test_b_val_5_a_wrong_expected_type_has_an_exact_message() -> None:
    snapshot = Snapshot("id", 1.0, {A: _value(value=1)})
    with pytest.raises(TypeError, match=exactly(f"Resource {A} contains int, expected str")):
        snapshot.value(A, str)
    assert snapshot.value(A, int) == 1


# --- B-VAL-6 ------------------------------------------------------------------------------------


def test_b_val_6_stale_keys_is_a_tuple_in_resources_order() -> None:
    keys = [ResourceKey("m", "p", str(n)) for n in range(6)]
    resources = {key: _value(key=key, stale=n % 2 == 1) for n, key in enumerate(reversed(keys))}
    snapshot = Snapshot("id", 1.0, resources)
    stale = snapshot.stale_keys
    assert type(stale) is tuple
    assert stale == tuple(key for key, value in resources.items() if value.stale)
    assert stale == (keys[4], keys[2], keys[0])
    assert Snapshot("id", 1.0, {}).stale_keys == ()


# --- B-VAL-7 ------------------------------------------------------------------------------------


def test_b_val_7_update_sources_are_stripped() -> None:
    assert ResourceUpdate(A, 1, "  stream \n").source == "stream"


@pytest.mark.parametrize("blank", ["", "   "])
def test_b_val_7_a_blank_update_source_is_refused(blank: str) -> None:
    with pytest.raises(ValueError, match=exactly("source name cannot be empty")):
        ResourceUpdate(A, 1, blank)


# --- B-ERR-1 ------------------------------------------------------------------------------------


def test_b_err_1_observe_source_failure_format() -> None:
    assert SourceFailure("s", "E", "a  b\nc").format() == "s: E(a b c; attempts=1)"
    assert SourceFailure("s", "E", "m", attempts=3).format() == "s: E(m; attempts=3)"


def test_b_err_1_compaction_rules() -> None:
    assert SourceFailure("s", "E", "").format() == "s: E(<no message>; attempts=1)"
    assert SourceFailure("s", "E", "").to_dict()["message"] == "<no message>"
    failure = SourceFailure("s", "E", "x" * 20)
    assert failure.format(max_message_length=10) == "s: E(xxxxxxx...; attempts=1)"
    assert failure.to_dict(max_message_length=10)["message"] == "xxxxxxx..."
    assert failure.to_dict(max_message_length=3)["message"] == "xxx"
    assert failure.to_dict(max_message_length=1)["message"] == "x"
    assert failure.to_dict(max_message_length=20)["message"] == "x" * 20


@pytest.mark.parametrize("limit", [0, -1])
def test_b_err_1_a_limit_below_one_is_refused(limit: int) -> None:
    failure = SourceFailure("s", "E", "m")
    for render in (failure.format, failure.to_dict):
        with pytest.raises(ValueError, match=exactly("max_length must be positive")):
            render(max_message_length=limit)


# --- B-ERR-2 ------------------------------------------------------------------------------------


def _resolution_error(count: int, message: str = "boom", key: ResourceKey = A) -> Any:
    failures = tuple(SourceFailure(f"s{n}", "RuntimeError", message) for n in range(count))
    return ResourceResolutionError(key, failures)


def test_b_err_2_resolution_error_text() -> None:
    error = _resolution_error(2)
    expected = "s0: RuntimeError(boom; attempts=1); s1: RuntimeError(boom; attempts=1)"
    assert error.format_failures() == expected
    assert str(error) == f"Unable to resolve {A}: {expected}"


def test_b_err_2_failures_beyond_the_limit_are_counted() -> None:
    error = _resolution_error(5)
    text = error.format_failures(max_failures=2)
    assert text.endswith("s1: RuntimeError(boom; attempts=1); +3 more failure(s)")
    assert "+2 more failure(s)" in error.format_failures()
    assert "more failure" not in error.format_failures(max_failures=5)


def test_b_err_2_no_failures_and_invalid_limits() -> None:
    error = ResourceResolutionError(A, ())
    assert error.format_failures() == "no compatible source"
    assert str(error) == f"Unable to resolve {A}: no compatible source"
    with pytest.raises(ValueError, match=exactly("max_failures must be positive")):
        _resolution_error(1).format_failures(max_failures=0)


# --- B-ERR-3 ------------------------------------------------------------------------------------


def test_b_err_3_build_error_text() -> None:
    resolution = _resolution_error(1)
    other = ValueError("bad   input\nhere")
    error = SnapshotBuildError({A: resolution, B: other})
    assert str(error) == (
        f"Snapshot build failed: {A}=ResourceResolutionError[{resolution.format_failures()}], "
        f"{B}=ValueError(bad input here)"
    )


def test_b_err_3_more_than_five_keys_are_summarised() -> None:
    keys = [ResourceKey("m", "p", str(n)) for n in range(8)]
    error = SnapshotBuildError({key: KeyError("x") for key in keys})
    text = str(error)
    assert text.endswith(f"{keys[4]}=KeyError('x'), +3 more resource error(s)")
    assert str(keys[5]) not in text
    assert str(SnapshotBuildError({})).endswith("no resource details")


def test_b_err_3_observe_bounded_text() -> None:
    error = SnapshotBuildError({A: _resolution_error(6, "y" * 1000)})
    text = str(error)
    assert "+3 more failure(s)" in text
    assert len(text) < 1200


# --- B-ERR-4 ------------------------------------------------------------------------------------


class _Untouchable:
    def __getattribute__(self, name: str) -> Any:
        raise AssertionError(f"the snapshot was inspected: {name}")

    def __bool__(self) -> bool:
        raise AssertionError("the snapshot was inspected: bool")


def test_b_err_4_any_snapshot_object_is_accepted_and_never_inspected() -> None:
    marker = _Untouchable()
    error = SnapshotBuildError({A: _resolution_error(1)}, snapshot=marker)
    assert error.snapshot is marker
    text = str(error)
    serialized = error.to_dict()
    assert text.startswith("Snapshot build failed: ")
    assert serialized["partial_snapshot_available"] is True
    assert SnapshotBuildError({}, snapshot="anything").snapshot == "anything"


# --- B-ERR-5 ------------------------------------------------------------------------------------

_HEADER = {"schema": ERROR_DIAGNOSTICS_SCHEMA, "schema_version": ERROR_DIAGNOSTICS_SCHEMA_VERSION}


def test_b_err_5_source_failure_dict_has_exactly_its_keys() -> None:
    serialized = SourceFailure("s", "E", "m\t m", attempts=2).to_dict()
    assert serialized == {
        **_HEADER,
        "source": "s",
        "error_type": "E",
        "message": "m m",
        "attempts": 2,
    }
    assert ERROR_DIAGNOSTICS_SCHEMA == "coalestra.error-diagnostics"
    assert ERROR_DIAGNOSTICS_SCHEMA_VERSION == 1


def test_b_err_5_resolution_error_dict_has_exactly_its_keys() -> None:
    error = _resolution_error(2)
    serialized = error.to_dict()
    assert serialized == {
        **_HEADER,
        "resource": str(A),
        "error_type": "ResourceResolutionError",
        "message": str(error),
        "failures": [failure.to_dict() for failure in error.failures],
    }
    short = error.to_dict(max_message_length=20)
    assert short["message"] == str(error)[:17] + "..."
    assert all(len(item["message"]) <= 20 for item in short["failures"])


def test_b_err_5_build_error_dict_has_exactly_its_keys() -> None:
    resolution = _resolution_error(1)
    cycle = DependencyCycleError((A, B, A))
    error = SnapshotBuildError({B: resolution, A: cycle}, snapshot=None)
    serialized = error.to_dict(max_message_length=1000)
    assert serialized == {
        **_HEADER,
        "error_type": "SnapshotBuildError",
        "message": str(error),
        "partial_snapshot_available": False,
        "has_partial_snapshot": False,
        "errors": [
            resolution.to_dict(),
            {
                **_HEADER,
                "resource": str(A),
                "error_type": "DependencyCycleError",
                "message": str(cycle),
                "failures": [],
            },
        ],
    }
    json.dumps(serialized)
    assert len(error.to_dict()["message"]) <= 300


async def test_b_err_5_a_real_build_error_serializes_to_the_envelope(
    clock: VirtualClock,
) -> None:
    async with _builder(clock, _source("rest", 1, _failing("x" * 500))) as builder:
        with pytest.raises(SnapshotBuildError) as raised:
            await builder.build([A])
    serialized = raised.value.to_dict(max_message_length=50)
    assert set(serialized) == {
        "schema",
        "schema_version",
        "error_type",
        "message",
        "partial_snapshot_available",
        "has_partial_snapshot",
        "errors",
    }
    assert serialized["partial_snapshot_available"] is True
    assert serialized["has_partial_snapshot"] is True
    (entry,) = serialized["errors"]
    assert set(entry) == {"schema", "schema_version", "resource", "error_type", "message"} | {
        "failures"
    }
    assert len(serialized["message"]) == 50
    assert len(entry["failures"][0]["message"]) == 50


def test_b_err_5_option_extended_keeps_the_extra_fields() -> None:
    snapshot = Snapshot("snap-1", 1.0, {B: _value(key=B)})
    error = SnapshotBuildError({A: _resolution_error(1)}, snapshot=snapshot)
    extended = error.to_dict(extended=True)
    assert extended["snapshot_id"] == "snap-1"
    assert extended["resolved_resources"] == [str(B)]
    assert extended["failed_resources"] == [str(A)]
    assert extended["errors"][0]["failure_count"] == 1
    assert set(error.to_dict()) < set(extended)


# --- B-ERR-6 ------------------------------------------------------------------------------------


def _consistency_error() -> SnapshotConsistencyError:
    return SnapshotConsistencyError(
        keys=(A, B),
        oldest_key=A,
        oldest_observed_at=100,
        newest_key=B,
        newest_observed_at=102.5,
        observation_skew_seconds=2.5,
        max_observation_skew_seconds=1,
        snapshot=None,
    )


def test_b_err_6_consistency_error_message_and_attributes() -> None:
    error = _consistency_error()
    assert error.errors == {}
    assert error.to_dict()["errors"] == []
    assert str(error) == (
        "Snapshot observation skew 2.500000s exceeds the allowed 1.000000s across 2 "
        f"resource(s); oldest={A}@100.000000, newest={B}@102.500000"
    )
    assert (error.keys, error.oldest_key, error.newest_key) == ((A, B), A, B)
    floats = (
        error.oldest_observed_at,
        error.newest_observed_at,
        error.observation_skew_seconds,
        error.max_observation_skew_seconds,
    )
    assert floats == (100.0, 102.5, 2.5, 1.0)
    assert all(type(number) is float for number in floats)
    assert pickle.loads(pickle.dumps(error)).errors == {}


async def test_b_err_6_a_skewed_build_raises_with_the_resolved_keys(clock: VirtualClock) -> None:
    now = clock.now()
    stamps = {A: now - 5.0, B: now}

    def fetch(key: ResourceKey) -> Any:
        if key not in stamps:
            raise RuntimeError("unknown")
        return SourcePayload(str(key), observed_at=stamps[key])

    missing = ResourceKey("market", "price", "C")
    async with _builder(clock, _source("rest", 1, fetch)) as builder:
        request = SnapshotRequest(
            required=[B, A],
            optional=[missing],
            consistency_policy=SnapshotConsistencyPolicy(
                max_observation_skew_seconds=1.0, include_optional_resources=True
            ),
        )
        with pytest.raises(SnapshotConsistencyError) as raised:
            await builder.build_request(request)
    error = raised.value
    assert error.errors == {}
    assert error.keys == (B, A)
    assert (error.oldest_key, error.newest_key) == (A, B)
    assert error.observation_skew_seconds == pytest.approx(5.0)
    assert error.snapshot is not None
    assert str(error).startswith("Snapshot observation skew 5.000000s exceeds the allowed ")


# --- B-ERR-7 ------------------------------------------------------------------------------------


def test_b_err_7_exact_messages() -> None:
    isolation = PayloadIsolationError(context="publication of market:price", value_type="Lock")
    assert str(isolation) == (
        "Unable to isolate publication of market:price; payload type Lock does not support copying"
    )
    backlog = SubmissionBacklogFullError(limit=4, pending=4)
    assert str(backlog) == "Non-blocking submission backlog is full (pending=4, limit=4)"


# --- B-ERR-8 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [
        (True, TypeError, "max_observation_skew_seconds must be a number"),
        ("1", TypeError, "max_observation_skew_seconds must be a number"),
        (None, TypeError, "max_observation_skew_seconds must be a number"),
        (math.nan, ValueError, "max_observation_skew_seconds must be finite"),
        (math.inf, ValueError, "max_observation_skew_seconds must be finite"),
        (-0.5, ValueError, "max_observation_skew_seconds cannot be negative"),
    ],
)
def test_b_err_8_skew_validation(value: object, kind: type[Exception], message: str) -> None:
    with pytest.raises(kind, match=exactly(message)):
        SnapshotConsistencyPolicy(max_observation_skew_seconds=value)  # type: ignore[arg-type]


def test_b_err_8_include_optional_must_be_a_bool_and_ints_become_floats() -> None:
    with pytest.raises(TypeError, match=exactly("include_optional_resources must be a boolean")):
        SnapshotConsistencyPolicy(1.0, include_optional_resources=1)  # type: ignore[arg-type]
    policy = SnapshotConsistencyPolicy(2)
    assert type(policy.max_observation_skew_seconds) is float
    assert policy.max_observation_skew_seconds == 2.0
