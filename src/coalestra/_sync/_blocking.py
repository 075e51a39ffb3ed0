"""Blocking facade methods made from the async-side methods they run: :class:`blocking` and
:class:`opening`.

A facade declares ``build = blocking(SnapshotBuilder.build, doc)``: the blocking method takes
exactly the async method's parameters (mypy sees them through the ``ParamSpec``;
``inspect.signature`` shows them), so the two can never drift apart. Only the docstring is the
facade's own: it says what the blocking call raises besides the async method's errors.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

from ._core import FacadeCore, run_sync

P = ParamSpec("P")
R = TypeVar("R")
W = TypeVar("W")
Target = TypeVar("Target")
Target_co = TypeVar("Target_co", covariant=True)


class Facade(Protocol[Target_co]):
    """A blocking facade: its loop (``_core``) and the async object its methods run on."""

    @property
    def _core(self) -> FacadeCore: ...

    def _target(self) -> Target_co:
        """The async object, once the facade is known to be open (raises otherwise)."""
        ...


class _FacadeMethod(Generic[Target, P, R]):
    """A facade attribute that is a plain function (named after the attribute, documented by
    the facade) whose parameters are those of the method it runs."""

    __slots__ = ("_function",)

    def __init__(
        self,
        function: Callable[Concatenate[Facade[Target], P], R],
        signature: inspect.Signature,
        doc: str,
    ) -> None:
        function.__doc__ = doc
        function.__signature__ = signature  # type: ignore[attr-defined]
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


class blocking(_FacadeMethod[Target, P, R]):
    """The blocking form of an async method: runs the facade's async object's method of that
    name on the facade's loop and waits for its outcome.

    Args:
        method: the async method, taken from its class (``SnapshotBuilder.build``).
        doc: the blocking method's docstring.
    """

    __slots__ = ()

    def __init__(
        self, method: Callable[Concatenate[Target, P], Coroutine[Any, Any, R]], doc: str
    ) -> None:
        name = method.__name__

        def function(facade: Facade[Target], /, *args: P.args, **kwargs: P.kwargs) -> R:
            # Looked up on the object, as a call written out would: a method reassigned on
            # the instance (allowed on the builder and the publisher) is the one that runs.
            bound: Callable[P, Coroutine[Any, Any, R]] = getattr(facade._target(), name)
            return facade._core.call(bound, *args, **kwargs)

        super().__init__(function, inspect.signature(method), doc)


class opening(_FacadeMethod[Target, P, W]):
    """A facade method that opens something: runs the synchronous ``method`` on the facade's
    loop thread (where the async object's state lives) and returns ``wrap(facade, result)``,
    the facade's blocking wrapper of what it opened.

    Args:
        method: the synchronous method, taken from its class (``SnapshotBuilder.session``).
        wrap: the wrapper's class, called with the facade and the method's result.
        doc: the facade method's docstring.
    """

    __slots__ = ()

    def __init__(
        self,
        method: Callable[Concatenate[Target, P], R],
        wrap: Callable[[Facade[Target], R], W],
        doc: str,
    ) -> None:
        def function(facade: Facade[Target], /, *args: P.args, **kwargs: P.kwargs) -> W:
            start = functools.partial(method, facade._target(), *args, **kwargs)
            return wrap(facade, facade._core.call(run_sync, start))

        signature = inspect.signature(method).replace(return_annotation=wrap.__name__)
        super().__init__(function, signature, doc)
