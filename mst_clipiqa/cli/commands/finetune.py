"""``mst-clipiqa finetune``: LoRA reward fine-tuning of a diffusers pipeline against an MST-CLIPIQA model."""
from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

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
from ..output import check_output_folder, print_written, written_files
from ..pipeline_loading import DTYPES, TINY, add_pipeline_options, load_pipeline, options_from_args, resolve_dtype
from ..pipeline_loading import HELP as PIPELINES_HELP
from .plan import add_plan_options, print_plan

EXAMPLES = """\
examples:
  # offline try-out: tiny random pipeline and reward, a checkpoint every 5 steps
  mst-clipiqa finetune --pipeline tiny --model tiny --prompts prompts.txt --out runs/try \\
      --num-inference-steps 4 --max-steps 20 --learning-rate 1e-2 --save-every 5
  # SD 1.5 against a trained model: DRaFT-1, bf16, warm-up then cosine decay, EMA, TensorBoard
  mst-clipiqa finetune --pipeline sd1.5 --model runs/agiqa3k/model \\
      --prompts prompts.txt --method draft --out runs/sd15 --mixed-precision bf16 --max-steps 2000 \\
      --lr-scheduler cosine --lr-warmup-steps 100 --use-ema --save-every 200 --log-with tensorboard
  tensorboard --logdir runs/sd15/mst-clipiqa-finetune
  # Diffusion-DPO on preference pairs labelled by the reward (mst-clipiqa pairs), watched by a second model
  # that stops the run when it stops improving while the reward still rises
  mst-clipiqa pairs --pipeline tiny --model tiny --prompts prompts.txt --out pairs --n 8
  mst-clipiqa finetune --method dpo --pairs pairs --pipeline tiny --model tiny --prompts prompts.txt \\
      --out runs/dpo --num-inference-steps 4 --max-steps 50 --learning-rate 1e-3 \\
      --monitor runs/other/model --monitor-every 5 --patience 3
  # continue a killed run from its newest complete checkpoint (bit for bit on CPU)
  mst-clipiqa finetune ... --out runs/sd15 --resume
  # several processes, one per GPU; on a machine without a GPU the same lines run on CPU (gloo)
  torchrun --nproc_per_node 2 -m mst_clipiqa finetune ...
  accelerate launch --multi_gpu --num_processes 2 -m mst_clipiqa finetune ...
  (accelerate launch --cpu starts one process only: use --multi_gpu, which falls back to the CPU)
  # online RL (no reward gradient needed): Flow-GRPO on SD3 with groups of 8, SDE on the first 2 of 10 steps
  mst-clipiqa finetune --pipeline stabilityai/stable-diffusion-3.5-medium --model runs/agiqa3k/model \\
      --prompts prompts.txt --method grpo --group-size 8 --prompts-per-step 4 --num-inference-steps 10 \\
      --sde-window 0 2 --clip-range 1e-4 --kl-coeff 0.04 --learning-rate 3e-4 --out runs/grpo
"""


HELP = ("LoRA fine-tuning of a diffusers pipeline to maximise the reward (DRaFT-K, AlignProp, ReFL; DDPO, GRPO, "
        "NFT; Diffusion-DPO)")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    # its flags come from the trainers' configs, modules without torch
    from mst_clipiqa.integrations.finetune.config import CHOICES, RunConfig
    from mst_clipiqa.integrations.finetune.method_configs import CONFIGS

    parser = subparsers.add_parser(
        "finetune", help=HELP,
        description="Fine-tune a diffusers pipeline's denoiser with LoRA to maximise an MST-CLIPIQA reward, by "
                    "backpropagating through sampling (DRaFT-K, AlignProp or ReFL), by online RL that needs no "
                    "reward gradient (DDPO, GRPO or DiffusionNFT: --method ddpo, grpo, nft), or by Diffusion-DPO on "
                    "preference pairs (--method dpo --pairs DIR, written by 'mst-clipiqa pairs'). Writes OUT/lora "
                    "(pipe.load_lora_weights), OUT/log.json, OUT/held_out.json (the reward before and after on "
                    "held-out prompts and seeds), OUT/reward_curve.png, OUT/samples/*.png with --sample-every, "
                    "OUT/checkpoints with --save-every, OUT/monitor.json and OUT/monitor.png with --monitor, "
                    "and tracker logs with --log-with.",
        epilog=EPILOG_MODELS + "\n" + EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True,
                        help=PIPELINES_HELP + " (a registered family: SD 1.x/2.x, SDXL, LCM, SD3, FLUX.1, PixArt)")
    parser.add_argument("--prompts", type=Path, help="text file: one training prompt per line (required except for "
                                                     "--method dpo, where it gives the held-out prompts)")
    parser.add_argument("--pairs", type=Path, help="--method dpo: the preference pairs (a folder written by "
                                                   "'mst-clipiqa pairs', or any Diffusion-DPO parquet folder)")
    parser.add_argument("--out", required=True, type=Path, help="run folder (LoRA, log, samples, checkpoints)")
    parser.add_argument("--eval-prompts", type=Path, help="text file of held-out prompts for the before / after "
                                                           "reward (default: the training prompts)")
    parser.add_argument("--eval-images", type=int, default=8,
                        help="held-out images (prompt, seed from 10000) scored before and after training, the "
                             "same ones both times; 0: skip (default: 8)")
    add_model_options(parser)
    parser.add_argument("--reward-dtype", choices=DTYPES, default="fp32",
                        help="precision of the reward's frozen matmul weights (MSTCLIPIQAReward's dtype; default: "
                             "fp32); --compile compiles it too")
    add_pipeline_options(parser)
    parser.add_argument("--dry-run", action="store_true", help="print the plan of this run's step (peak memory "
                                                               "per process, FLOPs; see 'mst-clipiqa plan') and exit")
    add_plan_options(parser)
    monitor = parser.add_argument_group("hacking monitor")
    monitor.add_argument("--monitor", metavar="MODEL",
                         help="a second MST-CLIPIQA model (name or folder; a built-in name gets other random weights "
                              "than --model) that the run does not optimise, scored with the sample diversity on "
                              "held-out prompts and seeds every --monitor-every steps")
    parser.add_argument("--method", choices=sorted(CONFIGS), default="draft",
                        help="the training method: draft, alignprop, refl (reward backpropagation), ddpo, grpo, nft "
                             "(online RL), dpo (Diffusion-DPO on --pairs) (default: draft)")
    add_dataclass_options(parser.add_argument_group("run (every method)"), RunConfig, CHOICES)
    _add_method_options(parser, CONFIGS, {**CHOICES, "sigma_schedule": ("flow_grpo", "constant")})
    parser.set_defaults(func=run)
    return parser


def _method_configs(configs: Mapping[str, type]) -> dict[type, list[str]]:
    """Each method config and the methods that read it, in the order of ``configs`` (method -> config)."""
    methods: dict[type, list[str]] = {}
    for method, config_cls in configs.items():
        methods.setdefault(config_cls, []).append(method)
    return methods


def _method_fields(config_cls: type) -> dict[str, Field]:
    return {f.name: f for f in fields(config_cls) if f.name not in ("method", "run") and f.metadata.get("cli", True)}


def _add_method_options(parser: argparse.ArgumentParser, configs: Mapping[str, type],
                        choices: Mapping[str, Any]) -> None:
    """One group per method config with the flags only it has; a flag several configs have (sampling steps,
    guidance) in one group whose help gives each method's meaning and default. A flag left out is absent from
    the namespace, so the chosen method's config takes its own default."""
    owners: dict[str, list[tuple[list[str], Field]]] = {}
    for config_cls, methods in _method_configs(configs).items():
        for name, f in _method_fields(config_cls).items():
            owners.setdefault(name, []).append((methods, f))
    shared = {name for name, found in owners.items() if len(found) > 1}
    group = parser.add_argument_group("sampling (per method)")
    for name in sorted(shared, key=list(owners).index):
        meanings = "; ".join(f"{', '.join(methods)}: {f.metadata['help']}"
                             + ("" if f.default is None else f" (default: {f.default})") for methods, f in owners[name])
        first = owners[name][0][1]
        kind = next((type(f.default) for _, f in owners[name] if f.default is not None), str)
        group.add_argument("--" + name.replace("_", "-"), dest=name, type=first.metadata.get("type", kind),
                           default=argparse.SUPPRESS, help=meanings)
    for config_cls, methods in _method_configs(configs).items():
        add_dataclass_options(parser.add_argument_group(f"--method {', '.join(methods)}"), config_cls, dict(choices),
                              presets={}, exclude=shared | {"method", "run"})


# flags every method takes: where the method's config has no such field, the pipeline's loading does it
# (--gradient-checkpointing: diffusers' per-block checkpointing for ddpo, grpo, nft and dpo)
LOADING_FLAGS = {"gradient_checkpointing"}


def method_options(args: argparse.Namespace, config_cls: type, configs: Mapping[str, type]) -> dict[str, Any]:
    """The method flags given, for ``config_cls``; one that another method's config reads alone is an error."""
    own, renamed = _method_fields(config_cls), getattr(config_cls, "renamed", {})
    for other, methods in _method_configs(configs).items():
        for name in _method_fields(other).keys() - own.keys() - LOADING_FLAGS:
            if hasattr(args, name) and name in renamed:
                raise ValueError(f"--{name.replace('_', '-')} is --{renamed[name].replace('_', '-')} for --method "
                                 f"{args.method} now ({name} means another thing for --method {', '.join(methods)})")
            if hasattr(args, name):
                raise ValueError(f"--{name.replace('_', '-')} applies to --method {', '.join(methods)}, not "
                                 f"--method {args.method}; leave it out (see finetune --help for each method's flags)")
    return {name: getattr(args, name) for name in own if hasattr(args, name)}


def _scorer(name: str, args: argparse.Namespace, seed: int):
    import torch

    from mst_clipiqa.integrations.rewards import NamedScores
    from mst_clipiqa.reward import MSTCLIPIQAReward, load_model

    model = load_model(name, variant=args.variant, outputs=split_list(args.outputs), seed=seed,
                       adapters=args.adapter if name == args.model else [])
    dtype = resolve_dtype(args.reward_dtype, resolve_device(args.device))
    reward = MSTCLIPIQAReward(model, dtype=None if dtype == torch.float32 else dtype, compile=args.compile)
    return NamedScores(reward) if len(model.outputs) > 1 else reward


def _prompts(args: argparse.Namespace, dpo: bool) -> tuple[list[str] | None, list[str]]:
    """(training prompts, held-out prompts); DPO trains on its pairs and, without --prompts, holds out their
    captions."""
    from mst_clipiqa.integrations.finetune.prompt_sources import read_prompt_file

    if not dpo and args.prompts is None:
        raise ValueError(f"--method {args.method} needs --prompts PROMPTS.txt (the training prompts)")
    if dpo and args.pairs is None:
        raise ValueError("--method dpo needs --pairs DIR (preference pairs written by 'mst-clipiqa pairs')")
    if not dpo and args.pairs is not None:
        raise ValueError(f"--pairs is for --method dpo; --method {args.method} samples its own images")
    prompts = read_prompt_file(args.prompts) if args.prompts else None
    if args.eval_prompts:
        return prompts, read_prompt_file(args.eval_prompts)
    if prompts:
        return prompts, prompts
    from mst_clipiqa.integrations.inference.preference_pairs import load_pairs

    return None, list(dict.fromkeys(load_pairs(args.pairs)["caption"]))[:8]


def _dry_run(args: argparse.Namespace, config, tiny) -> int:
    from mst_clipiqa.integrations.planner import StepSettings

    from .plan import _resolution

    run, per_block = config.run, getattr(args, "gradient_checkpointing", None)
    args.resolution = run.height or None
    side = _resolution(args)
    settings = StepSettings(
        batch_size=run.batch_size, height=run.height or side, width=run.width or side,
        num_inference_steps=config.num_inference_steps, guidance_scale=config.guidance_scale,
        draft_k=getattr(config, "draft_k", 1), decode_chunk_size=getattr(config, "decode_chunk_size", 1),
        gradient_checkpointing=bool(getattr(config, "checkpoint_denoiser", per_block)),
        encode_kwargs=tuple(tiny.encode_kwargs.items()) if tiny else ())
    result = print_plan(args, args.method, settings, args.dtype or "bf16", run.lora_rank, run.text_encoders)
    return 0 if result.fits is not False else 1


def run(args: argparse.Namespace) -> int:
    from mst_clipiqa.integrations.finetune.config import RunConfig
    from mst_clipiqa.integrations.finetune.trainers import CONFIGS, TRAINERS
    from mst_clipiqa.reward.utils import write_json
    from mst_clipiqa.runtime.sharding import is_sharded

    if args.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device {args.device}: finetune places the model with accelerate; pick a GPU with "
                         "CUDA_VISIBLE_DEVICES=N (or use auto, cpu, cuda)")
    device = resolve_device(args.device)  # a named device must exist here: never fall back to the CPU unasked
    dpo = args.method == "dpo"
    config_cls = CONFIGS[args.method]
    options = method_options(args, config_cls, CONFIGS)
    if "method" in {f.name for f in fields(config_cls)}:
        options["method"] = args.method
    run_options = dataclass_values(args, RunConfig)
    run_options["cpu"] = args.cpu or device.type == "cpu"
    check_precision(run_options["mixed_precision"], "cpu" if run_options["cpu"] else device.type)
    check_output_folder(args.out, what="the run")
    if args.eval_images < 0:
        raise ValueError(f"--eval-images must be >= 0, got {args.eval_images}")
    prompts, eval_prompts = _prompts(args, dpo)
    if args.monitor and not run_options["monitor_prompts"]:
        run_options["monitor_prompts"] = eval_prompts[:4]
    tiny = TINY.get(args.pipeline)
    run_config = RunConfig(**run_options, output_dir=str(args.out), encode_kwargs=tiny.encode_kwargs if tiny else {})
    config = config_cls(**options, run=run_config)
    if args.dry_run:
        return _dry_run(args, config, tiny)
    reward = _scorer(args.model, args, run_config.seed)
    monitor = _scorer(args.monitor, args, run_config.seed + 1) if args.monitor else None
    per_block = getattr(args, "gradient_checkpointing", None) and not hasattr(config, "gradient_checkpointing")
    pipe, _ = load_pipeline(args.pipeline, device, options_from_args(args, gradient_checkpointing=bool(per_block)),
                            place=False)
    if dpo:
        trainer = TRAINERS["dpo"](pipe, args.pairs, config, reward=reward, monitor=monitor)
    else:
        trainer = TRAINERS[args.method](pipe, reward, prompts, config, monitor=monitor)
    main = trainer.accelerator.is_main_process
    if args.eval_images and (main or is_sharded(trainer.accelerator)):  # a sharded denoiser runs on every process
        held_out = before_and_after(trainer.evaluate, trainer.train, eval_prompts, args.eval_images)
        if main:
            write_json(args.out / "held_out.json", held_out.to_dict())
    else:
        trainer.train()
    if main:
        acc = trainer.accelerator
        print(f"{args.method}: {trainer.global_step} steps on {acc.num_processes} process(es) "
              f"({acc.device.type}, mixed precision {acc.mixed_precision})")
        if trainer.monitor is not None and trainer.monitor.should_stop:
            print(f"stopped early by the monitor; kept the LoRA of step {trainer.monitor.best_step}")
        print(held_out.summary() if args.eval_images else "held-out reward: not measured (--eval-images 0)")
        print_written(written_files(args.out))
    return 0
