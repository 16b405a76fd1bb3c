#!/usr/bin/env python
"""The sweep behind the protocol recipe's learning rate, schedule and epoch count.

    python benchmarks/sweep_recipe.py [--lrs 5e-6,1e-4,1e-3] [--epochs 15,30,60] [--splits 3]
        [--models tiny-A,tiny-B,paper-A,paper-B] [--data synthetic,agiqa3k-mini]

Every combination of learning rate x schedule x epochs trains the fusion and
heads with the real ``Trainer`` (Adam, weight decay 1e-3, batch 8, ``init="keep"``
on zero-shot-initialised models) on the same seeded protocol splits of

- the synthetic set (``--scenes`` 12: 252 images, split by image) and
- the real 48-image AGIQA-3K sample in examples/data (grouped by prompt),

with tiny variant A (template heads), tiny variant B (prompt heads) and the
paper architecture with random weights (``paper-A``, ``paper-B``), training
both outputs (quality, correspondence). One more row per pair is the
reference's optimisation (random init, lr 5e-6, 20 epochs) on the same splits.

Per row it prints the mean validation SRCC (what the choice is made on: the
test parts are not looked at), the training part's SRCC (how well the heads fit
what they train on), test SRCC of the chosen epochs, the ridge probe's test SRCC
on the same features and splits, the untrained test SRCC, optimizer steps per
split, the mean chosen epoch, and how far the trained weights moved from their
start (||w - w0|| / ||w0|| over all trained tensors). The encoders are random:
the numbers say which settings move and fit the heads, not how good a model
with CLIP weights would be.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig  # noqa: E402
from mst_clipiqa.reward.datasets import load_agiqa3k, make_splits, make_synthetic_dataset  # noqa: E402
from mst_clipiqa.reward.training import TrainConfig, Trainer  # noqa: E402
from mst_clipiqa.reward.training.metrics import srcc  # noqa: E402

SAMPLE = ROOT / "examples" / "data" / "agiqa3k-mini"
OUTPUTS = ("quality", "correspondence")
REFERENCE = {"init": "random", "lr": 5e-6, "schedule": "constant", "epochs": 20}


def model_factory(name: str) -> Callable[[], MSTCLIPIQA]:
    """``tiny-A``, ``tiny-B``, ``paper-A``, ``paper-B`` (the paper architecture with random weights)."""
    size, variant = name.split("-")
    make = MSTCLIPIQAConfig.tiny if size == "tiny" else partial(MSTCLIPIQAConfig.paper, pretrained=False)
    heads = dict.fromkeys(OUTPUTS, {"A": "template", "B": "prompt"}[variant])
    return lambda: MSTCLIPIQA(make(variant, heads=heads))


def run_one(make_model, dataset, settings: dict, splits: int, workdir: Path, cache: Path) -> dict[str, float]:
    torch.manual_seed(0)
    model = make_model()
    config = TrainConfig(**settings, n_splits=splits, outputs=OUTPUTS, cache_dir=str(cache), progress=False,
                         cpu=True)
    trainer = Trainer(model, dataset, config, workdir)
    report = trainer.run()
    initial = trainer.initial_state
    splits = make_splits(dataset, splits, config.test_fraction, config.val_fraction,
                         config.resolved_split_by(dataset), seed=config.seed)
    moved, fit = [], []
    for k, split in enumerate(splits):
        best = load_file(str(workdir / f"split_{k:02d}" / "best.safetensors"))
        change = sum(float((best[n].float() - initial[n].float().cpu()).pow(2).sum()) for n in initial)
        size = sum(float(initial[n].float().pow(2).sum()) for n in initial)
        moved.append((change / size) ** 0.5)
        trainer.load_state(best)
        predictions = trainer.predict(split.train)
        fit.append(statistics.mean(srcc(predictions[o], dataset.score_array(o)[split.train]) for o in OUTPUTS))
    summary = report["summary"]

    def mean_srcc(part: str) -> float:
        return statistics.mean(summary[part][o]["srcc"]["mean"] for o in OUTPUTS)

    return {"val": statistics.mean(r["best_val_score"] for r in report["splits"]), "train": statistics.mean(fit),
            "test": mean_srcc("test"), "probe": mean_srcc("probe_test"), "untrained": mean_srcc("untrained_test"),
            "steps": settings["epochs"] * math.ceil(len(splits[0].train) / config.batch_size),
            "best_epoch": statistics.mean(r["best_epoch"] for r in report["splits"]),
            "moved": statistics.mean(moved)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lrs", default="5e-6,1e-4,3e-4,1e-3,3e-3")
    parser.add_argument("--schedules", default="constant,cosine")
    parser.add_argument("--epochs", default="30")
    parser.add_argument("--scenes", type=int, default=12, help="scenes of the synthetic set (21 images each)")
    parser.add_argument("--splits", type=int, default=3, help="protocol splits per row (the recipe uses 10)")
    parser.add_argument("--models", default="tiny-A,tiny-B",
                        help="tiny-A, tiny-B, paper-A, paper-B (paper: its architecture with random weights)")
    parser.add_argument("--data", default="synthetic,agiqa3k-mini", help="synthetic, agiqa3k-mini")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    grid = [{"init": "keep", "lr": float(lr), "schedule": s, "epochs": int(e)} for lr, s, e in itertools.product(
        args.lrs.split(","), args.schedules.split(","), args.epochs.split(","))]
    grid.append(REFERENCE)
    rows, started = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        load = {"synthetic": lambda: make_synthetic_dataset(tmp / "synthetic", n_scenes=args.scenes),
                "agiqa3k-mini": lambda: load_agiqa3k(SAMPLE)}
        data = {name: load[name]() for name in args.data.split(",")}
        for model_name, (data_name, dataset) in itertools.product(args.models.split(","), data.items()):
            make_model = model_factory(model_name)
            for i, settings in enumerate(grid):
                result = run_one(make_model, dataset, settings, args.splits, tmp / f"run-{len(rows)}", tmp / "cache")
                rows.append({"model": model_name, "data": data_name, **settings, **result})
                if i == 0:
                    print(_header())
                print(_row(rows[-1]), flush=True)
    print(f"\n{len(rows)} runs in {time.perf_counter() - started:.0f} s")
    print(_ranking(rows, grid))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return {"rows": rows}


def _header() -> str:
    return (f"{'model':<26}{'data':<14}{'init':<10}{'lr':>8}{'schedule':>10}{'epochs':>7}{'val':>8}{'train':>8}"
            f"{'test':>8}{'probe':>8}{'untrained':>10}{'steps':>7}{'best ep':>8}{'moved':>8}")


def _row(r: dict) -> str:
    return (f"{r['model']:<26}{r['data']:<14}{r['init']:<10}{r['lr']:>8.0e}{r['schedule']:>10}"
            f"{r['epochs']:>7}{r['val']:>8.3f}{r['train']:>8.3f}{r['test']:>8.3f}{r['probe']:>8.3f}"
            f"{r['untrained']:>10.3f}{r['steps']:>7}{r['best_epoch']:>8.1f}{r['moved']:>8.3f}")


def _ranking(rows: list[dict], grid: list[dict]) -> str:
    """Settings ranked by validation SRCC averaged over every (model, data) pair (test parts not used)."""
    lines = ["settings ranked by mean validation SRCC over all (model, data) pairs:",
             f"{'init':<10}{'lr':>8}{'schedule':>10}{'epochs':>7}{'val':>8}{'test':>8}{'test - probe':>14}"]
    scored = []
    for settings in grid:
        mine = [r for r in rows if all(r[k] == v for k, v in settings.items())]
        scored.append((statistics.mean(r["val"] for r in mine), statistics.mean(r["test"] for r in mine),
                       statistics.mean(r["test"] - r["probe"] for r in mine), settings))
    for val, test, gap, s in sorted(scored, key=lambda t: -t[0]):
        lines.append(f"{s['init']:<10}{s['lr']:>8.0e}{s['schedule']:>10}{s['epochs']:>7}{val:>8.3f}"
                     f"{test:>8.3f}{gap:>14.3f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
