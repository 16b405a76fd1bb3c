"""How run_0e0797a_checkpoints/ was written: one DRaFT-1 step of release 0e0797a (the last whose configs were flat,
DRaFT+'s penalty named ``kl_coeff``), run from that release's checkout:
``PYTHONPATH=<checkout of 0e0797a> python make_run_0e0797a.py``."""
from mst_clipiqa.integrations import RewardFinetuneConfig, RewardFinetuner
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
from mst_clipiqa.reward import MSTCLIPIQAReward

config = RewardFinetuneConfig(num_inference_steps=2, max_steps=1, batch_size=1, learning_rate=1e-2, kl_coeff=0.1,
                              lora_rank=2, save_every=1, cpu=True, progress_bar=False, output_dir="run")
RewardFinetuner(tiny_sd_pipeline(), MSTCLIPIQAReward.from_pretrained("tiny"), ["a red car", "a cat"], config).train()
