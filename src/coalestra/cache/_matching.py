"""Matching cached keys by namespace, name and subject (``invalidate_namespace``)."""

from __future__ import annotations

from typing import final

from ..core import ResourceKey


@final
class NamespaceMatcher:
    """Matches keys by namespace, name and subject, normalized like each key's own parts."""

    __slots__ = ("_name", "_namespace", "_normalized", "_subject")

    def __init__(self, namespace: str, name: str | None, subject: str | None) -> None:
        self._namespace = namespace
        self._name = name
        self._subject = subject
        # One normalization per distinct normalizer, not one per key.
        self._normalized: dict[int, tuple[str, str | None, str | None]] = {}

    def __call__(self, key: ResourceKey) -> bool:
        normalizer = key._normalizer
        parts = self._normalized.get(id(normalizer))
        if parts is None:
            parts = (
                normalizer.namespace(self._namespace),
                None if self._name is None else normalizer.name(self._name),
                None if self._subject is None else normalizer.subject(self._subject),
            )
            self._normalized[id(normalizer)] = parts
        namespace, name, subject = parts
        return (
            key.namespace == namespace
            and (name is None or key.name == name)
            and (subject is None or key.subject == subject)
        )
