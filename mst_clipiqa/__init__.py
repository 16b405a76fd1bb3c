"""MST-CLIPIQA: ``from mst_clipiqa import MSTCLIPIQAReward, best_of_n, RewardFinetuner``.

Two libraries and an application under one name that no module of yours can hide:

* :mod:`mst_clipiqa.reward`: the scorer (model, differentiable reward, training and evaluation);
* :mod:`mst_clipiqa.integrations`: diffusers pipelines (best-of-N, guidance, fine-tuning trainers);
* :mod:`mst_clipiqa.cli`: the ``mst-clipiqa`` command line and the demo, which the libraries never import.

Every public name of the two libraries is re-exported here, as the same object. The names load lazily
(a module ``__getattr__``), so ``import mst_clipiqa`` and ``mst-clipiqa --help`` import neither torch nor
diffusers until a name is used. The first import names, ``reward`` and ``integrations``, keep working.
"""
from __future__ import annotations

import importlib
from typing import Any

from .notices import drop_import_notices

drop_import_notices()

SOURCES = ("mst_clipiqa.reward", "mst_clipiqa.integrations")  # searched in this order


def __getattr__(name: str) -> Any:
    if name == "__all__":
        return sorted({n for source in SOURCES for n in importlib.import_module(source).__all__})
    if not name.startswith("_"):
        for source in SOURCES:
            module = importlib.import_module(source)
            if name in module.__all__:
                value = globals()[name] = getattr(module, name)
                return value
    raise AttributeError(f"module 'mst_clipiqa' has no attribute {name!r}; its names are those of "
                         "mst_clipiqa.reward and mst_clipiqa.integrations (see mst_clipiqa.__all__)")


def __dir__() -> list[str]:
    return sorted({*globals(), *__getattr__("__all__")})
