"""MST-CLIPIQA under one collision-free name: ``from mst_clipiqa import MSTCLIPIQAReward, best_of_n, RewardFinetuner``.

Every public name of ``reward`` (the scorer) and ``integrations`` (diffusion models) is re-exported here,
as the same object; ``reward`` and ``integrations`` keep working, but those generic top-level names can
collide with a user's own ``reward.py``. The names load lazily (a module ``__getattr__``), so
``import mst_clipiqa`` and ``mst-clipiqa --help`` import neither torch nor diffusers until a name is used.

This is also the outermost layer, the ``mst-clipiqa`` application (the command line and the demo). It may
import ``reward`` and ``integrations``; neither imports it, so the libraries stay free of argument parsing.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

SOURCES = ("reward", "integrations")  # searched in this order; integrations imports reward anyway
HOME = Path(__file__).resolve().parent.parent  # where the library's reward and integrations live


def _source(name: str) -> ModuleType:
    """The library's package ``name``; another module of that name earlier on the path is named, not used."""
    loaded = sys.modules.get(name)
    spec = None if loaded is not None else importlib.util.find_spec(name)
    origin = getattr(loaded, "__file__", None) if loaded is not None else spec and spec.origin
    if origin is None or Path(origin).resolve() != HOME / name / "__init__.py":
        raise ImportError(f"the name {name!r} is taken by {origin or 'another module'}, not MST-CLIPIQA's package "
                          f"({HOME / name}): a module of your own shadows it. Rename your {name}.py, or run from "
                          "a folder that does not hold it")
    return importlib.import_module(name)


def __getattr__(name: str) -> Any:
    if name == "__all__":
        return sorted({n for source in SOURCES for n in _source(source).__all__})
    if not name.startswith("_"):
        for source in SOURCES:
            module = _source(source)
            if name in module.__all__:
                value = globals()[name] = getattr(module, name)
                return value
    raise AttributeError(f"module 'mst_clipiqa' has no attribute {name!r}; its names are those of reward and "
                         "integrations (see mst_clipiqa.__all__)")


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})
