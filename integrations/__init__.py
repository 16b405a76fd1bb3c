"""The first import name of :mod:`mst_clipiqa.integrations`, kept working (the same modules under both names).

``from mst_clipiqa import best_of_n, RewardFinetuner`` is the recommended import: a module of your own
called ``integrations`` would hide this one, never the other.
"""
from mst_clipiqa._aliases import alias

# the flat modules of the first layout, moved into pipelines/, inference/ and finetune/ (and the run plumbing
# into mst_clipiqa.runtime): importing one names its new path
MOVED = {"checkpointing": "runtime.checkpoints", "finetune_config": "finetune.config", "ema": "runtime.ema",
         "launch": "finetune.launch", "training_log": "finetune.tracking", "methods": "finetune.finetuner",
         "prompt_sources": "finetune.prompt_sources", "finetune_state": "runtime.checkpoints",
         "tracking": "finetune.tracking", "best_of_n": "inference.best_of_n", "grid": "inference.grid",
         "guidance": "inference.guidance", "noise_optimization": "inference.noise_optimization",
         "decode": "pipelines.decode", "lora": "pipelines.lora", "prompts": "pipelines.prompts",
         "sampling": "pipelines.sampling", "schedulers": "pipelines.schedulers", "reward_functions": "rewards"}

alias(__name__, "mst_clipiqa.integrations", MOVED)
