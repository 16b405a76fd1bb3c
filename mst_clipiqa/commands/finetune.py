"""``mst-clipiqa finetune``: LoRA reward fine-tuning of a diffusers pipeline against an MST-CLIPIQA model."""
from __future__ import annotations

import argparse
from pathlib import Path

from integrations.finetune.config import CHOICES, RewardFinetuneConfig
from integrations.finetune.prompt_sources import read_prompt_file
from integrations.rewards import NamedScores

from ..options import EPILOG_MODELS, add_dataclass_options, add_model_options, dataclass_values, split_list
from ..pipelines import HELP, TINY, load_pipeline

EXAMPLES = """\
examples:
  # offline try-out: tiny random pipeline and reward, a checkpoint every 5 steps
  mst-clipiqa finetune --pipeline tiny --model tiny --prompts prompts.txt --out runs/try \\
      --num-inference-steps 4 --max-steps 20 --learning-rate 1e-2 --save-every 5
  # SD 1.5 against a trained model: DRaFT-1, bf16, warm-up then cosine decay, EMA, TensorBoard
  mst-clipiqa finetune --pipeline runwayml/stable-diffusion-v1-5 --model runs/agiqa3k/model \\
      --prompts prompts.txt --method draft --out runs/sd15 --mixed-precision bf16 --max-steps 2000 \\
      --lr-scheduler cosine --lr-warmup-steps 100 --use-ema --save-every 200 --log-with tensorboard
  tensorboard --logdir runs/sd15/mst-clipiqa-finetune
  # continue a killed run from its newest complete checkpoint (bit for bit on CPU)
  mst-clipiqa finetune ... --out runs/sd15 --resume
  # several processes, one per GPU; on a machine without a GPU the same lines run on CPU (gloo)
  torchrun --nproc_per_node 2 -m mst_clipiqa finetune ...
  accelerate launch --multi_gpu --num_processes 2 -m mst_clipiqa finetune ...
  (accelerate launch --cpu starts one process only: use --multi_gpu, which falls back to the CPU)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "finetune", help="LoRA fine-tuning of a diffusers pipeline to maximise the reward (DRaFT-K, AlignProp, ReFL)",
        description="Fine-tune a diffusers pipeline's denoiser with LoRA to maximise an MST-CLIPIQA reward, by "
                    "backpropagating through sampling (DRaFT-K, AlignProp or ReFL). Writes OUT/lora "
                    "(pipe.load_lora_weights), OUT/log.json, OUT/reward_curve.png, OUT/samples/*.png with "
                    "--sample-every, OUT/checkpoints with --save-every, and tracker logs with --log-with.",
        epilog=EPILOG_MODELS + "\n" + EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True,
                        help=HELP + " (a registered family: SD 1.x/2.x, SDXL, LCM, SD3, FLUX.1, PixArt)")
    parser.add_argument("--prompts", required=True, type=Path, help="text file: one training prompt per line")
    parser.add_argument("--out", required=True, type=Path, help="run folder (LoRA, log, samples, checkpoints)")
    add_model_options(parser)
    add_dataclass_options(parser.add_argument_group("fine-tuning"), RewardFinetuneConfig, CHOICES)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from integrations import RewardFinetuner
    from reward import MSTCLIPIQAReward, load_model

    if args.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device {args.device}: finetune places the model with accelerate; pick a GPU with "
                         "CUDA_VISIBLE_DEVICES=N (or use auto, cpu, cuda)")
    options = dataclass_values(args, RewardFinetuneConfig)
    options["cpu"] = args.cpu or args.device == "cpu"
    tiny = TINY.get(args.pipeline)
    config = RewardFinetuneConfig(**options, output_dir=str(args.out), encode_kwargs=tiny.encode_kwargs if tiny else {})
    prompts = read_prompt_file(args.prompts)
    model = load_model(args.model, variant=args.variant, outputs=split_list(args.outputs), seed=config.seed,
                       adapters=args.adapter)
    reward = MSTCLIPIQAReward(model)
    pipe, _ = load_pipeline(args.pipeline)
    trainer = RewardFinetuner(pipe, NamedScores(reward) if len(model.outputs) > 1 else reward, prompts, config)
    log = trainer.train()
    if trainer.accelerator.is_main_process:
        rewards = log.rewards()
        change = f"reward {rewards[0]:.4f} -> {rewards[-1]:.4f} (first -> last step)" if rewards else "no steps"
        print(f"{config.method}: {trainer.global_step} steps on {trainer.accelerator.num_processes} process(es), "
              f"{change}\nrun folder: {args.out}")
    return 0
