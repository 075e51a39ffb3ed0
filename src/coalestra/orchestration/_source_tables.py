"""Per-source builder options (``source_concurrency``, ``source_resilience``) checked against
the registered sources, once, when the builder is made."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core._validation import check_int
from ._sources import RegisteredSource


def check_named_sources(
    label: str, table: Mapping[str, Any] | None, sources: tuple[RegisteredSource, ...]
) -> None:
    """Every name in a per-source table (``label``) must be a registered source.

    Raises:
        ValueError: ``"<label> names unknown source 'x' (known sources: a, b)"``.
    """
    names = {source.name for source in sources}
    for name in table or {}:
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise ValueError(f"{label} names unknown source {name!r} (known sources: {known})")


def check_limits(
    source_concurrency: Mapping[str, int] | None,
    sources: tuple[RegisteredSource, ...],
) -> dict[str, int | None]:
    """Return each source's concurrency limit: an explicit entry wins over the source's own.

    Raises:
        ValueError: an entry names no registered source, or a limit is below 1.
    """
    explicit = dict(source_concurrency or {})
    check_named_sources("source_concurrency", explicit, sources)
    for name, limit in explicit.items():
        if check_int(f"source_concurrency[{name!r}]", limit) < 1:
            raise ValueError("source concurrency limit must be at least 1")  # as B-CAP-2 says
    return {source.name: explicit.get(source.name, source.max_concurrency) for source in sources}
