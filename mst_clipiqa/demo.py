"""``mst-clipiqa demo``: the whole library end to end, offline by default, with real weights when it can.

1. a quality data set (the synthetic set offline, or a real one given by path);
2. MST-CLIPIQA heads trained on it, test SRCC / PLCC against the untrained model;
3. best-of-N with a diffusers pipeline, ranked by the trained reward, contact sheet;
4. a short DRaFT-K LoRA fine-tuning run, reward before / after on held-out seeds;
5. ``demo_out/report.md`` and ``report.html`` embedding the plots, grids and figures.
"""
from __future__ import annotations

import argparse
import html
import os
import time
from pathlib import Path
from typing import Any

import torch

from integrations import RewardFinetuneConfig, RewardFinetuner, best_of_n
from reward import MSTCLIPIQAReward, load_model
from reward.datasets import load_dataset, make_synthetic_dataset
from reward.training import TrainConfig, train
from reward.utils import write_json

from .pipelines import load_pipeline

PAPER_STREAMS = ("ViT-B-32", "ViT-B-16")
PROMPTS = ("a red circle above a blue square", "a yellow triangle on a striped background",
           "a green square left of a purple circle", "a blue circle on a checkered background")
TINY_NOTE = ("Tiny random backbones: every step ran for real, but the encoders know nothing about images, so "
             "the scores, SRCC and reward gains only show that the machinery works, not how good the model is.")


def real_weights_status(offline: bool, timeout: float = 5.0) -> tuple[bool, str]:
    """Whether the OpenAI CLIP weights are cached or downloadable; never waits more than ``timeout``."""
    import open_clip
    from huggingface_hub import HfApi, try_to_load_from_cache

    repos = [open_clip.get_pretrained_cfg(name, "openai")["hf_hub"].rstrip("/") for name in PAPER_STREAMS]
    files = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    if all(any(isinstance(try_to_load_from_cache(r, f), str) for f in files) for r in repos):
        return True, "OpenAI CLIP ViT-B/32 + ViT-B/16 weights found in the local cache"
    if offline or os.environ.get("HF_HUB_OFFLINE") == "1":
        return False, "offline and the OpenAI CLIP weights are not cached"
    try:
        for repo in repos:
            HfApi().model_info(repo, timeout=timeout)
    except Exception as error:  # any failure to reach the Hub means: use the tiny backbones
        return False, f"the OpenAI CLIP weights are not cached and the Hub is unreachable ({type(error).__name__})"
    return True, "OpenAI CLIP weights will be downloaded from the Hugging Face Hub"


def run_demo(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    real, reason = real_weights_status(args.offline)
    print(f"[weights] {'real' if real else 'tiny'}: {reason}")
    figures: dict[str, Any] = {"weights": "openai" if real else "tiny-random", "weights_reason": reason}
    started = time.perf_counter()
    reward = _timed(figures, "train", _train_step, args, real, figures)
    pipe, steps = _pipeline(args)
    _timed(figures, "best_of_n", _best_of_n_step, args, pipe, steps, reward, figures)
    _timed(figures, "finetune", _finetune_step, args, pipe, steps, reward, figures)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    write_json(args.out / "figures.json", figures)
    write_report(args.out, figures)
    print(f"[report] {args.out / 'report.md'} and report.html ({figures['seconds']} s)")
    return 0


def _timed(figures: dict[str, Any], name: str, step, *args):
    started = time.perf_counter()
    result = step(*args)
    figures.setdefault("step_seconds", {})[name] = round(time.perf_counter() - started, 1)
    return result


def _train_step(args: argparse.Namespace, real: bool, figures: dict[str, Any]) -> MSTCLIPIQAReward:
    if args.dataset == "synthetic":
        size = {"n_scenes": 4, "levels": (0.5, 1.0)} if args.fast else {"n_scenes": 24}
        dataset = make_synthetic_dataset(args.data or args.out / "data", **size)
    else:
        dataset = load_dataset(args.dataset, args.data)
    print(f"[1/4 data] {dataset.name}: {len(dataset)} images, outputs {list(dataset.outputs)}")
    # tiny template heads compare against random text features and barely train: the prompt head does
    model = load_model("paper-A" if real else "tiny-hf", variant=None if real else "B", outputs=["quality"])
    # real weights: the protocol recipe's optimiser settings; tiny heads need more epochs at a higher rate
    optimiser = {} if real else {"epochs": 60, "lr": 1e-3}
    if args.fast:
        optimiser["epochs"] = 2
    config = TrainConfig(**optimiser, n_splits=2 if args.fast else 3, outputs=("quality",),
                         cache_dir=str(args.out / "cache"))
    report = train(model, dataset, config, args.out / "train", resume=(args.out / "train" / "run.json").exists())
    test, before = report["summary"]["test"]["quality"], report["summary"]["untrained_test"]["quality"]
    figures["training"] = {key: {"untrained": before[key]["mean"], "trained": test[key]["mean"]}
                           for key in ("srcc", "plcc")}
    figures["training"]["splits"] = test["srcc"]["count"]
    t = figures["training"]
    print(f"[2/4 train] test SRCC {t['srcc']['untrained']:.3f} -> {t['srcc']['trained']:.3f}, "
          f"PLCC {t['plcc']['untrained']:.3f} -> {t['plcc']['trained']:.3f} (mean of {t['splits']} splits)")
    return MSTCLIPIQAReward(model.eval())


def _pipeline(args: argparse.Namespace):
    """The pipeline for steps 3-4 and its number of sampler steps (a tiny one takes few)."""
    pipe, tiny = load_pipeline(args.pipeline or "tiny", "cuda" if torch.cuda.is_available() else "cpu")
    return pipe, 4 if tiny else 30


def _best_of_n_step(args, pipe, steps: int, reward: MSTCLIPIQAReward, figures: dict[str, Any]) -> None:
    ranking = best_of_n(pipe, PROMPTS[0], reward, n=4 if args.fast else 8, top_k=2, num_inference_steps=steps,
                        guidance_scale=3.0)
    ranking.save(args.out / "best_of_n")
    scores = ranking.scores
    figures["best_of_n"] = {"prompt": PROMPTS[0], "n": len(scores), "best": float(scores.max()),
                            "worst": float(scores.min()), "winner_seed": ranking.winner.seed,
                            "scoring_fraction_of_generation":
                                ranking.timings["scoring_s"] / ranking.timings["generation_s"]}
    b = figures["best_of_n"]
    print(f"[3/4 best-of-N] {b['n']} candidates, best {b['best']:.3f} (seed {b['winner_seed']}), worst "
          f"{b['worst']:.3f}; contact sheet in {args.out / 'best_of_n'}")


def _finetune_step(args, pipe, steps: int, reward: MSTCLIPIQAReward, figures: dict[str, Any]) -> None:
    max_steps = 4 if args.fast else 12
    config = RewardFinetuneConfig(method="draft", draft_k=1, num_inference_steps=steps, max_steps=max_steps,
                                  learning_rate=1e-2 if args.pipeline is None else 1e-4,
                                  output_dir=str(args.out / "finetune"), sample_every=max_steps,
                                  sample_prompts=PROMPTS[:2])
    trainer = RewardFinetuner(pipe, reward, list(PROMPTS), config)
    held_out = [p for p in PROMPTS for _ in range(2)], [10_000 + i for i in range(2 * len(PROMPTS))]
    before = trainer.evaluate(*held_out).mean().item()
    trainer.train()
    after = trainer.evaluate(*held_out).mean().item()
    trainer.save_lora(args.out / "finetune" / "lora")
    figures["finetune"] = {"method": "DRaFT-K (K=1)", "steps": max_steps, "held_out_images": len(held_out[0]),
                           "reward_before": before, "reward_after": after}
    print(f"[4/4 DRaFT-K] {max_steps} LoRA steps: held-out reward {before:.3f} -> {after:.3f}")


def write_report(out: Path, figures: dict[str, Any]) -> None:
    """``report.md`` and ``report.html`` with the figures and every PNG the steps wrote."""
    images = sorted(p.relative_to(out) for p in out.rglob("*.png") if "data" not in p.parts[len(out.parts):])
    t, b, f = figures["training"], figures["best_of_n"], figures["finetune"]
    lines = [
        "# MST-CLIPIQA demo", "",
        f"Weights: **{figures['weights']}** ({figures['weights_reason']}). Ran in {figures['seconds']} s.", "",
        *([f"> {TINY_NOTE}", ""] if figures["weights"] != "openai" else []),
        "| step | result |", "|---|---|",
        f"| train heads ({t['splits']} splits) | test SRCC {t['srcc']['untrained']:.3f} -> {t['srcc']['trained']:.3f},"
        f" PLCC {t['plcc']['untrained']:.3f} -> {t['plcc']['trained']:.3f} (untrained -> trained) |",
        f"| best-of-{b['n']} | best {b['best']:.3f}, worst {b['worst']:.3f}, scoring took "
        f"{100 * b['scoring_fraction_of_generation']:.1f}% of generation time |",
        f"| {f['method']}, {f['steps']} steps | held-out reward {f['reward_before']:.3f} -> {f['reward_after']:.3f} |",
        "", "All figures: [figures.json](figures.json).", "",
        *[line for path in images for line in (f"## {path}", "", f"![{path}]({path.as_posix()})", "")],
    ]
    (out / "report.md").write_text("\n".join(lines))
    body = "".join(f"<h2>{html.escape(str(p))}</h2><img src='{html.escape(p.as_posix())}' style='max-width:100%'>"
                   for p in images)
    table = html.escape("\n".join(lines[: lines.index("All figures: [figures.json](figures.json).")]))
    (out / "report.html").write_text(f"<!doctype html><meta charset='utf-8'><title>MST-CLIPIQA demo</title>"
                                     f"<pre>{table}</pre>{body}")
