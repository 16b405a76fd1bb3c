"""``mst-clipiqa eval``: metrics of a model on a data set, per split and summarised, or on all of it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..options import (
    CACHE_HELP,
    EPILOG_MODELS,
    add_data_options,
    add_model_options,
    data_from_args,
    model_from_args,
    split_list,
    splits_from_args,
)
from ..output import check_output_file, print_written, summary_table
from ..training_runs import SPLITS, TrainingRun, training_run

HELP = "evaluate a model on a data set (per split and summarised, or on all of it)"


RUN_DIR_HELP = """\
  RUN_DIR           a train run folder: its model, scored on the test part of the split it was
                    chosen from (RUN_DIR/splits.json); other images it was trained on are warned of
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help=HELP,
        description="Evaluate a model: SRCC, PLCC (linear and after a 4-parameter logistic), KRCC and RMSE "
                    "(in the data set's units) per output, on the test part of each split in --split-file with "
                    "mean/median/std over splits, or on the whole data set without a split file (zero-shot).",
        epilog=EPILOG_MODELS + RUN_DIR_HELP + "\nexamples:\n"
                               "  mst-clipiqa eval --model runs/agiqa3k --dataset agiqa3k --data /data/AGIQA-3K\n"
                               "  mst-clipiqa eval --model paper-A --dataset agiqa3k --data /data/AGIQA-3K "
                               "--split-file runs/agiqa3k/splits.json --json-out eval.json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(parser)
    add_data_options(parser)
    parser.add_argument("--json-out", type=Path, help="also write the full results as JSON here")
    parser.add_argument("--batch-size", type=int, default=32, help="images per encoder batch (default: 32)")
    parser.add_argument("--cache-dir", type=Path, help=CACHE_HELP)
    parser.add_argument("--no-cache", action="store_true", help="encode in memory, leave the cache alone")
    # the values are checked by the library when the command runs (importing its tables here would import torch)
    parser.add_argument("--mixed-precision", default="no", metavar="{no,fp16,bf16}",
                        help="encoders' autocast precision; it keys the feature cache, so give what train used to "
                             "reuse its cached features (default: no)")
    parser.add_argument("--preprocess", default="tensor", metavar="{tensor,pil}",
                        help="resize and crop of the image files: tensor (differentiable, as the reward does) or pil "
                             "(the reference's 8-bit PIL path, for parity with published numbers; default: tensor)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from mst_clipiqa.reward.training import evaluate_model
    from mst_clipiqa.reward.utils import write_json

    check_output_file(args.json_out, "--json-out")
    dataset = data_from_args(args)
    run_folder = training_run(args.model)
    splits = splits_from_args(args, dataset)
    if run_folder is not None and Path(args.model) == run_folder.folder:
        args.model = str(run_folder.model_dir)
        if splits is None:  # the other splits' test parts were the saved model's training images
            splits = [run_folder.splits(dataset)[run_folder.selected_split]]
            print(f"{run_folder.folder}: its model is split {run_folder.selected_split}'s; scoring that split's "
                  f"test part ({len(splits[0].test)} images, never trained on)")
    model = model_from_args(args)
    if run_folder is not None:
        _warn_if_trained_on(run_folder, dataset, splits)
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
        print_written([args.json_out])
    return 0


def _warn_if_trained_on(run_folder: TrainingRun, dataset, splits) -> None:
    scored = {i for s in splits for i in s.test} if splits else set(range(len(dataset)))
    seen = scored & run_folder.trained_on(dataset)
    if seen:
        print(f"mst-clipiqa eval: warning: {len(seen)} of the {len(scored)} images scored were in the model's "
              f"training or validation part (split {run_folder.selected_split} of {run_folder.folder / SPLITS}), "
              f"so these metrics are optimistic; pass --model {run_folder.folder} to score its unseen test part",
              file=sys.stderr)
