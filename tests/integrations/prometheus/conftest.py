"""Helpers for the Prometheus integration tests: scrape a registry the way Prometheus would.

The test modules skip themselves when ``prometheus_client`` is missing, so this module imports
it only inside the helpers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

from coalestra import CallableBatchSource, CallableSource, FetchContext, ResourceKey

Series = tuple[str, frozenset[tuple[str, str]]]


def scrape(registry: Any) -> dict[Series, float]:
    """Every sample of ``registry``'s text exposition, parsed back: ``(name, labels) -> value``.

    ``*_created`` samples (creation timestamps) are left out: they are wall-clock noise.
    """
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(registry).decode("utf-8")
    samples: dict[Series, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: dict[Series, float], name: str, **labels: str) -> float | None:
    """The sample ``name{labels}`` (exact label set), or ``None`` when absent."""
    return samples.get((name, frozenset(labels.items())))


def names(samples: dict[Series, float]) -> set[str]:
    return {name for name, _ in samples}


def price(subject: str, **qualifiers: str) -> ResourceKey:
    return ResourceKey("market", "price", subject, qualifiers or None)


def is_price(key: ResourceKey) -> bool:
    return key.namespace == "market" and key.name == "price"


def single(
    name: str,
    priority: int,
    *,
    delay: float = 0.0,
    fail: BaseException | None = None,
    supports: Callable[[ResourceKey], bool] = is_price,
    **options: Any,
) -> CallableSource:
    """An async single-key source returning the subject (after ``delay`` virtual seconds)."""

    async def fetch(key: ResourceKey, _context: FetchContext) -> str:
        if delay:
            await asyncio.sleep(delay)
        if fail is not None:
            raise fail
        return key.subject

    return CallableSource(name=name, priority=priority, supports=supports, fetcher=fetch, **options)


def batch(name: str, priority: int, *, delay: float = 0.0) -> CallableBatchSource:
    """An async batch source returning each key's subject."""

    async def fetch(keys: tuple[ResourceKey, ...], _context: FetchContext) -> dict[Any, str]:
        if delay:
            await asyncio.sleep(delay)
        return {key: key.subject for key in keys}

    return CallableBatchSource(name=name, priority=priority, supports=is_price, fetcher=fetch)


def subjects_and_qualifiers(keys: Iterable[ResourceKey]) -> set[str]:
    """Every subject and qualifier value of ``keys``: none may appear as a label value."""
    found: set[str] = set()
    for key in keys:
        if key.subject is not None:
            found.add(key.subject)
        found.update(qualifier for _, qualifier in key.qualifiers)
        found.add(str(key))
    return found
