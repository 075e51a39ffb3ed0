"""Central resilience configuration: which :class:`SourceResiliencePolicy` a source gets."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeAlias, final

from ..core._validation import check_callable, check_str, frozen_table
from ._policy import SourceResiliencePolicy

ResilienceResolver: TypeAlias = Callable[[str], "SourceResiliencePolicy | None"]
"""A function ``source name -> policy``, or ``None`` to leave the decision to later rules."""

_BUILTIN_DEFAULT = SourceResiliencePolicy()


def _check_policy(name: str, value: object) -> SourceResiliencePolicy:
    if not isinstance(value, SourceResiliencePolicy):
        raise TypeError(f"{name} must be a SourceResiliencePolicy, got {type(value).__name__}")
    return value


def _check_overrides(value: object) -> Mapping[str, SourceResiliencePolicy]:
    return frozen_table("overrides", value, _check_policy)


@final
class ResiliencePolicyResolver:
    """Chooses each source's resilience policy from central rules and the source's own.

    Precedence, first match wins:

    1. ``overrides[source]``: an explicit central entry for this source name;
    2. ``dynamic(source)``, when it returns a policy rather than ``None``;
    3. ``declared``: the policy the source declares itself (``resilience_policy=``);
    4. ``default``;
    5. ``SourceResiliencePolicy()``, the built-in default.

    So central rules aimed at a source beat what the source declares, and the source's own
    policy beats the blanket default.

    Args:
        default: the policy for sources no other rule covers (``None``: the built-in one).
        overrides: policies by source name (copied; later edits to the mapping change nothing).
        dynamic: a function ``source name -> SourceResiliencePolicy | None``.

    Raises:
        TypeError: an argument, an override key or an override policy has the wrong type.
    """

    __slots__ = ("_default", "_dynamic", "_overrides")

    def __init__(
        self,
        default: SourceResiliencePolicy | None = None,
        overrides: Mapping[str, SourceResiliencePolicy] | None = None,
        dynamic: ResilienceResolver | None = None,
    ) -> None:
        self._default = _BUILTIN_DEFAULT if default is None else _check_policy("default", default)
        self._overrides = _check_overrides(overrides)
        self._dynamic: ResilienceResolver | None = (
            None if dynamic is None else check_callable("dynamic", dynamic)
        )

    @property
    def default(self) -> SourceResiliencePolicy:
        """The policy used when no other rule applies (the built-in one if none was given)."""
        return self._default

    def resolve(
        self, source: str, *, declared: SourceResiliencePolicy | None = None
    ) -> SourceResiliencePolicy:
        """Return the policy for ``source`` (see the class docstring for the precedence).

        Args:
            source: the source name.
            declared: the policy the source itself declares, if any.

        Raises:
            TypeError: ``source`` is not a string, ``declared`` is not a policy, or
                ``dynamic`` returned something other than a policy or ``None``.
            ValueError: ``source`` is empty.
        """
        check_str("source", source)
        if declared is not None:
            _check_policy("declared", declared)
        policy = self._overrides.get(source)
        if policy is not None:
            return policy
        if self._dynamic is not None:
            found = self._dynamic(source)
            if found is not None:
                return _check_policy("the value returned by dynamic", found)
        return self._default if declared is None else declared

    def __repr__(self) -> str:
        return (
            f"ResiliencePolicyResolver(default={self._default!r}, "
            f"overrides={dict(self._overrides)!r}, dynamic={self._dynamic!r})"
        )
