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
    """Imports ``old.x.y`` as the module ``new.x.y`` already is (or becomes); ``moved`` maps old submodule
    paths (``lora``) to where they went (``pipelines.lora``): importing one of those is an ImportError that
    names the new path (one name per module, no alias of an alias)."""

    def __init__(self, old: str, new: str, moved: dict[str, str] | None = None):
        self.old, self.new, self.moved = old, new, dict(moved or {})
        self._specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def _target(self, name: str) -> str | None:
        if not name.startswith(self.old + "."):
            return None
        rest = name[len(self.old) + 1:]
        head, dot, tail = rest.partition(".")
        if head in self.moved:
            raise ModuleNotFoundError(f"{self.old}.{head} moved: import {self.new}.{self.moved[head]} (or the names "
                                      f"from mst_clipiqa)", name=name)
        return f"{self.new}.{rest}"

    def _real_spec(self, name: str) -> importlib.machinery.ModuleSpec | None:
        real = self._target(name)
        return None if real is None else importlib.util.find_spec(real)

    def find_spec(self, name: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        real = self._real_spec(name)
        if real is None:
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=real.submodule_search_locations is not None)

    def get_code(self, name: str):  # runpy.run_module runs the real module's code under the old name
        real = self._real_spec(name)
        return real.loader.get_code(real.name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self._target(spec.name))
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system stamped the alias's spec on the real module in between: give it back its own
        module.__spec__ = self._specs.pop(module.__name__)


def alias(old: str, new: str, moved: dict[str, str] | None = None) -> None:
    """Make ``old`` (the package being imported) and every ``old.sub`` the modules of ``new`` (``moved``: old
    submodule names and where they are now)."""
    if not any(isinstance(f, _AliasFinder) and f.old == old for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder(old, new, moved))
    sys.modules[old] = importlib.import_module(new)
