"""``mst-clipiqa pairs``: preference pairs labelled by the reward, as a Diffusion-DPO data set (parquet)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..options import EPILOG_MODELS, add_model_options, model_from_args, resolve_device, split_list
from ..output import print_written, written_files
from ..pipeline_loading import HELP as PIPELINE_HELP
from ..pipeline_loading import TINY, load_pipeline
from ..remote_reward import add_remote_reward_options, reward_from_args

HELP = "sample N seeds per prompt, score them, write preference pairs for Diffusion-DPO"

EXAMPLES = """\
examples:
  # offline try-out: tiny random pipeline and reward, best and worst of 4 seeds per prompt
  mst-clipiqa pairs --pipeline tiny --model tiny --prompts prompts.txt --out pairs/ --n 4
  # SD 1.5, every pair of 8 samples whose scores differ by more than 0.05, split over 2 GPUs
  torchrun --nproc_per_node 2 -m mst_clipiqa pairs --pipeline stable-diffusion-v1-5/stable-diffusion-v1-5 \\
      --model runs/agiqa3k/model --prompts prompts.txt --out pairs/ --n 8 --pairs 'margin>0.05'
  # scored by a served reward (mst-clipiqa serve), each chunk of 4 samples while the next is generated
  mst-clipiqa pairs --pipeline tiny --reward-url http://127.0.0.1:8000 --prompts prompts.txt --out pairs/ \\
      --async-scoring --chunk-size 4
  # read them back
  python -c "from datasets import load_dataset; print(load_dataset('parquet', data_files='pairs/data/*.parquet'))"
  (an interrupted run continues where it stopped: run the same command again)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "pairs", help=HELP,
        description="Generate N seeded samples per prompt, score them with MST-CLIPIQA and write the chosen "
                    "pairs as a Diffusion-DPO data set: OUT/data/prompt-NNNNNN.parquet (caption, jpg_0, jpg_1, "
                    "label_0, seeds, scores) and OUT/pairs.json (the settings that regenerate every image). "
                    "Finished prompts are skipped when run again; under torchrun each process takes its share.",
        epilog=EPILOG_MODELS + "\n" + EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help=PIPELINE_HELP)
    parser.add_argument("--prompts", required=True, type=Path, help="text file: one prompt per line")
    parser.add_argument("--out", required=True, type=Path, help="data set folder")
    add_model_options(parser, required=False)
    add_remote_reward_options(parser)
    group = parser.add_argument_group("pairs")
    group.add_argument("--n", type=int, default=4, help="samples per prompt, >= 2 (default: 4)")
    group.add_argument("--pairs", default="best-worst",
                       help="best-worst | all | margin>X: which samples to pair (default: best-worst)")
    group.add_argument("--seed", type=int, default=0, help="prompt p gets seeds SEED + p*N ... (default: 0)")
    group.add_argument("--image-format", choices=("png", "jpeg"), default="png",
                       help="png (lossless: seeds regenerate it bit for bit) or jpeg (default: png)")
    sampler = parser.add_argument_group("sampler (defaults: the pipeline's own)")
    sampler.add_argument("--inference-steps", type=int, help="sampler steps")
    sampler.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale")
    sampler.add_argument("--height", type=int, help="image height in pixels")
    sampler.add_argument("--width", type=int, help="image width in pixels")
    sampler.add_argument("--text-encoders", choices=("offload", "free", "keep"), default="offload",
                         help="once the prompts are encoded (each once, kept on the CPU): offload the text encoders "
                              "to the CPU, free them, or keep them (default: offload)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from mst_clipiqa.integrations.finetune.prompt_sources import read_prompt_file
    from mst_clipiqa.integrations.inference.preference_pairs import preference_pairs, select_pairs
    from mst_clipiqa.reward import MSTCLIPIQAReward

    select_pairs([0.0, 1.0], args.pairs)
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; expected a folder for the data set")
    prompts = read_prompt_file(args.prompts)
    device = resolve_device(args.device)
    reward = reward_from_args(args, lambda: MSTCLIPIQAReward(model_from_args(args), outputs=split_list(args.outputs)))
    pipe, tiny = load_pipeline(args.pipeline, device)
    pipe.set_progress_bar_config(disable=True)
    settings = {"num_inference_steps": args.inference_steps or (tiny.steps if tiny else None),
                "guidance_scale": args.guidance_scale if args.guidance_scale is not None else
                (tiny.guidance_scale if tiny else None), "height": args.height, "width": args.width,
                **(TINY[args.pipeline].encode_kwargs if tiny else {})}
    result = preference_pairs(pipe, prompts, reward, args.out, n=args.n, pairs=args.pairs, seed=args.seed,
                              image_format=args.image_format, chunk_size=args.chunk_size,
                              async_scoring=args.async_scoring, text_encoders=args.text_encoders,
                              **{k: v for k, v in settings.items() if v is not None})
    print(f"wrote {len(result.written)} prompt shards ({result.rows} pairs), skipped {len(result.skipped)} "
          f"finished ones, into {args.out}" + (f"; {len(result.no_pairs)} prompt(s) gave no pair (their samples "
                                               "tied or scored NaN)" if result.no_pairs else ""))
    print_written(written_files(args.out))
    return 0
