"""The ``mst-clipiqa`` command line: ``train``, ``eval``, ``score`` (and sub-commands registered in ``COMMANDS``).

Each sub-command is a ``(name, add_parser)`` pair in ``COMMANDS``;
``add_parser(subparsers)`` adds its parser and sets ``func``, a handler that
takes the parsed arguments and returns the exit status.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from integrations.cli import add_rank_command
from integrations.demo import add_demo_command

from .factory import create_model, resolve_device, split_list
from .datasets import LOADERS, QualityDataset, load_dataset
from .io import list_images
from .model import MSTCLIPIQA
from .splits import BY_CHOICES, load_splits
from .synthetic import load_synthetic_dataset
from .training.feature_cache import encode_features
from .training.report import write_json
from .training.trainer import (OPTIMIZERS, PRECISIONS, SELECT_METRICS, TrainConfig, Trainer, evaluate_model,
                               predict_features)

EPILOG_MODELS = """\
models (--model):
  tiny, tiny-hf     tiny random backbones (open_clip / transformers), offline; scores mean
                    nothing until trained, for trying the commands out
  paper-A, paper-B  the paper's architecture with OpenAI CLIP weights (downloaded once);
                    A = template head, no prompt needed; B = prompt-anchored head
  DIR or HUB_ID     a model written by save_pretrained (e.g. RUN_DIR/model) or a Hub repo
  --variant A|B (or one per output: A,B) and --outputs quality,correspondence shape the
  heads of tiny/paper models; for a saved model --outputs picks which of its outputs to use.
"""

TRAIN_EXAMPLES = """\
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
  # several GPUs (DDP) / mixed precision:
  accelerate launch --multi_gpu -m reward.cli train ... --mixed-precision bf16
"""

TRAIN_HELP = {
    "epochs": "passes over each split's training part",
    "batch_size": "images per optimisation step, per process",
    "lr": "learning rate",
    "weight_decay": "weight decay",
    "optimizer": "optimiser",
    "margin": "margin of the pairwise ranking loss",
    "rank_weight": "weight lambda of the ranking loss next to MSE",
    "seed": "seed of the splits, the data order and tiny models' random weights",
    "n_splits": "number of seeded random splits (the field's protocol: 10)",
    "split_by": "split by image, or keep each prompt's images together (stricter)",
    "test_fraction": "fraction of the data in each split's test part",
    "val_fraction": "fraction of the data carved from training for model selection (never test)",
    "select_metric": "validation metric that picks the best epoch",
    "use_cache": "encode each image once and train on the cached embeddings",
    "cache_dir": "feature cache folder (default: $MST_CLIPIQA_CACHE or ~/.cache/mst-clipiqa/features)",
    "encode_batch_size": "images per encoder batch",
    "eval_batch_size": "samples per evaluation batch",
    "num_workers": "data-loading worker processes",
    "mixed_precision": "autocast precision (accelerate)",
    "cpu": "use the CPU even if a GPU is present",
    "lora_rank": "train a LoRA adapter of this rank on the fusion and heads instead of the weights",
    "lora_alpha": "LoRA scaling alpha",
    "lora_dropout": "LoRA dropout",
    "lora_encoders": "also adapt the vision encoders' attention (disables the feature cache)",
    "adapter_name": "name of the trained adapter",
    "progress": "show progress bars",
}
CLI_EXCLUDED = ("outputs",)  # set through the model options
FLAGS = {"use_cache": "--no-cache", "progress": "--quiet"}  # boolean options that default to on


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", required=True, help="tiny | tiny-hf | paper-A | paper-B | DIR | HUB_ID "
                                                          "(see 'models' below)")
    group.add_argument("--variant", help="head kind for tiny/paper models: A (template) or B (prompt); "
                                         "comma-separated for one per output")
    group.add_argument("--outputs", help="comma-separated output names, e.g. quality,correspondence")
    group.add_argument("--adapter", action="append", default=[], metavar="DIR",
                       help="load a LoRA adapter (repeatable; the last one is active)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: auto)")


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", required=True, choices=sorted(LOADERS) + ["synthetic"],
                       help="data set kind; 'synthetic': the procedural set in --data (generated if absent)")
    group.add_argument("--data", required=True, type=Path, help="data set folder or annotation file")
    group.add_argument("--csv-columns", metavar="KEY=COLUMN,...",
                       help="for --dataset csv: image=..., prompt=..., group=... and score columns, "
                            "e.g. image=file,prompt=text,quality=mos")


def _csv_kwargs(spec: str | None) -> dict[str, Any]:
    if not spec:
        return {}
    pairs = dict(item.split("=", 1) for item in split_list(spec) if "=" in item)
    if len(pairs) != len(split_list(spec)):
        raise ValueError(f"--csv-columns {spec!r}: expected KEY=COLUMN pairs separated by commas")
    kwargs = {f"{key}_col": pairs.pop(key) for key in ("image", "prompt", "group") if key in pairs}
    if pairs:
        kwargs["score_cols"] = pairs
    return kwargs


def load_data(kind: str, path: str | Path, csv_columns: str | None = None) -> QualityDataset:
    """A data set by kind (``load_dataset`` kinds, or ``synthetic`` to generate one in ``path``)."""
    if kind == "synthetic":
        return load_synthetic_dataset(Path(path))
    extra = _csv_kwargs(csv_columns)
    if extra and kind != "csv":
        raise ValueError(f"--csv-columns applies to --dataset csv only, not {kind!r}")
    return load_dataset(kind, path, **extra)


def _model_from_args(args: argparse.Namespace) -> MSTCLIPIQA:
    model = create_model(args.model, args.variant, split_list(args.outputs), adapters=args.adapter)
    return model.to(resolve_device(args.device)).eval()


# ---------------------------------------------------------------------------- train


def _add_train_config_options(parser: argparse.ArgumentParser) -> None:
    choices = {"optimizer": OPTIMIZERS, "split_by": BY_CHOICES, "select_metric": SELECT_METRICS,
               "mixed_precision": PRECISIONS}
    group = parser.add_argument_group("training (defaults: the paper's reference setup)")
    for f in fields(TrainConfig):
        if f.name in CLI_EXCLUDED:
            continue
        flag, default = "--" + f.name.replace("_", "-"), f.default if f.default is not MISSING else None
        if isinstance(default, bool):
            group.add_argument(FLAGS.get(f.name, flag), dest=f.name, action="store_false" if default else "store_true",
                               default=default, help=("do not " if default else "") + TRAIN_HELP[f.name])
            continue
        kind = float if isinstance(default, float) else int if isinstance(default, int) else str
        group.add_argument(flag, dest=f.name, type=kind, default=default,
                           choices=sorted(choices[f.name]) if f.name in choices else None,
                           help=TRAIN_HELP[f.name] + ("" if default is None else f" (default: {default})"))


def add_train_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="train on a data set over repeated splits; writes the model, a report and plots",
        description="Train the fusion and heads (or a LoRA adapter) on a data set, with the field's protocol: "
                    "N seeded train/test splits, model selection on a validation part carved from training, "
                    "test metrics per split and their mean/median/std. Frozen encoders run once per image "
                    "(feature cache). Writes OUT/model (save_pretrained; OUT/adapter for LoRA), "
                    "OUT/report.json and OUT/plots/*.png.",
        epilog=EPILOG_MODELS + "\n" + TRAIN_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_options(parser)
    _add_data_options(parser)
    parser.add_argument("--out", required=True, type=Path, help="run folder (checkpoints, model, report, plots)")
    parser.add_argument("--split-file", type=Path, help="use the splits in this JSON file (save_splits format) "
                                                        "instead of making --n-splits of them")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    _add_train_config_options(parser)
    parser.set_defaults(func=run_train)
    return parser


def run_train(args: argparse.Namespace) -> int:
    options = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name not in CLI_EXCLUDED}
    if args.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device {args.device}: train places the model with accelerate; pick a GPU with "
                         "CUDA_VISIBLE_DEVICES=N (or use auto, cpu, cuda)")
    options["cpu"] = args.cpu or args.device == "cpu"
    config = TrainConfig(**options, outputs=split_list(args.outputs))
    dataset = load_data(args.dataset, args.data, args.csv_columns)
    splits = load_splits(args.split_file, n=len(dataset), groups=dataset.groups()) if args.split_file else None
    model = create_model(args.model, args.variant, split_list(args.outputs), config.seed, args.adapter)
    report = Trainer(model, dataset, config, args.out, splits, args.resume).run()
    print(_summary_table(report["summary"]["test"], "test (over splits)"))
    print(f"\nmodel: {report['model_dir']}\nreport: {args.out / 'report.json'}")
    return 0


def _summary_table(summary: dict[str, dict[str, dict[str, float]]], title: str) -> str:
    lines = [title, f"{'output':<16}{'metric':<15}{'mean':>8}{'median':>8}{'std':>8}"]
    for output, metrics in summary.items():
        for metric, stats in metrics.items():
            lines.append(f"{output:<16}{metric:<15}" + "".join(f"{stats[k]:>8.4f}" for k in ("mean", "median", "std")))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- eval


def add_eval_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "eval", help="evaluate a model on a data set (per split and summarised, or on all of it)",
        description="Evaluate a model: SRCC, PLCC (linear and after a 4-parameter logistic), KRCC and RMSE "
                    "per output, on the test part of each split in --split-file with mean/median/std over "
                    "splits, or on the whole data set without a split file (zero-shot).",
        epilog=EPILOG_MODELS + "\nexample:\n  mst-clipiqa eval --model runs/agiqa3k/model --dataset agiqa3k "
                               "--data /data/AGIQA-3K --split-file splits.json --json-out eval.json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_model_options(parser)
    _add_data_options(parser)
    parser.add_argument("--split-file", type=Path, help="splits JSON (save_splits format); default: all images")
    parser.add_argument("--json-out", type=Path, help="also write the full results as JSON here")
    parser.add_argument("--batch-size", type=int, default=32, help="images per encoder batch (default: 32)")
    parser.add_argument("--cache-dir", type=Path, help="feature cache folder (default: ~/.cache/mst-clipiqa)")
    parser.add_argument("--no-cache", action="store_true", help="encode in memory, leave the cache alone")
    parser.set_defaults(func=run_eval)
    return parser


def run_eval(args: argparse.Namespace) -> int:
    dataset = load_data(args.dataset, args.data, args.csv_columns)
    splits = load_splits(args.split_file, n=len(dataset), groups=dataset.groups()) if args.split_file else None
    model = _model_from_args(args)
    result = evaluate_model(model, dataset, splits, split_list(args.outputs), args.cache_dir,
                            not args.no_cache, args.batch_size)
    if splits:
        print(_summary_table(result["summary"], f"test parts of {len(splits)} splits"))
    else:
        print(_summary_table({o: {m: {"mean": v, "median": v, "std": float("nan")} for m, v in ms.items()}
                              for o, ms in result["all"].items()}, f"all {len(dataset)} images"))
    if args.json_out:
        write_json(args.json_out, result)
    return 0


# ---------------------------------------------------------------------------- score


def add_score_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "score", help="score image files or folders",
        description="Score images with every output of a model (or those in --outputs). Prompt-anchored "
                    "models (variant B) need prompts: --prompt for all images, or --prompts FILE with one "
                    "line per image (in the order the images are listed; folders expand to sorted names).",
        epilog=EPILOG_MODELS + "\nexamples:\n  mst-clipiqa score --model runs/agiqa3k/model photos/\n"
                               "  mst-clipiqa score --model tiny --variant B a.png b.png --prompt 'a cat' "
                               "--format json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path, help="image files and/or folders of images")
    _add_model_options(parser)
    parser.add_argument("--prompt", help="one generation prompt for every image")
    parser.add_argument("--prompts", type=Path, help="text file: one prompt per line, one line per image")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    parser.add_argument("--output", type=Path, help="write to this file instead of standard output")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch (default: 32)")
    parser.set_defaults(func=run_score)
    return parser


def _image_paths(items: Sequence[Path]) -> list[Path]:
    paths = []
    for item in items:
        if item.is_dir():
            paths += list_images(item)
        elif item.is_file():
            paths.append(item)
        else:
            raise ValueError(f"{item} is neither an image file nor a folder")
    if not paths:
        raise ValueError(f"no images found in {[str(i) for i in items]}")
    return paths


def _prompts(args: argparse.Namespace, n: int) -> list[str] | None:
    if args.prompt is not None and args.prompts is not None:
        raise ValueError("pass --prompt (one for all) or --prompts FILE (one per image), not both")
    if args.prompt is not None:
        return [args.prompt] * n
    if args.prompts is None:
        return None
    lines = [line.strip() for line in args.prompts.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) != n:
        raise ValueError(f"{args.prompts} has {len(lines)} prompts for {n} images; expected one line per image")
    return lines


def score_files(model: MSTCLIPIQA, paths: Sequence[Path], prompts: Sequence[str] | None, outputs: Sequence[str],
                batch_size: int = 32) -> dict[str, list[float]]:
    """Every requested output for each image, encoding each image once."""
    features = encode_features(model, paths, prompts, batch_size, progress=len(paths) > batch_size)
    scores = predict_features(model, features.to(model.device), range(len(paths)), outputs)
    return {o: scores[o].tolist() for o in outputs}


def run_score(args: argparse.Namespace) -> int:
    model = _model_from_args(args)
    paths = _image_paths(args.images)
    prompts = _prompts(args, len(paths))
    if model.config.needs_prompts and prompts is None:
        raise ValueError("this model has a prompt-anchored head (variant B): pass --prompt TEXT or --prompts FILE")
    outputs = split_list(args.outputs) or list(model.outputs)
    scores = score_files(model, paths, prompts, outputs, args.batch_size)
    rows = [{"image": str(p), **{o: scores[o][i] for o in outputs}} for i, p in enumerate(paths)]
    text = _format_rows(rows, outputs, args.format)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def _format_rows(rows: list[dict[str, Any]], outputs: Sequence[str], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(rows, indent=1) + "\n"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["image", *outputs], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    width = max(len("image"), *(len(r["image"]) for r in rows))
    lines = [f"{'image':<{width}}" + "".join(f"  {o:>14}" for o in outputs)]
    lines += [f"{r['image']:<{width}}" + "".join(f"  {r[o]:>14.4f}" for o in outputs) for r in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- entry point


COMMANDS: list[tuple[str, Callable[[argparse._SubParsersAction], argparse.ArgumentParser]]] = [
    ("train", add_train_command),
    ("eval", add_eval_command),
    ("score", add_score_command),
    ("rank", add_rank_command),
    ("demo", add_demo_command),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mst-clipiqa",
        description="MST-CLIPIQA image-quality model: train it, evaluate it, score images with it. "
                    "Run 'mst-clipiqa COMMAND --help' for each command.",
        epilog=EPILOG_MODELS, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for _, add_parser in COMMANDS:
        add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``mst-clipiqa``; returns the exit status (2 for bad input)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as error:
        print(f"mst-clipiqa {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
