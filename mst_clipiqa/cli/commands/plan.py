"""``mst-clipiqa plan``: peak GPU memory per process and FLOPs of one fine-tuning step, before the run."""
from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "predict a fine-tuning step's peak GPU memory and FLOPs (no weights needed) and whether it fits"
SHORT_NAMES = ("sd1.5", "sdxl", "sd3.5-medium", "sd3.5-large", "flux.1-dev", "flux.1-schnell")
METHODS = ("draft", "refl", "alignprop", "ddpo", "grpo", "nft", "dpo", "best-of-n")
EXAMPLES = """\
examples:
  mst-clipiqa plan --pipeline flux.1-dev --method grpo --resolution 1024 --gpu-memory 80GB
  mst-clipiqa plan --pipeline sdxl --method draft --resolution 1024 --gradient-checkpointing --gpu-memory 24GB
  mst-clipiqa plan --pipeline runs/my-saved-pipeline --method dpo --json
  mst-clipiqa plan --pipeline flux.1-dev --method draft --processes 4 --shard fsdp --gpu-memory 40GB
"""


def add_plan_options(parser: argparse.ArgumentParser) -> None:
    """The options ``plan`` and ``finetune --dry-run`` share (finetune has the step's own flags)."""
    parser.add_argument("--gpu-memory", metavar="SIZE", help="memory per GPU to check the plan against, e.g. 24GB")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    parser.add_argument("--processes", type=int, default=1, metavar="N",
                        help="processes (GPUs) of the run (default: 1); the figure is per process: each holds the "
                             "whole frozen base unless --shard shards it")
    parser.add_argument("--shard", choices=("fsdp",), help="fsdp: the denoiser sharded over the --processes "
                        "(accelerate's FSDP2, one unit per block; see docs/gpu.md)")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "plan", help=HELP, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build the pipeline's architecture without weights (meta tensors), trace one step of the "
                    "method with torch's FLOP counter and an allocation tracker, and print the peak memory per "
                    "process (frozen weights incl. the reward and, unless released, the text encoders; LoRA, the "
                    "step's activations, gradients and AdamW state) and the FLOPs per step. With --gpu-memory it "
                    "says whether the step fits and, if not, which setting to change. A prediction: allocator "
                    "overhead and fragmentation (typically 5-15%% on CUDA) come on top.")
    parser.add_argument("--pipeline", required=True,
                        help=f"{' | '.join(SHORT_NAMES)} (shipped configs) | a tiny name | a saved pipeline "
                             "folder or Hub id (config files only)")
    parser.add_argument("--method", default="draft", choices=METHODS, help="the step to trace (default: draft)")
    parser.add_argument("--resolution", type=int, help="image height and width (default: the architecture's)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per micro-batch per process (default: 1)")
    parser.add_argument("--num-inference-steps", type=int, default=20, help="sampling steps (default: 20)")
    parser.add_argument("--guidance-scale", type=float, default=1.0, help="> 1: classifier-free guidance "
                                                                            "(two denoiser passes)")
    parser.add_argument("--draft-k", type=int, default=1, help="DRaFT-K: last steps with gradients (default: 1)")
    parser.add_argument("--lora-rank", type=int, default=4, help="LoRA rank (default: 4)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="checkpoint the denoiser")
    parser.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"), help="weights' precision")
    parser.add_argument("--text-encoders", default="offload", choices=("keep", "offload", "free"),
                        help="what the trainer does with the text encoders once the prompts are encoded "
                             "(default: offload, as finetune's and pairs' default)")
    parser.add_argument("--quantize", choices=("int8", "nf4"),
                        help="the denoiser's frozen weights in int8 (torchao) or 4-bit NF4 (bitsandbytes' layout; "
                             "the plan does not need bitsandbytes)")
    add_plan_options(parser)
    parser.set_defaults(func=run)
    return parser


def _resolution(args: argparse.Namespace) -> int:
    if args.resolution:
        return args.resolution
    from mst_clipiqa.integrations.planner import ARCHITECTURES, architecture

    return architecture(args.pipeline)["resolution"] if args.pipeline in ARCHITECTURES else 512


def print_plan(args: argparse.Namespace, method: str, settings: Any, dtype: str, lora_rank: int,
               text_encoders: str) -> Any:
    from mst_clipiqa.integrations.planner import parse_bytes, plan

    memory = parse_bytes(args.gpu_memory) if args.gpu_memory else None
    if args.processes < 1:
        raise ValueError(f"--processes must be >= 1, got {args.processes}")
    if args.shard and args.processes < 2:
        raise ValueError(f"--shard {args.shard} shards over several processes; give --processes N (N >= 2)")
    result = plan(args.pipeline, method, settings, dtype=dtype, lora_rank=lora_rank, gpu_memory=memory,
                  text_encoders=text_encoders, quantize=getattr(args, "quantize", None),
                  shard_processes=args.processes if args.shard else 1)
    print(json.dumps(result.to_dict(), indent=1) if args.json else result.summary())
    return result


def run(args: argparse.Namespace) -> int:
    from mst_clipiqa.integrations.planner import StepSettings

    for name in ("batch_size", "num_inference_steps", "draft_k", "lora_rank"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    from mst_clipiqa.cli.pipeline_loading import TINY

    side = _resolution(args)
    tiny = TINY.get(args.pipeline)
    settings = StepSettings(encode_kwargs=tuple(tiny.encode_kwargs.items()) if tiny else (),
                            batch_size=args.batch_size, height=side, width=side,
                            num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale,
                            draft_k=min(args.draft_k, args.num_inference_steps),
                            gradient_checkpointing=args.gradient_checkpointing)
    result = print_plan(args, args.method, settings, args.dtype, args.lora_rank, args.text_encoders)
    return 0 if result.fits is not False else 1
