"""Run by ``test_train_torchrun.py`` under torchrun: ``mst-clipiqa train`` with probes.

Usage: ``torchrun ... torchrun_train.py PROBE_DIR train ARGS...``. Each process writes
``PROBE_DIR/rank<R>.json`` with a digest of its trainable weights after every optimiser
step, the samples it trained on in each epoch, and the exit status of a second, plain
start in the same folder once the run is done. The non-main process is held back
for a few seconds after setting up, so the main process has claimed the run folder
(written ``run.json``) before the other one gets there: the order in which a check
of the folder on every process used to fail. With ``SIGTERM_RANK=R`` in the environment,
process R receives SIGTERM while its second epoch starts (and no second start is tried).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from mst_clipiqa.cli import main
from mst_clipiqa.reward.model import trainable_state_dict
from mst_clipiqa.reward.training import trainer as trainer_module
from mst_clipiqa.reward.training.feature_cache import state_digest

RANK = int(os.environ["RANK"])
SIGTERM_RANK = int(os.environ.get("SIGTERM_RANK", "-1"))
PROBES: dict[str, list] = {"steps": [], "epochs": []}

batches_of = trainer_module.epoch_batches
make_optimizer = trainer_module.Trainer._make_optimizer
prepare = trainer_module.Trainer.prepare


def recorded_batches(indices, batch_size, seed, split_index, epoch, rank=0, world=1):
    if RANK == SIGTERM_RANK and (split_index, epoch) == (0, 1):
        os.kill(os.getpid(), signal.SIGTERM)
    batches = batches_of(indices, batch_size, seed, split_index, epoch, rank, world)
    PROBES["epochs"].append({"split": split_index, "epoch": epoch, "world": world, "samples": sum(batches, [])})
    return batches


def probed_optimizer(self):
    optimizer = make_optimizer(self)
    optimizer.optimizer.register_step_post_hook(
        lambda *_: PROBES["steps"].append(state_digest(trainable_state_dict(self.model))))
    return optimizer


def late_prepare(self):
    first = self.accelerator is None and not PROBES["steps"]
    prepare(self)
    if first and RANK != 0:
        time.sleep(2)


trainer_module.epoch_batches = recorded_batches
trainer_module.Trainer._make_optimizer = probed_optimizer
trainer_module.Trainer.prepare = late_prepare

status = main(sys.argv[2:])
if SIGTERM_RANK < 0:
    PROBES["second_start"] = main(sys.argv[2:])  # a plain second start in the finished run's folder
(Path(sys.argv[1]) / f"rank{RANK}.json").write_text(json.dumps(PROBES))
sys.exit(status)
