"""``mst-clipiqa demo``: the whole library end to end, offline by default, with real weights when it can.

The steps (see ``mst_clipiqa.cli.commands.demo`` for the user's view) each print a line, add a section to the report
and record their figures in ``OUT/figures.json``.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import torch

from mst_clipiqa.integrations import (
    RewardFinetuneConfig,
    RewardFinetuner,
    RunConfig,
    best_of_n,
    contact_sheet,
    rank_images,
)
from mst_clipiqa.reward import MSTCLIPIQAReward, load_model
from mst_clipiqa.reward.datasets import QualityDataset, load_dataset, make_synthetic_dataset
from mst_clipiqa.reward.training import TrainConfig, train
from mst_clipiqa.reward.training.metrics import srcc
from mst_clipiqa.reward.utils import write_json

from .held_out import before_and_after
from .output import print_written, written_files
from .pipeline_loading import load_pipeline
from .report import Report

PAPER_STREAMS = ("ViT-B-32", "ViT-B-16")
SAMPLE_DATA = Path(__file__).resolve().parents[2] / "examples" / "data" / "agiqa3k-mini"
PROMPTS = ("a red circle above a blue square", "a yellow triangle on a striped background",
           "a green square left of a purple circle", "a blue circle on a checkered background")
# The demo recipe: few splits and epochs, so that the whole demo takes about three minutes on two CPU cores.
# Tiny heads compare against random text features and need a higher rate; --fast is the test suite's.
DEMO_RECIPE = {"tiny": {"n_splits": 3, "epochs": 40, "lr": 1e-3}, "real": {"n_splits": 3, "epochs": 10},
               "fast": {"n_splits": 2, "epochs": 2, "lr": 1e-3}}
THUMB = 160  # px per contact-sheet cell: small generated images are upscaled with nearest neighbour
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
    print(f"[weights] {'real' if real else 'tiny'}: {reason}", flush=True)
    figures: dict[str, Any] = {"weights": "openai" if real else "tiny-random", "weights_reason": reason}
    report = Report(args.out, "MST-CLIPIQA demo")
    report.text(f"Weights: **{figures['weights']}** ({reason}).", *([f"> {TINY_NOTE}"] if not real else []))
    started = time.perf_counter()
    dataset = _timed(figures, "data", _data_step, args, report, figures)
    reward = _timed(figures, "train", _train_step, args, real, dataset, report, figures)
    _timed(figures, "rank", _rank_step, args, dataset, reward, report, figures)
    pipe, steps = _pipeline(args)
    _timed(figures, "best_of_n", _best_of_n_step, args, pipe, steps, reward, report, figures)
    _timed(figures, "finetune", _finetune_step, args, pipe, steps, reward, report, figures)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    report.section("Summary", f"The demo ran in {figures['seconds']} s "
                   f"({', '.join(f'{k} {v} s' for k, v in figures['step_seconds'].items())}). "
                   "All numbers: [figures.json](figures.json).")
    write_json(args.out / "figures.json", figures)
    md, page = report.write()
    print(f"[report] {page} and {md.name} ({figures['seconds']} s)", flush=True)
    print_written(written_files(args.out))
    return 0


def _timed(figures: dict[str, Any], name: str, step, *args):
    started = time.perf_counter()
    result = step(*args)
    figures.setdefault("step_seconds", {})[name] = round(time.perf_counter() - started, 1)
    return result


def _data_step(args: argparse.Namespace, report: Report, figures: dict[str, Any]) -> QualityDataset:
    if args.dataset == "synthetic":
        size = {"n_scenes": 4, "levels": (0.5, 1.0)} if args.fast else {"n_scenes": 12}
        dataset = make_synthetic_dataset(args.data or args.out / "data", **size)
    else:
        if args.data is None and not (SAMPLE_DATA / "data.csv").is_file():
            raise ValueError(f"the AGIQA-3K sample is not at {SAMPLE_DATA} (an installed package has no examples/); "
                             "pass --data FOLDER, or --dataset synthetic")
        dataset = load_dataset(args.dataset, args.data or SAMPLE_DATA)
    low, high = dataset.label_ranges["quality"]
    figures["data"] = {"name": dataset.name, "images": len(dataset), "outputs": list(dataset.outputs),
                       "quality_range": [low, high]}
    print(f"[1/5 data] {dataset.name}: {len(dataset)} images, outputs {list(dataset.outputs)}", flush=True)
    shown = list(range(0, len(dataset), max(1, len(dataset) // 8)))[:8]
    sheet = contact_sheet([_load(dataset.samples[i].image) for i in shown],
                          [f"human quality {dataset.samples[i].scores['quality']:.2f}\n{dataset.samples[i].image.name}"
                           for i in shown], columns=4, thumb_size=THUMB)
    path = args.out / "data" / "examples.png" if args.dataset != "synthetic" else args.out / "data_examples.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    report.section("1. Data", f"**{dataset.name}**: {len(dataset)} images with human scores for "
                   f"{', '.join(dataset.outputs)}, in {low:g}-{high:g} units (mean opinion scores). Splits keep "
                   f"{'each prompt' if dataset.split_by == 'prompt' else 'each image'}'s images on one side.")
    report.figure(path, f"Eight of the {len(dataset)} images with their human quality score (mean opinion score, "
                        f"{low:g}-{high:g}; higher is better) and file name.")
    return dataset


def _load(path: Path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def _train_step(args: argparse.Namespace, real: bool, dataset: QualityDataset, report: Report,
                figures: dict[str, Any]) -> MSTCLIPIQAReward:
    # tiny template heads compare against random text features and barely train: the prompt head does
    model = load_model("paper-A" if real else "tiny-hf", variant=None if real else "B", outputs=["quality"])
    recipe = DEMO_RECIPE["fast" if args.fast else "real" if real else "tiny"]
    config = TrainConfig(**recipe, outputs=("quality",), cache_dir=str(args.out / "cache"))
    out = args.out / "train"
    low, high = dataset.label_ranges["quality"]
    result = train(model, dataset, config, out, resume=(out / "run.json").exists())
    test, before = result["summary"]["test"]["quality"], result["summary"]["untrained_test"]["quality"]
    t = figures["training"] = {key: {"untrained": before[key]["mean"], "trained": test[key]["mean"]}
                               for key in ("srcc", "plcc")}
    t["splits"], t["recipe"] = test["srcc"]["count"], recipe
    print(f"[2/5 train] test SRCC {t['srcc']['untrained']:.3f} -> {t['srcc']['trained']:.3f}, "
          f"PLCC {t['plcc']['untrained']:.3f} -> {t['plcc']['trained']:.3f} (mean of {t['splits']} splits)", flush=True)
    report.section("2. Training the scorer",
                   f"The fusion and quality head trained on {t['splits']} random splits (70% train, 10% validation "
                   f"to pick the epoch, 20% test), {recipe['epochs']} epochs each (the demo recipe: "
                   f"{', '.join(f'{k} {v}' for k, v in recipe.items())}). SRCC and PLCC are correlations with the "
                   "human scores on the test images, from -1 to 1 (1: the same order / a perfect line); the mean "
                   "over splits:")
    report.table(["metric", "untrained (zero-shot)", "trained"],
                 [[k.upper(), f"{t[k]['untrained']:.3f}", f"{t[k]['trained']:.3f}"] for k in ("srcc", "plcc")])
    report.figure(out / "plots" / "curves.png", "Per split (colour), by epoch: left, the training objective on the "
                  "training (solid) and validation (dashed) parts (mean squared error in the head's score units plus "
                  "a margin-ranking term); right, validation SRCC (-1 to 1), epoch 0 being the untrained model and "
                  "the dot the epoch kept.")
    report.figure(out / "plots" / "scatter_quality.png", "Predicted (vertical) against human quality (MOS, "
                  "horizontal) on each split's test images (colour: split), both in the data set's units (mean "
                  f"opinion score, {low:g}-{high:g}).")
    return MSTCLIPIQAReward(model.eval())


def _rank_step(args: argparse.Namespace, dataset: QualityDataset, reward: MSTCLIPIQAReward, report: Report,
               figures: dict[str, Any]) -> None:
    samples = dataset.samples
    ranking = rank_images([s.image for s in samples], [s.prompt for s in samples], reward, top_k=3)
    mos = {s.image.name: s.scores["quality"] for s in samples}
    by_name = {c.name: c for c in ranking.candidates}
    agreement = srcc([by_name[s.image.name].score for s in samples], [s.scores["quality"] for s in samples])
    labels = [f"rank {c.rank}  score {c.score:.2f}\nhuman {mos[c.name]:.2f}\n{c.name}" for c in ranking.candidates]
    path = args.out / "ranked" / "contact_sheet.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    # 6 x 150 px: the page's width, so the captions are shown at their size
    contact_sheet([c.image for c in ranking.candidates], labels, columns=6, thumb_size=150).save(path)
    low, high = reward.score_range
    figures["rank"] = {"images": len(samples), "srcc_with_human": agreement, "best": ranking.candidates[0].name}
    print(f"[3/5 rank] {len(samples)} sample images ranked by the trained scorer, SRCC with the human scores "
          f"{agreement:.3f}; {path}", flush=True)
    report.section("3. The sample images ranked by the trained scorer",
                   f"Every image of the data set scored by the trained model and sorted, best first. Its order "
                   f"agrees with the human scores with SRCC {agreement:.3f} (this includes images it was trained "
                   "on, so it is optimistic; the test SRCC above is the honest figure).")
    human_low, human_high = dataset.label_ranges["quality"]
    report.figure(path, f"All {len(samples)} images ranked by the trained scorer, best first: rank, the scorer's "
                        f"score (its quality head, {low:g}-{high:g}), the human score (mean opinion score, "
                        f"{human_low:g}-{human_high:g}) and "
                        "the file name, whose prefix is the generator.")


def _pipeline(args: argparse.Namespace):
    """The pipeline for the generation steps and its number of sampler steps (a tiny one takes few)."""
    pipe, tiny = load_pipeline(args.pipeline or "tiny", "cuda" if torch.cuda.is_available() else "cpu")
    pipe.set_progress_bar_config(disable=True)
    return pipe, 4 if tiny else 30


def _best_of_n_step(args, pipe, steps: int, reward: MSTCLIPIQAReward, report: Report, figures: dict[str, Any]) -> None:
    ranking = best_of_n(pipe, PROMPTS[0], reward, n=4 if args.fast else 8, top_k=2, num_inference_steps=steps,
                        guidance_scale=3.0, maps=True)
    paths = ranking.save(args.out / "best_of_n", sheet=False)
    sheet = args.out / "best_of_n" / "contact_sheet.png"
    contact_sheet([c.image for c in ranking.candidates],
                  [f"rank {c.rank}  score {c.score:.3f}\nseed {c.seed}" for c in ranking.candidates],
                  columns=4, thumb_size=THUMB).save(sheet)
    overlaid = args.out / "best_of_n" / "quality_maps.png"
    contact_sheet(ranking.sheet_images(), [f"rank {c.rank}  score {c.score:.3f}\nworst region "
                                           f"{float(c.quality_map.min()):.3f}" for c in ranking.candidates],
                  columns=4, thumb_size=THUMB).save(overlaid)
    scores = ranking.scores
    b = figures["best_of_n"] = {"prompt": PROMPTS[0], "n": len(scores), "best": float(scores.max()),
                                "worst": float(scores.min()), "winner_seed": ranking.winner.seed,
                                "scoring_fraction_of_generation":
                                    ranking.timings["scoring_s"] / ranking.timings["generation_s"],
                                "maps_seconds": ranking.timings["maps_s"]}
    print(f"[4/5 best-of-N] {b['n']} candidates, best {b['best']:.3f} (seed {b['winner_seed']}), worst "
          f"{b['worst']:.3f}; {paths['json'].parent}", flush=True)
    low, high = reward.score_range
    report.section("4. Best-of-N", f"{b['n']} images generated for *{PROMPTS[0]}* (seeds 0-{b['n'] - 1}, "
                   f"{steps} sampler steps) and ranked by the trained reward: best {b['best']:.3f}, worst "
                   f"{b['worst']:.3f}. Scoring took {100 * b['scoring_fraction_of_generation']:.1f}% of the "
                   "generation time.")
    report.figure(sheet, f"The {b['n']} candidates, best first: rank, reward score (quality head, {low:g}-{high:g}) "
                         f"and the seed that regenerates the image. Small images are enlarged without smoothing.")
    h, w = ranking.winner.quality_map.shape
    report.figure(overlaid, f"The same candidates with their quality maps overlaid: one square per region of the "
                            f"fine stream's {h} x {w} patch grid, coloured by the reward that region gets when its "
                            f"patch is read in place of the whole image (quality head, {low:g}-{high:g}: dark low, "
                            "bright high; the map's mean is not the score, docs/uncertainty.md), and the lowest "
                            "region's value.")


def _finetune_step(args, pipe, steps: int, reward: MSTCLIPIQAReward, report: Report, figures: dict[str, Any]) -> None:
    max_steps = 4 if args.fast else 12
    config = RewardFinetuneConfig(method="draft", draft_k=1, num_inference_steps=steps,
                                  run=RunConfig(max_steps=max_steps,
                                                learning_rate=1e-2 if args.pipeline is None else 1e-4,
                                                output_dir=str(args.out / "finetune")))
    trainer = RewardFinetuner(pipe, reward, list(PROMPTS), config)
    images: list[torch.Tensor] = []

    def sample_and_score(prompts, seeds):
        images.append(trainer.sample(prompts, seeds))
        return reward.score(images[-1], prompts)

    held = before_and_after(sample_and_score, trainer.train, PROMPTS, 2 * len(PROMPTS))
    trainer.save_lora(args.out / "finetune" / "lora")
    write_json(args.out / "finetune" / "held_out.json", held.to_dict())
    pairs = args.out / "finetune" / "before_after.png"
    labels = [f"{when}: {score:.3f}\nseed {seed}\n{prompt}" for prompt, seed, b, a in
              zip(held.prompts, held.seeds, held.before, held.after) for when, score in (("before", b), ("after", a))]
    contact_sheet([im for pair in zip(*images) for im in pair], labels, columns=4, thumb_size=THUMB).save(pairs)
    figures["finetune"] = {"method": "DRaFT-K (K=1)", "steps": max_steps, "held_out_images": len(held.seeds),
                           "reward_before": held.mean_before, "reward_after": held.mean_after,
                           "change_stderr": held.change_stderr}
    f = figures["finetune"]
    print(f"[5/5 DRaFT-K] {max_steps} LoRA steps: held-out reward {f['reward_before']:.3f} -> "
          f"{f['reward_after']:.3f}", flush=True)
    low, high = reward.score_range
    report.section("5. Fine-tuning the generator (DRaFT-K)",
                   f"A LoRA on the denoiser trained for {max_steps} steps to raise the reward, backpropagating "
                   f"through the last sampling step (K=1). Before and after, the same {len(held.seeds)} held-out "
                   f"images (the same prompts and seeds {held.seeds[0]}-{held.seeds[-1]}, never used in training) "
                   f"were generated and scored: mean reward {held.mean_before:.3f} -> {held.mean_after:.3f} "
                   f"(change {held.change:+.3f} +- {held.change_stderr:.3f}, paired standard error).")
    report.figure(pairs, f"Each held-out prompt and seed before (left) and after (right) fine-tuning, with its "
                         f"reward score (quality head, {low:g}-{high:g}).")
    report.figure(args.out / "finetune" / "reward_curve.png", "Reward of each training step's images (quality "
                  f"head, {low:g}-{high:g}) and its moving average, by optimizer step.")
