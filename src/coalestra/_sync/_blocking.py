"""Blocking facade methods made from the async methods they run: :class:`blocking`.

A facade declares ``build = blocking(SnapshotBuilder.build, doc)``: the blocking method takes
exactly the async method's parameters (mypy sees them through the ``ParamSpec``;
``inspect.signature`` shows them), so the two can never drift apart. Only the docstring is the
facade's own: it says what the blocking call raises besides the async method's errors.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from ._core import FacadeCore

P = ParamSpec("P")
R = TypeVar("R")
Target = TypeVar("Target")
Target_co = TypeVar("Target_co", covariant=True)


class Facade(Protocol[Target_co]):
    """A blocking facade: its loop (``_core``) and the async object its methods run on."""

    @property
    def _core(self) -> FacadeCore: ...

    def _target(self) -> Target_co:
        """The async object, once the facade is known to be open (raises otherwise)."""
        ...


class blocking(Generic[Target, P, R]):
    """The blocking method of a facade attribute: runs ``method`` on the facade's loop, with
    the facade's async object as ``self``, and waits for its outcome.

    Args:
        method: the async method, taken from its class (``SnapshotBuilder.build``).
        doc: the blocking method's docstring.
    """

    __slots__ = ("_function",)

    def __init__(
        self, method: Callable[Concatenate[Target, P], Coroutine[Any, Any, R]], doc: str
    ) -> None:
        def function(facade: Facade[Target], /, *args: P.args, **kwargs: P.kwargs) -> R:
            return facade._core.call(method, facade._target(), *args, **kwargs)

        function.__doc__ = doc
        function.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
        self._function = function

    def __set_name__(self, owner: type, name: str) -> None:
        function = self._function
        function.__name__ = name
        function.__qualname__ = f"{owner.__qualname__}.{name}"
        function.__module__ = owner.__module__

    @overload
    def __get__(
        self, instance: None, owner: type
    ) -> Callable[Concatenate[Facade[Target], P], R]: ...
    @overload
    def __get__(self, instance: Facade[Target], owner: type) -> Callable[P, R]: ...

    def __get__(
        self, instance: Facade[Target] | None, owner: type
    ) -> Callable[Concatenate[Facade[Target], P], R] | Callable[P, R]:
        if instance is None:
            return self._function
        bound: Callable[P, R] = self._function.__get__(instance, owner)
        return bound
