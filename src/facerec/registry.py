"""Named implementations of one kind (face detectors, face embedders), found by name: the
detector a crop spec records, the backbone a checkpoint names."""

from __future__ import annotations

from collections.abc import Callable

from facerec.errors import FacerecError


class Registry:
    """``@REGISTRY.register("name")`` on a class; ``REGISTRY.get("name")`` returns it, or raises
    a one-line :class:`FacerecError` listing the names there are."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type] = {}

    def register(self, name: str) -> Callable[[type], type]:
        def deco(cls: type) -> type:
            self._classes[name] = cls
            return cls

        return deco

    def names(self) -> list[str]:
        return sorted(self._classes)

    def get(self, name: str) -> type:
        if name not in self._classes:
            raise FacerecError(f"unknown {self.kind} {name!r} (available: {', '.join(self.names())})")
        return self._classes[name]
