"""The capability contract: what the installed coalestra supports, so callers can check it.

:func:`capabilities` reports only what this package really ships (feature names of the 0.6 API
line that are implemented here), its own version (``coalestra.__version__``) and the defaults
it actually applies. :func:`require_capabilities` fails fast with
:class:`CapabilityRequirementError` when something a caller needs is missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final, final

from .._version import __version__
from ._assessment import BUILDER_HEALTH_ASSESSMENT_SCHEMA_VERSION
from ._errors import CoalestraError
from ._health import BUILDER_HEALTH_SCHEMA_VERSION
from ._schema import ERROR_DIAGNOSTICS_SCHEMA_VERSION
from ._validation import ReadOnlyDict

COALESTRA_API_STABILITY: Final = "0.6"
"""The API line whose capability format this follows (the dataclass default)."""
COALESTRA_CAPABILITIES_SCHEMA: Final = "coalestra.capabilities"
COALESTRA_CAPABILITIES_SCHEMA_VERSION: Final = 1

# Our pyproject's requires-python (a test keeps them equal).
PYTHON_REQUIRES: Final = ">=3.10"

# Only features this package implements (names from the 0.6 line, plus
# ``cross_build_batching``, ours: issue 14's batch window). Add a name when its feature lands,
# never before: callers gate behaviour on these.
_SHIPPED_FEATURES: Final = (
    "automatic_observability_buffering",
    "blocking_source_timeout_guarantees",
    "builder_health_assessment",
    "builder_health_serialization",
    "controlled_payload_copy_shutdown",
    "cross_build_batching",
    "degraded_snapshot_results",
    "payload_copy_health",
    "payload_copy_offload",
    "snapshot_acceptance",
    "snapshot_consistency",
    "snapshot_requests",
    "source_authority",
    "sync_submission_backlog",
    "transactional_revalidation",
    "versioned_error_diagnostics",
)
_SHIPPED_SCHEMAS: Final = {
    "builder_health": BUILDER_HEALTH_SCHEMA_VERSION,
    "builder_health_assessment": BUILDER_HEALTH_ASSESSMENT_SCHEMA_VERSION,
    "capabilities": COALESTRA_CAPABILITIES_SCHEMA_VERSION,
    "error_diagnostics": ERROR_DIAGNOSTICS_SCHEMA_VERSION,
}
# The behaviour our builder actually has: sinks are called directly (``buffer_observability=
# None``, 0.5.7; "auto" and True are opt-in), sources need no timeout declaration (0.5.7:
# ``None`` = not required, B1), a blocking source that declares itself must be protected (0.6:
# nothing declared blocking in 0.5.7, so nobody is refused); builds share no batch calls unless
# asked to (``batch_window_seconds``, ours).
_SHIPPED_DEFAULTS: Final = {
    "allow_unsafe_blocking_sources": False,
    "batch_window_seconds": None,
    "buffer_observability": False,
    "require_source_timeout_declarations": None,
}


class CapabilityRequirementError(CoalestraError):
    """The installed coalestra lacks required features or schema versions.

    ``missing_features``: sorted distinct names; ``schema_mismatches``: name →
    ``(minimum, installed or None)``.
    """

    def __init__(
        self,
        *,
        missing_features: Iterable[str],
        schema_mismatches: Mapping[str, tuple[int, int | None]],
    ) -> None:
        self.missing_features = tuple(sorted(set(missing_features)))
        self.schema_mismatches: Mapping[str, tuple[int, int | None]] = ReadOnlyDict(
            schema_mismatches
        )
        super().__init__(self._message())

    def _message(self) -> str:
        parts = []
        if self.missing_features:
            parts.append("missing features: " + ", ".join(self.missing_features))
        if self.schema_mismatches:
            shown = ", ".join(
                f"{name} (need >= {minimum}, installed {installed})"
                for name, (minimum, installed) in sorted(self.schema_mismatches.items())
            )
            parts.append("schema mismatches: " + shown)
        return "coalestra capability requirements not met: " + ("; ".join(parts) or "none")

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (self.missing_features, dict(self.schema_mismatches)))


def _rebuild(
    missing: tuple[str, ...], mismatches: dict[str, tuple[int, int | None]]
) -> CapabilityRequirementError:
    return CapabilityRequirementError(missing_features=missing, schema_mismatches=mismatches)


def _schema_version(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"schema {name!r} version must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"schema {name!r} version must be >= 1, got {value}")
    return value


def _feature_names(features: object) -> tuple[str, ...]:
    # A plain string would be read character by character: refuse it.
    if isinstance(features, (str, bytes)) or not isinstance(features, Iterable):
        raise TypeError("features must be an iterable of feature names, not a string")
    return tuple(str(feature) for feature in features)


def _schema_minimums(schemas: object) -> dict[str, int]:
    if schemas is None:
        return {}
    if not isinstance(schemas, Mapping):
        raise TypeError("schemas must be a mapping of schema name to minimum version")
    return {str(name): _schema_version(str(name), value) for name, value in schemas.items()}


@final
@dataclass(frozen=True, slots=True)
class CoalestraCapabilities:
    """What an installed coalestra supports: version, features, schema versions, defaults."""

    package_version: str
    api_stability: str = COALESTRA_API_STABILITY
    python_requires: str = ">=3.10"
    stability: str = "beta"
    features: tuple[str, ...] = _SHIPPED_FEATURES
    # Mappings are left out of the hash; equality still compares them.
    schemas: Mapping[str, int] = field(
        default_factory=lambda: ReadOnlyDict(_SHIPPED_SCHEMAS), hash=False
    )
    defaults: Mapping[str, Any] = field(
        default_factory=lambda: ReadOnlyDict(_SHIPPED_DEFAULTS), hash=False
    )

    def __post_init__(self) -> None:
        for name in ("package_version", "api_stability", "python_requires", "stability"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name} must be a str")
        features = _feature_names(self.features)
        if any(not feature.strip() for feature in features):
            raise ValueError("features cannot contain a blank name")
        if len(set(features)) != len(features):
            raise ValueError("features must be unique")
        if list(features) != sorted(features):
            raise ValueError("features must be sorted")
        if not isinstance(self.schemas, Mapping) or not isinstance(self.defaults, Mapping):
            raise TypeError("schemas and defaults must be mappings")
        schemas = {str(k): _schema_version(str(k), v) for k, v in self.schemas.items()}
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "schemas", ReadOnlyDict(schemas))
        object.__setattr__(self, "defaults", ReadOnlyDict(self.defaults))

    def supports(self, feature: str) -> bool:
        """True when ``feature`` is one of :attr:`features`."""
        return feature in self.features

    def require(
        self, *, features: Iterable[str] = (), schemas: Mapping[str, int] | None = None
    ) -> CoalestraCapabilities:
        """Return ``self`` when every feature is supported and every schema is at least the
        given version.

        Raises:
            CapabilityRequirementError: something is missing.
            TypeError: ``features`` is a string or not iterable; a schema minimum is not an
                int (bools included). ValueError: a schema minimum is below 1.
        """
        wanted = _feature_names(features)
        minimums = _schema_minimums(schemas)
        missing = [feature for feature in wanted if feature not in self.features]
        mismatches: dict[str, tuple[int, int | None]] = {}
        for name, minimum in minimums.items():
            installed = self.schemas.get(name)
            if installed is None or installed < minimum:
                mismatches[name] = (minimum, installed)
        if missing or mismatches:
            raise CapabilityRequirementError(missing_features=missing, schema_mismatches=mismatches)
        return self

    def to_dict(self) -> dict[str, Any]:
        """The JSON-safe wire form (schema ``"coalestra.capabilities"``, version 1)."""
        return {
            "schema": COALESTRA_CAPABILITIES_SCHEMA,
            "schema_version": COALESTRA_CAPABILITIES_SCHEMA_VERSION,
            "package_version": self.package_version,
            "api_stability": self.api_stability,
            "python_requires": self.python_requires,
            "stability": self.stability,
            "features": list(self.features),
            "schemas": dict(self.schemas),
            "defaults": dict(self.defaults),
        }


def build_capabilities(package_version: str) -> CoalestraCapabilities:
    """The capabilities of this code base reported under ``package_version`` (stripped).

    Raises:
        TypeError: not a string. ValueError: blank.
    """
    if not isinstance(package_version, str):
        raise TypeError(f"package_version must be a str, got {type(package_version).__name__}")
    version = package_version.strip()
    if not version:
        raise ValueError("package_version cannot be blank")
    return CoalestraCapabilities(
        package_version=version,
        api_stability=COALESTRA_API_STABILITY,
        python_requires=PYTHON_REQUIRES,
    )


@cache
def capabilities() -> CoalestraCapabilities:
    """The installed package's capabilities (the same, equal object on every call)."""
    return build_capabilities(__version__)


def require_capabilities(
    *, features: Iterable[str] = (), schemas: Mapping[str, int] | None = None
) -> CoalestraCapabilities:
    """:meth:`CoalestraCapabilities.require` on :func:`capabilities`."""
    return capabilities().require(features=features, schemas=schemas)
