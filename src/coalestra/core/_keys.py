"""Resource identity: :class:`ResourceKey` (the normalizers that shape it: :mod:`._normalizers`).

A key is ``namespace:name[:subject][?qualifier=value&...]``; a separator inside a part is
escaped with a backslash, so the text is unambiguous and :meth:`ResourceKey.parse` reads it back.
Keys are built once and compared
and hashed very often (every cache lookup, every single-flight entry), so the hash is computed
at construction and equality short-circuits on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

from ._normalizers import (
    LEGACY_KEY_NORMALIZER,
    PRESERVE_KEY_NORMALIZER,
    KeyNormalizer,
    QualifierInput,
)

# The text form: which characters of each part are escaped (with a backslash) so that they never
# read as separators. The subject may hold ":" as it is (it runs up to "?"), and a qualifier
# value may hold "=" and "?" (a pair splits at its first "=", the query at the first "?").
_ESCAPE: Final = "\\"
_NAME_SPECIALS: Final = (_ESCAPE, ":", "?")
_SUBJECT_SPECIALS: Final = (_ESCAPE, "?")
_QUALIFIER_NAME_SPECIALS: Final = (_ESCAPE, "&", "=")
_QUALIFIER_VALUE_SPECIALS: Final = (_ESCAPE, "&")
_KEY_TEXT_FORM: Final = "namespace:name[:subject][?name=value&...]"


def _escaped(part: str, specials: tuple[str, ...]) -> str:
    """``part`` with each special character preceded by a backslash (ordinary parts as is)."""
    for char in specials:  # the backslash first, so added escapes are not escaped again
        if char in part:
            part = part.replace(char, _ESCAPE + char)
    return part


def _split(text: str, separator: str, maxsplit: int = -1) -> list[str]:
    """Split ``text`` at unescaped ``separator``s; the pieces keep their escapes."""
    pieces: list[str] = []
    start = index = 0
    while index < len(text):
        char = text[index]
        if char == _ESCAPE:
            index += 2
            continue
        if char == separator and maxsplit != len(pieces):
            pieces.append(text[start:index])
            start = index + 1
        index += 1
    pieces.append(text[start:])
    return pieces


def _unescaped(piece: str, text: str) -> str:
    """Drop the escaping backslashes of ``piece`` (a part of the key text ``text``)."""
    if _ESCAPE not in piece:
        return piece
    chars: list[str] = []
    escaped = False
    for char in piece:
        if escaped or char != _ESCAPE:
            chars.append(char)
            escaped = False
        else:
            escaped = True
    if escaped:
        raise ValueError(f"key text ends with a lone backslash: {text!r}")
    return "".join(chars)


def _parse_parts(text: str) -> tuple[str, str, str, list[tuple[str, str]]]:
    """The raw (unnormalized) parts of a key's text form.

    Raises:
        ValueError: no ``namespace:name``, a qualifier without ``=``, or a lone backslash.
    """
    path, *query = _split(text, "?", maxsplit=1)
    parts = _split(path, ":", maxsplit=2)
    if len(parts) < 2:
        raise ValueError(f"key text must be {_KEY_TEXT_FORM}, got {text!r}")
    namespace, name = (_unescaped(part, text) for part in parts[:2])
    subject = _unescaped(parts[2], text) if len(parts) == 3 else ""
    qualifiers: list[tuple[str, str]] = []
    for pair in _split(query[0], "&") if query else ():
        halves = _split(pair, "=", maxsplit=1)
        if len(halves) != 2:
            raise ValueError(f"qualifier {pair!r} has no '=' in key text {text!r}")
        qualifiers.append((_unescaped(halves[0], text), _unescaped(halves[1], text)))
    return namespace, name, subject, qualifiers


def _restore_key(
    namespace: str,
    name: str,
    subject: str,
    qualifiers: tuple[tuple[str, str], ...],
    normalizer: KeyNormalizer,
) -> ResourceKey:
    return ResourceKey._from_parts(namespace, name, subject, qualifiers, normalizer)


@final
@dataclass(frozen=True, init=False, eq=False, repr=False)
class ResourceKey:
    """The identity of one resource: ``namespace``, ``name``, optional ``subject``, qualifiers.

    Args:
        namespace: the resource family, e.g. ``"market"``; must not be empty.
        name: the resource type within the namespace, e.g. ``"price"``; must not be empty.
        subject: the instance, e.g. ``"BTCUSDT"``; may be empty.
        qualifiers: a mapping or pairs of extra identity, e.g. ``{"interval": "1m"}``. Values
            are rendered as text; order never matters.
        normalizer: how the parts are normalized (default: strip whitespace, keep case).

    Raises:
        TypeError: a part is not a string, or a qualifier value is not a scalar.
        ValueError: namespace or name is empty, or a qualifier name repeats.

    Keys are immutable, hashable and cheap to compare; ``str(key)`` renders
    ``namespace:name:subject?q1=v1&q2=v2`` (qualifiers sorted) and :meth:`parse` reads it back.
    A backslash escapes a separator inside a part: ``\\``, ``:`` and ``?`` in the namespace and
    name; ``\\`` and ``?`` in the subject; ``\\``, ``&`` and ``=`` in qualifier names; ``\\``
    and ``&`` in qualifier values. Keys without these characters render exactly as before.
    The normalizer is not part of equality.
    """

    # Hand-written slots: ``__hash__`` and ``_text`` are cached state, not dataclass fields.
    # Every cache lookup, LRU touch and result dict hashes the key (four times per warm hit,
    # ~30 times per miss), so the hash is answered in C: the ``__hash__`` slot holds the bound
    # ``__index__`` of the hash computed at construction, which ``hash()`` calls without running
    # Python code (a ``def __hash__`` returning a cached int cost ~40 ns more per call; 48 bytes
    # per key buy it).
    __slots__ = ("__hash__", "_normalizer", "_text", "name", "namespace", "qualifiers", "subject")

    namespace: str
    name: str
    subject: str
    qualifiers: tuple[tuple[str, str], ...]
    _normalizer: KeyNormalizer
    if TYPE_CHECKING:  # cached state, deliberately not a dataclass field
        _text: str

        def __hash__(self) -> int: ...

    def __init__(
        self,
        namespace: str,
        name: str,
        subject: str = "",
        qualifiers: QualifierInput | None = None,
        *,
        normalizer: KeyNormalizer | None = None,
    ) -> None:
        norm = PRESERVE_KEY_NORMALIZER if normalizer is None else normalizer
        if not isinstance(norm, KeyNormalizer):
            raise TypeError(f"normalizer must be a KeyNormalizer, got {type(norm).__name__}")
        self._init(
            norm.normalize_namespace(namespace),
            norm.normalize_name(name),
            norm.normalize_subject(subject),
            norm.normalize_qualifiers(qualifiers),
            norm,
        )

    def _init(
        self,
        namespace: str,
        name: str,
        subject: str,
        qualifiers: tuple[tuple[str, str], ...],
        normalizer: KeyNormalizer,
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "namespace", namespace)
        setattr_(self, "name", name)
        setattr_(self, "subject", subject)
        setattr_(self, "qualifiers", qualifiers)
        setattr_(self, "_normalizer", normalizer)
        setattr_(self, "__hash__", hash((namespace, name, subject, qualifiers)).__index__)

    @classmethod
    def _from_parts(
        cls,
        namespace: str,
        name: str,
        subject: str,
        qualifiers: tuple[tuple[str, str], ...],
        normalizer: KeyNormalizer,
    ) -> ResourceKey:
        key = object.__new__(cls)
        key._init(namespace, name, subject, qualifiers, normalizer)
        return key

    @classmethod
    def legacy(
        cls,
        namespace: str,
        name: str,
        subject: str = "",
        qualifiers: QualifierInput | None = None,
    ) -> ResourceKey:
        """Build a key with :data:`LEGACY_KEY_NORMALIZER` (Coalestra 0.1-0.3 identity)."""
        return cls(namespace, name, subject, qualifiers, normalizer=LEGACY_KEY_NORMALIZER)

    @classmethod
    def parse(cls, text: str, *, normalizer: KeyNormalizer | None = None) -> ResourceKey:
        """Read a key from its text form: the exact inverse of ``str(key)``.

        ``text`` is ``namespace:name[:subject][?q1=v1&q2=v2...]``, with separators inside a part
        escaped by a backslash as ``str(key)`` writes them. The parts are then normalized like
        the constructor's arguments, so ``ResourceKey.parse(str(key), normalizer=n) == key`` for
        every key made with ``n`` (any of the built-in normalizers; any idempotent one).
        Qualifiers may come in any order; ``str`` of the result is the canonical text.

        Raises:
            TypeError: ``text`` is not a str.
            ValueError: no ``namespace:name``, an empty namespace or name, a qualifier without
                ``=``, a repeated qualifier name, or a lone trailing backslash.
        """
        if not isinstance(text, str):
            raise TypeError(f"key text must be a str, got {type(text).__name__}")
        namespace, name, subject, qualifiers = _parse_parts(text)
        return cls(namespace, name, subject, qualifiers, normalizer=normalizer)

    def normalized(self, normalizer: KeyNormalizer) -> ResourceKey:
        """Return this key re-normalized with ``normalizer``."""
        return ResourceKey(
            self.namespace, self.name, self.subject, self.qualifiers, normalizer=normalizer
        )

    def qualifier(self, name: str, default: str | None = None) -> str | None:
        """Return the value of qualifier ``name`` (normalized like the key's), or ``default``."""
        wanted = self._normalizer.qualifier_name(name)
        for key, value in self.qualifiers:
            if key == wanted:
                return value
        return default

    def with_qualifiers(
        self, qualifiers: QualifierInput | None = None, **additional: Any
    ) -> ResourceKey:
        """Return a copy with ``qualifiers`` and ``additional`` added or replaced."""
        merged = dict(self.qualifiers)
        extra = self._normalizer.normalize_qualifiers(qualifiers)
        if additional:
            extra += self._normalizer.normalize_qualifiers(additional)
        merged.update(extra)
        return ResourceKey._from_parts(
            self.namespace,
            self.name,
            self.subject,
            tuple(sorted(merged.items())),
            self._normalizer,
        )

    def without_qualifiers(self, *names: str) -> ResourceKey:
        """Return a copy without the named qualifiers (without any qualifier if none are named)."""
        if not names:
            kept: tuple[tuple[str, str], ...] = ()
        else:
            dropped = {self._normalizer.qualifier_name(name) for name in names}
            kept = tuple(pair for pair in self.qualifiers if pair[0] not in dropped)
        return ResourceKey._from_parts(
            self.namespace, self.name, self.subject, kept, self._normalizer
        )

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if other.__class__ is not ResourceKey:
            return NotImplemented
        assert isinstance(other, ResourceKey)
        return (
            self.__hash__() == other.__hash__()
            and self.namespace == other.namespace
            and self.name == other.name
            and self.subject == other.subject
            and self.qualifiers == other.qualifiers
        )

    # All four orderings: with only ``__lt__``, ``a <= b`` and ``a >= b`` raised TypeError.
    def __lt__(self, other: ResourceKey) -> bool:
        if not isinstance(other, ResourceKey):
            return NotImplemented
        return self._sort_key() < other._sort_key()

    def __le__(self, other: ResourceKey) -> bool:
        if not isinstance(other, ResourceKey):
            return NotImplemented
        return self._sort_key() <= other._sort_key()

    def __gt__(self, other: ResourceKey) -> bool:
        if not isinstance(other, ResourceKey):
            return NotImplemented
        return self._sort_key() > other._sort_key()

    def __ge__(self, other: ResourceKey) -> bool:
        if not isinstance(other, ResourceKey):
            return NotImplemented
        return self._sort_key() >= other._sort_key()

    def _sort_key(self) -> tuple[str, str, str, tuple[tuple[str, str], ...]]:
        return (self.namespace, self.name, self.subject, self.qualifiers)

    def __str__(self) -> str:
        try:
            return self._text  # rendered once: events name every key they report
        except AttributeError:
            pass
        text = f"{_escaped(self.namespace, _NAME_SPECIALS)}:{_escaped(self.name, _NAME_SPECIALS)}"
        if self.subject:
            text = f"{text}:{_escaped(self.subject, _SUBJECT_SPECIALS)}"
        if self.qualifiers:
            text += "?" + "&".join(
                f"{_escaped(name, _QUALIFIER_NAME_SPECIALS)}="
                f"{_escaped(value, _QUALIFIER_VALUE_SPECIALS)}"
                for name, value in self.qualifiers
            )
        object.__setattr__(self, "_text", text)
        return text

    def __repr__(self) -> str:
        return f"ResourceKey({str(self)!r})"

    def __copy__(self) -> ResourceKey:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ResourceKey:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _restore_key,
            (self.namespace, self.name, self.subject, self.qualifiers, self._normalizer),
        )
