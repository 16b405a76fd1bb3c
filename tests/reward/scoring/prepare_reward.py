"""Run by tests/reward/scoring/test_prepared_reward.py under torchrun: accelerator.prepare(reward) on each process
prints the error it raises."""
from accelerate import Accelerator

from mst_clipiqa import MSTCLIPIQAReward

accelerator = Accelerator(cpu=True)
reward = MSTCLIPIQAReward.from_pretrained("tiny")
try:
    accelerator.prepare(reward)
    print(f"rank {accelerator.process_index}: prepared")
except Exception as error:  # noqa: BLE001 - whatever it is, the test reads it
    print(f"rank {accelerator.process_index}: {type(error).__name__}: {error}")
