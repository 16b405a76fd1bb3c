"""``mst-clipiqa train``: a recipe (the field's protocol, or the paper's setting) on a data set; writes the model,
a report and plots."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path

from ..options import (
    EPILOG_MODELS,
    add_data_options,
    add_dataclass_options,
    add_model_options,
    check_precision,
    data_from_args,
    dataclass_values,
    resolve_device,
    resolved_options,
    split_list,
    splits_from_args,
)
from ..output import check_output_folder, comparison_table, print_written, written_files

EXAMPLES = """\
examples:
  # offline try-out: tiny model, generated data, 2 splits of 3 epochs
  mst-clipiqa train --model tiny --dataset synthetic --data /tmp/synthetic --out runs/try \\
      --epochs 3 --n-splits 2
  # the protocol (default recipe) on AGIQA-3K: ten seeded 8:2 splits grouped by prompt
  mst-clipiqa train --model paper-A --dataset agiqa3k --data /data/AGIQA-3K --out runs/agiqa3k
  # the reference implementation's setting: one 8:2 split (seed 42), Adam 5e-6, 20 epochs
  mst-clipiqa train --model paper-A --dataset agiqa1k --data /data/AGIQA-1K --out runs/paper --recipe paper
  # IPCE's published splits (Database/AGIQA-3K/<k>/{train,val}.csv)
  mst-clipiqa train --model paper-A --dataset agiqa3k --data /data/AGIQA-3K --out runs/ipce \\
      --split-file IPCE/Database/AGIQA-3K
  # continue a killed run (loses at most the epoch in flight)
  mst-clipiqa train ... --out runs/agiqa3k --resume
  # adapt a trained model to a new generator with a LoRA adapter (saved to RUN/adapter)
  mst-clipiqa train --model runs/agiqa3k/model --dataset csv --data mj.csv --out runs/mj --lora-rank 8
  # several processes (DDP): one per GPU, or CPU processes (gloo) on a machine without CUDA
  torchrun --nproc_per_node 2 -m mst_clipiqa train ... --out runs/agiqa3k
  accelerate launch --multi_gpu --num_processes 2 -m mst_clipiqa train ... --mixed-precision bf16
  # (accelerate launch --cpu starts one process unless MPI is set up; on CPU use the lines above)
"""


HELP = "train on a data set over repeated splits; writes the model, a report and plots"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    # its flags come from TrainConfig, so this parser (unlike the light commands') imports torch
    from mst_clipiqa.reward.training import RECIPES, TrainConfig
    from mst_clipiqa.reward.training.config import CHOICES

    parser = subparsers.add_parser(
        "train", help=HELP,
        description="Train the fusion and heads (or a LoRA adapter) on a data set with a recipe. --recipe protocol "
                    "(default): the field's protocol, ten seeded 8:2 splits (grouped by prompt on AGIQA-3K), model "
                    "selection on a validation part carved from training, settings that move the heads from their "
                    "zero-shot start. --recipe paper: the reference implementation's setting. Flags override the "
                    "recipe. Labels are mapped onto each head's range and reported in the data set's units; a "
                    "ridge probe on the frozen features is reported beside the trained heads. Frozen encoders run "
                    "once per image (feature cache). Writes OUT/model (save_pretrained; OUT/adapter for LoRA), "
                    "OUT/report.json and OUT/plots/*.png.",
        epilog=EPILOG_MODELS + "\n" + EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_options(parser)
    add_data_options(parser)
    parser.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, model, report, plots)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="protocol",
                        help="protocol (default): the field's protocol with heads that learn; paper: the reference "
                             "implementation's setting. The flags below override it")
    add_dataclass_options(parser.add_argument_group("training (defaults: --recipe protocol; [paper: its value])"),
                          TrainConfig, CHOICES, {"paper": RECIPES["paper"]})
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from mst_clipiqa.reward import load_model
    from mst_clipiqa.reward.training import MainProcessFailed, TrainConfig, Trainer, launcher_rank
    from mst_clipiqa.reward.utils.config_files import CONFIG_NAME, write_config

    if launcher_rank() != 0:  # under a launcher the main process reports, warns and prints the errors
        warnings.simplefilter("ignore")
    options = dataclass_values(args, TrainConfig)
    if args.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device {args.device}: train places the model with accelerate; pick a GPU with "
                         "CUDA_VISIBLE_DEVICES=N (or use auto, cpu, cuda)")
    device = resolve_device(args.device)  # a named device must exist here: never fall back to the CPU unasked
    options["cpu"] = options.get("cpu", False) or device.type == "cpu"
    config = TrainConfig.from_recipe(args.recipe, **options, outputs=split_list(args.outputs))
    check_precision(config.mixed_precision, "cpu" if config.cpu else device.type)
    check_output_folder(args.out, what="the run")
    dataset = data_from_args(args)
    splits = splits_from_args(args, dataset, config.val_fraction, config.resolved_split_by(dataset), config.seed)
    if launcher_rank() == 0:
        print(config.describe(dataset) + (f"\n  splits: {args.split_file} ({len(splits)})" if splits else ""),
              flush=True)
    model = load_model(args.model, variant=args.variant, outputs=split_list(args.outputs), seed=config.seed,
                       adapters=args.adapter)
    trainer = Trainer(model, dataset, config, args.out, splits, args.resume)
    try:
        report = trainer.run()
    except MainProcessFailed:
        return 2
    if not trainer.accelerator.is_main_process:
        return 0
    # the settings, as --config reads them; written once the run owns the folder and has finished in it
    write_config(args.out / CONFIG_NAME, resolved_options(args, config))
    summary = report["summary"]
    print(comparison_table({"trained": summary["test"], "linear probe": summary["probe_test"],
                            "untrained": summary["untrained_test"]},
                           f"test, mean (std) over {len(report['splits'])} split(s), in {dataset.name}'s units"))
    print(f"\nmodel: {report['model_dir']} (split {report['selected_split']}'s; evaluate it on that split's test part: "
          f"mst-clipiqa eval --model {args.out} ...)\nsplits: {args.out / report['splits_file']}\n"
          f"report: {args.out / 'report.json'}\nsettings: {args.out / CONFIG_NAME} (--config reads it)")
    print_written(written_files(args.out))
    return 0
