"""``mst-clipiqa optimize``: one image's initial noise optimised for the reward (ReNO); writes the before and
after images, the reward curve and a JSON record."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..options import EPILOG_MODELS, add_model_options, model_from_args, resolve_device, split_list
from ..output import check_output_folder, print_written
from ..pipeline_loading import HELP as PIPELINES_HELP
from ..pipeline_loading import TINY, load_pipeline

if TYPE_CHECKING:
    import torch

EXAMPLES = """\
examples:
  # offline try-out: a tiny random one-step pipeline (SD-Turbo's sampler) and the tiny reward
  mst-clipiqa optimize --pipeline tiny-turbo --prompt "a lighthouse at dusk" --model tiny --out opt/ --steps 20
  # SD-Turbo with a trained reward, stopped early when a second scorer stops improving
  mst-clipiqa optimize --pipeline stabilityai/sd-turbo --inference-steps 1 --guidance-scale 0 \\
      --prompt "a lighthouse at dusk" --model runs/agiqa3k/model --monitor paper-A --out opt/
  # a 4-step LCM, gradients through the last step only (DRaFT-K's truncation)
  mst-clipiqa optimize --pipeline SimianLuo/LCM_Dreamshaper_v7 --inference-steps 4 --gradient-steps 1 ...
"""


HELP = "optimise one image's initial noise for the reward (ReNO); before/after images"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "optimize", help=HELP,
        description="Gradient ascent on the initial noise of one sample, through the sampler, the VAE decoder "
                    "and the reward (ReNO, Eyring et al. 2024), the generator's weights untouched. Best for one- "
                    "and few-step models (SD-Turbo, SDXL-Turbo, LCM, FLUX schnell). Writes OUT/before.png (the "
                    "seed's own image), OUT/after.png (the best iterate), OUT/reward_curve.png, "
                    "OUT/noise.safetensors and OUT/result.json.",
        epilog=EPILOG_MODELS + "\n" + EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True,
                        help=PIPELINES_HELP + "; offline: tiny-turbo (one step), tiny-lcm (4 steps)")
    parser.add_argument("--prompt", required=True, help="the generation prompt")
    parser.add_argument("--out", required=True, type=Path, help="folder for the images, curve and record")
    parser.add_argument("--lora", type=Path, help="load this LoRA into the pipeline first (save_lora / "
                                                  "RewardFinetuner output)")
    add_model_options(parser)
    sampler = parser.add_argument_group("sampler (defaults: the pipeline's own; tiny: 1 step, no CFG)")
    sampler.add_argument("--seed", type=int, default=0, help="the start noise's seed (default: 0)")
    sampler.add_argument("--inference-steps", type=int, help="sampler steps")
    sampler.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale")
    sampler.add_argument("--height", type=int, help="image height in pixels")
    sampler.add_argument("--width", type=int, help="image width in pixels")
    sampler.add_argument("--negative-prompt", help="negative prompt (with classifier-free guidance)")
    optim = parser.add_argument_group("optimisation (defaults: ReNO's)")
    optim.add_argument("--steps", type=int, default=50, help="iterations = reward evaluations (default: 50)")
    optim.add_argument("--lr", type=float, default=5.0, help="SGD learning rate, Nesterov momentum 0.9 "
                                                             "(default: 5.0)")
    optim.add_argument("--regularization", type=float, default=0.01,
                       help="weight of the noise-norm regulariser (chi NLL; default: 0.01)")
    optim.add_argument("--grad-clip", type=float, default=0.1, help="gradient-norm clip (default: 0.1)")
    optim.add_argument("--gradient-steps", type=int, help="K: backpropagate through the last K sampler steps "
                                                          "only (default: all)")
    optim.add_argument("--checkpointing", action="store_true", help="recompute denoiser activations in the "
                                                                   "backward pass (less memory, slower)")
    optim.add_argument("--monitor", metavar="MODEL", help="an independent scorer (a --model name, e.g. tiny: "
                                                          "other random weights than --model): stop when it has "
                                                          "not improved for --patience iterations")
    optim.add_argument("--patience", type=int, default=5, help="iterations without monitor improvement "
                                                               "before stopping (default: 5)")
    parser.set_defaults(func=run)
    return parser


def _pipeline(args: argparse.Namespace, device: torch.device) -> tuple[Any, dict[str, Any]]:
    """The pipeline, and its sampler settings: the command's, else those its tiny name implies."""
    pipe, tiny = load_pipeline(args.pipeline, device)
    pipe.set_progress_bar_config(disable=True)
    settings = {"num_inference_steps": args.inference_steps, "guidance_scale": args.guidance_scale}
    defaults = {"num_inference_steps": tiny.steps, "guidance_scale": tiny.guidance_scale} if tiny else {}
    return pipe, {k: v if v is not None else defaults.get(k) for k, v in settings.items()}


def run(args: argparse.Namespace) -> int:
    from mst_clipiqa.integrations import load_lora, optimize_noise
    from mst_clipiqa.integrations.inference.noise_optimization import check_settings
    from mst_clipiqa.reward import MSTCLIPIQAReward, load_model

    check_output_folder(args.out)
    if not args.prompt.strip():
        raise ValueError("--prompt is empty; expected the generation prompt")
    steps = args.inference_steps or (TINY[args.pipeline].steps if args.pipeline in TINY else None)
    check_settings(num_inference_steps=steps, steps=args.steps, lr=args.lr, regularization=args.regularization,
                   grad_clip=args.grad_clip, gradient_steps=args.gradient_steps, patience=args.patience)
    device = resolve_device(args.device)
    reward = MSTCLIPIQAReward(model_from_args(args), outputs=split_list(args.outputs))
    monitor = None
    if args.monitor:
        # seed: other random weights for tiny models (4, the benchmark's monitor; 1 and 2 score near-constant)
        monitor = MSTCLIPIQAReward(load_model(args.monitor, variant=args.variant, seed=4, device=device))
    pipe, settings = _pipeline(args, device)
    if args.lora is not None:
        load_lora(pipe, args.lora)
    result = optimize_noise(
        pipe, args.prompt, reward, steps=args.steps, lr=args.lr, regularization=args.regularization,
        grad_clip=args.grad_clip, seed=args.seed, gradient_steps=args.gradient_steps,
        gradient_checkpointing=args.checkpointing, monitor=monitor, patience=args.patience, height=args.height,
        width=args.width, negative_prompt=args.negative_prompt, **settings)
    paths = result.save(args.out)
    stop = ", stopped early by the monitor" if result.stopped_early else ""
    print(f"reward {result.initial_reward:.4f} -> {result.reward:.4f}: kept iteration {result.iteration}, "
          f"{len(result.history)} reward evaluations{stop}")
    print_written(list(paths.values()))
    return 0
