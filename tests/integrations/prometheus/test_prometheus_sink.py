"""PrometheusMetricsSink on its own: naming, lazy creation, misuse handling, thread safety."""

from __future__ import annotations

import logging
import threading

import pytest

pytest.importorskip(
    "prometheus_client", reason="prometheus-client is not installed (pip install coalestra[dev])"
)

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from tests.integrations.prometheus.conftest import names, scrape, value

from coalestra.core import MetricsSink
from coalestra.integrations.prometheus import PrometheusMetricsSink


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def test_it_is_a_metrics_sink(registry: CollectorRegistry) -> None:
    assert isinstance(PrometheusMetricsSink(registry), MetricsSink)


def test_counters_and_histograms_are_made_on_first_use(registry: CollectorRegistry) -> None:
    sink = PrometheusMetricsSink(registry)
    assert names(scrape(registry)) == {"coalestra_metrics_sink_failures_total"}

    sink.increment("coalestra_retries_total", source="rest")
    sink.increment("coalestra_retries_total", 2, source="rest")
    sink.increment("coalestra_retries_total", source="stream")
    sink.observe("coalestra_capacity_wait_seconds", 0.2, source="rest")
    samples = scrape(registry)

    assert value(samples, "coalestra_retries_total", source="rest") == 3
    assert value(samples, "coalestra_retries_total", source="stream") == 1
    assert value(samples, "coalestra_capacity_wait_seconds_count", source="rest") == 1
    assert value(samples, "coalestra_capacity_wait_seconds_sum", source="rest") == 0.2
    assert value(samples, "coalestra_capacity_wait_seconds_bucket", source="rest", le="0.1") == 0
    assert value(samples, "coalestra_capacity_wait_seconds_bucket", source="rest", le="0.25") == 1


def test_a_metric_without_labels(registry: CollectorRegistry) -> None:
    sink = PrometheusMetricsSink(registry)
    sink.increment("coalestra_singleflight_joins_total", 5)

    assert value(scrape(registry), "coalestra_singleflight_joins_total") == 5


def test_label_order_does_not_matter(registry: CollectorRegistry) -> None:
    sink = PrometheusMetricsSink(registry)
    sink.increment("coalestra_publications_total", source="a", status="published")
    sink.increment("coalestra_publications_total", status="published", source="a")

    samples = scrape(registry)
    assert value(samples, "coalestra_publications_total", source="a", status="published") == 2
    assert sink.failures == 0


def test_counters_get_total_and_bad_characters_become_underscores(
    registry: CollectorRegistry,
) -> None:
    sink = PrometheusMetricsSink(registry, namespace="app")
    sink.increment("jobs.done-count")

    assert value(scrape(registry), "app_jobs_done_count_total") == 1


def test_a_changed_label_set_is_counted_and_logged_once(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    sink = PrometheusMetricsSink(registry)
    sink.increment("coalestra_builds_total", outcome="complete")
    with caplog.at_level(logging.WARNING, logger="coalestra.integrations.prometheus"):
        sink.increment("coalestra_builds_total", outcome="complete", source="rest")
        sink.increment("coalestra_builds_total", source="rest")

    assert sink.failures == 2
    assert len(caplog.records) == 1
    assert "coalestra_builds_total" in caplog.records[0].getMessage()
    samples = scrape(registry)
    assert value(samples, "coalestra_builds_total", outcome="complete") == 1
    assert value(samples, "coalestra_metrics_sink_failures_total") == 2


def test_a_counter_used_as_a_histogram_is_refused(registry: CollectorRegistry) -> None:
    sink = PrometheusMetricsSink(registry)
    sink.increment("coalestra_thing_total", source="a")
    sink.observe("coalestra_thing_total", 1.0, source="a")

    assert sink.failures == 1
    assert value(scrape(registry), "coalestra_thing_total", source="a") == 1


def test_bad_values_are_counted_not_raised(registry: CollectorRegistry) -> None:
    sink = PrometheusMetricsSink(registry)
    sink.increment("coalestra_retries_total", -1, source="rest")  # counters only go up
    sink.increment("coalestra_retries_total", 1, source=["not", "hashable"])  # type: ignore[arg-type]
    sink.observe("coalestra_capacity_wait_seconds", "slow", source="rest")  # type: ignore[arg-type]

    assert sink.failures == 3


def test_a_name_taken_by_another_collector_is_a_failure(registry: CollectorRegistry) -> None:
    Counter("coalestra_builds_total", "the application's own", registry=registry)
    sink = PrometheusMetricsSink(registry)

    sink.increment("coalestra_builds_total", outcome="complete")

    assert sink.failures == 1


def test_sinks_on_one_registry_share_its_metrics(registry: CollectorRegistry) -> None:
    first, second = PrometheusMetricsSink(registry), PrometheusMetricsSink(registry)
    first.increment("coalestra_retries_total", source="rest")
    second.increment("coalestra_retries_total", 2, source="rest")

    assert value(scrape(registry), "coalestra_retries_total", source="rest") == 3
    assert first.failures == second.failures == 0


def test_sinks_on_different_registries_are_independent() -> None:
    one, two = CollectorRegistry(), CollectorRegistry()
    PrometheusMetricsSink(one).increment("coalestra_retries_total", source="rest")

    assert value(scrape(one), "coalestra_retries_total", source="rest") == 1
    assert value(scrape(two), "coalestra_retries_total", source="rest") is None


def test_the_default_registry_and_properties() -> None:
    sink = PrometheusMetricsSink()

    assert sink.registry is REGISTRY
    assert sink.namespace == "coalestra"
    assert repr(sink) == "PrometheusMetricsSink(namespace='coalestra', failures=0)"
    assert PrometheusMetricsSink() is not sink  # a second one on the same registry is fine


def test_custom_buckets(registry: CollectorRegistry) -> None:
    sink = PrometheusMetricsSink(registry, buckets=(0.001, 0.01, 1))
    sink.observe("coalestra_source_call_duration_seconds", 0.002, source="a", outcome="success")

    bounds = {
        dict(labels)["le"]
        for name, labels in scrape(registry)
        if name == "coalestra_source_call_duration_seconds_bucket"
    }
    assert bounds == {"0.001", "0.01", "1.0", "+Inf"}


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"registry": "default"}, TypeError),
        ({"namespace": 3}, TypeError),
        ({"namespace": "1app"}, ValueError),
        ({"namespace": "my-app"}, ValueError),
        ({"buckets": []}, TypeError),
        ({"buckets": "abc"}, TypeError),
        ({"buckets": [0.1, "1"]}, TypeError),
        ({"buckets": [True]}, TypeError),
        ({"buckets": [1.0, 0.5]}, ValueError),
        ({"buckets": [0.5, 0.5]}, ValueError),
        ({"buckets": [float("nan")]}, ValueError),
    ],
)
def test_bad_arguments_are_refused(arguments: dict[str, object], error: type[Exception]) -> None:
    arguments.setdefault("registry", CollectorRegistry())
    with pytest.raises(error):
        PrometheusMetricsSink(**arguments)  # type: ignore[arg-type]


def test_concurrent_threads_lose_no_increment(registry: CollectorRegistry) -> None:
    sink = PrometheusMetricsSink(registry)
    start = threading.Barrier(8)

    def work(index: int) -> None:
        start.wait()
        for _ in range(1_000):
            sink.increment("coalestra_retries_total", source="rest")
            sink.increment("coalestra_retries_total", source=f"s{index}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    samples = scrape(registry)
    assert value(samples, "coalestra_retries_total", source="rest") == 8_000
    assert all(value(samples, "coalestra_retries_total", source=f"s{i}") == 1_000 for i in range(8))
    assert sink.failures == 0
