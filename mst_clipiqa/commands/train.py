"""``mst-clipiqa train``: the field's split protocol on a data set; writes the model, a report and plots."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from reward import load_model
from reward.datasets import load_splits
from reward.training import MainProcessFailed, TrainConfig, Trainer, launcher_rank
from reward.training.config import CHOICES

from ..options import (
    EPILOG_MODELS,
    add_data_options,
    add_dataclass_options,
    add_model_options,
    data_from_args,
    dataclass_values,
    resolve_device,
    split_list,
)
from ..output import summary_table

EXAMPLES = """\
examples:
  # offline try-out: tiny model, generated data, 2 splits of 3 epochs
  mst-clipiqa train --model tiny --dataset synthetic --data /tmp/synthetic --out runs/try \\
      --epochs 3 --n-splits 2 --lr 1e-3
  # the paper's protocol on AGIQA-3K: ten 8:2 splits grouped by prompt
  mst-clipiqa train --model paper-A --dataset agiqa3k --data /data/AGIQA-3K --out runs/agiqa3k \\
      --split-by prompt
  # continue a killed run (loses at most the epoch in flight)
  mst-clipiqa train ... --out runs/agiqa3k --resume
  # adapt a trained model to a new generator with a LoRA adapter (saved to RUN/adapter)
  mst-clipiqa train --model runs/agiqa3k/model --dataset csv --data mj.csv --out runs/mj --lora-rank 8
  # several processes (DDP): one per GPU, or CPU processes (gloo) on a machine without CUDA
  torchrun --nproc_per_node 2 -m mst_clipiqa train ... --out runs/agiqa3k
  accelerate launch --multi_gpu --num_processes 2 -m mst_clipiqa train ... --mixed-precision bf16
  # (accelerate launch --cpu starts one process unless MPI is set up; on CPU use the lines above)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="train on a data set over repeated splits; writes the model, a report and plots",
        description="Train the fusion and heads (or a LoRA adapter) on a data set, with the field's protocol: "
                    "N seeded train/test splits, model selection on a validation part carved from training, "
                    "test metrics per split and their mean/median/std. Frozen encoders run once per image "
                    "(feature cache). Writes OUT/model (save_pretrained; OUT/adapter for LoRA), "
                    "OUT/report.json and OUT/plots/*.png.",
        epilog=EPILOG_MODELS + "\n" + EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(parser)
    add_data_options(parser)
    parser.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, model, report, plots)")
    parser.add_argument("--split-file", type=Path, help="use the splits in this JSON file (save_splits format) "
                                                        "instead of making --n-splits of them")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    add_dataclass_options(parser.add_argument_group("training (defaults: the paper's reference setup)"),
                          TrainConfig, CHOICES)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if launcher_rank() != 0:  # under a launcher the main process reports, warns and prints the errors
        warnings.simplefilter("ignore")
    options = dataclass_values(args, TrainConfig)
    if args.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device {args.device}: train places the model with accelerate; pick a GPU with "
                         "CUDA_VISIBLE_DEVICES=N (or use auto, cpu, cuda)")
    resolve_device(args.device)  # a named device must exist here: never fall back to the CPU unasked
    options["cpu"] = args.cpu or args.device == "cpu"
    config = TrainConfig(**options, outputs=split_list(args.outputs))
    dataset = data_from_args(args)
    splits = load_splits(args.split_file, n=len(dataset), groups=dataset.groups()) if args.split_file else None
    model = load_model(args.model, variant=args.variant, outputs=split_list(args.outputs), seed=config.seed,
                       adapters=args.adapter)
    trainer = Trainer(model, dataset, config, args.out, splits, args.resume)
    try:
        report = trainer.run()
    except MainProcessFailed:
        return 2
    if not trainer.accelerator.is_main_process:
        return 0
    print(summary_table(report["summary"]["test"], "test (over splits)"))
    print(f"\nmodel: {report['model_dir']}\nreport: {args.out / 'report.json'}")
    return 0
