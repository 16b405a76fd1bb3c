#!/usr/bin/env python
"""Is sigma calibrated? Each uncertainty source against the absolute error on held-out images.

    python benchmarks/bench_uncertainty.py [--data examples/data/agiqa3k-mini] [--model tiny] [--ensemble 5]
        [--epochs 30] [--seeds 0,1,2]

Per seed: one 8:2 split of the AGIQA-3K annotation in ``--data`` (grouped by prompt, as the field splits
AGIQA-3K; the shipped 48-image sample by default, the full set when pointed at it), an ensemble of
``--ensemble`` fusion+head members trained on bootstrap resamples of the training part (the real Trainer),
then on the test part, in MOS units, per source (head spread, stream disagreement, ensemble spread, their
total): the Spearman correlation of sigma with |score - MOS| and the coverage of score +- 2 sigma (a
calibrated Gaussian sigma covers ~95%). Mean and standard error over seeds, CPU and wall time.

With ``--model tiny`` (the default, offline) the encoders are tiny and random: the numbers then show the
machinery and how each source behaves, not how well a real MST-CLIPIQA knows its error.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness.machine import cpu_name  # noqa: E402
from benchmarks.harness.report import markdown_table  # noqa: E402
from mst_clipiqa.reward import MSTCLIPIQAReward, load_model  # noqa: E402
from mst_clipiqa.reward.datasets import load_dataset  # noqa: E402
from mst_clipiqa.reward.datasets.splits import make_splits  # noqa: E402
from mst_clipiqa.reward.training import TrainConfig, train  # noqa: E402
from mst_clipiqa.reward.utils import rescale  # noqa: E402

SOURCES = ("head", "streams", "ensemble", "total")


def one_seed(args: argparse.Namespace, seed: int, work: Path) -> dict[str, tuple[float, float]]:
    dataset = load_dataset("agiqa3k", args.data)
    split = make_splits(dataset, n_splits=1, by="prompt", seed=seed)[0]
    config = TrainConfig(epochs=args.epochs, lr=1e-3, batch_size=16, n_splits=1, seed=seed, ensemble=args.ensemble,
                         cache_dir=str(work / "cache"), progress=False, cpu=True)
    report = train(load_model(args.model, seed=seed), dataset, config, work / f"run{seed}", splits=[split])
    reward = MSTCLIPIQAReward(load_model(report["model_dir"]))
    paths = [dataset.samples[i].image for i in split.test]
    result = reward.score(paths, return_uncertainty=True)
    low, high = reward.model.config.score_ranges["quality"]
    labels = reward.model.config.label_ranges["quality"]
    factor = (labels[1] - labels[0]) / (high - low)
    mos = torch.tensor(dataset.score_array("quality")[split.test])
    error = (rescale(result.scores, (low, high), labels) - mos).abs()
    sigmas = {**result.sources, "total": result.sigma}
    return {s: (float(spearmanr(sigmas[s], error)[0]), float((error <= 2 * factor * sigmas[s]).float().mean()))
            for s in SOURCES}


def main(argv: list[str] | None = None) -> dict[str, tuple[float, float]]:
    """Print the table; return each source's mean (Spearman, coverage) over seeds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "examples" / "data" / "agiqa3k-mini")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--ensemble", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    wall, cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as work:
        results = [one_seed(args, seed, Path(work)) for seed in seeds]
    rows, means = [], {}
    for source in SOURCES:
        rho, cover = (np.array([r[source][j] for r in results]) for j in (0, 1))
        means[source] = (float(rho.mean()), float(cover.mean()))
        se = (lambda x: x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan"))
        rows.append([source, f"{rho.mean():+.3f} ± {se(rho):.3f}", f"{cover.mean():.3f} ± {se(cover):.3f}"])
    print(f"model {args.model}, ensemble {args.ensemble}, {args.epochs} epochs, data {args.data.name}, "
          f"seeds {seeds}; {cpu_name()}, 1 thread")
    print(markdown_table(["source", "Spearman(sigma, abs error)", "coverage of score ± 2 sigma"], rows))
    print(f"wall {time.perf_counter() - wall:.1f} s, CPU {time.process_time() - cpu:.1f} s")
    return means


if __name__ == "__main__":
    main()
