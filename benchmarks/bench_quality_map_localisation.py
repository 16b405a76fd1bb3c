#!/usr/bin/env python
"""Do quality maps point at a defect? Hit rates of a pasted local defect on tiny models, trained or not.

    python benchmarks/bench_quality_map_localisation.py [--seeds 0,1,2,3,4] [--steps 400] [--images 128]
        [--settings untrained,heads,map] [--temperature-init 10]

Images: smooth random colour fields at 64 px (a 4 x 4 grid of random colours, bilinearly upsampled), so a
defect is the only fine detail. Defect: Gaussian noise (std 0.5 x severity) in one 16 x 16 region aligned with
the tiny fine stream's 4 x 4 patch grid. Training set per seed: 512 images, half clean (label 5), half with the
defect in a random region at severity s ~ U(0.5, 1) (label 5 - 4 s), encoded once by the frozen tiny random
encoders; the fusion and template head train with Adam (lr 1e-2, batches of 64, 400 steps). Settings:

- ``untrained``: the tiny model's random fusion and head (the control: what the map's wiring alone gives);
- ``heads``: trained on the image score (what ``mst-clipiqa train`` does with frozen encoders);
- ``map``: trained through the map: the soft minimum over regions (``reward.region_score``'s form) fits the label.

The tiny config's head temperature (100) leaves its softmax saturated on these encoders and training then
stalls in some seeds; ``--temperature-init 10`` (the default here) avoids that.
Each seed draws a model, trains it and scores ``--images`` held-out clean images and the same images with the
defect (severity 1) in a random region. Reported per setting, mean +- standard error over seeds:
``min hit`` (the defective image's map is lowest in the defect's region), ``drop hit`` (that region's value
drops, from the clean image to the defective one, more than any other region's) and the mean image-score
drop. Chance for a hit is 1/16. The encoders are tiny and random: this measures what training makes of the
map's construction on synthetic defects, not what a real MST-CLIPIQA's maps do.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness.machine import cpu_name  # noqa: E402
from benchmarks.harness.report import markdown_table  # noqa: E402
from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward  # noqa: E402
from mst_clipiqa.reward.scoring.reward import soft_minimum  # noqa: E402
from mst_clipiqa.reward.training.param_groups import param_groups  # noqa: E402

SIZE, PATCH = 64, 16
GRID = SIZE // PATCH
SETTINGS = ("untrained", "heads", "map")


def smooth_images(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 3, 64, 64) smooth colour fields in [0, 1]."""
    low = torch.rand(n, 3, GRID, GRID, generator=generator)
    return torch.nn.functional.interpolate(low, size=SIZE, mode="bilinear", align_corners=False)


def paste_noise(images: torch.Tensor, regions: torch.Tensor, severity: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
    """``images`` with Gaussian noise of std 0.5 x severity in region ``regions[i]`` (row-major index)."""
    out = images.clone()
    for i, (region, s) in enumerate(zip(regions.tolist(), severity.tolist())):
        r, c = divmod(region, GRID)
        block = out[i, :, PATCH * r: PATCH * (r + 1), PATCH * c: PATCH * (c + 1)]
        block.add_(0.5 * s * torch.randn(block.shape, generator=generator)).clamp_(0, 1)
    return out


def training_set(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images, half clean (label 5), half with the defect at severity s ~ U(0.5, 1) (label 5 - 4 s)."""
    severity = torch.where(torch.rand(n, generator=generator) < 0.5, 0.5 + 0.5 * torch.rand(n, generator=generator),
                           torch.zeros(n))
    regions = torch.randint(GRID * GRID, (n,), generator=generator)
    return paste_noise(smooth_images(n, generator), regions, severity, generator), 5.0 - 4.0 * severity


def trained_reward(setting: str, seed: int, args: argparse.Namespace) -> MSTCLIPIQAReward:
    """A tiny model (random encoders, frozen) with its fusion and head trained as ``setting`` says, on
    ``args.train_images`` images encoded once, ``args.steps`` Adam steps of ``args.batch_size``."""
    torch.manual_seed(seed)
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny("A", init="random", temperature_init=args.temperature_init))
    reward = MSTCLIPIQAReward(model)  # frozen; the fusion and head are unfrozen below to train them
    if setting == "untrained":
        return reward
    generator = torch.Generator().manual_seed(seed)
    images, labels = training_set(args.train_images, generator)
    with torch.no_grad():
        f_coarse, f_fine, tokens = model.encode_images(images, tokens=True)
    for part in (model.fusion, model.heads):
        part.requires_grad_(True)
    optimizer = torch.optim.Adam(param_groups(model, args.lr, 0.1), lr=args.lr)
    for _ in range(args.steps):
        batch = torch.randint(len(images), (args.batch_size,), generator=generator)
        if setting == "map":
            predicted = soft_minimum(model.region_scores(f_coarse[batch], tokens[batch])["quality"].flatten(1), 0.25)
        else:
            predicted = model.score_features(f_coarse[batch], f_fine[batch])["quality"]
        loss = (predicted - labels[batch]).square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.requires_grad_(False)
    return reward


@torch.no_grad()
def hit_rates(reward: MSTCLIPIQAReward, n: int, seed: int) -> tuple[float, float, float]:
    """(min hit, drop hit, mean image-score drop) on ``n`` held-out images with the defect at severity 1."""
    generator = torch.Generator().manual_seed(10_000 + seed)
    clean = smooth_images(n, generator)
    regions = torch.randint(GRID * GRID, (n,), generator=generator)
    defective = paste_noise(clean, regions, torch.ones(n), generator)
    before, after = reward.quality_map(clean).flatten(1), reward.quality_map(defective).flatten(1)
    min_hit = (after.argmin(1) == regions).float().mean()
    drop_hit = ((before - after).argmax(1) == regions).float().mean()
    return float(min_hit), float(drop_hit), float((reward(clean) - reward(defective)).mean())


def mean_se(values: list[float]) -> str:
    se = np.std(values, ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{np.mean(values):.3f} ± {se:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-images", type=int, default=512)
    parser.add_argument("--temperature-init", type=float, default=10.0,
                        help="template head's initial temperature (the tiny config's 100 saturates its softmax)")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for setting in args.settings.split(","):
        if setting not in SETTINGS:
            raise SystemExit(f"--settings: unknown setting {setting!r}; expected some of {list(SETTINGS)}")
        start, results = time.perf_counter(), []
        for seed in seeds:
            results.append(hit_rates(trained_reward(setting, seed, args), args.images, seed))
            print(f"{setting} seed {seed}: min hit {results[-1][0]:.3f}, drop hit {results[-1][1]:.3f}, "
                  f"score drop {results[-1][2]:+.3f}", flush=True)
        seconds = (time.perf_counter() - start) / len(seeds)
        rows.append([setting, *(mean_se([r[k] for r in results]) for k in range(3)), f"{seconds:.0f}"])
    print(f"\n{len(seeds)} seeds, {args.steps} steps, {args.images} held-out images per seed, chance "
          f"{1 / GRID ** 2:.3f}; {cpu_name()}, 1 thread\n")
    print(markdown_table(["setting", "min hit", "drop hit", "score drop", "s / seed"], rows))


if __name__ == "__main__":
    main()
