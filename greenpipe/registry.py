"""Name -> implementation registries: the extension points of greenpipe.

A new quantization variant, compile target, runtime or power meter is one
module that decorates its entry with ``@REGISTRY.register("name")``; the
package's ``__init__`` imports its modules so registration happens on import.
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from greenpipe.errors import GreenpipeError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return decorate

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise GreenpipeError(f"unknown {self.kind} {name!r}; registered: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
