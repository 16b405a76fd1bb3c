"""Best-of-N, noise optimisation (ReNO) and reward guidance at equal reward evaluations, on the same prompts
and held-out seeds, judged by the optimised reward and by two independent scorers (reward hacking shows as
a reward gain the independent scorers do not share).

    python benchmarks/bench_sampling_methods.py                        # CPU, tiny pipelines: table + plot
    python benchmarks/bench_sampling_methods.py --quick                # budget 4, one prompt, two seeds
    python benchmarks/bench_sampling_methods.py --device cuda --sd-turbo-size      # GPU: iterations/s, memory

Every method gets the same prompts and held-out seeds (100, 101, ...; the guidance
scale 0.05 was chosen on seeds 0-5, the smallest of 0.05, 0.1 and 0.3 that all reached
about 3.99 there on the LCM) and at most ``--budget`` reward evaluations per
(prompt, seed): best-of-N scores N candidates (the seed itself first); noise
optimisation runs ``budget`` iterations from the seed's noise (with early stopping,
a second tiny MST model watches and stops it after 3 iterations without
improvement; its calls are not counted); guidance steers every sampler step and
keeps the best of as many guided samples as the budget pays for (steps + 1
evaluations each). A last row gives best-of-N the wall-clock time noise
optimisation took. The plot (``--plot``) shows the reward reached against the
evaluations spent, and the held-out scorer's value of each method's pick.

The tiny pipelines and scorers have random weights: the numbers show how the
methods use a budget on one reward and whether another scorer agrees, nothing
about image quality.

``--sd-turbo-size`` (for a GPU) times SD-Turbo's architecture (SD 2.1 UNet, OpenCLIP
ViT-H text encoder, SD VAE, 512 px, one Euler-ancestral step) with random weights
and the paper-size reward: noise-optimisation iterations per second and peak memory
(with and without denoiser checkpointing), a guided sample and best-of-N per image.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.harness.machine import device_name  # noqa: E402
from benchmarks.harness.report import markdown_table  # noqa: E402
from benchmarks.sampling_methods import SAMPLERS, Selection, best_of_candidates, methods, scorers  # noqa: E402
from mst_clipiqa.integrations import PromptSampler  # noqa: E402

PROMPTS = ["a lighthouse at dusk", "a bowl of fruit on a table", "a portrait of an old sailor"]
HELD_OUT = 100  # first held-out seed


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=16, help="reward evaluations per (prompt, seed)")
    parser.add_argument("--prompts", type=int, default=3, help=f"how many of {len(PROMPTS)} prompts")
    parser.add_argument("--seeds", type=int, default=4, help="held-out seeds per prompt")
    parser.add_argument("--scale", type=float, default=0.05, help="guidance reward_scale")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steady timings)")
    parser.add_argument("--plot", type=Path, help="write the plot here (PNG)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--quick", action="store_true", help="budget 4, one prompt, two seeds")
    parser.add_argument("--sd-turbo-size", action="store_true", help="time SD-Turbo's architecture instead")
    parser.add_argument("--resolution", type=int, default=512, help="image side for --sd-turbo-size")
    args = parser.parse_args(argv)
    if args.quick:
        args.budget, args.prompts, args.seeds = 4, 1, 2
    if args.budget < 2 or not 1 <= args.prompts <= len(PROMPTS) or args.seeds < 1:
        parser.error(f"--budget >= 2, --prompts in [1, {len(PROMPTS)}] and --seeds >= 1 are needed")
    return args


def _mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return mean, se


def _cases(pipe, args: argparse.Namespace, steps: int, guidance_scale: float):
    """(sampler, held-out seed) for every prompt and seed."""
    for prompt in PROMPTS[: args.prompts]:
        sampler = PromptSampler(pipe, prompt, num_inference_steps=steps, guidance_scale=guidance_scale)
        for seed in range(HELD_OUT, HELD_OUT + args.seeds):
            yield sampler, seed


def run_sampler(name: str, args: argparse.Namespace, judges: dict) -> dict[str, dict]:
    """Every method on every (prompt, held-out seed): the kept image's scores, costs and reward curves."""
    factory, steps, guidance_scale, k = SAMPLERS[name]
    pipe = factory(device=args.device)
    runs = methods(args.budget, k, args.scale, judges["monitor"])
    out = {m: {"reward": [], "held-out MST": [], "CLIP score": [], "evaluations": [], "seconds": [], "curves": []}
           for m in runs}
    for sampler, seed in _cases(pipe, args, steps, guidance_scale):
        for method, run in runs.items():
            _record(out[method], run(sampler, judges["reward"], seed), sampler.prompt, judges, args.device)
    per_image = statistics.fmean(out[f"best-of-{args.budget}"]["seconds"]) / args.budget
    n_wall = max(1, round(statistics.fmean(out["noise optimisation (ReNO)"]["seconds"]) / per_image))
    wall = out[f"best-of-{n_wall}, equal wall-clock"] = {key: [] for key in out["plain sample"]}
    for sampler, seed in _cases(pipe, args, steps, guidance_scale):
        _record(wall, best_of_candidates(sampler, judges["reward"], seed, n_wall), sampler.prompt, judges,
                args.device)
    return out


def _record(into: dict, kept: Selection, prompt: str, judges: dict, device: str) -> None:
    with torch.no_grad():
        image = kept.image[None].to(device)
        for judge in ("held-out MST", "CLIP score"):
            into[judge].append(float(judges[judge](image, [prompt])[0]))
    into["reward"].append(kept.reward)
    into["evaluations"].append(kept.evaluations)
    into["seconds"].append(kept.seconds)
    into["curves"].append(kept.curve)


def table(results: dict[str, dict]) -> str:
    header = ["method", "reward evaluations", "reward", "held-out MST", "CLIP score", "s per image"]
    rows = []
    for method, r in results.items():
        cells = [f"{m:.3f} ± {se:.3f}" for m, se in (_mean_se(r[key]) for key in ("reward", "held-out MST",
                                                                               "CLIP score"))]
        rows.append([method, f"{statistics.fmean(r['evaluations']):.1f}", *cells,
                     f"{statistics.fmean(r['seconds']):.2f}"])
    return markdown_table(header, rows)


def _mean_curve(curves: list[list[float]], budget: int) -> list[float]:
    """The mean best-so-far reward after each evaluation; runs that stopped early keep their last value."""
    padded = [c + [c[-1]] * (budget - len(c)) for c in curves]
    return [statistics.fmean(c[i] for c in padded) for i in range(budget)]


def plot(all_results: dict[str, dict[str, dict]], budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(all_results), figsize=(6 * len(all_results), 7), squeeze=False)
    for col, (sampler, results) in enumerate(all_results.items()):
        top, bottom = axes[0][col], axes[1][col]
        evaluations = range(1, budget + 1)
        for method, r in results.items():
            if method == "plain sample":
                top.axhline(statistics.fmean(r["reward"]), color="grey", linestyle=":", label=method)
            elif "wall-clock" not in method:
                style = "o" if "guidance" in method else "--" if "early stop" in method else "-"
                top.plot(evaluations, _mean_curve(r["curves"], budget), style, label=method)
        top.set(title=sampler, xlabel="reward evaluations", ylabel="best reward so far (mean)")
        top.legend(fontsize=7)
        names = list(results)
        stats = [_mean_se(results[m]["held-out MST"]) for m in names]
        bottom.errorbar(range(len(names)), [m for m, _ in stats], yerr=[se for _, se in stats], fmt="o")
        bottom.set_xticks(range(len(names)), [n.replace(" (", "\n(").replace(", ", ",\n") for n in names],
                          fontsize=6)
        bottom.set_ylabel("held-out MST score of the pick (mean, s.e.)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.sd_turbo_size:
        from benchmarks.sd_turbo_size import report_sd_turbo_size

        return report_sd_turbo_size(args)
    judges = scorers(args.device)
    print(f"{device_name(torch.device(args.device))}; budget {args.budget} reward evaluations; "
          f"{args.prompts} prompts x {args.seeds} held-out seeds; tiny random pipelines and scorers")
    all_results = {}
    for sampler in SAMPLERS:
        all_results[sampler] = run_sampler(sampler, args, judges)
        print(f"\n{sampler}\n{table(all_results[sampler])}")
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(all_results, args.budget, args.plot)
        print(f"\nplot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(all_results, indent=1))
    return all_results


if __name__ == "__main__":
    main()
