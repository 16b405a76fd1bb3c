"""``mst-clipiqa eval``: metrics of a model on a data set, per split and summarised, or on all of it."""
from __future__ import annotations

import argparse
from pathlib import Path

from reward.backbones.pil_preprocess import PREPROCESS_CHOICES
from reward.training import evaluate_model
from reward.utils import PRECISIONS, write_json

from ..options import (
    EPILOG_MODELS,
    add_data_options,
    add_model_options,
    data_from_args,
    model_from_args,
    split_list,
    splits_from_args,
)
from ..output import summary_table


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="evaluate a model on a data set (per split and summarised, or on all of it)",
        description="Evaluate a model: SRCC, PLCC (linear and after a 4-parameter logistic), KRCC and RMSE "
                    "(in the data set's units) per output, on the test part of each split in --split-file with "
                    "mean/median/std over splits, or on the whole data set without a split file (zero-shot).",
        epilog=EPILOG_MODELS + "\nexample:\n  mst-clipiqa eval --model runs/agiqa3k/model --dataset agiqa3k "
                               "--data /data/AGIQA-3K --split-file splits.json --json-out eval.json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(parser)
    add_data_options(parser)
    parser.add_argument("--json-out", type=Path, help="also write the full results as JSON here")
    parser.add_argument("--batch-size", type=int, default=32, help="images per encoder batch (default: 32)")
    parser.add_argument("--cache-dir", type=Path, help="feature cache folder (default: ~/.cache/mst-clipiqa)")
    parser.add_argument("--no-cache", action="store_true", help="encode in memory, leave the cache alone")
    parser.add_argument("--mixed-precision", choices=sorted(PRECISIONS), default="no",
                        help="encoders' autocast precision; it keys the feature cache, so give what train used to "
                             "reuse its cached features (default: no)")
    parser.add_argument("--preprocess", choices=PREPROCESS_CHOICES, default="tensor",
                        help="resize and crop of the image files: tensor (differentiable, as the reward does) or pil "
                             "(the reference's 8-bit PIL path, for parity with published numbers; default: tensor)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    dataset = data_from_args(args)
    splits = splits_from_args(args, dataset)
    model = model_from_args(args)
    result = evaluate_model(model, dataset, splits, split_list(args.outputs), args.cache_dir,
                            not args.no_cache, args.batch_size, mixed_precision=args.mixed_precision,
                            preprocess=args.preprocess)
    if splits:
        print(summary_table(result["summary"], f"test parts of {len(splits)} splits"))
    else:
        print(summary_table({o: {m: {"mean": v, "median": v, "std": None} for m, v in ms.items()}
                             for o, ms in result["all"].items()}, f"all {len(dataset)} images"))
    if args.json_out:
        write_json(args.json_out, result)
    return 0
