"""Where things live in Redis: key names, the event channel and the text form of a key.

Every Redis name of one application starts with its prefix::

    {prefix}:v:{name}     a cached value (one string: header + serialized body)
    {prefix}:l:{name}     the fetch lease of a key (the holder's token, with an expiry)
    {prefix}:events       the pub/sub channel of writes, invalidations and lease releases

``name`` is the resource key as reversible text: ``namespace:name:subject`` and, with
qualifiers, ``?q1=v1&q2=v2``; each part is percent-escaped so that ``:?&=%``, spaces and control
characters inside a part never look like separators. Messages on the channel carry names, so a
listener can rebuild the :class:`~coalestra.core.ResourceKey` without any lookup table.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import final
from urllib.parse import quote, unquote

from ...core import ResourceKey
from ...core._normalizers import PRESERVE_KEY_NORMALIZER

_PREFIX = re.compile(r"^[A-Za-z0-9_.:/-]+$")

# A part made only of these characters is its own escaped form (the common case costs a match).
_PLAIN = re.compile(r"^[A-Za-z0-9_.~/@+,;!$'()*\-]*$")


def escape(part: str) -> str:
    """``part`` with separators, spaces and control characters percent-escaped."""
    return part if _PLAIN.match(part) else quote(part, safe="")


def unescape(part: str) -> str:
    """Undo :func:`escape`."""
    return unquote(part) if "%" in part else part


@lru_cache(maxsize=65536)
def key_name(key: ResourceKey) -> str:
    """The reversible text form of ``key`` (cached: hot reads name the same keys again)."""
    text = f"{escape(key.namespace)}:{escape(key.name)}:{escape(key.subject)}"
    if key.qualifiers:
        text += "?" + "&".join(f"{escape(q)}={escape(v)}" for q, v in key.qualifiers)
    return text


@lru_cache(maxsize=65536)
def key_from_name(name: str) -> ResourceKey:
    """Rebuild the key :func:`key_name` rendered.

    The parts are already normalized, so they are restored as they are; the key compares and
    hashes equal to the original (the normalizer is not part of a key's identity).

    Raises:
        ValueError: ``name`` is not a key name.
    """
    path, _, query = name.partition("?")
    parts = path.split(":")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise ValueError(f"not a resource key name: {name!r}")
    qualifiers: list[tuple[str, str]] = []
    if query:
        for pair in query.split("&"):
            qualifier, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"not a resource key name: {name!r}")
            qualifiers.append((unescape(qualifier), unescape(value)))
    namespace, resource, subject = (unescape(part) for part in parts)
    return ResourceKey._from_parts(
        namespace, resource, subject, tuple(sorted(qualifiers)), PRESERVE_KEY_NORMALIZER
    )


def glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob (``SCAN MATCH``)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def check_prefix(prefix: object) -> str:
    """Return ``prefix`` if it is a usable key prefix.

    Raises:
        TypeError, ValueError: not a string, or empty, or with characters other than letters,
            digits and ``_.:/-`` (glob characters would break the ``SCAN`` of ``clear()``).
    """
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    if not _PREFIX.match(prefix):
        raise ValueError(
            f"prefix must be non-empty and use only letters, digits and _.:/- , got {prefix!r}"
        )
    return prefix


@final
class KeyLayout:
    """The Redis names of one application (one prefix).

    Args:
        prefix: isolates applications sharing a Redis database (see :func:`check_prefix`).
    """

    __slots__ = ("_lease", "_value", "any_pattern", "channel", "prefix", "value_pattern")

    def __init__(self, prefix: str) -> None:
        self.prefix = check_prefix(prefix)
        self._value = f"{prefix}:v:"
        self._lease = f"{prefix}:l:"
        self.channel = f"{prefix}:events"
        self.value_pattern = f"{prefix}:v:*"
        self.any_pattern = f"{prefix}:[vl]:*"

    def value_key(self, name: str) -> str:
        """The Redis key of the cached value named ``name``."""
        return self._value + name

    def lease_key(self, name: str) -> str:
        """The Redis key of the fetch lease of ``name``."""
        return self._lease + name
