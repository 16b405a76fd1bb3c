"""Training and evaluation of MST-CLIPIQA over repeated seeded splits (the field's protocol).

For each split the fusion and heads (or a LoRA adapter) start from the same
initial weights, train on the train part, and the epoch with the best
validation score (validation is carved from training, never from test) is
evaluated once on the test part. A checkpoint is written atomically after
every epoch; ``resume=True`` continues a killed run and ends where an
uninterrupted run would, because each epoch's data order depends only on
(seed, split, epoch) and the RNG states travel in the checkpoint.
"""
from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..datasets import QualityDataset, collate
from ..losses import mse_rank_loss
from ..metrics import evaluate, krcc, plcc, srcc, summarize
from ..model import MSTCLIPIQA
from ..preprocess import fit_to_size
from ..splits import BY_CHOICES, Split, make_splits
from .checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from .feature_cache import (PRECISIONS, CachedFeatures, FeatureCache, atomic_save, encode_features,
                            encoder_settings, settings_key, state_digest)
from .lora import adapter_names, add_adapter, has_encoder_adapter, save_adapter, trainable_state_dict
from .report import make_plots, write_json

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SELECT_METRICS = {"srcc": srcc, "plcc": plcc, "krcc": krcc}
# Settings that may change between a run and its resumption without changing the result.
RESUME_FREE = ("progress", "num_workers", "cache_dir", "encode_batch_size", "eval_batch_size")
RUN_FILE = "run.json"
CHECKPOINT = "checkpoint.safetensors"
BEST = "best.safetensors"
RESULT = "result.json"


@dataclass
class TrainConfig:
    """Training settings. The defaults are the paper's reference setup: Adam, lr 5e-6, weight decay
    1e-3, batch 8, 20 epochs, loss MSE + 1.0 x pairwise margin-ranking (margin 0.1), and the
    field's protocol of ten seeded 8:2 splits, here with 10% of the data carved from the training
    part for validation (model selection by ``select_metric``).

    ``outputs``: which named outputs to train and evaluate (default: every model output the data
    set scores). ``use_cache``: train the fusion and heads on cached encoder outputs when the
    encoders are frozen (default). ``lora_rank > 0``: train a LoRA adapter named ``adapter_name``
    instead of the fusion and heads; ``lora_encoders`` also adapts the vision encoders' attention
    (no cache then). ``mixed_precision``: ``no``, ``fp16`` or ``bf16`` (accelerate); ``cpu``
    forces the CPU even when a GPU is present. Batch size is per process under DDP.
    """

    epochs: int = 20
    batch_size: int = 8
    lr: float = 5e-6
    weight_decay: float = 1e-3
    optimizer: str = "adam"
    margin: float = 0.1
    rank_weight: float = 1.0
    outputs: tuple[str, ...] | None = None
    seed: int = 0
    n_splits: int = 10
    split_by: str = "image"
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    select_metric: str = "srcc"
    use_cache: bool = True
    cache_dir: str | None = None
    encode_batch_size: int = 32
    eval_batch_size: int = 256
    num_workers: int = 0
    mixed_precision: str = "no"
    cpu: bool = False
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_encoders: bool = False
    adapter_name: str = "default"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.outputs is not None:
            self.outputs = (self.outputs,) if isinstance(self.outputs, str) else tuple(self.outputs)
        for name in ("epochs", "batch_size", "n_splits", "encode_batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.weight_decay < 0 or self.margin < 0 or self.rank_weight < 0:
            raise ValueError(f"lr={self.lr}, weight_decay={self.weight_decay}, margin={self.margin}, "
                             f"rank_weight={self.rank_weight}; expected lr > 0 and the others >= 0")
        choices = {"optimizer": OPTIMIZERS, "split_by": BY_CHOICES, "select_metric": SELECT_METRICS,
                   "mixed_precision": PRECISIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {sorted(allowed)}, got {getattr(self, name)!r}")
        if self.lora_rank < 0 or (self.lora_encoders and not self.lora_rank):
            raise ValueError(f"lora_rank={self.lora_rank}, lora_encoders={self.lora_encoders}; expected "
                             "lora_rank >= 0, and lora_rank >= 1 when lora_encoders is set")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_outputs(model: MSTCLIPIQA, dataset: QualityDataset, outputs: Sequence[str] | None) -> tuple[str, ...]:
    """The outputs to train / evaluate: ``outputs``, or every model output the data set scores."""
    if outputs is None:
        outputs = [o for o in model.outputs if o in dataset.outputs]
        if not outputs:
            raise ValueError(f"the model predicts {list(model.outputs)} but data set {dataset.name!r} scores "
                             f"{list(dataset.outputs)}; expected at least one shared output name")
    missing = [o for o in outputs if o not in model.outputs or o not in dataset.outputs]
    if missing or not outputs:
        raise ValueError(f"outputs {missing or list(outputs)} must be predicted by the model {list(model.outputs)} "
                         f"and scored by data set {dataset.name!r} {list(dataset.outputs)}")
    return tuple(outputs)


@torch.no_grad()
def predict_features(model: MSTCLIPIQA, features: CachedFeatures, indices: Sequence[int], outputs: Sequence[str],
                     batch_size: int = 256) -> dict[str, np.ndarray]:
    """Scores of the samples at ``indices`` from their encoder outputs, per output, as float64 arrays."""
    model.eval()
    indices = list(indices)
    parts: dict[str, list[torch.Tensor]] = {o: [] for o in outputs}
    for start in range(0, len(indices), batch_size):
        scores = model.forward_features(**features.inputs(indices[start:start + batch_size]))
        for o in outputs:
            parts[o].append(scores[o].float().cpu())
    return {o: torch.cat(p).double().numpy() for o, p in parts.items()}


def dataset_paths_prompts(dataset: QualityDataset, indices: Sequence[int] | None = None) -> tuple[list, list]:
    samples = dataset.samples if indices is None else [dataset.samples[i] for i in indices]
    return [s.image for s in samples], [s.prompt for s in samples]


def epoch_batches(indices: Sequence[int], batch_size: int, seed: int, split_index: int, epoch: int,
                  rank: int = 0, world: int = 1) -> list[list[int]]:
    """This process's batches for one epoch; the order depends only on (seed, split, epoch).

    Under DDP every process gets the same number of batches (the last ones
    wrap around to the first), as gradient averaging requires.
    """
    order = np.random.default_rng([seed, split_index, epoch]).permutation(np.asarray(indices, dtype=np.int64))
    batches = [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    if world > 1:  # cycle, so that even fewer batches than processes give every process one
        batches = [batches[i % len(batches)] for i in range(-(-len(batches) // world) * world)]
    return batches[rank::world]


def new_accelerator(**settings: Any) -> Accelerator:
    """An ``Accelerator`` with these settings, even if another one in this process chose others.

    accelerate keeps one process-wide state and refuses new settings; the later
    trainer's settings win (the distributed setup itself is kept).
    """
    try:
        return Accelerator(**settings)
    except ValueError:
        AcceleratorState._reset_state(reset_partial_state=False)
        return Accelerator(**settings)


class _Scorer(nn.Module):
    """One forward for accelerate / DDP: images (encoders run) or cached encoder outputs."""

    def __init__(self, model: MSTCLIPIQA):
        super().__init__()
        self.model = model

    def forward(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        if "images" in inputs:
            return self.model(inputs["images"], inputs["prompts"])
        return self.model.forward_features(**inputs)


class Trainer:
    """Trains and evaluates one model on one data set over repeated splits; see the module docstring.

    ``run()`` writes under ``output_dir``: ``run.json`` (settings, checked on
    resume), ``split_NN/`` (checkpoint while training, then ``result.json``
    and ``best.safetensors``), ``model/`` (``save_pretrained`` of the split
    with the best validation score; ``adapter/`` for LoRA training),
    ``report.json`` and ``plots/*.png``. ``on_epoch_end(split, epoch, record)``
    is called after each epoch's checkpoint is written.
    """

    def __init__(self, model: MSTCLIPIQA, dataset: QualityDataset, config: TrainConfig | None = None,
                 output_dir: str | Path | None = None, splits: Sequence[Split] | None = None, resume: bool = False,
                 on_epoch_end: Callable[[int, int, dict], None] | None = None):
        self.model = model
        self.dataset = dataset
        self.config = config or TrainConfig()
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.splits = list(splits) if splits is not None else None
        self.resume = resume
        self.on_epoch_end = on_epoch_end
        self.accelerator: Accelerator | None = None
        self.features: CachedFeatures | None = None
        self.timing: dict[str, float] = {}

    # ------------------------------------------------------------------ setup

    def prepare(self) -> None:
        """Devices, adapters, trainable weights and encoder outputs; ``run()`` calls it."""
        if self.accelerator is not None:
            return
        cfg = self.config
        self.outputs = resolve_outputs(self.model, self.dataset, cfg.outputs)
        self.accelerator = new_accelerator(cpu=cfg.cpu, mixed_precision=cfg.mixed_precision)
        self.show = cfg.progress and self.accelerator.is_local_main_process
        set_seed(cfg.seed)  # LoRA's initial weights
        self._select_trainable()
        self.model.to(self.accelerator.device)
        self.initial_state = {k: v.detach().clone() for k, v in trainable_state_dict(self.model).items()}
        self.targets = {o: torch.tensor(self.dataset.score_array(o), dtype=torch.float32,
                                        device=self.accelerator.device) for o in self.outputs}
        self._check_label_ranges()
        self.encoder_settings = encoder_settings(self.model, cfg.mixed_precision)
        self._load_features()
        self.scorer = self.accelerator.prepare(_Scorer(self.model))
        self.optimizer = self._make_optimizer()

    def _select_trainable(self) -> None:
        cfg = self.config
        if adapter_names(self.model) and not cfg.lora_rank:
            raise ValueError(f"the model carries adapters {adapter_names(self.model)}: train a new adapter on top "
                             "(lora_rank > 0), or merge them first with reward.training.merge_adapters")
        if cfg.lora_rank:
            add_adapter(self.model, cfg.adapter_name, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout,
                        cfg.lora_encoders)
            return
        for name, module in (("fusion", self.model.fusion), *self.model.heads.items()):
            module.requires_grad_(name == "fusion" or name in self.outputs)

    def _check_label_ranges(self) -> None:
        """A template head can only output [1, K]: labels outside it cannot be fitted."""
        for output in self.outputs:
            if self.model.config.heads[output] != "template":
                continue
            low, high = self.model.config.score_ranges[output]
            labels = self.dataset.score_array(output)
            outside = float(np.mean((labels < low) | (labels > high)))
            if outside > 0.05:
                warnings.warn(f"{100 * outside:.0f}% of {output!r} labels lie outside the template head's range "
                              f"[{low}, {high}] (labels span [{labels.min():.3g}, {labels.max():.3g}]); rescale "
                              "them to that range or use a prompt head", stacklevel=3)

    @property
    def trains_from_cache(self) -> bool:
        """Cached features feed training only when inputs are not augmented (evaluation never augments)."""
        return self.features is not None and self.dataset.transform is None

    def _load_features(self) -> None:
        cfg = self.config
        if not cfg.use_cache or has_encoder_adapter(self.model):
            return
        start = time.perf_counter()
        cache = FeatureCache(cfg.cache_dir, self.model, cfg.mixed_precision, cfg.encode_batch_size,
                             cfg.num_workers, self.show, self.encoder_settings)
        paths, prompts = dataset_paths_prompts(self.dataset)
        acc = self.accelerator
        features = cache.features(paths, prompts, (acc.process_index, acc.num_processes), acc.wait_for_everyone)
        self.features = features.to(acc.device)
        self.timing["features_seconds"] = time.perf_counter() - start

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: every parameter is frozen")
        optimizer = OPTIMIZERS[self.config.optimizer](params, lr=self.config.lr, weight_decay=self.config.weight_decay)
        return self.accelerator.prepare(optimizer)

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        result = self.model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"state does not fit the model: unexpected {result.unexpected_keys[:5]}")

    # ------------------------------------------------------------------ one epoch

    def train_epoch(self, indices: Sequence[int], epoch: int, split_index: int = 0) -> float:
        """One pass over the samples at ``indices``; returns the mean training loss."""
        self.prepare()
        self.model.train()
        acc, losses = self.accelerator, []
        batches = epoch_batches(indices, self.config.batch_size, self.config.seed, split_index, epoch,
                                acc.process_index, acc.num_processes)
        for inputs, idx in self._batches(batches):
            with acc.autocast():
                scores = self.scorer(inputs)
            loss = self.loss(scores, idx)
            self.optimizer.zero_grad()
            acc.backward(loss)
            self.optimizer.step()
            losses.append(loss.detach())
        return float(torch.stack(losses).mean()) if losses else float("nan")

    def _batches(self, batches: list[list[int]]):
        if self.trains_from_cache:
            for batch in batches:
                yield self.features.inputs(batch), torch.tensor(batch, device=self.accelerator.device)
            return
        loader = DataLoader(self.dataset, batch_sampler=batches, collate_fn=collate,
                            num_workers=self.config.num_workers)
        size, device = self.model.fit_size, self.accelerator.device
        for batch in loader:
            images = torch.stack([fit_to_size(image, size) for image in batch["images"]]).to(device)
            yield {"images": images, "prompts": batch["prompts"]}, batch["indices"].to(device)

    def loss(self, scores: dict[str, torch.Tensor], indices: torch.Tensor) -> torch.Tensor:
        """Sum over outputs of MSE + ``rank_weight`` x pairwise margin ranking loss."""
        cfg = self.config
        return sum(mse_rank_loss(scores[o].float(), self.targets[o][indices], cfg.margin, cfg.rank_weight)
                   for o in self.outputs)

    # ------------------------------------------------------------------ evaluation

    def predict(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """Scores of the samples at ``indices`` (cached encoder outputs when there are some)."""
        self.prepare()
        if self.features is not None:
            return predict_features(self.model, self.features, indices, self.outputs, self.config.eval_batch_size)
        paths, prompts = dataset_paths_prompts(self.dataset, indices)
        features = encode_features(self.model, paths, prompts, self.config.encode_batch_size,
                                   self.config.num_workers, self.config.mixed_precision, self.show)
        return predict_features(self.model, features.to(self.accelerator.device), range(len(indices)),
                                self.outputs, self.config.eval_batch_size)

    def _validate(self, indices: Sequence[int]) -> dict[str, Any]:
        if len(indices) < 2:
            return {"val_loss": None, "val": {}}
        predictions = self.predict(indices)
        idx = torch.tensor(list(indices), device=self.accelerator.device)
        scores = {o: torch.from_numpy(p).to(self.accelerator.device) for o, p in predictions.items()}
        target = {o: self.dataset.score_array(o)[list(indices)] for o in self.outputs}
        val = {o: {name: fn(predictions[o], target[o]) for name, fn in SELECT_METRICS.items()} for o in self.outputs}
        return {"val_loss": float(self.loss(scores, idx)), "val": val}

    def _test(self, indices: Sequence[int]) -> tuple[dict, dict]:
        predictions = self.predict(indices)
        target = {o: self.dataset.score_array(o)[list(indices)] for o in self.outputs}
        metrics = {o: evaluate(predictions[o], target[o]) for o in self.outputs}
        return metrics, {o: {"pred": predictions[o].tolist(), "mos": target[o].tolist()} for o in self.outputs}

    def _selection_score(self, record: dict) -> float:
        values = [record["val"][o][self.config.select_metric] for o in self.outputs] if record["val"] else []
        score = float(np.mean(values)) if values else float("nan")
        return score if np.isfinite(score) else float("-inf")

    # ------------------------------------------------------------------ one split

    def fit_split(self, k: int, split: Split) -> dict[str, Any]:
        """Train on split ``k`` (resuming its checkpoint if there is one) and evaluate the chosen epoch."""
        directory = self._split_dir(k)
        if (directory / RESULT).exists():
            return json.loads((directory / RESULT).read_text())
        progress = self._start_split(k, split, directory)
        bar = tqdm(range(progress["epoch"], self.config.epochs), desc=f"split {k}", unit="epoch",
                   disable=not self.show, initial=progress["epoch"], total=self.config.epochs)
        for epoch in bar:
            record = self._run_epoch(k, epoch, split)
            progress["history"].append(record)
            progress["epoch"] = epoch + 1
            score = self._selection_score(record)
            if progress["best"] is None or score > progress["best"]["score"] or not split.val:
                progress["best"] = {"epoch": epoch + 1, "score": score}
                self.best_state = {n: v.detach().clone() for n, v in trainable_state_dict(self.model).items()}
            self._save_checkpoint(directory, progress)
            bar.set_postfix(loss=f"{record['train_loss']:.4f}", val=f"{score:.3f}")
            if self.on_epoch_end is not None:
                self.on_epoch_end(k, epoch, record)
        return self._finish_split(k, split, directory, progress)

    def _split_dir(self, k: int) -> Path:
        if self.output_dir is None:
            raise ValueError("output_dir is not set; pass output_dir= to Trainer")
        return self.output_dir / f"split_{k:02d}"

    def _start_split(self, k: int, split: Split, directory: Path) -> dict[str, Any]:
        self._load_state(self.initial_state)
        self.optimizer = self._make_optimizer()
        set_seed(self.config.seed + k)
        if (directory / CHECKPOINT).exists():
            checkpoint = load_checkpoint(directory / CHECKPOINT)
            self._load_state(checkpoint.model_state)
            self.best_state = checkpoint.best_state
            self.optimizer.load_state_dict(checkpoint.optimizer_state)
            set_rng_state(*checkpoint.rng)
            return checkpoint.progress
        self.best_state = dict(self.initial_state)
        val = self._validate(split.val)
        untrained = {"val": val["val"], "test": self._test(split.test)[0]}
        return {"epoch": 0, "history": [], "best": None, "untrained": untrained}

    def _run_epoch(self, k: int, epoch: int, split: Split) -> dict[str, Any]:
        start = time.perf_counter()
        train_loss = self.train_epoch(split.train, epoch, k)
        middle = time.perf_counter()
        record = {"epoch": epoch + 1, "train_loss": train_loss, **self._validate(split.val)}
        record.update(train_seconds=middle - start, eval_seconds=time.perf_counter() - middle)
        return record

    def _save_checkpoint(self, directory: Path, progress: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            save_checkpoint(directory / CHECKPOINT, trainable_state_dict(self.model), self.best_state,
                            self.optimizer, progress)
        self.accelerator.wait_for_everyone()

    def _finish_split(self, k: int, split: Split, directory: Path, progress: dict[str, Any]) -> dict[str, Any]:
        self._load_state(self.best_state)
        test, predictions = self._test(split.test)
        result = {"split": k, "n_train": len(split.train), "n_val": len(split.val), "n_test": len(split.test),
                  "best_epoch": progress["best"]["epoch"], "best_val_score": progress["best"]["score"],
                  "untrained": progress["untrained"], "test": test, "history": progress["history"],
                  "test_predictions": predictions}
        if self.accelerator.is_main_process:
            atomic_save(self.best_state, directory / BEST)
            write_json(directory / RESULT, result)
            (directory / CHECKPOINT).unlink(missing_ok=True)
        self.accelerator.wait_for_everyone()
        return json.loads((directory / RESULT).read_text())

    # ------------------------------------------------------------------ the whole run

    def run(self) -> dict[str, Any]:
        """All splits, then the chosen model, ``report.json`` and plots; returns the report."""
        self.prepare()
        splits = self.splits or make_splits(self.dataset, self.config.n_splits, self.config.test_fraction,
                                            self.config.val_fraction, self.config.split_by, seed=self.config.seed)
        wrong = [k for k, s in enumerate(splits) if s.n != len(self.dataset)]
        if wrong:
            raise ValueError(f"splits {wrong} are for n={splits[wrong[0]].n} samples; the data set has "
                             f"{len(self.dataset)}")
        self._check_run_dir(splits)
        bar = tqdm(list(enumerate(splits)), desc="splits", unit="split", disable=not self.show or len(splits) < 2)
        results = [self.fit_split(k, split) for k, split in bar]
        return self._report(splits, results)

    def _run_settings(self, splits: Sequence[Split]) -> dict[str, Any]:
        train = {k: v for k, v in self.config.to_dict().items() if k not in RESUME_FREE}
        samples = [[Path(s.image).name, s.prompt, s.scores] for s in self.dataset.samples]
        return {"train": train, "model": self.model.config.to_dict(), "outputs": list(self.outputs),
                "encoders": settings_key(self.encoder_settings), "initial_state": state_digest(self.initial_state),
                "dataset": {"name": self.dataset.name, "n": len(self.dataset), "digest": settings_key(samples)},
                "splits": settings_key([asdict(s) for s in splits])}

    def _check_run_dir(self, splits: Sequence[Split]) -> None:
        path = self._split_dir(0).parent / RUN_FILE
        settings = json.loads(json.dumps(self._run_settings(splits)))
        if path.exists():
            if not self.resume:
                raise ValueError(f"{path.parent} already holds a run; pass resume=True (--resume) to continue it, "
                                 "or choose a new output directory")
            saved = json.loads(path.read_text())
            differing = sorted(k for k in settings if saved.get(k) != settings[k])
            if differing:
                raise ValueError(f"cannot resume {path.parent}: {differing} differ from the interrupted run; "
                                 "expected the same model, data, splits and settings")
        elif self.accelerator.is_main_process:
            write_json(path, settings)
        self.accelerator.wait_for_everyone()

    def _report(self, splits: Sequence[Split], results: list[dict[str, Any]]) -> dict[str, Any]:
        directory = self.output_dir
        scores = [r["best_val_score"] if r["best_val_score"] is not None else float("-inf") for r in results]
        chosen = max(range(len(results)), key=lambda i: (scores[i], -i))  # ties: the first split
        model_dir = self._save_model(directory, chosen)
        report = {
            "settings": {**self._run_settings(splits), "train": self.config.to_dict()},
            "summary": {"test": self._summary(results, "test"),
                        "untrained_test": self._summary([r["untrained"] for r in results], "test")},
            "splits": [{k: v for k, v in r.items() if k != "test_predictions"} for r in results],
            "selected_split": chosen, "model_dir": str(model_dir), "timing": self.timing,
        }
        if self.accelerator.is_main_process:
            plots = make_plots(results, self.outputs, directory / "plots", self.config.select_metric)
            report["plots"] = [str(p.relative_to(directory)) for p in plots]
            write_json(directory / "report.json", report)
        self.accelerator.wait_for_everyone()
        return report

    def _summary(self, results: Sequence[dict], part: str) -> dict[str, Any]:
        return {o: summarize([r[part][o] for r in results]) for o in self.outputs}

    def _save_model(self, directory: Path, split_index: int) -> Path:
        """The chosen split's best weights as a ``save_pretrained`` directory (``adapter/`` for LoRA)."""
        self._load_state({k: v.to(self.accelerator.device)
                          for k, v in load_file(str(self._split_dir(split_index) / BEST)).items()})
        target = directory / ("adapter" if self.config.lora_rank else "model")
        if self.accelerator.is_main_process:
            shutil.rmtree(target, ignore_errors=True)
            if self.config.lora_rank:
                save_adapter(self.model, target, self.config.adapter_name)
            else:
                self.model.save_pretrained(target)
        self.accelerator.wait_for_everyone()
        return target


def train(model: MSTCLIPIQA, dataset: QualityDataset, config: TrainConfig | None = None,
          output_dir: str | Path = "runs/mst-clipiqa", splits: Sequence[Split] | None = None,
          resume: bool = False) -> dict[str, Any]:
    """Train and evaluate over splits (see :class:`Trainer`); returns the report also written to ``output_dir``."""
    return Trainer(model, dataset, config, output_dir, splits, resume).run()


def evaluate_model(model: MSTCLIPIQA, dataset: QualityDataset, splits: Sequence[Split] | None = None,
                   outputs: Sequence[str] | None = None, cache_dir: str | Path | None = None, use_cache: bool = True,
                   batch_size: int = 32, progress: bool = True) -> dict[str, Any]:
    """Metrics of a model on a data set: on each split's test part with their summary, or on all of it.

    Images are encoded once (through the feature cache unless ``use_cache=False``
    or an adapter changes the encoders), whatever the number of splits.
    """
    outputs = resolve_outputs(model, dataset, outputs)
    needed = sorted({i for s in splits for i in s.test}) if splits else list(range(len(dataset)))
    paths, prompts = dataset_paths_prompts(dataset, needed)
    if use_cache and not has_encoder_adapter(model):
        features = FeatureCache(cache_dir, model, batch_size=batch_size, progress=progress).features(paths, prompts)
    else:
        features = encode_features(model, paths, prompts, batch_size, progress=progress)
    predictions = predict_features(model, features.to(model.device), range(len(needed)), outputs)
    position = {index: j for j, index in enumerate(needed)}

    def metrics(indices: Sequence[int]) -> dict[str, dict[str, float]]:
        rows = [position[i] for i in indices]
        return {o: evaluate(predictions[o][rows], dataset.score_array(o)[list(indices)]) for o in outputs}

    if not splits:
        return {"outputs": list(outputs), "n": len(dataset), "all": metrics(needed)}
    per_split = [{"split": k, "n_test": len(s.test), "test": metrics(s.test)} for k, s in enumerate(splits)]
    summary = {o: summarize([r["test"][o] for r in per_split]) for o in outputs}
    return {"outputs": list(outputs), "n": len(dataset), "splits": per_split, "summary": summary}
