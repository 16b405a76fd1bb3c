#!/usr/bin/env python
"""One cached epoch of head training (paper-size fusion and both heads) with 1 vs 2 intra-op threads, side by side.

    python benchmarks/bench_threads.py [--samples 2385] [--busy 2] [--rounds 3]

``--busy N`` starts N spinning processes for the run (a busy machine: other jobs on
the same cores), ended by their process ids at the end. Rounds alternate the thread
counts so that load drifts hit both alike. The library's policy
(``reward.training.threads``) is 1 thread on the CPU unless ``TrainConfig.threads`` says otherwise.
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from mst_clipiqa.reward.model.fusion import GatedFusion  # noqa: E402
from mst_clipiqa.reward.model.heads import PromptHead, TemplateHead  # noqa: E402
from mst_clipiqa.reward.training.losses import mse_rank_loss  # noqa: E402


def spin() -> None:
    while True:
        pass


def epoch_seconds(samples: int, threads: int, batch: int = 8) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    fusion, template, prompt = GatedFusion(512, 512, 512, 128, "random"), TemplateHead(), PromptHead(512, 512)
    params = [*fusion.parameters(), *template.parameters(), *prompt.parameters()]
    optimizer = torch.optim.Adam(params, lr=1e-4, weight_decay=1e-3)
    f_c, f_f = torch.randn(samples, 512), torch.randn(samples, 512)
    text = torch.nn.functional.normalize(torch.randn(5, 512), dim=-1)
    states, mask = torch.randn(batch, 20, 512), torch.ones(batch, 20, dtype=torch.bool)
    target = torch.rand(samples) * 4 + 1
    start = time.perf_counter()
    for i in range(0, samples - batch + 1, batch):
        z = fusion(f_c[i:i + batch], f_f[i:i + batch])
        y = target[i:i + batch]
        loss = mse_rank_loss(template(z, text), y) + mse_rank_loss(prompt(z, states, mask), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2385, help="training samples (AGIQA-3K's reference split)")
    parser.add_argument("--busy", type=int, default=0, help="spinning processes to start for the run")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    try:
        times = {1: [], 2: []}
        for r in range(args.rounds):
            for threads in ((1, 2) if r % 2 == 0 else (2, 1)):
                times[threads].append(epoch_seconds(args.samples, threads))
    finally:
        for p in spinners:
            p.terminate()
            p.join()
    print(f"cached epoch, {args.samples} samples, batch 8, {args.busy} busy process(es), "
          f"{multiprocessing.cpu_count()} cores; median of {args.rounds} (min-max)")
    for threads, values in times.items():
        print(f"  {threads} thread(s): {statistics.median(values):7.2f} s  ({min(values):.2f}-{max(values):.2f})")
    print(f"  2 threads / 1 thread: {statistics.median(times[2]) / statistics.median(times[1]):.2f}x")


if __name__ == "__main__":
    main()
