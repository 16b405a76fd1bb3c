"""The first import name of :mod:`mst_clipiqa.integrations`, kept working (the same modules under both names).

``from mst_clipiqa import best_of_n, RewardFinetuner`` is the recommended import: a module of your own
called ``integrations`` would hide this one, never the other.
"""
from mst_clipiqa._aliases import alias

alias(__name__, "mst_clipiqa.integrations")
