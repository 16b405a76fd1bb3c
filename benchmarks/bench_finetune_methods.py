"""Every way to use a reward on a generator, at the same number of sampled images, judged on fixed held-out
prompts and seeds by the optimised reward, a held-out MST model with other weights, a CLIP score and the
diversity of the samples (reward hacking shows as a reward gain the other judges do not share).

    python benchmarks/bench_finetune_methods.py --plot docs/images/finetune_methods_cpu.png   # ~5 min on CPU
    python benchmarks/bench_finetune_methods.py --smoke                                        # seconds

Methods, each spending ``--budget`` sampled images:

* fine-tuning (a LoRA, then one sample per held-out (prompt, seed)): DRaFT-1, AlignProp, ReFL
  (``RewardFinetuner``, ``budget / batch`` steps of ``batch`` images), Diffusion-DPO on best-worst pairs
  (``preference_pairs`` samples ``budget / len(train prompts)`` seeds per training prompt, ``DPOTrainer``
  then takes as many optimizer steps as DRaFT-1), DDPO and GRPO (``integrations.train_policy``, groups of
  ``group`` rollouts; DiffusionNFT is for flow families and is left out on this UNet pipeline);
* inference-time, weights untouched (the budget split over the held-out images): best-of-N and noise
  optimisation (ReNO, one step with gradients), N = ``budget / held-out images``.

Judges, on held-out prompts the fine-tuning never saw and seeds 100, 101, ...: the reward (tiny MST, seed 0),
a held-out MST model (tiny, seed 3), a CLIP score (100 x image/text cosine of a tiny random open_clip model;
no real CLIP weights can be loaded offline) and the diversity (mean pairwise distance of the reward's unit
CLIP image embeddings over one prompt's seeds). Mean +- standard error over the held-out images (diversity:
over prompts), and each method's paired change from the plain sample on the same images.

Every model is random and tiny (the SD pipeline with an invertible linear autoencoder, so Diffusion-DPO
can learn from encoded images): the table ranks the mechanics of the methods on one budget, not the quality
of any real image.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.harness.machine import device_name  # noqa: E402
from benchmarks.harness.report import markdown_table  # noqa: E402
from benchmarks.sampling_methods import best_of_candidates, noise_optimisation, scorers  # noqa: E402
from mst_clipiqa.integrations import (  # noqa: E402
    DPOConfig,
    DPOTrainer,
    PromptSampler,
    RewardFinetuneConfig,
    RewardFinetuner,
    RunConfig,
    diversity,
    preference_pairs,
)
from mst_clipiqa.integrations.finetune.monitor import image_features  # noqa: E402
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline  # noqa: E402
from mst_clipiqa.integrations.pipelines.tiny_autoencoder import with_linear_autoencoder  # noqa: E402

TRAIN_PROMPTS = ["a red car", "a cat on a sofa", "a lighthouse at dusk", "a bowl of fruit on a table",
                 "a city street at night", "a snowy mountain", "a portrait of an old sailor", "a field of flowers"]
EVAL_PROMPTS = ["a blue bicycle", "a dog on a beach", "a castle on a hill"]
HELD_OUT = 100  # first held-out seed
STEPS = 4  # sampler steps
JUDGES = ("reward", "held-out MST", "CLIP score")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=64, help="sampled images per method")
    parser.add_argument("--batch", type=int, default=4, help="images per fine-tuning step")
    parser.add_argument("--group", type=int, default=4, help="rollouts per prompt group (DDPO, GRPO)")
    parser.add_argument("--train-prompts", type=int, default=8, help=f"how many of {len(TRAIN_PROMPTS)}")
    parser.add_argument("--eval-prompts", type=int, default=3, help=f"how many of {len(EVAL_PROMPTS)}")
    parser.add_argument("--seeds", type=int, default=4, help="held-out seeds per held-out prompt")
    parser.add_argument("--lr", type=float, default=1e-2, help="learning rate of the gradient methods and RL")
    parser.add_argument("--dpo-lr", type=float, default=2e-3, help="learning rate of Diffusion-DPO")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--plot", type=Path, help="write the plot here (PNG)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--smoke", action="store_true", help="budget 8, 2 training prompts, 1 x 2 held-out images")
    args = parser.parse_args(argv)
    if args.smoke:
        args.budget, args.batch, args.group, args.train_prompts, args.eval_prompts, args.seeds = 8, 2, 2, 2, 1, 2
    if args.budget < args.batch * 2 or args.budget % (args.batch * 2):
        parser.error("--budget must be a multiple of 2 x --batch (DDPO and GRPO draw 2 prompt groups per epoch)")
    return args


def _pipe():
    return with_linear_autoencoder(tiny_sd_pipeline())


def _finetuned(method: str, args: argparse.Namespace, reward, work: Path):
    """(the tuned pipeline, images it sampled) for a fine-tuning method."""
    pipe, prompts = _pipe(), TRAIN_PROMPTS[: args.train_prompts]
    steps = args.budget // args.batch
    if method in ("draft", "alignprop", "refl"):
        config = RewardFinetuneConfig(method=method, num_inference_steps=STEPS, refl_window=2,
                                      run=RunConfig(batch_size=args.batch, max_steps=steps, learning_rate=args.lr,
                                                    progress_bar=False, cpu=True))
        RewardFinetuner(pipe, reward, prompts, config).train()
        return pipe, steps * args.batch
    if method == "dpo":
        n = args.budget // len(prompts)
        written = preference_pairs(_pipe(), prompts, reward, work / "pairs", n=n, pairs="best-worst", progress=False,
                                   num_inference_steps=STEPS, guidance_scale=1.0)
        config = DPOConfig(num_inference_steps=STEPS,
                           run=RunConfig(batch_size=args.batch, max_steps=steps, learning_rate=args.dpo_lr,
                                         progress_bar=False, cpu=True))
        DPOTrainer(pipe, work / "pairs", config).train()
        return pipe, n * len(prompts) if written.rows else 0
    from mst_clipiqa.integrations import PolicyFinetuneConfig, train_policy

    per_epoch = 2 * args.group
    # weight decay 0.01: torch's AdamW default, which the loop train_policy was when docs/measured_finetune.md
    # was measured used
    config = PolicyFinetuneConfig(method, num_inference_steps=STEPS, group_size=args.group, prompts_per_step=2,
                                  run=RunConfig(max_steps=args.budget // per_epoch, learning_rate=args.lr,
                                                weight_decay=0.01, progress_bar=False, cpu=True))
    train_policy(pipe, reward, prompts, config)
    return pipe, args.budget // per_epoch * per_epoch


def _samplers(pipe, args: argparse.Namespace) -> list[PromptSampler]:
    return [PromptSampler(pipe, p, num_inference_steps=STEPS, guidance_scale=1.0)
            for p in EVAL_PROMPTS[: args.eval_prompts]]


def _seeds(args: argparse.Namespace) -> list[int]:
    return list(range(HELD_OUT, HELD_OUT + args.seeds))


def _judge(images_by_prompt: dict[str, torch.Tensor], judges: dict) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {j: [] for j in (*JUDGES, "diversity")}
    with torch.no_grad():
        for prompt, images in images_by_prompt.items():
            for judge in JUDGES:
                out[judge] += judges[judge](images, [prompt] * len(images)).float().tolist()
            if len(images) > 1:
                out["diversity"].append(diversity(image_features(images, judges["reward"])))
    return out


def fine_tuning(method: str, args: argparse.Namespace, judges: dict, work: Path) -> dict:
    start = time.perf_counter()
    pipe, images = _finetuned(method, args, judges["reward"], work / method)
    seconds = time.perf_counter() - start
    seeds = _seeds(args)
    with torch.no_grad():
        held_out = {s.prompt: s.images(s.noise(seeds), seeds).float() for s in _samplers(pipe, args)}
    return {**_judge(held_out, judges), "images": images, "seconds": seconds}


def inference_time(pick: Callable, args: argparse.Namespace, judges: dict) -> dict:
    """``pick(sampler, seed, n) -> Selection`` on every held-out image, ``budget / held-out images`` each."""
    start, seeds = time.perf_counter(), _seeds(args)
    n = max(1, args.budget // (args.eval_prompts * args.seeds))
    held_out, spent = {}, 0
    for sampler in _samplers(_pipe(), args):
        kept = [pick(sampler, seed, n) for seed in seeds]
        spent += sum(k.evaluations for k in kept)
        held_out[sampler.prompt] = torch.stack([k.image.float() for k in kept])
    return {**_judge(held_out, judges), "images": spent, "seconds": time.perf_counter() - start}


def methods(args: argparse.Namespace, judges: dict) -> dict[str, Callable[[Path], dict]]:
    reward = judges["reward"]
    rows: dict[str, Callable[[Path], dict]] = {
        "plain sample (no optimisation)": lambda work: inference_time(
            lambda s, seed, n: best_of_candidates(s, reward, seed, 1), args, judges)}
    for name, method in (("DRaFT-1", "draft"), ("AlignProp", "alignprop"), ("ReFL", "refl"),
                         ("Diffusion-DPO, best-worst pairs", "dpo"), ("DDPO", "ddpo"), ("GRPO", "grpo")):
        rows[name] = lambda work, method=method: fine_tuning(method, args, judges, work)
    rows["best-of-N (inference)"] = lambda work: inference_time(
        lambda s, seed, n: best_of_candidates(s, reward, seed, n), args, judges)
    rows["noise optimisation (inference)"] = lambda work: inference_time(
        lambda s, seed, n: noise_optimisation(s, reward, seed, n, 1), args, judges)
    return rows


def _mean_se(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")


def _paired(results: dict[str, dict], name: str, key: str) -> str:
    """The mean change from the plain sample on the same held-out images, with its standard error."""
    plain = next(iter(results.values()))[key]
    mean, se = _mean_se([a - b for a, b in zip(results[name][key], plain)])
    return f"{mean:+.3f} ± {se:.3f}"


def table(results: dict[str, dict]) -> str:
    header = ["method", "images sampled", *JUDGES, "diversity", "reward change (paired)",
              "held-out MST change (paired)", "s"]
    rows = [[name, str(r["images"]), *(f"{m:.3f} ± {se:.3f}" for m, se in (_mean_se(r[k]) for k in
                                                                         (*JUDGES, "diversity"))),
             _paired(results, name, "reward"), _paired(results, name, "held-out MST"), f"{r['seconds']:.1f}"]
            for name, r in results.items()]
    return markdown_table(header, rows)


def plot(results: dict[str, dict], path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(results)
    fig = Figure(figsize=(12, 4.5))
    axes = fig.subplots(1, 4)
    for ax, key in zip(axes, (*JUDGES, "diversity")):
        stats = [_mean_se(results[n][key]) for n in names]
        ax.errorbar([m for m, _ in stats], range(len(names)), xerr=[se for _, se in stats], fmt="o")
        ax.axvline(stats[0][0], color="grey", linestyle=":")
        ax.set_yticks(range(len(names)), names if ax is axes[0] else [""] * len(names), fontsize=7)
        ax.invert_yaxis()
        ax.set_title(key, fontsize=9)
    fig.suptitle("held-out images, mean ± s.e. (dotted: plain sample); tiny random models", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> dict:
    import tempfile

    import datasets

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    datasets.disable_progress_bars()
    judges = {k: v for k, v in scorers("cpu").items() if k != "monitor"}
    print(f"{device_name(torch.device('cpu'))}; {args.budget} sampled images per method; held-out: "
          f"{args.eval_prompts} prompts x {args.seeds} seeds; tiny random pipeline and scorers")
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for name, run in methods(args, judges).items():
            torch.manual_seed(0)
            results[name] = run(Path(work))
    print(table(results))
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
