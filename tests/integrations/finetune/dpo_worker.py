"""One process of a 2-process Diffusion-DPO run under torchrun: ``python dpo_worker.py PAIRS OUT``.

Writes ``OUT/rank<r>.json``: the rows of the pairs this process owns, its step records and a digest of its LoRA
weights after training."""
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

from mst_clipiqa.integrations import DPOConfig, DPOTrainer, RunConfig  # noqa: E402
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline  # noqa: E402

pairs, out = Path(sys.argv[1]), Path(sys.argv[2])
config = DPOConfig(num_inference_steps=2,
                   run=RunConfig(max_steps=3, batch_size=2, learning_rate=1e-2, progress_bar=False, cpu=True,
                                 output_dir=str(out / "run")))
trainer = DPOTrainer(tiny_sd_pipeline(), pairs, config)
trainer.train()
digest = hashlib.sha256()
for name, param in sorted(trainer.trained_parameters().items()):
    digest.update(name.encode() + param.detach().cpu().numpy().tobytes())
rank = int(os.environ["RANK"])
record = {"world": trainer.num_processes, "shard": trainer.shard, "history": trainer.log.history,
          "lora": digest.hexdigest(), "moved": any(float(p.abs().sum()) > 0 for n, p in
                                                   trainer.trained_parameters().items() if "lora_B" in n)}
(out / f"rank{rank}.json").write_text(json.dumps(record))
