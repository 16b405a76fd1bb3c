"""Run by tests/reward/scoring/test_prepared_reward.py under torchrun: accelerator.prepare(reward) on each process
writes the error it raises to rank<N>.txt in the working folder (one file per process: two processes printing to
one pipe can interleave their lines)."""
from pathlib import Path

from accelerate import Accelerator

from mst_clipiqa import MSTCLIPIQAReward

accelerator = Accelerator(cpu=True)
reward = MSTCLIPIQAReward.from_pretrained("tiny")
try:
    accelerator.prepare(reward)
    outcome = "prepared"
except Exception as error:  # noqa: BLE001 - whatever it is, the test reads it
    outcome = f"{type(error).__name__}: {error}"
Path(f"rank{accelerator.process_index}.txt").write_text(outcome)
