"""SyncSnapshotSession: the async session's semantics, blocking."""

from __future__ import annotations

import time

import pytest
from tests.sync.conftest import LONG, GatedCache, Source, key

from coalestra.core import (
    SnapshotBuildError,
    SnapshotConsistencyError,
    SnapshotConsistencyPolicy,
    SnapshotRequest,
    SourcePayload,
)
from coalestra.orchestration import SnapshotBuilder
from coalestra.resilience import CircuitBreaker, RetryPolicy
from coalestra.sync import SyncSnapshotBuilder, SyncSnapshotSession


@pytest.fixture
def builder(source: Source, cache: GatedCache) -> SnapshotBuilder:
    # No retries and no circuit opening: these tests make a source fail on purpose.
    return SnapshotBuilder(
        [source],
        default_policy=LONG,
        cache=cache,
        retry_policy=RetryPolicy(max_attempts=1),
        circuit_breaker=CircuitBreaker(failure_threshold=1000),
    )


def test_stages_pin_values(facade: SyncSnapshotBuilder, source: Source) -> None:
    with facade.session(snapshot_id="cycle-42", deadline_seconds=30.0, metadata={"t": 1}) as s:
        assert isinstance(s, SyncSnapshotSession)
        assert s.snapshot_id == "cycle-42"
        assert s.created_at > 0
        first = s.resolve([key("a")])
        facade.publisher.publish(key("a"), "published", source="stream")
        second = s.resolve([key("a"), key("b")], strict=False)
        assert second.value(key("a")) == "value-a"
        assert second[key("a")].version == first[key("a")].version
        assert list(s.snapshot()) == [key("a"), key("b")]
        assert facade.build([key("a")]).value(key("a")) == "published"
    assert s.closed
    with pytest.raises(RuntimeError, match=r"^SyncSnapshotSession is closed$"):
        s.resolve([key("a")])
    with pytest.raises(RuntimeError, match=r"^SyncSnapshotSession is closed$"):
        s.__enter__()
    s.close()  # idempotent
    assert source.calls.count(key("a")) == 1


def test_errors_retry_and_requests(facade: SyncSnapshotBuilder, source: Source) -> None:
    def failing(_key: object) -> object:
        raise RuntimeError("down")

    session = facade.session()
    source.on_fetch = failing
    assert session.resolve([key("e")], strict=False).error_for(key("e")) is not None
    with pytest.raises(SnapshotBuildError):
        session.resolve_request(SnapshotRequest(required=[key("e")], optional=[key("o")]))
    source.on_fetch = None
    assert session.resolve([key("e")], retry_errors=True).value(key("e")) == "value-e"
    request = SnapshotRequest(required=[key("e")], optional=[key("o")])
    assert session.resolve_request(request).error_for(key("o")) is not None  # remembered
    retried = session.resolve_request(request, retry_errors=True)
    assert retried.value(key("o")) == "value-o"
    session.close()


def test_revalidate(facade: SyncSnapshotBuilder, source: Source) -> None:
    session = facade.session()
    session.resolve([key("r"), key("other")])
    facade.publisher.publish(key("r"), "published", source="stream")

    updated = session.revalidate([key("r")])
    assert updated.value(key("r")) == "published"
    assert list(updated) == [key("r"), key("other")]  # the whole session

    source.values[key("r")] = "from-source"
    forced = session.revalidate([key("r")], force_refresh=True, strict=False)
    assert forced.value(key("r")) == "from-source"

    facade.publisher.invalidate(key("r"))  # so the old observation below is not ignored
    # 10 s old: still servable (default stale window), but 10 s apart from the other key.
    source.values[key("r")] = SourcePayload("old", observed_at=time.time() - 10.0)
    with pytest.raises(SnapshotConsistencyError):
        session.revalidate(
            [key("r"), key("other")],
            force_refresh=True,
            consistency_policy=SnapshotConsistencyPolicy(2.0),
        )
    assert session.snapshot().value(key("r")) == "from-source"
    health = facade.health_snapshot()
    assert (health.revalidation_attempt_count, health.revalidation_failure_count) == (3, 1)


def test_constructor_checks_its_arguments(facade: SyncSnapshotBuilder) -> None:
    with pytest.raises(TypeError, match="owner"):
        SyncSnapshotSession(object(), facade.session()._session)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="session"):
        SyncSnapshotSession(facade, object())  # type: ignore[arg-type]
