"""Old import names kept working: ``reward`` and ``integrations`` are :mod:`mst_clipiqa.reward` and
:mod:`mst_clipiqa.integrations`, module for module (the same objects, so classes and monkeypatches agree)."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``old.x.y`` as the module ``new.x.y`` already is (or becomes)."""

    def __init__(self, old: str, new: str):
        self.old, self.new = old, new
        self._specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def _target(self, name: str) -> str | None:
        return self.new + name[len(self.old):] if name.startswith(self.old + ".") else None

    def find_spec(self, name: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        real = self._target(name)
        if real is None or importlib.util.find_spec(real) is None:
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self._target(spec.name))
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the alias's spec on the real module in between: give it back its own
        module.__spec__ = self._specs.pop(module.__name__)


def alias(old: str, new: str) -> None:
    """Make ``old`` (the package being imported) and every ``old.sub`` the modules of ``new``."""
    if not any(isinstance(f, _AliasFinder) and f.old == old for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder(old, new))
    sys.modules[old] = importlib.import_module(new)
