"""Test doubles shared across test folders (imported as ``tests.recording``: the suite runs with
``--import-mode=importlib`` and the test folders have no ``__init__.py``)."""

from __future__ import annotations

from typing import Any


class Events:
    """An event sink keeping every event, in order, as ``(event_type, payload)``."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def emit(self, event_type: str, **payload: Any) -> None:
        self.records.append((event_type, payload))

    def of(self, event_type: str) -> list[dict[str, Any]]:
        """The payloads of the events of ``event_type``, in order."""
        return [payload for kind, payload in self.records if kind == event_type]
