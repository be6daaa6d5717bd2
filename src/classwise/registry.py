"""One small generic registry (datasets, models, attacks, training methods)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from classwise.errors import ClasswiseError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; unknown names raise a :class:`ClasswiseError` listing the choices.

    An entry may carry metadata (``info=``, read back with :meth:`info`): what other layers need to
    know about it without calling it (the attack registry keeps display label and strength tier there).

    >>> reg = Registry[int]("number")
    >>> reg.register("one", 1, help="the first")
    1
    >>> reg.get("one")
    1
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}
        self._info: dict[str, Any] = {}

    def register(self, name: str, obj: T | None = None, *, help: str = "",
                 info: Any = None) -> T | Callable[[T], T]:
        """Register ``obj`` (with metadata ``info``) under ``name``; without ``obj``, return a decorator."""

        def add(o: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = o
            doc = help or (getattr(o, "__doc__", None) or "").strip().splitlines()[:1]
            self._help[name] = doc if isinstance(doc, str) else (doc[0] if doc else "")
            self._info[name] = info
            return o

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ClasswiseError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def help(self, name: str) -> str:
        self.get(name)
        return self._help[name]

    def info(self, name: str) -> Any:
        """The metadata registered with ``name`` (None when none was given)."""
        self.get(name)
        return self._info.get(name)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
