"""The first import name of :mod:`mst_clipiqa.reward`, kept working (the same modules under both names).

``from mst_clipiqa import MSTCLIPIQAReward`` is the recommended import: a module of your own called
``reward`` would hide this one, never the other.
"""
from mst_clipiqa._aliases import alias

alias(__name__, "mst_clipiqa.reward")
