"""Named implementations of one kind (face detectors, face embedders), found by name: the
detector a crop spec records, the backbone a checkpoint names.

An entry is a class registered with ``@REGISTRY.register("name")``, or a ``"module:Class"`` path
registered with :meth:`Registry.register_lazy`: the module is imported only when the name is
first asked for, so listing the names, or building one model, never imports the others (a
predict that uses YuNet and SFace does not import dlib or MTCNN).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from facerec.errors import FacerecError


class Registry:
    """``@REGISTRY.register("name")`` on a class, or ``REGISTRY.register_lazy("name",
    "package.module:Class")``; ``REGISTRY.get("name")`` returns the class, or raises a one-line
    :class:`FacerecError` listing the names there are."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._classes: dict[str, type] = {}
        self._lazy: dict[str, str] = {}

    def register(self, name: str) -> Callable[[type], type]:
        def deco(cls: type) -> type:
            self._classes[name] = cls
            return cls

        return deco

    def register_lazy(self, name: str, target: str) -> None:
        """NAME is the class at ``"module:Class"``, imported when NAME is first used."""
        self._lazy[name] = target

    def names(self) -> list[str]:
        return sorted({*self._classes, *self._lazy})

    def __contains__(self, name: object) -> bool:
        return name in self._classes or name in self._lazy

    def get(self, name: str) -> type:
        if name not in self._classes and name in self._lazy:
            module, _, attr = self._lazy[name].partition(":")
            # importing the module registers the class (its decorator); fall back to the attribute
            cls = getattr(importlib.import_module(module), attr)
            self._classes.setdefault(name, cls)
        if name not in self._classes:
            raise FacerecError(f"unknown {self.kind} {name!r} (available: {', '.join(self.names())})")
        return self._classes[name]
