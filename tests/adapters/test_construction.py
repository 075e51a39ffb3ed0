"""Constructor contract of the three adapters: signatures, read-only settings, bad input."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import pytest

import coalestra.adapters
from coalestra.adapters import CallableBatchSource, CallableDerivedSource, CallableSource
from coalestra.core import (
    BatchSizedSource,
    BatchSnapshotSource,
    ConcurrencyLimitedSource,
    DerivedSource,
    ResilienceConfiguredSource,
    ResourceKey,
    SnapshotSource,
    SourceBase,
)
from coalestra.resilience import RetryPolicy, SourceResiliencePolicy

AdapterType = type[CallableSource] | type[CallableBatchSource] | type[CallableDerivedSource]


def _fetch(_key: object, _context: object) -> int:
    return 1


def _derive(_key: object, _snapshot: object, _context: object) -> int:
    return 1


def minimal(cls: AdapterType) -> dict[str, Any]:
    """The required keyword arguments of ``cls``."""
    base: dict[str, Any] = {"name": "src", "priority": 1, "supports": lambda _key: True}
    if cls is CallableDerivedSource:
        return {**base, "dependencies": lambda _key: (), "deriver": _derive}
    return {**base, "fetcher": _fetch}


ALL = [CallableSource, CallableBatchSource, CallableDerivedSource]

# The published signatures: (name, kind, default); ``REQUIRED`` marks no default.
REQUIRED = inspect.Parameter.empty
KW = inspect.Parameter.KEYWORD_ONLY
COMMON_TAIL = [
    ("timeout_seconds", None),
    ("queue_timeout_seconds", None),
    ("max_concurrency", None),
]
FLAGS = [
    ("resilience_policy", None),
    ("cache_supports", True),
    ("run_sync_in_thread", True),
    # 0.6 section 4: appended after run_sync_in_thread.
    ("blocking_io", False),
    ("transport_timeout_seconds", None),
]
SIGNATURES = {
    CallableSource: [
        ("name", REQUIRED),
        ("priority", REQUIRED),
        ("supports", REQUIRED),
        ("fetcher", REQUIRED),
        *COMMON_TAIL,
        *FLAGS,
    ],
    CallableBatchSource: [
        ("name", REQUIRED),
        ("priority", REQUIRED),
        ("supports", REQUIRED),
        ("fetcher", REQUIRED),
        *COMMON_TAIL,
        ("max_batch_size", None),
        *FLAGS,
        ("omitted_means_not_found", False),  # issue 16's opt-in (B-SRC-4 stays the default)
        ("batch_window_seconds", None),  # issue 14's opt-in: calls shared across builds
    ],
    CallableDerivedSource: [
        ("name", REQUIRED),
        ("priority", REQUIRED),
        ("supports", REQUIRED),
        ("dependencies", REQUIRED),
        ("deriver", REQUIRED),
        *COMMON_TAIL,
        *FLAGS,
        ("observed_at_from_dependencies", False),  # B-SRC-6's opt-in
    ],
}


def test_public_names() -> None:
    assert coalestra.adapters.__all__ == [
        "CallableBatchSource",
        "CallableDerivedSource",
        "CallableSource",
    ]


@pytest.mark.parametrize("cls", ALL)
def test_signature_matches_the_contract(cls: AdapterType) -> None:
    parameters = list(inspect.signature(cls).parameters.values())
    assert [(p.name, p.default) for p in parameters] == SIGNATURES[cls]
    assert all(p.kind is KW for p in parameters)
    for method in ("supports", "fetch", "fetch_many", "derive", "dependencies"):
        if hasattr(cls, method):
            is_async = inspect.iscoroutinefunction(getattr(cls, method))
            assert is_async == (method in {"fetch", "fetch_many", "derive"}), method


@pytest.mark.parametrize("cls", ALL)
def test_arguments_are_keyword_only(cls: AdapterType) -> None:
    with pytest.raises(TypeError):
        cls("src", 1, lambda _key: True, _fetch)  # type: ignore[misc]


def test_single_source_takes_no_max_batch_size() -> None:
    with pytest.raises(TypeError, match="max_batch_size"):
        CallableSource(**minimal(CallableSource), max_batch_size=3)


@pytest.mark.parametrize("cls", ALL)
def test_defaults_and_read_only_properties(cls: AdapterType) -> None:
    source = cls(**minimal(cls))
    assert (source.name, source.priority) == ("src", 1)
    assert source.timeout_seconds is None
    assert source.queue_timeout_seconds is None
    assert source.max_concurrency is None
    assert source.resilience_policy is None
    assert source.cache_supports is True
    assert source.run_sync_in_thread is True
    assert repr(source) == f"{cls.__name__}(name='src', priority=1)"
    with pytest.raises(AttributeError):
        source.name = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        source.extra = 1  # type: ignore[attr-defined]  # slotted: no stray attributes


@pytest.mark.parametrize("cls", ALL)
def test_configured_values_are_exposed(cls: AdapterType) -> None:
    policy = SourceResiliencePolicy(retry=RetryPolicy(max_attempts=1))
    source = cls(
        **{**minimal(cls), "name": "configured", "priority": -5},
        timeout_seconds=2,
        queue_timeout_seconds=0.5,
        max_concurrency=3,
        resilience_policy=policy,
        cache_supports=False,
        run_sync_in_thread=False,
    )
    assert (source.name, source.priority) == ("configured", -5)
    assert source.timeout_seconds == 2.0
    assert isinstance(source.timeout_seconds, float)
    assert source.queue_timeout_seconds == 0.5
    assert source.max_concurrency == 3
    assert source.resilience_policy is policy
    assert source.cache_supports is False
    assert source.run_sync_in_thread is False


def test_batch_size_property() -> None:
    assert CallableBatchSource(**minimal(CallableBatchSource)).max_batch_size is None
    sized = CallableBatchSource(**minimal(CallableBatchSource), max_batch_size=7)
    assert sized.max_batch_size == 7


def test_sources_satisfy_the_core_protocols() -> None:
    single = CallableSource(**minimal(CallableSource))
    batch = CallableBatchSource(**minimal(CallableBatchSource))
    derived = CallableDerivedSource(**minimal(CallableDerivedSource))
    for source in (single, batch, derived):
        assert isinstance(source, SourceBase)
        assert isinstance(source, ConcurrencyLimitedSource)
        assert isinstance(source, ResilienceConfiguredSource)
    assert isinstance(single, SnapshotSource)
    assert isinstance(batch, BatchSnapshotSource)
    assert isinstance(batch, BatchSizedSource)
    assert isinstance(derived, DerivedSource)
    # And not the other kinds: the builder dispatches on these checks.
    assert not isinstance(single, (BatchSnapshotSource, DerivedSource, BatchSizedSource))
    assert not isinstance(batch, (SnapshotSource, DerivedSource))
    assert not isinstance(derived, (SnapshotSource, BatchSnapshotSource, BatchSizedSource))


async def _async_supports(_key: object) -> bool:
    return True


async def _async_dependencies(_key: object) -> tuple[ResourceKey, ...]:
    return ()


BAD_COMMON: list[tuple[str, object, type[Exception], str]] = [
    ("name", "", ValueError, "name"),
    ("name", "   ", ValueError, "name"),
    ("name", 3, TypeError, "name"),
    ("name", None, TypeError, "name"),
    ("priority", 1.5, TypeError, "priority"),
    ("priority", "1", TypeError, "priority"),
    ("priority", True, TypeError, "priority"),
    ("priority", None, TypeError, "priority"),
    ("supports", 3, TypeError, "supports"),
    ("supports", None, TypeError, "supports"),
    ("supports", _async_supports, TypeError, "supports"),
    ("max_concurrency", 0, ValueError, "max_concurrency"),
    ("max_concurrency", -1, ValueError, "max_concurrency"),
    ("max_concurrency", 1.5, TypeError, "max_concurrency"),
    ("max_concurrency", True, TypeError, "max_concurrency"),
    ("resilience_policy", "strict", TypeError, "resilience_policy"),
    ("resilience_policy", RetryPolicy(), TypeError, "resilience_policy"),
    ("cache_supports", 1, TypeError, "cache_supports"),
    ("cache_supports", None, TypeError, "cache_supports"),
    ("run_sync_in_thread", 0, TypeError, "run_sync_in_thread"),
    ("run_sync_in_thread", "no", TypeError, "run_sync_in_thread"),
]
for _timeout in ("timeout_seconds", "queue_timeout_seconds"):
    BAD_COMMON += [
        (_timeout, 0, ValueError, _timeout),
        (_timeout, -1.0, ValueError, _timeout),
        (_timeout, math.nan, ValueError, _timeout),
        (_timeout, math.inf, ValueError, _timeout),
        (_timeout, "1", TypeError, _timeout),
        (_timeout, True, TypeError, _timeout),
    ]

BAD_SPECIFIC: list[tuple[AdapterType, str, object, type[Exception], str]] = [
    (CallableSource, "fetcher", None, TypeError, "fetcher"),
    (CallableSource, "fetcher", "fetch", TypeError, "fetcher"),
    (CallableBatchSource, "fetcher", 42, TypeError, "fetcher"),
    (CallableBatchSource, "max_batch_size", 0, ValueError, "max_batch_size"),
    (CallableBatchSource, "max_batch_size", "2", TypeError, "max_batch_size"),
    (CallableBatchSource, "max_batch_size", 2.0, TypeError, "max_batch_size"),
    (CallableBatchSource, "max_batch_size", False, TypeError, "max_batch_size"),
    (CallableDerivedSource, "deriver", None, TypeError, "deriver"),
    (CallableDerivedSource, "dependencies", (), TypeError, "dependencies"),
    (CallableDerivedSource, "dependencies", _async_dependencies, TypeError, "dependencies"),
]


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize(("argument", "value", "error", "match"), BAD_COMMON)
def test_bad_common_arguments(
    cls: AdapterType, argument: str, value: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        cls(**{**minimal(cls), argument: value})


@pytest.mark.parametrize(("cls", "argument", "value", "error", "match"), BAD_SPECIFIC)
def test_bad_specific_arguments(
    cls: AdapterType, argument: str, value: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        cls(**{**minimal(cls), argument: value})


@pytest.mark.parametrize(
    "factory",
    [lambda: lambda _key: True, lambda: type("Supports", (), {"__call__": lambda s, k: True})()],
)
def test_callable_objects_are_accepted_as_supports(factory: Callable[[], object]) -> None:
    source = CallableSource(**{**minimal(CallableSource), "supports": factory()})
    assert source.supports(ResourceKey("a", "b")) is True
