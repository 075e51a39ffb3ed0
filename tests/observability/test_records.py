"""The observability value types: records, summaries, statistics, the overflow policy."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest

from coalestra.observability import (
    BufferedSinkStats,
    BufferOverflowPolicy,
    EventRecord,
    MetricRecord,
    ObservationSummary,
)


def test_overflow_policy_values_are_the_contract() -> None:
    assert {member.name: member.value for member in BufferOverflowPolicy} == {
        "DROP_OLDEST": "drop_oldest",
        "DROP_NEWEST": "drop_newest",
        "RAISE": "raise",
    }
    assert BufferOverflowPolicy("raise") is BufferOverflowPolicy.RAISE
    assert isinstance(BufferOverflowPolicy.RAISE, str)


def test_field_order_is_the_contract() -> None:
    def names(cls: Any) -> list[str]:
        return [field.name for field in dataclasses.fields(cls)]

    assert names(EventRecord) == ["event_type", "payload"]
    assert names(MetricRecord) == ["operation", "metric", "value", "labels"]
    assert names(BufferedSinkStats) == [
        "enqueued",
        "delivered",
        "dropped",
        "failures",
        "pending",
        "closed",
        # 0.6 appends these (public-api-0.6.md section 6; B4: appending is safe).
        "max_pending",
        "peak_pending",
        "worker_alive",
        "shutdown_timeout_count",
    ]
    assert names(ObservationSummary) == ["count", "total", "minimum", "maximum"]


def test_event_record_freezes_a_copy_of_its_payload() -> None:
    payload = {"resource": "market:price:BTC"}
    record = EventRecord("refresh", payload)
    payload["resource"] = "changed"
    assert record.payload == {"resource": "market:price:BTC"}
    with pytest.raises(TypeError):
        record.payload["resource"] = "x"
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.event_type = "other"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(record)) == record


def test_metric_record_freezes_its_labels() -> None:
    labels = {"source": "rest"}
    record = MetricRecord("increment", "coalestra_retries_total", 2, labels)
    labels["source"] = "ws"
    assert record.labels == {"source": "rest"}
    with pytest.raises(TypeError):
        record.labels["source"] = "x"
    assert MetricRecord("observe", "m_seconds", 0.5, {}).value == 0.5


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("set", "m", 1, {}), ValueError),
        (("increment", "", 1, {}), ValueError),
        (("increment", "m", -1, {}), ValueError),
        (("increment", "m", 0.5, {}), TypeError),
        (("observe", "m", float("nan"), {}), ValueError),
        (("observe", "m", 1.0, {"source": 1}), TypeError),
        (("observe", "m", 1.0, [("source", "rest")]), TypeError),
    ],
)
def test_metric_record_validates(args: tuple[Any, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        MetricRecord(*args)


@pytest.mark.parametrize(
    ("args", "error"),
    [(("", {}), ValueError), ((1, {}), TypeError), (("e", ["x"]), TypeError)],
)
def test_event_record_validates(args: tuple[Any, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        EventRecord(*args)


def test_observation_summary_mean_and_validation() -> None:
    summary = ObservationSummary(count=4, total=10, minimum=1, maximum=4)
    assert summary.average == 2.5
    assert isinstance(summary.total, float)
    with pytest.raises(ValueError, match="count"):
        ObservationSummary(count=0, total=0.0, minimum=0.0, maximum=0.0)
    with pytest.raises(ValueError, match="minimum"):
        ObservationSummary(count=1, total=1.0, minimum=2.0, maximum=1.0)
    with pytest.raises(ValueError, match="total"):
        ObservationSummary(count=1, total=float("inf"), minimum=1.0, maximum=1.0)


def test_buffered_sink_stats_validation() -> None:
    assert BufferedSinkStats(1, 1, 0, 0, 0, False).delivered == 1
    with pytest.raises(ValueError, match="dropped"):
        BufferedSinkStats(1, 1, -1, 0, 0, False)
    with pytest.raises(TypeError, match="closed"):
        BufferedSinkStats(1, 1, 0, 0, 0, 1)  # type: ignore[arg-type]
