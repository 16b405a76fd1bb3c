#!/usr/bin/env python
"""Why the template head (variant A) trained alone barely moves, and what lets it learn; side by side.

    python benchmarks/bench_template_head.py [--sets clip-like,tiny-sample,paper-sample] [--lrs 1e-4,1e-3]
        [--options linear,log,log+1e-1] [--emas 0,0.99] [--wds 1e-3,1e-1] [--inits random,zero_shot]
        [--schedules constant,cosine] [--seeds 0,1,2] [--epochs 60] [--splits 3]

    # the selection table of docs/template-head.md (raw weights against their EMA, two weight decays):
    python benchmarks/bench_template_head.py --sets clip-like --options log+1e-1 --lrs 1e-3 --epochs 30 \
        --emas 0,0.99 --wds 1e-3,1e-1 --seeds 0,1,2

    # the default recipe before / now on the 98-image sample (docs/template-head.md, first table):
    MST_CLIPIQA_AGIQA3K_98=path/to/sample python benchmarks/bench_template_head.py --sets paper-sample \
        --options log,log+1e-1 --lrs 1e-4 --splits 5 --seeds 0,1,2

    # the rule for small validation parts (docs/template-head.md, first table): the default against forced selection
    MST_CLIPIQA_AGIQA3K_98=path/to/sample python benchmarks/bench_template_head.py --sets paper-sample \
        --options log+1e-1 --lrs 1e-4 --splits 5 --seeds 0,1,2 --min-val-groups 3,1

Seeds are the outer loop, so the settings compared run interleaved; each row reports its CPU and wall
seconds, and a summary gives test - probe per setting as mean +- standard error across the seeds.

Variant A alone (template head, fusion from the reference's random start) trains
with the real ``Trainer`` on cached features of

- ``clip-like``: 240 synthetic embeddings with real CLIP's geometry (level texts at
  pairwise cosine 0.9, image-text cosines differing by 0.01-0.04; see
  ``reward.datasets.clip_geometry``), 512-d;
- ``tiny-sample`` / ``paper-sample``: the 98-image AGIQA-3K sample through the tiny
  random towers / the paper architecture with random weights (slow to encode: ~1 min).

Per temperature option (``linear``: the old parameter ``tau`` itself, learned at the
fusion's rate; ``log``: ``log tau`` at the fusion's rate; ``log+X``: ``log tau`` at its own
rate X), learning rate, EMA decay of the weights (0: the raw weights are validated and
kept), weight decay, fusion start, schedule and seed (of the splits, the data order and
the initial weights, as in the tests) it prints the epoch kept per split, the softmax's
entropy (fraction of log K) and the gradient the loss sends into the fusion at the start,
the entropy after the first and the last epoch of split 0, the final ``tau``, and test
SRCC next to the ridge probe on the same features and their difference.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from accelerate.utils import set_seed  # noqa: E402
from torch import nn  # noqa: E402

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig  # noqa: E402
from mst_clipiqa.reward.datasets import load_agiqa3k  # noqa: E402
from mst_clipiqa.reward.datasets.clip_geometry import clip_like_features  # noqa: E402
from mst_clipiqa.reward.model.heads import TemplateHead  # noqa: E402
from mst_clipiqa.reward.training import TrainConfig, Trainer  # noqa: E402
from mst_clipiqa.reward.training.features import CachedFeatures, encode_files  # noqa: E402
from mst_clipiqa.reward.training.saturation import softmax_stats  # noqa: E402

# the shipped 48-image sample; MST_CLIPIQA_AGIQA3K_98 names a larger one (the figures in docs came from 98 images)
SAMPLE = Path(os.environ.get("MST_CLIPIQA_AGIQA3K_98", ROOT / "examples" / "data" / "agiqa3k-mini"))
OPTIONS = {"linear": None, "log": None, "log+1e-2": 1e-2, "log+1e-1": 1e-1}


class LinearTemperatureHead(TemplateHead):
    """The head before the change: ``tau`` itself is the parameter."""

    _load_from_state_dict = nn.Module._load_from_state_dict

    def __init__(self, num_levels: int = 5, temperature: float = 100.0):
        nn.Module.__init__(self)
        self.linear_temperature = nn.Parameter(torch.tensor(float(temperature)))
        self.register_buffer("levels", torch.arange(1, num_levels + 1, dtype=torch.float32), persistent=False)

    @property
    def temperature(self) -> torch.Tensor:
        return self.linear_temperature


def head_model(dim: int, text_features: torch.Tensor, option: str, init: str = "random", seed: int = 0) -> MSTCLIPIQA:
    """Fusion + template head of the paper's sizes (``dim``, hidden 128) over tiny towers that never run, started
    as ``Trainer(init=init, seed=seed)`` starts it (the tests' weights)."""
    config = MSTCLIPIQAConfig.tiny("A", fusion_hidden=128)
    for backbone in (config.coarse, config.fine):
        backbone.arch["embed_dim"] = dim
    torch.manual_seed(0)
    model = MSTCLIPIQA(config)
    model.template_features = text_features
    set_seed(seed)
    model.reinitialize(init)
    if option == "linear":
        model.heads["quality"] = LinearTemperatureHead()
    return model


def feature_sets(names: list[str]) -> dict:
    sets = {}
    if "clip-like" in names:
        c = clip_like_features(240)
        sets["clip-like"] = (c.dataset, CachedFeatures(c.f_coarse, c.f_fine), c.text_features)
    for name, config in (("tiny-sample", MSTCLIPIQAConfig.tiny("A")),
                         ("paper-sample", MSTCLIPIQAConfig.paper("A", pretrained=False))):
        if name in names:
            torch.manual_seed(0)
            towers, dataset = MSTCLIPIQA(config).eval(), load_agiqa3k(SAMPLE)
            f_c, f_f = encode_files(towers, [s.image for s in dataset.samples], batch_size=14)
            sets[name] = (dataset, CachedFeatures(f_c, f_f), towers.template_features)
    return sets


def entropy(model: MSTCLIPIQA, features: CachedFeatures) -> float:
    with torch.no_grad():
        z = model.fusion(features.f_coarse, features.f_fine)
        return softmax_stats(model.heads["quality"], z, model.template_features)["entropy"]


def run(name: str, data: tuple, option: str, lr: float, epochs: int, splits: int, ema: float = 0.0,
        weight_decay: float = 1e-3, init: str = "random", seed: int = 0, schedule: str = "constant",
        val_fraction: float = 0.1, min_val_groups: int = 3) -> tuple:
    """One training run; its printed row, and test SRCC and the probe's (means over the splits)."""
    dataset, features, text = data
    model = head_model(features.f_coarse.shape[1], text, option, init, seed)
    curve = []
    config = TrainConfig(epochs=epochs, n_splits=splits, lr=lr, temperature_lr=OPTIONS[option], init="keep",
                         ema_decay=ema, weight_decay=weight_decay, seed=seed, schedule=schedule, outputs=("quality",),
                         val_fraction=val_fraction, min_val_groups=min_val_groups,
                         progress=False, cpu=True)
    trainer = Trainer(model, dataset, config, tempfile.mkdtemp(), features=features,
                      on_epoch_end=lambda k, e, r: curve.append(entropy(model, features)) if k == 0 else None)
    cpu, wall = time.process_time(), time.perf_counter()
    report = trainer.run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    start, s = report["saturation"]["quality"], report["summary"]
    test, probe = s["test"]["quality"]["srcc"]["mean"], s["probe_test"]["quality"]["srcc"]["mean"]
    epochs_kept = ",".join(str(r["best_epoch"]) for r in report["splits"])
    row = (f"{name:<13} {option:<9} {lr:<7g} {ema:<6g} {weight_decay:<6g} {init:<9} {schedule:<8} "
           f"{val_fraction:<5g} {min_val_groups:<4} {seed:<4} "
           f"{epochs_kept:<14} "
           f"{start['entropy']:>6.2f} {start['fusion_grad_norm']:>9.3g} "
           f"{curve[0]:>6.2f} {curve[-1]:>6.2f} {float(model.heads['quality'].temperature.detach()):>6.1f} "
           f"{test:>6.3f} {probe:>6.3f} {test - probe:>+6.3f} {cpu:>6.1f} {wall:>6.1f}")
    return row, test, probe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="clip-like,tiny-sample")
    parser.add_argument("--options", default=",".join(OPTIONS))
    parser.add_argument("--lrs", default="1e-4,1e-3")
    parser.add_argument("--emas", default="0", help="EMA decays of the trained weights (0: raw weights)")
    parser.add_argument("--wds", default="1e-3", help="weight decays")
    parser.add_argument("--inits", default="random", help="fusion starts: random (the reference's), zero_shot")
    parser.add_argument("--seeds", default="0", help="split / data-order seeds")
    parser.add_argument("--schedules", default="constant", help="learning-rate schedules: constant, cosine")
    parser.add_argument("--val-fractions", default="0.1",
                        help="validation fractions (0: no validation part, the last epoch is kept)")
    parser.add_argument("--min-val-groups", default="3",
                        help="fewest prompts a validation part must hold (1: select on any part)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--splits", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    sets = feature_sets(args.sets.split(","))
    print(f"{'set':<13} {'tau':<9} {'lr':<7} {'ema':<6} {'wd':<6} {'init':<9} {'schedule':<8} {'val':<5} "
          f"{'minv':<4} {'seed':<4} "
          f"{'epochs':<14} "
          f"{'H0':>6} {'grad0':>9} {'H1':>6} {'Hend':>6} {'tau_end':>6} "
          f"{'test':>6} {'probe':>6} {'gap':>6} {'cpu_s':>6} {'wall_s':>6}")
    settings = [(name, option, *rest) for name in sets for option in args.options.split(",")
                for rest in itertools.product(map(float, args.lrs.split(",")), map(float, args.emas.split(",")),
                                              map(float, args.wds.split(",")), args.inits.split(","),
                                              args.schedules.split(","), map(float, args.val_fractions.split(",")),
                                              map(int, args.min_val_groups.split(",")))]
    results: dict[tuple, list[tuple[float, float]]] = {setting: [] for setting in settings}
    for seed in map(int, args.seeds.split(",")):  # seeds outermost: the settings compared are interleaved
        for setting in settings:
            name, option, lr, ema, wd, init, schedule, val, min_val = setting
            row, test, probe = run(name, sets[name], option, lr, args.epochs, args.splits, ema, wd, init, seed,
                                   schedule, val, min_val)
            results[setting].append((test, probe))
            print(row, flush=True)
    print("\nmean over seeds; gap = test - probe, +- its standard error across seeds")
    for (name, option, lr, ema, wd, init, schedule, val, min_val), pairs in results.items():
        test, probe = np.array(pairs).T
        gap = test - probe
        se = gap.std(ddof=1) / np.sqrt(len(gap)) if len(gap) > 1 else float("nan")
        print(f"{name:<13} {option:<9} {lr:<7g} {ema:<6g} {wd:<6g} {init:<9} {schedule:<8} {val:<5g} "
              f"{min_val:<4} n={len(gap):<3} "
              f"test {test.mean():.3f} probe {probe.mean():.3f} gap {gap.mean():+.3f} +- {se:.3f}")


if __name__ == "__main__":
    main()
