"""One process of ``torchrun --nproc_per_node 2``: the same DRaFT and GRPO runs on a tiny SD pipeline data
parallel, then with the denoiser sharded (accelerate's FSDP2, as ``accelerate launch --config_file`` with
``distributed_type: FSDP`` and ``fsdp_version: 2`` asks through its environment), then the sharded DRaFT run
resumed from its step-2 checkpoint.

    python sharded_worker.py OUT

The main process writes ``OUT/result.json``: each run's LoRA (whole, as lists), its log's environment, and
what the sharded denoiser held on each process; the runs' folders are under ``OUT``.
"""
import json
import os
import shutil
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

from mst_clipiqa.integrations import (  # noqa: E402
    PolicyFinetuneConfig,
    PolicyTrainer,
    RewardFinetuneConfig,
    RewardFinetuner,
    RunConfig,
)
from mst_clipiqa.integrations.pipelines.lora import named_lora_parameters  # noqa: E402
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline  # noqa: E402
from mst_clipiqa.runtime.sharding import whole_tensors  # noqa: E402

PROMPTS = ["a red car", "a cat on a sofa", "a lighthouse at dusk", "a bowl of fruit"]


def brightness(images: torch.Tensor) -> torch.Tensor:
    """A differentiable reward of the images alone."""
    return images.mean(dim=(1, 2, 3))


def lora(trainer) -> dict[str, list]:
    return {k: v.tolist() for k, v in whole_tensors(named_lora_parameters(trainer.unwrapped)).items()}


def shards(trainer) -> dict[str, int]:
    """How many of the denoiser's weights this process holds, how many the denoiser has, and its units."""
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in trainer.unwrapped.parameters())
    whole = sum(p.numel() for p in trainer.unwrapped.parameters())
    units = sum(type(m).__name__.startswith("FSDP") for m in trainer.unwrapped.modules())
    return {"local": local, "whole": whole, "units": units}


def draft(out: Path, steps: int = 3, resume: bool = False) -> RewardFinetuner:
    run = RunConfig(max_steps=steps, learning_rate=1e-2, batch_size=1, save_every=2, use_ema=True, ema_decay=0.9,
                    seed=3, output_dir=str(out), resume=resume, progress_bar=False, sample_every=3,
                    sample_prompts=("a cat",), sample_seeds=(0,))
    trainer = RewardFinetuner(tiny_sd_pipeline(), brightness, PROMPTS,
                              RewardFinetuneConfig(method="draft", num_inference_steps=2, run=run))
    trainer.train()
    return trainer


def grpo(out: Path) -> PolicyTrainer:
    """One step: a second Adam step would amplify the float rounding of near-zero gradients (see the test)."""
    run = RunConfig(max_steps=1, learning_rate=1e-2, seed=3, output_dir=str(out), progress_bar=False)
    config = PolicyFinetuneConfig(method="grpo", num_inference_steps=2, group_size=2, prompts_per_step=2, run=run)
    trainer = PolicyTrainer(tiny_sd_pipeline(), brightness, PROMPTS, config)
    trainer.train()
    return trainer


def trainer_rank() -> int:
    return int(os.environ["RANK"])


def record(trainer, out: Path) -> dict:
    main = trainer.accelerator.is_main_process
    environment = json.loads((out / "log.json").read_text())["environment"] if main else {}
    return {"lora": lora(trainer), "environment": environment, "shards": shards(trainer)}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    results = {"ddp": record(draft(out / "ddp"), out / "ddp"), "grpo_ddp": record(grpo(out / "grpo_ddp"),
                                                                                 out / "grpo_ddp")}
    # what accelerate launch sets from a config with distributed_type: FSDP, fsdp_version: 2 and
    # fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP (each of the denoiser's _no_split_modules its own unit)
    os.environ.update(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2", FSDP_AUTO_WRAP_POLICY="TRANSFORMER_BASED_WRAP")
    results["fsdp"] = record(draft(out / "fsdp"), out / "fsdp")
    results["grpo_fsdp"] = record(grpo(out / "grpo_fsdp"), out / "grpo_fsdp")
    resumed = out / "resumed"  # the sharded run's folder as it was after step 2
    if trainer_rank() == 0:
        shutil.copytree(out / "fsdp" / "checkpoints", resumed / "checkpoints",
                        ignore=shutil.ignore_patterns("step_00000003"))
    torch.distributed.barrier()
    results["resumed"] = record(draft(resumed, resume=True), resumed)
    if trainer_rank() == 0:
        (out / "result.json").write_text(json.dumps(results))
