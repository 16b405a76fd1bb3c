"""``mst-clipiqa optimize``: one image's initial noise optimised for the reward (ReNO); writes the before and
after images, the reward curve and a JSON record."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..options import (
    EPILOG_MODELS,
    add_dataclass_options,
    add_model_options,
    dataclass_values,
    model_from_args,
    resolve_device,
    resolved_options,
    split_list,
)
from ..output import check_output_folder, print_written
from ..pipeline_loading import HELP as PIPELINES_HELP
from ..pipeline_loading import TINY, load_pipeline

if TYPE_CHECKING:
    from mst_clipiqa.integrations.inference.noise_optimization_config import NoiseOptimizationConfig

EXAMPLES = """\
examples:
  # offline try-out: a tiny random one-step pipeline (SD-Turbo's sampler) and the tiny reward
  mst-clipiqa optimize --pipeline tiny-turbo --prompt "a lighthouse at dusk" --model tiny --out opt/ --steps 20
  # SD-Turbo with a trained reward, stopped early when a second scorer stops improving
  mst-clipiqa optimize --pipeline stabilityai/sd-turbo --num-inference-steps 1 --guidance-scale 0 \\
      --prompt "a lighthouse at dusk" --model runs/agiqa3k/model --monitor paper-A --out opt/
  # the same settings from a file (flags override it); OUT/config.yaml records the resolved ones
  mst-clipiqa optimize --config recipes/sd-turbo-reno.yaml --prompt "a lighthouse at dusk" --model paper-A --out opt/
  # a 4-step LCM, gradients through the last step only (DRaFT-K's truncation)
  mst-clipiqa optimize --pipeline SimianLuo/LCM_Dreamshaper_v7 --num-inference-steps 4 --gradient-steps 1 ...
"""


HELP = "optimise one image's initial noise for the reward (ReNO); before/after images"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "optimize", help=HELP,
        description="Gradient ascent on the initial noise of one sample, through the sampler, the VAE decoder "
                    "and the reward (ReNO, Eyring et al. 2024), the generator's weights untouched. Best for one- "
                    "and few-step models (SD-Turbo, SDXL-Turbo, LCM, FLUX schnell). Writes OUT/before.png (the "
                    "seed's own image), OUT/after.png (the best iterate), OUT/reward_curve.png, "
                    "OUT/noise.safetensors, OUT/result.json and OUT/config.yaml (the resolved options, for "
                    "--config).",
        epilog=EPILOG_MODELS + "\n" + EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True,
                        help=PIPELINES_HELP + "; offline: tiny-turbo (one step), tiny-lcm (4 steps)")
    parser.add_argument("--prompt", required=True, help="the generation prompt")
    parser.add_argument("--out", required=True, type=Path, help="folder for the images, curve and record")
    parser.add_argument("--lora", type=Path, help="load this LoRA into the pipeline first (save_lora / "
                                                  "RewardFinetuner output)")
    add_model_options(parser)
    parser.add_argument("--monitor", metavar="MODEL", help="an independent scorer (a --model name, e.g. tiny: other "
                                                           "random weights than --model): stop when it has not "
                                                           "improved for --patience iterations")
    # its flags come from the config's fields, a module without torch
    from mst_clipiqa.integrations.inference.noise_optimization_config import NoiseOptimizationConfig

    add_dataclass_options(parser.add_argument_group("noise optimisation (defaults: ReNO's; sampler: the "
                                                    "pipeline's, tiny: 1 step, no CFG)"), NoiseOptimizationConfig, {})
    parser.set_defaults(func=run)
    return parser


def config_from_args(args: argparse.Namespace) -> NoiseOptimizationConfig:
    """The settings the flags give; a tiny pipeline's own sampler settings where the flags leave them unset."""
    from mst_clipiqa.integrations.inference.noise_optimization_config import NoiseOptimizationConfig

    values = dataclass_values(args, NoiseOptimizationConfig)
    tiny = TINY.get(args.pipeline)
    if tiny is not None:
        defaults = {"num_inference_steps": tiny.steps, "guidance_scale": tiny.guidance_scale}
        values.update({k: v for k, v in defaults.items() if values[k] is None})
    return NoiseOptimizationConfig(**values)


def run(args: argparse.Namespace) -> int:
    from mst_clipiqa.integrations import load_lora, optimize_noise
    from mst_clipiqa.reward import MSTCLIPIQAReward, load_model
    from mst_clipiqa.reward.utils.config_files import CONFIG_NAME, write_config

    check_output_folder(args.out)
    if not args.prompt.strip():
        raise ValueError("--prompt is empty; expected the generation prompt")
    config = config_from_args(args)
    device = resolve_device(args.device)
    reward = MSTCLIPIQAReward(model_from_args(args), outputs=split_list(args.outputs))
    monitor = None
    if args.monitor:
        # seed: other random weights for tiny models (4, the benchmark's monitor; 1 and 2 score near-constant)
        monitor = MSTCLIPIQAReward(load_model(args.monitor, variant=args.variant, seed=4, device=device))
    pipe, _ = load_pipeline(args.pipeline, device)
    pipe.set_progress_bar_config(disable=True)
    if args.lora is not None:
        load_lora(pipe, args.lora)
    result = optimize_noise(pipe, args.prompt, reward, config, monitor=monitor)
    paths = result.save(args.out)
    paths["config"] = args.out / CONFIG_NAME  # the resolved options, as --config reads them back
    write_config(paths["config"], resolved_options(args, config))
    stop = ", stopped early by the monitor" if result.stopped_early else ""
    print(f"reward {result.initial_reward:.4f} -> {result.reward:.4f}: kept iteration {result.iteration}, "
          f"{len(result.history)} reward evaluations{stop}")
    print_written(list(paths.values()))
    return 0
