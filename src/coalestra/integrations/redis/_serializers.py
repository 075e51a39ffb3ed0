"""How the body of a cache entry becomes bytes: :class:`Serializer` and its two implementations.

A shared Redis is writable by every process that can reach it, so reading an entry must never be
a way to run code here. :class:`JsonSerializer` (the default) can only ever produce plain data.
:class:`PickleSerializer` is an explicit opt-in that signs each entry with HMAC-SHA256 and refuses
to unpickle anything whose signature does not check out.
"""

from __future__ import annotations

import base64
import datetime
import decimal
import hashlib
import hmac
import json
import math
import pickle
import uuid
from collections.abc import Callable, Mapping
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


_TAG = "$t"
"""A JSON object with this key is a tagged value: ``{"$t": kind, "v": encoded}``."""


def _refuse(path: str, value: object, why: str = "") -> TypeError:
    kind = type(value).__name__
    return TypeError(f"{path} is a {kind}, which the JSON serializer cannot encode{why}")


def _encode_float(value: float) -> object:
    return value if math.isfinite(value) else {_TAG: "float", "v": repr(value)}


def _encode_dict(value: dict[Any, Any], path: str) -> object:
    if all(type(name) is str for name in value) and _TAG not in value:
        return {name: to_json(item, f"{path}[{name!r}]") for name, item in value.items()}
    # Keys that are not strings (or a key that looks like a tag): a list of pairs.
    pairs = [
        [to_json(name, f"{path}.keys()"), to_json(item, f"{path}[{name!r}]")]
        for name, item in value.items()
    ]
    return {_TAG: "dict", "v": pairs}


def _encode_datetime(value: datetime.datetime, path: str) -> object:
    if value.tzinfo is not None and not isinstance(value.tzinfo, datetime.timezone):
        raise _refuse(path, value, " (only fixed-offset time zones round-trip)")
    return {_TAG: "datetime", "v": value.isoformat()}


def to_json(value: object, path: str = "$") -> object:
    """``value`` as plain JSON data, with tagged objects for the other supported types.

    Supported, by exact type: ``None``, ``bool``, ``int``, ``float`` (NaN and infinities
    included), ``str``, ``list``, ``dict`` (any supported keys), ``tuple``, ``set``,
    ``frozenset``, ``datetime.datetime`` (naive or fixed-offset), ``datetime.date``,
    ``decimal.Decimal``, ``bytes`` and ``uuid.UUID``.

    Raises:
        TypeError: naming where the first unsupported value is (a subclass counts as
            unsupported: it would come back as its base type).
    """
    kind = type(value)
    if kind in (str, int, bool) or value is None:
        return value
    if isinstance(value, float) and kind is float:
        return _encode_float(value)
    if isinstance(value, list) and kind is list:
        return [to_json(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict) and kind is dict:
        return _encode_dict(value, path)
    if isinstance(value, (tuple, set, frozenset)) and kind in (tuple, set, frozenset):
        items = [to_json(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return {_TAG: kind.__name__, "v": items}
    return _encode_other(value, path)


def _encode_other(value: object, path: str) -> object:
    kind = type(value)
    if isinstance(value, datetime.datetime) and kind is datetime.datetime:
        return _encode_datetime(value, path)
    if isinstance(value, datetime.date) and kind is datetime.date:
        return {_TAG: "date", "v": value.isoformat()}
    if kind is decimal.Decimal or kind is uuid.UUID:
        return {_TAG: kind.__name__.lower(), "v": str(value)}
    if isinstance(value, bytes) and kind is bytes:
        return {_TAG: "bytes", "v": base64.b64encode(value).decode()}
    raise _refuse(path, value)


_DECODERS: dict[str, Callable[[Any], object]] = {
    "float": float,
    "tuple": lambda items: tuple(from_json(item) for item in items),
    "set": lambda items: {from_json(item) for item in items},
    "frozenset": lambda items: frozenset(from_json(item) for item in items),
    "dict": lambda pairs: {from_json(name): from_json(item) for name, item in pairs},
    "datetime": datetime.datetime.fromisoformat,
    "date": datetime.date.fromisoformat,
    "decimal": decimal.Decimal,
    "bytes": base64.b64decode,
    "uuid": uuid.UUID,
}


def from_json(data: object) -> object:
    """Undo :func:`to_json`.

    Raises:
        ValueError: an unknown or malformed tag.
    """
    if type(data) is list:
        return [from_json(item) for item in data]
    if type(data) is not dict:
        return data
    if _TAG not in data:
        return {name: from_json(item) for name, item in data.items()}
    decoder = _DECODERS.get(data[_TAG])
    if decoder is None or set(data) != {_TAG, "v"}:
        raise ValueError(f"unknown tagged value {data.get(_TAG)!r}")
    try:
        return decoder(data["v"])
    except (TypeError, ValueError, ArithmeticError) as error:
        raise ValueError(f"malformed tagged {data[_TAG]}: {error}") from error


@final
class JsonSerializer:
    """The default: JSON, with tagged objects for common non-JSON types, decoded as plain data.

    Round-trips exactly (type included) ``dict``, ``list``, ``str``, ``int``, ``float`` (NaN and
    infinities too), ``bool``, ``None``, ``tuple``, ``set``, ``frozenset``, ``datetime``
    (naive or fixed-offset), ``date``, ``Decimal``, ``bytes``, ``UUID``, and dicts with keys of
    those types; see :func:`to_json`. Anything else (an object, a subclass such as a named tuple
    or an enum) is refused at write time with a ``TypeError`` naming where it is; the Redis cache
    then skips that value (it is still served, and still kept in a tiered cache's L1) and counts
    it in ``refused_values``. Decoding never builds anything but these types.
    """

    __slots__ = ()

    def dumps(self, record: Record, *, context: bytes) -> bytes:
        """Encode ``record`` as compact UTF-8 JSON.

        Raises:
            TypeError: a value is of an unsupported type (see :func:`to_json`).
        """
        return json.dumps(
            to_json(record), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()

    def loads(self, data: bytes, *, context: bytes) -> Record:
        """Decode JSON written by :meth:`dumps`.

        Raises:
            ValueError: not a JSON object, or a malformed tagged value.
        """
        try:
            record = from_json(json.loads(data))
        except RecursionError as error:
            raise ValueError("entry body is nested too deeply") from error
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
