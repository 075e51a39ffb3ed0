"""The blocking methods' published signatures and docstrings (API contract 0.5.7 and 0.6).

Most blocking methods are made from the async methods they run (``_sync/_blocking.py``): these
tests pin what ``inspect`` and ``help()`` show of them, so the contract holds however they are
declared.
"""

from __future__ import annotations

import inspect

import pytest

from coalestra import SyncSnapshotBuilder, SyncSnapshotSession
from coalestra.sync import SyncResourcePublisher

_KEYS = "keys: 'Iterable[ResourceKey]'"
_BUILD = "deadline_seconds: 'float | None' = None, metadata: 'Mapping[str, Any] | None' = None"
_FLAGS = "force: 'bool' = False, replace_equal: 'bool' = False"
_DEGRADE = "degradation_policy: 'RequestDegradationPolicy | None' = None"

SIGNATURES = [
    (
        SyncSnapshotBuilder,
        "build",
        f"(self, {_KEYS}, *, strict: 'bool' = True, {_BUILD}, snapshot_id: 'str | None' = None)"
        " -> 'Snapshot'",
    ),
    (
        SyncSnapshotBuilder,
        "build_request",
        f"(self, request: 'SnapshotRequest', *, {_BUILD}, snapshot_id: 'str | None' = None)"
        " -> 'Snapshot'",
    ),
    (
        SyncSnapshotBuilder,
        "try_build_request",
        f"(self, request: 'SnapshotRequest', *, {_BUILD}, snapshot_id: 'str | None' = None,"
        f" {_DEGRADE}) -> 'SnapshotResult'",
    ),
    (
        SyncSnapshotBuilder,
        "try_build_requests",
        f"(self, requests: 'Iterable[SnapshotRequest]', *, {_BUILD},"
        f" snapshot_id_prefix: 'str | None' = None, {_DEGRADE},"
        " max_concurrent: 'int | None' = None) -> 'tuple[SnapshotResult, ...]'",
    ),
    (SyncSnapshotBuilder, "wait_for_refreshes", "(self) -> 'None'"),
    (
        SyncSnapshotBuilder,
        "session",
        f"(self, *, {_BUILD}, snapshot_id: 'str | None' = None) -> 'SyncSnapshotSession'",
    ),
    (
        SyncSnapshotSession,
        "resolve",
        f"(self, {_KEYS}, *, strict: 'bool' = True, retry_errors: 'bool' = False) -> 'Snapshot'",
    ),
    (
        SyncSnapshotSession,
        "resolve_request",
        "(self, request: 'SnapshotRequest', *, retry_errors: 'bool' = False) -> 'Snapshot'",
    ),
    (
        SyncSnapshotSession,
        "try_resolve_request",
        "(self, request: 'SnapshotRequest', *, retry_errors: 'bool' = False,"
        f" {_DEGRADE}) -> 'SnapshotResult'",
    ),
    (
        SyncSnapshotSession,
        "revalidate",
        f"(self, {_KEYS}, *, strict: 'bool' = True, force_refresh: 'bool' = False,"
        " consistency_policy: 'SnapshotConsistencyPolicy | None' = None,"
        " acceptance_policy: 'SnapshotAcceptancePolicy | None' = None) -> 'Snapshot'",
    ),
    (SyncSnapshotSession, "snapshot", "(self) -> 'Snapshot'"),
    (
        SyncResourcePublisher,
        "publish",
        "(self, key: 'ResourceKey', value: 'Any', *, source: 'str',"
        " observed_at: 'float | None' = None, metadata: 'Mapping[str, Any] | None' = None,"
        f" {_FLAGS}) -> 'PublishResult'",
    ),
    (
        SyncResourcePublisher,
        "publish_update",
        f"(self, update: 'ResourceUpdate[Any]', *, {_FLAGS}) -> 'PublishResult'",
    ),
    (
        SyncResourcePublisher,
        "publish_many",
        f"(self, updates: 'Collection[ResourceUpdate[Any]]', *, {_FLAGS})"
        " -> 'Mapping[ResourceKey, PublishResult]'",
    ),
    (
        SyncResourcePublisher,
        "invalidate",
        "(self, key: 'ResourceKey', *, reason: 'str' = '') -> 'None'",
    ),
    (
        SyncResourcePublisher,
        "invalidate_many",
        "(self, keys: 'Collection[ResourceKey]', *, reason: 'str' = '') -> 'None'",
    ),
]
IDS = [f"{owner.__name__}.{name}" for owner, name, _ in SIGNATURES]


@pytest.mark.parametrize(("owner", "name", "expected"), SIGNATURES, ids=IDS)
def test_blocking_method_has_the_published_signature(owner: type, name: str, expected: str) -> None:
    method = getattr(owner, name)
    assert str(inspect.signature(method)) == expected
    assert inspect.isfunction(method)
    assert not inspect.iscoroutinefunction(method)
    assert (method.__name__, method.__qualname__) == (name, f"{owner.__name__}.{name}")
    assert method.__module__ == owner.__module__


@pytest.mark.parametrize(("owner", "name", "expected"), SIGNATURES, ids=IDS)
def test_blocking_method_is_documented_as_blocking(owner: type, name: str, expected: str) -> None:
    doc = inspect.getdoc(getattr(owner, name))
    assert doc
    assert doc.startswith(("Blocking :meth:", "Block until", "Everything pinned", "Start a"))


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        (SyncSnapshotBuilder, name)
        for name in ("build", "build_request", "session", "wait_for_refreshes")
    ]
    + [(SyncResourcePublisher, "publish")],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_facade_docstrings_name_the_sync_closed_error(owner: type, name: str) -> None:
    doc = inspect.getdoc(getattr(owner, name))
    assert doc is not None
    assert (
        'RuntimeError: the facade is closed ("SyncSnapshotBuilder is closed"), or called from a'
        " thread running an event loop."
    ) in " ".join(doc.split())


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("publish_update", "(raises as :meth:`publish`)"),
        ("publish_many", "(raises as :meth:`publish`)"),
        ("invalidate", "RuntimeError: as :meth:`publish`."),
        ("invalidate_many", "(raises as :meth:`invalidate`)"),
    ],
)
def test_publisher_docstrings_refer_to_publish_for_errors(name: str, reference: str) -> None:
    doc = inspect.getdoc(getattr(SyncResourcePublisher, name))
    assert doc is not None
    assert doc.startswith(f"Blocking :meth:`ResourcePublisher.{name}`")
    assert reference in " ".join(doc.split())


def test_blocking_method_runs_the_method_reassigned_on_the_instance() -> None:
    from coalestra import CallableSource, FreshnessPolicy, ResourceKey, SnapshotBuilder

    source = CallableSource(
        name="rest", priority=1, supports=lambda _k: True, fetcher=lambda k, c: 1
    )
    builder = SnapshotBuilder([source], default_policy=FreshnessPolicy(5.0, 5.0))
    calls: list[str] = []

    async def invalidate(key: ResourceKey, *, reason: str = "") -> None:
        calls.append(reason)

    builder.publisher.invalidate = invalidate  # type: ignore[method-assign]
    facade = SyncSnapshotBuilder(builder, shutdown_timeout_seconds=1.0)
    try:
        facade.publisher.invalidate(ResourceKey("user", "1"), reason="gap")
    finally:
        facade.close()
    assert calls == ["gap"]


def test_bound_blocking_method_drops_self() -> None:
    method = SyncSnapshotBuilder.build_request
    bound = method.__get__(object(), SyncSnapshotBuilder)
    assert str(inspect.signature(bound)).startswith("(request: 'SnapshotRequest', *,")
