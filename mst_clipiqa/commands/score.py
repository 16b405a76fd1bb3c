"""``mst-clipiqa score``: every output of a model for image files and folders."""
from __future__ import annotations

import argparse

from ..options import EPILOG_MODELS, add_model_options, model_from_args, split_list
from ..output import check_output_file, emit, format_rows, print_written
from ..scoring_options import add_scoring_options, prompts_from_args, readable_images, report_skipped

HELP = "score image files or folders"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "score", help=HELP,
        description="Score images with every output of a model (or those in --outputs). Prompt-anchored "
                    "models (variant B) need prompts: --prompt for all images, or --prompts FILE.",
        epilog=EPILOG_MODELS + "\nexamples:\n  mst-clipiqa score --model runs/agiqa3k/model photos/\n"
                               "  mst-clipiqa score --model tiny --variant B a.png b.png --prompt 'a cat' "
                               "--format json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_scoring_options(parser)
    add_model_options(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    check_output_file(args.output)  # before the slow part, not after it
    from mst_clipiqa.reward import MSTCLIPIQAReward, collect_images

    model = model_from_args(args)
    paths = collect_images(args.images)
    prompts = prompts_from_args(args, len(paths), required=model.config.needs_prompts)
    skipped = []
    if args.skip_unreadable:
        paths, prompts, skipped = readable_images(paths, prompts)
    outputs = split_list(args.outputs) or list(model.outputs)
    scores = MSTCLIPIQAReward(model).score_outputs(paths, prompts, args.batch_size)
    rows = [{"image": str(p), **{o: float(scores[o][i]) for o in outputs}} for i, p in enumerate(paths)]
    emit(format_rows(rows, ["image", *outputs], args.format), args.output)
    print_written([args.output] if args.output else [])
    return report_skipped("score", skipped)
