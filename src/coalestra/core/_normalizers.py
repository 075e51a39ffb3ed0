"""Key normalizers: how each part of a :class:`~._keys.ResourceKey` is shaped before it is kept
(:class:`KeyNormalizer` and the three ready-made ones)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any, TypeAlias, cast, final

StringTransform: TypeAlias = Callable[[str], str]
QualifierInput: TypeAlias = Mapping[str, Any] | Iterable[tuple[str, Any]]


def _strip(value: str) -> str:
    return value.strip()


def _lower(value: str) -> str:
    return value.strip().lower()


def _upper(value: str) -> str:
    return value.strip().upper()


def _casefold(value: str) -> str:
    return value.strip().casefold()


def _require_str(part: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"ResourceKey {part} must be a str, got {type(value).__name__}")
    return value


def _qualifier_text(name: str, value: Any) -> str:
    """Render a qualifier value as text; only scalar values have one stable rendering."""
    # Enum before str: a ``(str, Enum)`` member is a str too, but must be stored as its plain
    # value (``str()`` of such a member renders ``Cls.MEMBER``, which would leak into str(key)).
    if isinstance(value, Enum):
        return _qualifier_text(name, value.value)
    if isinstance(value, str):
        return value
    # Decimal NaN/Infinity are as unstable an identity as float ones (NaN != NaN).
    if (isinstance(value, float) and not math.isfinite(value)) or (
        isinstance(value, Decimal) and not value.is_finite()
    ):
        raise ValueError(f"qualifier {name!r} must be finite, got {value!r}")
    if isinstance(value, (bool, int, float, Decimal)):
        return str(value)
    raise TypeError(
        f"qualifier {name!r} must be a str, int, float, bool, Decimal or Enum, "
        f"got {type(value).__name__}"
    )


@final
@dataclass(frozen=True, slots=True)
class KeyNormalizer:
    """How each part of a :class:`ResourceKey` is normalized.

    Every field is a ``str -> str`` function. The default (``PRESERVE_KEY_NORMALIZER``) only strips
    surrounding whitespace; ``CASE_INSENSITIVE_KEY_NORMALIZER`` casefolds every part;
    ``LEGACY_KEY_NORMALIZER`` lower-cases namespace, name and qualifier names and upper-cases the
    subject, as Coalestra 0.1-0.3 did.
    """

    namespace: StringTransform = _strip
    name: StringTransform = _strip
    subject: StringTransform = _strip
    qualifier_name: StringTransform = _strip
    qualifier_value: StringTransform = _strip

    def __post_init__(self) -> None:
        for part in ("namespace", "name", "subject", "qualifier_name", "qualifier_value"):
            if not callable(getattr(self, part)):
                raise TypeError(f"KeyNormalizer.{part} must be callable")

    def normalize_namespace(self, value: str) -> str:
        """Return the normalized namespace; raises ``ValueError`` if it is empty."""
        return self._checked("namespace", self.namespace(_require_str("namespace", value)))

    def normalize_name(self, value: str) -> str:
        """Return the normalized name; raises ``ValueError`` if it is empty."""
        return self._checked("name", self.name(_require_str("name", value)))

    def normalize_subject(self, value: str) -> str:
        """Return the normalized subject (it may be empty)."""
        return self.subject(_require_str("subject", value))

    def normalize_qualifier(self, name: str, value: Any) -> tuple[str, str]:
        """Return the normalized ``(name, value)`` pair of one qualifier."""
        if not isinstance(name, str):
            raise TypeError(f"qualifier names must be str, got {type(name).__name__}")
        key = self._checked("qualifier name", self.qualifier_name(name))
        text = self.qualifier_value(_qualifier_text(key, value))
        # Values may be empty, but must stay str: keys are hashed, ordered and rendered as text.
        if not isinstance(text, str):
            raise TypeError(
                f"normalizer for qualifier value must return a str, got {type(text).__name__}"
            )
        return key, text

    def normalize_qualifiers(
        self, qualifiers: QualifierInput | None
    ) -> tuple[tuple[str, str], ...]:
        """Return qualifiers as a sorted tuple of pairs; a repeated name is a ``ValueError``."""
        if qualifiers is None:
            return ()
        items = qualifiers.items() if isinstance(qualifiers, Mapping) else qualifiers
        # Non-iterables are refused here so the message names the argument (a bare
        # ``for item in 5`` would only say "'int' object is not iterable").
        if isinstance(cast(object, items), (str, bytes)) or not isinstance(items, Iterable):
            raise TypeError("qualifiers must be a mapping or an iterable of (name, value) pairs")
        pairs: dict[str, str] = {}
        for item in items:
            if not isinstance(item, tuple) or len(item) != 2:
                raise TypeError(
                    "qualifiers must be a mapping or an iterable of (name, value) pairs"
                )
            name, value = self.normalize_qualifier(item[0], item[1])
            if name in pairs:
                raise ValueError(f"duplicate qualifier name: {name}")
            pairs[name] = value
        return tuple(sorted(pairs.items()))

    @staticmethod
    def _checked(part: str, value: object) -> str:
        if not isinstance(value, str):
            raise TypeError(f"normalizer for {part} must return a str, got {type(value).__name__}")
        if not value:
            raise ValueError(f"{part} cannot be empty")
        return value


PRESERVE_KEY_NORMALIZER = KeyNormalizer()
LEGACY_KEY_NORMALIZER = KeyNormalizer(
    namespace=_lower, name=_lower, subject=_upper, qualifier_name=_lower, qualifier_value=_strip
)
CASE_INSENSITIVE_KEY_NORMALIZER = KeyNormalizer(
    namespace=_casefold,
    name=_casefold,
    subject=_casefold,
    qualifier_name=_casefold,
    qualifier_value=_casefold,
)
