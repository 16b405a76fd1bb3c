"""Packages whose names load at first use, so that importing one (``mst-clipiqa --help``, a config module the
command line reads its flags from) costs no torch.

A package lists its exports once, as ``from .sub import name`` lines under ``if TYPE_CHECKING:`` (what type
checkers, IDEs and the API docs read), and calls :func:`load_lazily` (which reads those same lines)."""
from __future__ import annotations

import ast
import importlib
import sys
from types import ModuleType
from typing import Any


class LazyPackage(ModuleType):
    """A package module that imports ``name`` from its submodule when ``name`` is first read."""

    _lazy_names: dict[str, tuple[str, str]]

    def __getattr__(self, name: str) -> Any:
        where = self.__dict__.get("_lazy_names", {}).get(name)
        if where is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        module, attribute = where
        value = getattr(importlib.import_module(module, self.__name__), attribute)
        self.__dict__[name] = value
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        # the import system binds each submodule on its package; an export named like its submodule keeps the
        # export (as it did when the package imported it eagerly)
        if isinstance(value, ModuleType) and name in self.__dict__.get("_lazy_names", {}):
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted({*self.__dict__, *self.__dict__.get("_lazy_names", {})})


def type_checking_imports(path: str) -> dict[str, tuple[str, str]]:
    """``{name: (relative module, attribute)}`` of the ``from .x import y`` lines under ``if TYPE_CHECKING:``."""
    with open(path, encoding="utf-8") as file:
        tree = ast.parse(file.read(), path)
    names = {}
    for block in tree.body:
        if isinstance(block, ast.If) and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING":
            for line in block.body:
                if isinstance(line, ast.ImportFrom) and line.level:
                    module = "." * line.level + (line.module or "")
                    names.update({alias.asname or alias.name: (module, alias.name) for alias in line.names})
    return names


def load_lazily(package: str) -> None:
    """Make the package ``package`` (its ``__init__`` calls this with ``__name__``) load each of the names its
    ``if TYPE_CHECKING:`` block imports when the name is first read, not when the package is imported."""
    module = sys.modules[package]
    names = type_checking_imports(module.__file__)
    missing = sorted(set(getattr(module, "__all__", ())) - names.keys() - module.__dict__.keys())
    if missing:
        raise ImportError(f"{package}.__all__ names {missing}, which its TYPE_CHECKING block does not import")
    module.__class__ = LazyPackage
    module._lazy_names = names
