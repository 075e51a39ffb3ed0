"""Argument checks shared by the cache and the publisher (each names the argument)."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from ..core import FreshnessPolicy, ResourceKey, SnapshotValue
from ..core._validation import check_bool
from ._values import ResourceUpdate


def require(name: str, value: object, kind: type, what: str) -> None:
    """Raise ``TypeError`` unless ``value`` is an instance of ``kind`` (described as ``what``)."""
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")


def check_key(key: object, name: str = "key") -> ResourceKey:
    """Return ``key`` if it is a :class:`ResourceKey`, else raise ``TypeError``."""
    if not isinstance(key, ResourceKey):
        raise TypeError(f"{name} must be a ResourceKey, got {type(key).__name__}")
    return key


def check_collection(name: str, values: object) -> Collection[Any]:
    """Return ``values`` if it is a collection (strings and bytes are refused)."""
    if not isinstance(values, Collection) or isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a collection, got {type(values).__name__}")
    return values


def check_keys(keys: object) -> tuple[ResourceKey, ...]:
    """Return ``keys`` as a tuple after checking it is a collection of ResourceKey."""
    return tuple(check_key(key, "keys item") for key in check_collection("keys", keys))


def check_value(value: object, name: str = "value") -> SnapshotValue[Any]:
    """Return ``value`` if it is a :class:`SnapshotValue`, else raise ``TypeError``."""
    if not isinstance(value, SnapshotValue):
        raise TypeError(f"{name} must be a SnapshotValue, got {type(value).__name__}")
    return value


def check_values(values: object) -> tuple[SnapshotValue[Any], ...]:
    """Return ``values`` as a tuple after checking it is a collection of SnapshotValue."""
    checked = check_collection("values", values)
    return tuple(check_value(value, "values item") for value in checked)


def check_flags(force: object, replace_equal: object) -> None:
    if force.__class__ is not bool or replace_equal.__class__ is not bool:
        check_bool("force", force)
        check_bool("replace_equal", replace_equal)


def check_updates(updates: object) -> tuple[ResourceUpdate[Any], ...]:
    checked = tuple(check_collection("updates", updates))
    for update in checked:
        require("updates item", update, ResourceUpdate, "a ResourceUpdate")
    return checked


def check_metadata(metadata: object) -> Mapping[str, Any] | None:
    """Return ``metadata`` if it is a mapping or ``None``, else raise ``TypeError``."""
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping or None, got {type(metadata).__name__}")
    return metadata


def explain_bad_read(keys: Collection[Any], policies: Mapping[Any, Any]) -> None:
    """Raise the precise error for the keys/policies that made a batch read fail."""
    missing: list[ResourceKey] = []
    for key in keys:
        check_key(key, "keys item")
        if key not in policies:
            missing.append(key)
        elif not isinstance(policies[key], FreshnessPolicy):
            raise TypeError(
                f"policies[{key}] must be a FreshnessPolicy, got {type(policies[key]).__name__}"
            )
    if missing:
        raise KeyError("missing freshness policies for: " + ", ".join(map(str, missing)))
