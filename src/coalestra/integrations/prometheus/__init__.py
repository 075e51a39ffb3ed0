"""Prometheus metrics for Coalestra (``pip install "coalestra[prometheus]"``).

* :class:`PrometheusMetricsSink`: a ``MetricsSink`` that turns the builder's metrics into
  Prometheus counters and histograms (``coalestra_snapshot_build_total``,
  ``coalestra_cache_access_total``, ``coalestra_source_fetch_latency_ms``, ...), with the same
  low-cardinality labels (resource type, source name, status; never a subject).
* :class:`HealthCollector`: gauges of the builder's health (open circuits, capacity in use and
  waiting, flights, background refreshes, timeout counters), pushed from the event loop and read
  by scrapes without touching the loop.

Example::

    from prometheus_client import start_http_server
    from coalestra import SnapshotBuilder
    from coalestra.integrations.prometheus import HealthCollector, PrometheusMetricsSink

    builder = SnapshotBuilder(sources, metrics=PrometheusMetricsSink())
    health = HealthCollector()
    poller = asyncio.create_task(health.poll(builder, interval_seconds=15.0))
    start_http_server(9100)
"""

from ._health import HealthCollector, HealthSource
from ._sink import PrometheusMetricsSink

__all__ = ["HealthCollector", "HealthSource", "PrometheusMetricsSink"]
