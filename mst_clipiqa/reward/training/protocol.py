"""The field's protocol around one trainer: every split in turn, the run folder and its resume check,
then the report, the plots and the chosen model.

A run folder holds ``run.json`` (settings, checked on resume; see ``run_folder``), ``split_NN/`` (see
``Trainer.fit_split``), ``model/`` (``save_pretrained`` of the split with the best
validation score; ``adapter/`` for LoRA training), ``splits.json``, ``report.json`` and ``plots/*.png``.
"""
from __future__ import annotations

import shutil
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import torch

from mst_clipiqa.runtime.processes import on_main, run_environment
from mst_clipiqa.runtime.runs import RunLock

from ..datasets import QualityDataset, Split, make_splits, reference_split, save_splits
from ..datasets.splits import without_validation
from ..model import HEAD_KINDS, MSTCLIPIQA, save_adapter
from ..utils import progress_bar, read_tensors, write_json
from .config import RESUME_FREE, TrainConfig
from .evaluation import dataset_paths_prompts
from .feature_cache import settings_key, state_digest
from .features import CachedFeatures, encode_features
from .metrics import summarize
from .probe import linear_probe
from .report import make_plots
from .run_folder import BEST, REPORT, SPLITS, check_run_settings

__all__ = ["SplitTrainer", "run_settings", "run_splits"]


class SplitTrainer(Protocol):
    """What the protocol needs of a trainer (``Trainer`` is one): it trains one split at a time, the protocol
    does the rest."""

    config: TrainConfig
    dataset: QualityDataset
    model: MSTCLIPIQA
    splits: Sequence[Split] | None
    resume: bool
    show: bool
    outputs: Sequence[str]
    features: CachedFeatures | None
    encoder_settings: dict[str, Any]
    initial_state: dict[str, torch.Tensor]
    validation_note: str | None
    output_dir: Path
    timing: dict[str, float]
    accelerator: Any

    def prepare(self) -> None: ...

    def fit_split(self, k: int, split: Split) -> dict[str, Any]: ...

    def split_dir(self, k: int) -> Path: ...

    def load_state(self, state: dict[str, torch.Tensor]) -> None: ...


def run_splits(trainer: SplitTrainer) -> dict[str, Any]:
    """All splits, then the chosen model, ``report.json`` and plots; returns the report."""
    trainer.prepare()
    cfg, dataset = trainer.config, trainer.dataset
    splits = trainer.splits or (
        [reference_split(dataset, 1 - cfg.test_fraction, cfg.seed)] if cfg.split_method == "reference" else
        make_splits(dataset, cfg.n_splits, cfg.test_fraction, cfg.val_fraction, cfg.resolved_split_by(dataset),
                    seed=cfg.seed))
    wrong = [k for k, s in enumerate(splits) if s.n != len(dataset)]
    if wrong:
        raise ValueError(f"splits {wrong} are for n={splits[wrong[0]].n} samples; the data set has {len(dataset)}")
    splits, trainer.validation_note = small_validation_rule(splits, dataset, cfg.min_val_groups)
    if trainer.validation_note and trainer.accelerator.is_main_process:
        warnings.warn(trainer.validation_note, stacklevel=3)  # at the caller of Trainer.run
    acc, directory = trainer.accelerator, trainer.split_dir(0).parent
    lock = on_main(acc, RunLock(directory).acquire)
    try:
        on_main(acc, lambda: check_run_settings(directory, run_settings(trainer, splits), trainer.resume))
        probes = _probes(trainer, splits)  # before training: with encoder adapters the features must be the frozen ones
        bar = progress_bar(list(enumerate(splits)), desc="splits", unit="split",
                           disable=not trainer.show or len(splits) < 2)
        results = [trainer.fit_split(k, split) for k, split in bar]
        return _report(trainer, splits, results, probes)
    finally:
        if lock is not None:
            lock.release()


def small_validation_rule(splits: Sequence[Split], dataset: QualityDataset,
                          min_groups: int) -> tuple[list[Split], str | None]:
    """No validation part when one would hold fewer than ``min_groups`` groups (prompts, or images when split
    by image): an epoch picked on one prompt's ranking is close to a random one (docs/template-head.md). Then
    every split's validation part joins its training part, the last epoch is kept, and the note says so."""
    group_of = dataset.groups()
    counts = [len({group_of[i] for i in s.val}) if s.by == "prompt" else len(s.val) for s in splits]
    small = sorted({c for c in counts if 0 < c < min_groups})
    if not small:
        return list(splits), None
    unit = "prompt(s)" if splits[0].by == "prompt" else "image(s)"
    note = (f"validation parts of {'/'.join(map(str, small))} {unit}, fewer than min_val_groups={min_groups}: "
            f"no validation part, it joins training and the last epoch is kept (min_val_groups=1, --min-val-groups 1, "
            "selects on it)")
    return [without_validation(s) for s in splits], note


def run_settings(trainer: SplitTrainer, splits: Sequence[Split]) -> dict[str, Any]:
    """What must not change between a run and its resumption."""
    train = {k: v for k, v in trainer.config.to_dict().items() if k not in RESUME_FREE}
    samples = [[Path(s.image).name, s.prompt, s.scores] for s in trainer.dataset.samples]
    return {"train": train, "model": trainer.model.config.to_dict(), "outputs": list(trainer.outputs),
            "encoders": settings_key(trainer.encoder_settings), "initial_state": state_digest(trainer.initial_state),
            "dataset": {"name": trainer.dataset.name, "n": len(trainer.dataset), "digest": settings_key(samples)},
            "splits": settings_key([asdict(s) for s in splits])}


def _report(trainer: SplitTrainer, splits: Sequence[Split], results: list[dict[str, Any]],
            probes: list[dict[str, Any]]) -> dict[str, Any]:
    directory, acc = trainer.output_dir, trainer.accelerator
    scores = [r["best_val_score"] if r["best_val_score"] is not None else float("-inf") for r in results]
    chosen = max(range(len(results)), key=lambda i: (scores[i], -i))  # ties: the first split
    model_dir = _save_model(trainer, chosen)
    report = {
        "recipe": {"name": trainer.config.recipe, "description": trainer.config.describe(trainer.dataset),
                   "changed": trainer.config.overrides()},
        "settings": {**run_settings(trainer, splits), "train": trainer.config.to_dict()},
        "label_ranges": {o: trainer.dataset.label_ranges[o] for o in trainer.outputs},
        "summary": {"test": _summary(trainer.outputs, results, "test"),
                    "untrained_test": _summary(trainer.outputs, [r["untrained"] for r in results], "test"),
                    "probe_test": {o: summarize([p[o]["test"] for p in probes]) for o in trainer.outputs}},
        "splits": [{**{k: v for k, v in r.items() if k != "test_predictions"}, "probe": p}
                   for r, p in zip(results, probes)],
        "saturation": trainer.saturation, "validation_note": trainer.validation_note,
        "selected_split": chosen, "model_dir": str(model_dir), "splits_file": SPLITS, "timing": trainer.timing,
        "environment": run_environment(acc),
    }
    if acc.is_main_process:
        plots = make_plots(results, trainer.outputs, directory / "plots", trainer.config.select_metric)
        report["plots"] = [str(p.relative_to(directory)) for p in plots]
        save_splits(splits, directory / SPLITS)  # what `mst-clipiqa eval` reads to know the test parts
        write_json(directory / REPORT, report)
        if not trainer.config.lora_rank:  # the card written with the model could not know its test metrics yet
            trainer.model.generate_model_card(report=report).save(model_dir / "README.md")
    acc.wait_for_everyone()
    return report


def _probes(trainer: SplitTrainer, splits: Sequence[Split]) -> list[dict[str, Any]]:
    """A ridge probe on the frozen features per split (see ``probe``), the floor the trained heads should reach."""
    features, cfg = trainer.features, trainer.config
    if features is None:  # no feature cache: encode once, in memory
        features = encode_features(trainer.model, *dataset_paths_prompts(trainer.dataset), cfg.encode_batch_size,
                                   cfg.num_workers, cfg.mixed_precision, trainer.show)
    prompt_outputs = [o for o in trainer.outputs if HEAD_KINDS[trainer.model.config.heads[o]].needs_prompt]
    return [linear_probe(features, trainer.dataset, split, trainer.outputs, prompt_outputs) for split in splits]


def _summary(outputs: Sequence[str], results: Sequence[dict], part: str) -> dict[str, Any]:
    return {o: summarize([r[part][o] for r in results]) for o in outputs}


def _save_model(trainer: SplitTrainer, split_index: int) -> Path:
    """The chosen split's best weights as a ``save_pretrained`` directory (``adapter/`` for LoRA)."""
    acc, cfg = trainer.accelerator, trainer.config
    best, _ = read_tensors(trainer.split_dir(split_index) / BEST, "the best epoch's weights of a finished split")
    trainer.load_state({k: v.to(acc.device) for k, v in best.items()})
    target = trainer.output_dir / ("adapter" if cfg.lora_rank else "model")
    if acc.is_main_process:
        shutil.rmtree(target, ignore_errors=True)
        if cfg.lora_rank:
            save_adapter(trainer.model, target, cfg.adapter_name)
        else:
            trainer.model.save_pretrained(target)
    acc.wait_for_everyone()
    return target
