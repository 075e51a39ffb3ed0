"""How the body of a cache entry becomes bytes: :class:`Serializer` and its two implementations.

A shared Redis is writable by every process that can reach it, so reading an entry must never be
a way to run code here. :class:`JsonSerializer` (the default) can only ever produce plain data.
:class:`PickleSerializer` is an explicit opt-in that signs each entry with HMAC-SHA256 and refuses
to unpickle anything whose signature does not check out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import pickle
from collections.abc import Mapping
from typing import Any, Protocol, final, runtime_checkable

Record = dict[str, Any]
"""The body of one entry: the payload, its metadata and provenance fields, under short names."""


@runtime_checkable
class Serializer(Protocol):
    """Turns an entry's body into bytes and back.

    ``record`` is a ``dict`` with string keys; the payload and the metadata are among its values.
    ``context`` is associated data: the entry's Redis key and header. A serializer that signs
    must bind its signature to it, so a valid body cannot be replayed under another key or
    with a forged header.
    """

    def dumps(self, record: Record, *, context: bytes) -> bytes:
        """Encode ``record``.

        Raises:
            TypeError, ValueError: something in it cannot be encoded (the message says what).
        """
        ...

    def loads(self, data: bytes, *, context: bytes) -> Record:
        """Decode what :meth:`dumps` produced.

        Raises:
            ValueError: ``data`` is malformed, unsigned or tampered with; the cache then treats
                the entry as a miss and counts it as rejected.
        """
        ...


_SCALARS = (str, int, float, bool, type(None))


def _json_path_error(path: str, value: object) -> TypeError:
    kind = type(value).__name__
    hint = " (JSON has no tuples: use a list)" if isinstance(value, tuple) else ""
    return TypeError(f"{path} is a {kind}, which is not JSON-compatible{hint}")


def check_json(value: object, path: str = "$") -> None:
    """Raise ``TypeError`` naming the first part of ``value`` that would not survive a JSON round
    trip unchanged: only ``dict`` (with ``str`` keys), ``list``, ``str``, ``int``, finite
    ``float``, ``bool`` and ``None`` do (exact types: a tuple would come back as a list)."""
    stack: list[tuple[object, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        kind = type(item)
        if kind is float:
            if not math.isfinite(item):  # type: ignore[arg-type]
                raise TypeError(f"{where} is {item!r}, which JSON cannot represent")
        elif kind in _SCALARS:
            continue
        elif kind is list and isinstance(item, list):
            stack.extend((element, f"{where}[{i}]") for i, element in enumerate(item))
        elif kind is dict and isinstance(item, dict):
            for name, element in item.items():
                if type(name) is not str:
                    raise TypeError(f"{where} has a {type(name).__name__} key; JSON keys are str")
                stack.append((element, f"{where}[{name!r}]"))
        else:
            raise _json_path_error(where, item)


@final
class JsonSerializer:
    """The default: JSON-compatible payloads and metadata only, decoded as plain data.

    A payload that would not come back unchanged (a tuple, a set, a datetime, a NaN, a dict with
    int keys, an object) is refused at write time with a ``TypeError`` naming where it is; the
    cache reports it as a :class:`~coalestra.core.PayloadIsolationError` naming the key.
    """

    __slots__ = ()

    def dumps(self, record: Record, *, context: bytes) -> bytes:
        """Encode ``record`` as compact UTF-8 JSON.

        Raises:
            TypeError: a value is not JSON-compatible (see :func:`check_json`).
        """
        check_json(record)
        return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()

    def loads(self, data: bytes, *, context: bytes) -> Record:
        """Decode JSON written by :meth:`dumps`.

        Raises:
            ValueError: not a JSON object.
        """
        record = json.loads(data)
        if type(record) is not dict:
            raise ValueError("entry body is not a JSON object")
        return record

    def __repr__(self) -> str:
        return "JsonSerializer()"


_PICKLE_TAG = b"P1"
_MAC_SIZE = hashlib.sha256().digest_size
MIN_SIGNING_KEY_BYTES = 16
"""The shortest signing key :class:`PickleSerializer` accepts (32 random bytes recommended)."""


@final
class PickleSerializer:
    """Any picklable payload, for processes that trust each other: opt-in, and always signed.

    Every entry carries an HMAC-SHA256 of its pickle, its Redis key and its header, made with
    ``signing_key``. An entry without a valid signature (written by someone without the key,
    altered, or moved to another key) is refused before ``pickle.loads`` ever sees it: the cache
    counts it as rejected and reads it as a miss. All processes sharing a prefix need the same
    key; rotating it turns every existing entry into a miss.

    Args:
        signing_key: a secret of at least 16 bytes (use ``os.urandom(32)`` once, then share it
            through your secret store).
        protocol: the pickle protocol (default: the highest this Python supports).

    Raises:
        TypeError, ValueError: ``signing_key`` is not bytes or too short; ``protocol`` is not a
            supported pickle protocol.
    """

    __slots__ = ("_key", "_protocol")

    def __init__(self, signing_key: bytes, *, protocol: int = pickle.HIGHEST_PROTOCOL) -> None:
        if not isinstance(signing_key, (bytes, bytearray)):
            raise TypeError(f"signing_key must be bytes, got {type(signing_key).__name__}")
        if len(signing_key) < MIN_SIGNING_KEY_BYTES:
            raise ValueError(
                f"signing_key must be at least {MIN_SIGNING_KEY_BYTES} bytes, "
                f"got {len(signing_key)}"
            )
        if isinstance(protocol, bool) or not isinstance(protocol, int):
            raise TypeError(f"protocol must be an int, got {type(protocol).__name__}")
        if not 2 <= protocol <= pickle.HIGHEST_PROTOCOL:
            raise ValueError(f"protocol must be in 2..{pickle.HIGHEST_PROTOCOL}, got {protocol}")
        self._key = bytes(signing_key)
        self._protocol = protocol

    def _sign(self, body: bytes, context: bytes) -> bytes:
        mac = hmac.new(self._key, context, hashlib.sha256)
        mac.update(b"\0")
        mac.update(body)
        return mac.digest()

    def dumps(self, record: Record, *, context: bytes) -> bytes:
        """Pickle ``record`` and sign it (with ``context``).

        Raises:
            TypeError, ValueError: something in it cannot be pickled.
        """
        try:
            body = pickle.dumps(record, protocol=self._protocol)
        except (pickle.PicklingError, AttributeError) as error:
            raise TypeError(f"cannot pickle the entry: {error}") from error
        return _PICKLE_TAG + self._sign(body, context) + body

    def loads(self, data: bytes, *, context: bytes) -> Record:
        """Check the signature, then unpickle.

        Raises:
            ValueError: unsigned, truncated or tampered data (never unpickled).
        """
        head = len(_PICKLE_TAG) + _MAC_SIZE
        if len(data) <= head or not data.startswith(_PICKLE_TAG):
            raise ValueError("entry is not a signed pickle")
        body = data[head:]
        if not hmac.compare_digest(data[len(_PICKLE_TAG) : head], self._sign(body, context)):
            raise ValueError("entry signature does not match: refused without unpickling")
        record = pickle.loads(body)  # authenticated above: safe to unpickle
        if not isinstance(record, Mapping):
            raise ValueError("signed entry does not hold a record")
        return dict(record)

    def __repr__(self) -> str:
        return f"PickleSerializer(protocol={self._protocol}, signing_key=<hidden>)"
