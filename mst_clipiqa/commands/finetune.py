"""``mst-clipiqa finetune``: LoRA reward fine-tuning of a diffusers pipeline against an MST-CLIPIQA model."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..held_out import before_and_after
from ..options import (
    EPILOG_MODELS,
    add_dataclass_options,
    add_model_options,
    check_precision,
    dataclass_values,
    resolve_device,
    split_list,
)
from ..output import check_output_folder, written_files
from ..pipelines import HELP as PIPELINES_HELP
from ..pipelines import TINY, load_pipeline

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


HELP = "LoRA fine-tuning of a diffusers pipeline to maximise the reward (DRaFT-K, AlignProp, ReFL)"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    # its flags come from RewardFinetuneConfig, so this parser (unlike the light commands') imports torch
    from integrations.finetune.config import CHOICES, RewardFinetuneConfig

    parser = subparsers.add_parser(
        "finetune", help=HELP,
        description="Fine-tune a diffusers pipeline's denoiser with LoRA to maximise an MST-CLIPIQA reward, by "
                    "backpropagating through sampling (DRaFT-K, AlignProp or ReFL). Writes OUT/lora "
                    "(pipe.load_lora_weights), OUT/log.json, OUT/held_out.json (the reward before and after on "
                    "held-out prompts and seeds), OUT/reward_curve.png, OUT/samples/*.png with --sample-every, "
                    "OUT/checkpoints with --save-every, and tracker logs with --log-with.",
        epilog=EPILOG_MODELS + "\n" + EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True,
                        help=PIPELINES_HELP + " (a registered family: SD 1.x/2.x, SDXL, LCM, SD3, FLUX.1, PixArt)")
    parser.add_argument("--prompts", required=True, type=Path, help="text file: one training prompt per line")
    parser.add_argument("--out", required=True, type=Path, help="run folder (LoRA, log, samples, checkpoints)")
    parser.add_argument("--eval-prompts", type=Path, help="text file of held-out prompts for the before / after "
                                                           "reward (default: the training prompts)")
    parser.add_argument("--eval-images", type=int, default=8,
                        help="held-out images (prompt, seed from 10000) scored before and after training, the "
                             "same ones both times; 0: skip (default: 8)")
    add_model_options(parser)
    add_dataclass_options(parser.add_argument_group("fine-tuning"), RewardFinetuneConfig, CHOICES)
    parser.set_defaults(func=run)
    return parser


def __getattr__(name: str):
    if name == "NamedScores":  # kept here for old imports; it is library code (and needs torch)
        from integrations.rewards import NamedScores

        return NamedScores
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run(args: argparse.Namespace) -> int:
    from integrations import RewardFinetuner
    from integrations.finetune.config import RewardFinetuneConfig
    from integrations.finetune.prompt_sources import read_prompt_file
    from integrations.rewards import NamedScores
    from reward import MSTCLIPIQAReward, load_model
    from reward.utils import write_json

    if args.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device {args.device}: finetune places the model with accelerate; pick a GPU with "
                         "CUDA_VISIBLE_DEVICES=N (or use auto, cpu, cuda)")
    device = resolve_device(args.device)  # a named device must exist here: never fall back to the CPU unasked
    options = dataclass_values(args, RewardFinetuneConfig)
    options["cpu"] = args.cpu or device.type == "cpu"
    check_precision(options["mixed_precision"], "cpu" if options["cpu"] else device.type)
    check_output_folder(args.out, what="the run")
    if args.eval_images < 0:
        raise ValueError(f"--eval-images must be >= 0, got {args.eval_images}")
    tiny = TINY.get(args.pipeline)
    config = RewardFinetuneConfig(**options, output_dir=str(args.out), encode_kwargs=tiny.encode_kwargs if tiny else {})
    prompts = read_prompt_file(args.prompts)
    eval_prompts = read_prompt_file(args.eval_prompts) if args.eval_prompts else prompts
    model = load_model(args.model, variant=args.variant, outputs=split_list(args.outputs), seed=config.seed,
                       adapters=args.adapter)
    reward = MSTCLIPIQAReward(model)
    pipe, _ = load_pipeline(args.pipeline)
    trainer = RewardFinetuner(pipe, NamedScores(reward) if len(model.outputs) > 1 else reward, prompts, config)
    main = trainer.accelerator.is_main_process
    if args.eval_images and main:
        held_out = before_and_after(trainer.evaluate, trainer.train, eval_prompts, args.eval_images)
        write_json(args.out / "held_out.json", held_out.to_dict())
    else:
        trainer.train()
    if main:
        acc = trainer.accelerator
        print(f"{config.method}: {trainer.global_step} steps on {acc.num_processes} process(es) "
              f"({acc.device.type}, mixed precision {acc.mixed_precision})")
        print(held_out.summary() if args.eval_images else "held-out reward: not measured (--eval-images 0)")
        print("wrote:\n  " + "\n  ".join(written_files(args.out)))
    return 0
