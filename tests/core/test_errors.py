"""The exception tree, messages, versioned JSON-safe diagnostics and pickling of every error."""

from __future__ import annotations

import copy
import json
import pickle
import sys
from typing import Any

import pytest

from coalestra.core import (
    ERROR_DIAGNOSTICS_SCHEMA,
    ERROR_DIAGNOSTICS_SCHEMA_VERSION,
    CircuitOpenError,
    CoalestraError,
    DependencyCycleError,
    DependencyResolutionError,
    PayloadIsolationError,
    ResourceKey,
    ResourceResolutionError,
    SessionClosedError,
    Snapshot,
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotDeadlineExceededError,
    SnapshotValue,
    SourceFailure,
    SourceProtocolError,
    SourceQueueTimeoutError,
    SourceTimeoutError,
    SourceUnavailableError,
    SubmissionBacklogFullError,
)

ACCOUNT = ResourceKey("account", "balance")
POSITION = ResourceKey("account", "position", "BTCUSDT")
PRICE = ResourceKey("market", "price", "BTCUSDT", {"venue": "spot"})
HEALTH = ResourceKey("market", "health")


def assert_json_safe(value: object, path: str = "$") -> None:
    """Fail unless ``value`` holds only str, int, bool, list and dict (with str keys)."""
    if isinstance(value, (str, bool)):
        return
    if type(value) is int:
        return
    if type(value) is list:
        for index, item in enumerate(value):
            assert_json_safe(item, f"{path}[{index}]")
        return
    if type(value) is dict:
        for key, item in value.items():
            assert type(key) is str, f"{path}: non-str key {key!r}"
            assert_json_safe(item, f"{path}.{key}")
        return
    raise AssertionError(f"{path}: {type(value).__name__} is not JSON-safe: {value!r}")


def assert_round_trips(data: object) -> None:
    assert_json_safe(data)
    assert json.loads(json.dumps(data)) == data


@pytest.mark.parametrize(
    "bad",
    [1.5, None, (1, 2), ValueError("x"), {"a": {"b": [None]}}, {1: "x"}, {"a": {1, 2}}],
)
def test_the_json_checker_itself_catches_bad_values(bad: object) -> None:
    with pytest.raises(AssertionError):
        assert_json_safe({"nested": [bad]})


def value_of(key: ResourceKey, payload: Any = 1) -> SnapshotValue[Any]:
    return SnapshotValue(key, payload, "rest", 100.0, 101.0, 1.0, False, False, 2.0)


def resolution_error(key: ResourceKey = POSITION) -> ResourceResolutionError:
    return ResourceResolutionError(
        key,
        (
            SourceFailure("stream", "CircuitOpenError", "circuit open", 1),
            SourceFailure("rest", "TimeoutError", "took too long", 3),
        ),
    )


def partial_snapshot(errors: dict[ResourceKey, Exception]) -> Snapshot:
    return Snapshot(
        "cycle-42",
        1000.0,
        {ACCOUNT: value_of(ACCOUNT), PRICE: value_of(PRICE)},
        errors,
    )


# --- the tree ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error_type", "base"),
    [
        (CoalestraError, Exception),
        (SourceUnavailableError, CoalestraError),
        (SourceTimeoutError, SourceUnavailableError),
        (SourceQueueTimeoutError, SourceTimeoutError),
        (SnapshotDeadlineExceededError, SourceTimeoutError),
        (CircuitOpenError, SourceUnavailableError),
        (SourceProtocolError, CoalestraError),
        (ResourceResolutionError, CoalestraError),
        (DependencyCycleError, CoalestraError),
        (DependencyResolutionError, CoalestraError),
        (SnapshotBuildError, CoalestraError),
        (SnapshotConsistencyError, SnapshotBuildError),
        (SessionClosedError, CoalestraError),
        (PayloadIsolationError, CoalestraError),
        (SubmissionBacklogFullError, CoalestraError),
    ],
)
def test_base_classes_as_the_contract_lists_them(
    error_type: type[Exception], base: type[Exception]
) -> None:
    assert error_type.__bases__[0] is base
    assert issubclass(error_type, CoalestraError) or error_type is CoalestraError


@pytest.mark.parametrize(
    "error_type", [SourceTimeoutError, SourceQueueTimeoutError, SnapshotDeadlineExceededError]
)
def test_every_timeout_error_is_a_builtin_timeout_error(error_type: type[Exception]) -> None:
    assert issubclass(error_type, TimeoutError)
    with pytest.raises(TimeoutError, match="too slow"):
        raise error_type("too slow")
    assert str(error_type("too slow")) == "too slow"


@pytest.mark.parametrize(
    "error_type",
    [CircuitOpenError, SourceProtocolError, SessionClosedError, SourceUnavailableError],
)
def test_other_errors_are_not_timeouts(error_type: type[Exception]) -> None:
    assert not issubclass(error_type, TimeoutError)


def test_consistency_error_is_a_build_error() -> None:
    error = consistency_error()
    assert isinstance(error, SnapshotBuildError)
    with pytest.raises(SnapshotBuildError):
        raise error


# --- SourceFailure -----------------------------------------------------------------------------


def test_source_failure_from_exception_and_format() -> None:
    failure = SourceFailure.from_exception("rest", TimeoutError("took too long"), attempts=3)
    assert failure == SourceFailure("rest", "TimeoutError", "took too long", 3)
    assert failure.format() == "rest: TimeoutError(took too long; attempts=3)"
    assert (
        SourceFailure("rest", "ValueError", "bad").format() == "rest: ValueError(bad; attempts=1)"
    )
    assert (
        SourceFailure("rest", "ValueError", "").format()
        == "rest: ValueError(<no message>; attempts=1)"
    )


def test_source_failure_to_dict() -> None:
    data = SourceFailure("rest", "TimeoutError", "took too long", 3).to_dict()
    assert data == {
        "schema": ERROR_DIAGNOSTICS_SCHEMA,
        "schema_version": ERROR_DIAGNOSTICS_SCHEMA_VERSION,
        "source": "rest",
        "error_type": "TimeoutError",
        "message": "took too long",
        "attempts": 3,
    }
    assert_round_trips(data)


@pytest.mark.parametrize(
    ("limit", "expected"),
    [(300, "abcdefghij"), (10, "abcdefghij"), (9, "abcdef..."), (4, "a..."), (3, "abc"), (1, "a")],
)
def test_message_truncation(limit: int, expected: str) -> None:
    failure = SourceFailure("rest", "E", "abcdefghij")
    assert failure.to_dict(max_message_length=limit)["message"] == expected
    assert len(expected) <= limit
    assert failure.format(max_message_length=limit) == f"rest: E({expected}; attempts=1)"


def test_messages_are_compacted() -> None:
    failure = SourceFailure("rest", "E", "  line one\n\tline   two  ")
    assert failure.to_dict()["message"] == "line one line two"
    assert SourceFailure("rest", "E", " \n ").to_dict()["message"] == "<no message>"


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [(0, ValueError, "max_length"), (-5, ValueError, "max_length"), (2.5, TypeError, "max_length")],
)
def test_max_message_length_is_validated(bad: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        SourceFailure("rest", "E", "m").to_dict(max_message_length=bad)
    with pytest.raises(error, match=match):
        resolution_error().to_dict(max_message_length=bad)
    with pytest.raises(error, match=match):
        SnapshotBuildError({POSITION: resolution_error()}).to_dict(max_message_length=bad)


@pytest.mark.parametrize(
    ("arguments", "error", "field"),
    [
        (("", "E", "m"), ValueError, "source"),
        (("rest", 5, "m"), TypeError, "error_type"),
        (("rest", "E", None), TypeError, "message"),
        (("rest", "E", "m", -1), ValueError, "attempts"),
    ],
)
def test_source_failure_validation(
    arguments: tuple[Any, ...], error: type[Exception], field: str
) -> None:
    with pytest.raises(error, match=field):
        SourceFailure(*arguments)


# --- ResourceResolutionError -------------------------------------------------------------------


def test_resolution_error_message_lists_failures() -> None:
    error = resolution_error()
    assert error.key == POSITION
    assert len(error.failures) == 2
    assert str(error) == (
        "Unable to resolve account:position:BTCUSDT: stream: CircuitOpenError(circuit open; "
        "attempts=1); rest: TimeoutError(took too long; attempts=3)"
    )


def test_resolution_error_formatting_limits() -> None:
    failures = tuple(SourceFailure(f"s{index}", "E", "x" * 50) for index in range(5))
    error = ResourceResolutionError(ACCOUNT, failures)
    text = error.format_failures(max_failures=2, max_message_length=10)
    assert text == (
        "s0: E(xxxxxxx...; attempts=1); s1: E(xxxxxxx...; attempts=1); +3 more failure(s)"
    )
    with pytest.raises(ValueError, match="max_failures must be positive"):
        error.format_failures(max_failures=0)


def test_resolution_error_without_failures() -> None:
    error = ResourceResolutionError(ACCOUNT, ())
    assert str(error) == "Unable to resolve account:balance: no compatible source"
    assert error.to_dict()["failures"] == []
    assert error.to_dict(extended=True)["failure_count"] == 0


def test_resolution_error_to_dict() -> None:
    error = ResourceResolutionError(PRICE, (SourceFailure("rest", "E", "boom", 2),))
    data = error.to_dict()
    assert data == {
        "schema": ERROR_DIAGNOSTICS_SCHEMA,
        "schema_version": ERROR_DIAGNOSTICS_SCHEMA_VERSION,
        "error_type": "ResourceResolutionError",
        "message": "Unable to resolve market:price:BTCUSDT?venue=spot: rest: E(boom; attempts=2)",
        "resource": "market:price:BTCUSDT?venue=spot",
        "failures": [
            {
                "schema": ERROR_DIAGNOSTICS_SCHEMA,
                "schema_version": ERROR_DIAGNOSTICS_SCHEMA_VERSION,
                "source": "rest",
                "error_type": "E",
                "message": "boom",
                "attempts": 2,
            }
        ],
    }
    assert_round_trips(data)
    extended = error.to_dict(extended=True)
    assert extended == {
        **data,
        "resource_key": {
            "namespace": "market",
            "name": "price",
            "subject": "BTCUSDT",
            "qualifiers": {"venue": "spot"},
        },
        "failure_count": 1,
    }
    assert_round_trips(extended)


def test_resolution_error_to_dict_truncates_every_message() -> None:
    error = ResourceResolutionError(ACCOUNT, (SourceFailure("rest", "E", "m" * 500),))
    data = error.to_dict(max_message_length=20)
    assert len(data["message"]) == 20
    assert data["failures"][0]["message"] == "m" * 17 + "..."
    assert len(error.to_dict()["failures"][0]["message"]) == 300


def test_resolution_error_validation() -> None:
    with pytest.raises(TypeError, match="key"):
        ResourceResolutionError("account:balance", ())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="SourceFailure"):
        ResourceResolutionError(ACCOUNT, ("timed out",))  # type: ignore[arg-type]


# --- other per-key errors ----------------------------------------------------------------------


def test_dependency_cycle_error_message() -> None:
    error = DependencyCycleError((ACCOUNT, POSITION, ACCOUNT))
    assert error.path == (ACCOUNT, POSITION, ACCOUNT)
    assert str(error) == (
        "Derived resource dependency cycle detected: "
        "account:balance -> account:position:BTCUSDT -> account:balance"
    )


def test_dependency_resolution_error() -> None:
    errors: dict[ResourceKey, Exception] = {ACCOUNT: resolution_error(ACCOUNT)}
    errors_text = str(errors[ACCOUNT])  # nested texts appear in the message (B-SRC-7)
    error = DependencyResolutionError(POSITION, "rules", errors)
    errors.clear()
    assert error.key == POSITION
    assert error.source == "rules"
    assert list(error.errors) == [ACCOUNT]
    assert str(error) == (
        "Unable to derive account:position:BTCUSDT with source rules; dependency failures: "
        f"account:balance=ResourceResolutionError({errors_text})"
    )
    with pytest.raises(TypeError):
        error.errors[POSITION] = ValueError()  # type: ignore[index]


def test_payload_isolation_error() -> None:
    error = PayloadIsolationError(context="source 'rest' market:price", value_type="Socket")
    assert error.context == "source 'rest' market:price"
    assert error.value_type == "Socket"
    assert str(error) == (
        "Unable to isolate source 'rest' market:price; payload type Socket does not support copying"
    )


def test_submission_backlog_full_error() -> None:
    error = SubmissionBacklogFullError(limit=256, pending=256)
    assert (error.limit, error.pending) == (256, 256)
    assert str(error) == "Non-blocking submission backlog is full (pending=256, limit=256)"


# --- SnapshotBuildError ------------------------------------------------------------------------


def build_error() -> SnapshotBuildError:
    errors: dict[ResourceKey, Exception] = {
        POSITION: resolution_error(),
        HEALTH: SnapshotDeadlineExceededError("deadline passed"),
    }
    return SnapshotBuildError(errors, snapshot=partial_snapshot(errors))


def test_build_error_exposes_errors_and_partial_snapshot() -> None:
    error = build_error()
    assert list(error.errors) == [POSITION, HEALTH]
    assert error.partial_snapshot is error.snapshot
    snapshot = error.snapshot
    assert isinstance(snapshot, Snapshot)
    assert snapshot.value(ACCOUNT) == 1
    assert str(error) == (
        "Snapshot build failed: account:position:BTCUSDT=ResourceResolutionError["
        "stream: CircuitOpenError(circuit open; attempts=1); "
        "rest: TimeoutError(took too long; attempts=3)], "
        "market:health=SnapshotDeadlineExceededError(deadline passed)"
    )


def test_build_error_without_snapshot_or_errors() -> None:
    assert str(SnapshotBuildError({})) == "Snapshot build failed: no resource details"
    error = SnapshotBuildError({ACCOUNT: ValueError("bad")})
    assert error.snapshot is None
    assert str(error) == "Snapshot build failed: account:balance=ValueError(bad)"


def test_build_error_errors_are_a_read_only_copy() -> None:
    errors: dict[ResourceKey, Exception] = {ACCOUNT: ValueError("bad")}
    error = SnapshotBuildError(errors)
    errors[POSITION] = ValueError("later")
    assert list(error.errors) == [ACCOUNT]
    with pytest.raises(TypeError):
        error.errors[POSITION] = ValueError()  # type: ignore[index]


def test_build_error_to_dict() -> None:
    data = build_error().to_dict()
    assert data["schema"] == ERROR_DIAGNOSTICS_SCHEMA
    assert data["schema_version"] == ERROR_DIAGNOSTICS_SCHEMA_VERSION == 1
    assert data["error_type"] == "SnapshotBuildError"
    assert data["partial_snapshot_available"] is True
    assert data["has_partial_snapshot"] is True
    assert "snapshot_id" not in data
    first, second = data["errors"]
    assert first["error_type"] == "ResourceResolutionError"
    assert "failure_count" not in first
    assert [failure["source"] for failure in first["failures"]] == ["stream", "rest"]
    assert second["error_type"] == "SnapshotDeadlineExceededError"
    assert second["message"] == "deadline passed"
    assert second["resource"] == "market:health"
    assert second["failures"] == []
    assert "consistency" not in data
    assert_round_trips(data)


def test_build_error_extended_to_dict() -> None:
    data = build_error().to_dict(extended=True)
    assert data["snapshot_id"] == "cycle-42"
    assert data["resolved_resources"] == ["account:balance", "market:price:BTCUSDT?venue=spot"]
    assert data["failed_resources"] == ["account:position:BTCUSDT", "market:health"]
    assert data["error_count"] == 2
    assert data["errors"][0]["failure_count"] == 2
    assert_round_trips(data)


def test_build_error_to_dict_without_snapshot() -> None:
    error = SnapshotBuildError({ACCOUNT: KeyError("gone")})
    data = error.to_dict()
    assert data["partial_snapshot_available"] is False
    assert data["has_partial_snapshot"] is False
    assert_round_trips(data)
    extended = error.to_dict(extended=True)
    assert extended["snapshot_id"] == ""
    assert extended["resolved_resources"] == []


def test_build_error_to_dict_never_contains_exception_objects() -> None:
    class Odd(Exception):
        def __str__(self) -> str:
            return "odd \u2603 message"

    error = SnapshotBuildError(
        {ACCOUNT: Odd(), POSITION: DependencyCycleError((POSITION, POSITION))},
        snapshot=partial_snapshot({}),
    )
    data = error.to_dict()
    assert_round_trips(data)
    assert data["errors"][0]["error_type"] == "Odd"
    assert data["errors"][0]["message"] == "odd \u2603 message"


def test_build_error_to_dict_truncation() -> None:
    long_error = ValueError("x" * 1000)
    data = SnapshotBuildError({ACCOUNT: long_error}).to_dict(max_message_length=50)
    assert len(data["message"]) == 50
    assert data["message"].endswith("...")
    assert data["errors"][0]["message"] == "x" * 47 + "..."


def test_product_page_build_error_example() -> None:
    sent: list[dict[str, Any]] = []

    def send_to_observability(diagnostic: Any) -> None:
        sent.append(json.loads(json.dumps(diagnostic)))

    try:
        raise build_error()
    except SnapshotBuildError as error:
        diagnostic = error.to_dict()
        assert diagnostic["schema_version"] == ERROR_DIAGNOSTICS_SCHEMA_VERSION
        send_to_observability(diagnostic)
    assert sent[0]["schema"] == "coalestra.error-diagnostics"


def test_schema_constants() -> None:
    assert ERROR_DIAGNOSTICS_SCHEMA == "coalestra.error-diagnostics"
    assert ERROR_DIAGNOSTICS_SCHEMA_VERSION == 1
    assert type(ERROR_DIAGNOSTICS_SCHEMA_VERSION) is int


# --- SnapshotConsistencyError ------------------------------------------------------------------


def consistency_error(*, with_snapshot: bool = True) -> SnapshotConsistencyError:
    optional_failure: dict[ResourceKey, Exception] = {HEALTH: ValueError("optional failed")}
    return SnapshotConsistencyError(
        keys=(ACCOUNT, PRICE),
        oldest_key=ACCOUNT,
        oldest_observed_at=1000.25,
        newest_key=PRICE,
        newest_observed_at=1003.5,
        observation_skew_seconds=3.25,
        max_observation_skew_seconds=2.0,
        snapshot=partial_snapshot(optional_failure) if with_snapshot else None,
    )


def test_consistency_error_identifies_the_extremes() -> None:
    error = consistency_error()
    assert error.keys == (ACCOUNT, PRICE)
    assert (error.oldest_key, error.newest_key) == (ACCOUNT, PRICE)
    assert error.observation_skew_seconds == 3.25
    assert error.snapshot is not None
    assert error.snapshot.value(PRICE) == 1  # the complete partial snapshot
    assert error.errors == {}  # the snapshot's optional failure is not the violation
    assert str(error) == (
        "Snapshot observation skew 3.250000s exceeds the allowed 2.000000s across 2 resource(s); "
        "oldest=account:balance@1000.250000, newest=market:price:BTCUSDT?venue=spot@1003.500000"
    )


def test_consistency_error_to_dict() -> None:
    assert "consistency" not in consistency_error().to_dict()
    assert consistency_error().to_dict()["errors"] == []
    data = consistency_error().to_dict(extended=True)
    assert data["error_type"] == "SnapshotConsistencyError"
    assert data["schema_version"] == ERROR_DIAGNOSTICS_SCHEMA_VERSION
    assert data["partial_snapshot_available"] is True
    assert data["has_partial_snapshot"] is True
    assert data["consistency"] == {
        "resources": ["account:balance", "market:price:BTCUSDT?venue=spot"],
        "oldest_resource": "account:balance",
        "oldest_observed_at_us": 1_000_250_000,
        "newest_resource": "market:price:BTCUSDT?venue=spot",
        "newest_observed_at_us": 1_003_500_000,
        "observation_skew_us": 3_250_000,
        "max_observation_skew_us": 2_000_000,
    }
    assert_round_trips(data)


def test_consistency_error_without_snapshot() -> None:
    data = consistency_error(with_snapshot=False).to_dict(extended=True)
    assert data["partial_snapshot_available"] is False
    assert data["error_count"] == 0
    assert_round_trips(data)


# --- pickling ----------------------------------------------------------------------------------


def every_error() -> list[Exception]:
    return [
        CoalestraError("root"),
        SourceUnavailableError("down"),
        SourceTimeoutError("slow"),
        SourceQueueTimeoutError("queued"),
        SnapshotDeadlineExceededError("deadline"),
        CircuitOpenError("open"),
        SourceProtocolError("protocol"),
        SessionClosedError("closed"),
        resolution_error(),
        DependencyCycleError((ACCOUNT, POSITION, ACCOUNT)),
        DependencyResolutionError(POSITION, "rules", {ACCOUNT: resolution_error(ACCOUNT)}),
        build_error(),
        SnapshotBuildError({ACCOUNT: ValueError("x")}),
        consistency_error(),
        PayloadIsolationError(context="ctx", value_type="Socket"),
        SubmissionBacklogFullError(limit=4, pending=4),
    ]


def _same_error(first: Exception, second: Exception) -> None:
    # Nested exceptions compare by identity, so contents are compared through repr().
    assert type(first) is type(second)
    assert str(first) == str(second)
    assert repr(first.args) == repr(second.args)
    assert vars(first).keys() == vars(second).keys()
    for name in vars(first):
        assert repr(getattr(first, name)) == repr(getattr(second, name)), name


@pytest.mark.parametrize("error", every_error(), ids=lambda error: type(error).__name__)
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_every_error_pickles(error: Exception, protocol: int) -> None:
    clone = pickle.loads(pickle.dumps(error, protocol=protocol))
    _same_error(error, clone)
    if isinstance(error, SnapshotBuildError):
        assert isinstance(clone, SnapshotBuildError)
        assert clone.to_dict() == error.to_dict()
        assert list(clone.errors) == list(error.errors)
        assert (clone.snapshot is None) == (error.snapshot is None)
    if isinstance(error, ResourceResolutionError):
        assert isinstance(clone, ResourceResolutionError)
        assert clone.to_dict() == error.to_dict()


@pytest.mark.parametrize("error", every_error(), ids=lambda error: type(error).__name__)
def test_every_error_pickles_with_notes_and_attributes(error: Exception) -> None:
    if sys.version_info >= (3, 11):
        error.add_note("while building cycle-42")
    else:  # what add_note() does
        error.__notes__ = ["while building cycle-42"]  # type: ignore[attr-defined]
    error.retry_hint = "later"  # type: ignore[attr-defined]
    clone = pickle.loads(pickle.dumps(error))
    assert clone.__notes__ == ["while building cycle-42"]
    assert clone.retry_hint == "later"
    assert str(clone) == str(error)


@pytest.mark.parametrize("error", every_error(), ids=lambda error: type(error).__name__)
def test_every_error_copies(error: Exception) -> None:
    _same_error(error, copy.copy(error))
    _same_error(error, copy.deepcopy(error))


def test_consistency_error_pickle_keeps_the_violation() -> None:
    clone = pickle.loads(pickle.dumps(consistency_error()))
    assert isinstance(clone, SnapshotConsistencyError)
    assert clone.oldest_key == ACCOUNT
    assert clone.newest_observed_at == 1003.5
    assert clone.snapshot is not None
    assert clone.snapshot.value(ACCOUNT) == 1
