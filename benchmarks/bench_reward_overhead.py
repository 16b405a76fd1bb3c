#!/usr/bin/env python
"""What the reward costs beyond its two bare frozen encoders (fwd+bwd w.r.t. the pixels, bf16 autocast), with
and without the weight-cast cache, timed interleaved with nothing else (no matmul reference beside them).

    python benchmarks/bench_reward_overhead.py --device cuda     # paper architecture, batches 256 and 64
    python benchmarks/bench_reward_overhead.py --smoke           # tiny model on the CPU (run by the test suite)

The goal (issue 13): the reward at most 1.02x the bare encoders at batch 256.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.gpu_reward import encoder_inputs, with_autocast_recasts  # noqa: E402
from benchmarks.harness.machine import device_name  # noqa: E402
from benchmarks.harness.timing import med, time_interleaved  # noqa: E402
from benchmarks.reward_workload import build_model, encoders_step, reward_step  # noqa: E402
from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward  # noqa: E402


def measure(model: MSTCLIPIQA, device: torch.device, batches: list[int], repeats: int) -> dict[int, dict[str, float]]:
    """Per batch size: median seconds of the reward, the bare encoders and the reward with autocast re-casting
    every frozen weight (as before the cast cache), over the encoders' time."""
    reward = MSTCLIPIQAReward(model, dtype=torch.bfloat16)
    size = model.fit_size
    out = {}
    for batch in batches:
        torch.manual_seed(0)
        images = torch.rand(batch, 3, size, size, device=device, requires_grad=True)
        steps = {"reward": reward_step(reward, images),
                 "encoders": encoders_step(model, *encoder_inputs(model, images), dtype=torch.bfloat16),
                 "reward, weights re-cast": with_autocast_recasts(reward_step(reward, images))}
        seconds = {name: med(t) for name, t in time_interleaved(steps, device, 2, repeats).items()}
        out[batch] = {**{f"{name} s": t for name, t in seconds.items()},
                      **{f"{name} / encoders": t / seconds["encoders"] for name, t in seconds.items()}}
    return out


def main(argv: list[str] | None = None) -> dict[int, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--smoke", action="store_true", help="the tiny model, batches 4 and 2")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.smoke:
        torch.manual_seed(0)
        model, batches = MSTCLIPIQA(MSTCLIPIQAConfig.tiny()).to(device).eval(), [4, 2]
    else:
        model = build_model(device)
        batches = [256, 64] if device.type == "cuda" else [8, 2]
    results = measure(model, device, batches, args.repeats)
    print(f"{device_name(device)}, torch {torch.__version__}, bf16 autocast, fwd+bwd w.r.t. the pixels")
    print("| batch | reward / encoders | re-cast reward / encoders | encoders |")
    print("| --- | --- | --- | --- |")
    for batch, r in results.items():
        print(f"| {batch} | {r['reward / encoders']:.3f} | {r['reward, weights re-cast / encoders']:.3f} | "
              f"{1e3 * r['encoders s']:.1f} ms |")
    return results


if __name__ == "__main__":
    main()
