"""Named registries for the extension points: trainers and losses (training stage).

A registry maps a name (what ``plans.json`` and the command line say) to a class or factory.
Built-ins register when their module is imported; a registry imports the modules of its
packages (``autoseg.training.trainers`` ...) the first time a name is looked up, so a
researcher's new file in such a package is found without editing anything else. Nothing here
imports the rest of autoseg, so every stage may use it.
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from autoseg.errors import AutosegError

T = TypeVar("T")


def import_package_modules(package: str) -> list[str]:
    """Import every module of ``package`` (not sub-packages' children); returns their names."""
    pkg = importlib.import_module(package)
    names = []
    for info in pkgutil.iter_modules(getattr(pkg, "__path__", [])):
        name = f"{package}.{info.name}"
        importlib.import_module(name)
        names.append(name)
    return names


class Registry(Generic[T]):
    """Name -> object for one kind of extension (``kind`` names it in errors).

    ``packages`` are imported (all their modules) on the first lookup, so that registrations
    made at import time are there; ``where`` tells a user which plan field or option chose
    the name, for the error of an unknown one."""

    def __init__(self, kind: str, packages: Sequence[str] = (), where: str = ""):
        self.kind = kind
        self.packages = tuple(packages)
        self.where = where
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@registry.register("name")`` on a class or factory."""
        if not name or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise ValueError(f"{self.kind} name {name!r}: use letters, digits, '_', '-' or '.'")

        def add(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            for package in self.packages:
                import_package_modules(package)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def get(self, name: str) -> T:
        """The object registered as ``name``; an AutosegError naming the known ones if none."""
        self._load()
        if name not in self._items:
            where = f" ({self.where})" if self.where else ""
            raise AutosegError(
                f"unknown {self.kind} {name!r}{where}",
                fix=f"use one of: {', '.join(sorted(self._items))} — or register yours "
                "(documentation/extending.md)",
            )
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    @contextlib.contextmanager
    def temporary(self, name: str, obj: T) -> Iterator[T]:
        """Register ``obj`` as ``name`` for the ``with`` block only (tests, examples)."""
        self._load()
        before = self._items.get(name)
        self._items[name] = obj
        try:
            yield obj
        finally:
            if before is None:
                self._items.pop(name, None)
            else:
                self._items[name] = before
