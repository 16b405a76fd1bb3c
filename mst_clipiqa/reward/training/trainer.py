"""The trainer: devices, trainable weights and cached features, then one split at a time.

For each split the fusion and heads (or a LoRA adapter) start from the same
initial weights, train on the train part, and the epoch with the best
validation score (validation is carved from training, never from test) is
evaluated once on the test part. A checkpoint is written atomically after
every epoch; ``resume=True`` continues a killed run and ends where an
uninterrupted run would, because each epoch's data order and random draws
depend only on (seed, split, epoch). A damaged
checkpoint or finished split found on resume is named in a warning and that
split trained again. The loop over splits, the run folder and the report are
in ``protocol``; the folder's files and checkpoints, in ``run_folder``.
"""
from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from mst_clipiqa.runtime.checkpoints import reseed, step_folders
from mst_clipiqa.runtime.ema import EMA
from mst_clipiqa.runtime.nonfinite import check_finite_weights
from mst_clipiqa.runtime.preemption import Preempted, StopSignals
from mst_clipiqa.runtime.processes import new_accelerator

from ..backbones import fit_to_size
from ..datasets import QualityDataset, Split, collate
from ..model import MSTCLIPIQA, has_encoder_adapter, set_ensemble, trainable_state_dict
from ..utils import progress_bar, read_json, save_tensors, write_json
from .bootstrap import bootstrap_counts
from .config import TrainConfig
from .distributed import epoch_batches, gather_rows
from .evaluation import dataset_paths_prompts, predict_features, resolve_outputs
from .feature_cache import FeatureCache, encoder_settings
from .features import CachedFeatures, encode_features
from .label_units import adopt_label_ranges, head_labels, to_label_units
from .losses import mse_rank_loss
from .metrics import evaluate, krcc, plcc, srcc
from .param_groups import param_groups, select_trainable
from .protocol import run_splits
from .recipes import lr_factor
from .run_folder import BEST, RESULT, finished_result, load_checkpoint, remove_checkpoints, save_checkpoint
from .saturation import start_check
from .scorer import Scorer
from .selection import per_output_best
from .threads import head_threads

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}  # config.OPTIMIZER_NAMES
SELECT_METRICS = {"srcc": srcc, "plcc": plcc, "krcc": krcc}  # config.SELECT_METRIC_NAMES


class Trainer:
    """Trains and evaluates one model on one data set over repeated splits; see the module docstring.

    ``run()`` writes under ``output_dir``: ``run.json`` (settings, checked on
    resume), ``split_NN/`` (checkpoint while training, then ``result.json``
    and ``best.safetensors``), ``model/`` (``save_pretrained`` of the split
    with the best validation score; ``adapter/`` for LoRA training),
    ``report.json`` and ``plots/*.png``. ``on_epoch_end(split, epoch, record)``
    is called after each epoch's checkpoint is written. ``features`` (encoder outputs of the
    data set's samples, in order) replaces encoding and the feature cache.
    """

    def __init__(self, model: MSTCLIPIQA, dataset: QualityDataset, config: TrainConfig | None = None,
                 output_dir: str | Path | None = None, splits: Sequence[Split] | None = None, resume: bool = False,
                 on_epoch_end: Callable[[int, int, dict], None] | None = None,
                 features: CachedFeatures | None = None):
        self.model = model
        self.dataset = dataset
        self.config = config or TrainConfig()
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.splits = list(splits) if splits is not None else None
        self.resume = resume
        self.on_epoch_end = on_epoch_end
        self.accelerator: Accelerator | None = None
        self.features = features  # given: precomputed encoder outputs of the data set's samples, in order
        self.timing: dict[str, float] = {}
        self.validation_note: str | None = None  # set by the protocol when small validation parts are dropped
        self.signals = StopSignals()
        self.ema: EMA | None = None  # each split's average of the trained weights (config.ema_decay > 0)

    # ------------------------------------------------------------------ setup

    def prepare(self) -> None:
        """Devices, adapters, trainable weights and encoder outputs; ``run()`` calls it."""
        if self.accelerator is not None:
            return
        cfg = self.config
        self.outputs = resolve_outputs(self.model, self.dataset, cfg.outputs)
        self.accelerator = new_accelerator(cpu=cfg.cpu, mixed_precision=cfg.mixed_precision)
        # the precision actually used (the launcher's when the config left it open) is what runs and is recorded
        self.config = cfg = replace(cfg, mixed_precision=self.accelerator.mixed_precision)
        self.show = cfg.progress and self.accelerator.is_local_main_process
        set_seed(cfg.seed)  # the initial weights of a fresh init or of LoRA
        if cfg.ensemble > 1:
            set_ensemble(self.model, cfg.ensemble)
        if cfg.init != "keep":
            self.model.reinitialize(cfg.init)
        select_trainable(self.model, cfg, self.outputs)
        self.model.to(self.accelerator.device)
        self.initial_state = {k: v.detach().clone() for k, v in trainable_state_dict(self.model).items()}
        adopt_label_ranges(self.model, self.dataset, self.outputs)
        self.targets = {o: torch.tensor(head_labels(self.model, self.dataset, o), dtype=torch.float32,
                                        device=self.accelerator.device) for o in self.outputs}
        self.encoder_settings = encoder_settings(self.model, cfg.mixed_precision)
        self._load_features()
        self.scorer = self.accelerator.prepare(Scorer(self.model))
        self.optimizer = self._make_optimizer()
        self.saturation = start_check(self.model, self.features, self.targets, self._output_loss,
                                      cfg.weight_decay, self.outputs, warn=self.accelerator.is_main_process)

    @property
    def trains_from_cache(self) -> bool:
        """Cached features feed training only when inputs are not augmented (evaluation never augments)."""
        return self.features is not None and self.dataset.transform is None

    def _load_features(self) -> None:
        cfg = self.config
        if self.features is not None:
            if len(self.features) != len(self.dataset):
                raise ValueError(f"features has {len(self.features)} rows; the data set has {len(self.dataset)}")
            self.features = self.features.to(self.accelerator.device)
            return
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
        groups = param_groups(self.model, self.config.lr, self.config.temperature_lr)
        optimizer = OPTIMIZERS[self.config.optimizer](groups, lr=self.config.lr, weight_decay=self.config.weight_decay)
        return self.accelerator.prepare(optimizer)

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        result = self.model.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise ValueError(f"state does not fit the model: unexpected {result.unexpected_keys[:5]}")

    # ------------------------------------------------------------------ one epoch

    def train_epoch(self, indices: Sequence[int], epoch: int, split_index: int = 0) -> float:
        """One pass over the samples at ``indices``; returns the mean training loss."""
        self.prepare()
        self.model.train()
        reseed(self.config.seed, split_index, epoch)
        acc, losses = self.accelerator, []
        batches = epoch_batches(indices, self.config.batch_size, self.config.seed, split_index, epoch,
                                acc.process_index, acc.num_processes)
        if self.model.config.ensemble > 1:
            self.counts = bootstrap_counts(indices, len(self.dataset), self.model.config.ensemble,
                                           self.config.seed, split_index).to(acc.device)
        self._set_lr(epoch / self.config.epochs)
        with self._cached_threads(self.trains_from_cache):
            for inputs, idx in self._batches(batches):
                self._stop_inside_epoch(split_index, epoch)
                with acc.autocast():
                    scores = self.scorer(inputs)
                loss = self.loss(scores, idx)
                self.optimizer.zero_grad()
                acc.backward(loss)
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.step()
                losses.append(loss.detach())
        if not losses:
            return float("nan")
        return float(acc.reduce(torch.stack(losses).mean(), "mean"))  # every process has as many batches

    def _cached_threads(self, cached: bool):
        return head_threads(self.config.threads, self.accelerator.device) if cached else nullcontext()

    def _set_lr(self, progress: float) -> None:
        """One learning rate per epoch, a function of the epoch alone: a resumed run follows the schedule exactly."""
        for group in self.optimizer.param_groups:
            group["lr"] = group.get("base_lr", self.config.lr) * lr_factor(self.config.schedule, progress)

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
        """Sum over outputs of MSE + ``rank_weight`` x pairwise margin ranking loss; for an ensemble's (K, B)
        scores, the sum over members of each one's loss on its bootstrap resample of the training part."""
        return sum(self._output_loss(scores[o].float(), self.targets[o][indices])
                   if scores[o].dim() == 1 else
                   sum(self._output_loss(member, self.targets[o][indices], counts[indices])
                       for member, counts in zip(scores[o].float(), self.counts))
                   for o in self.outputs)

    def _output_loss(self, pred: torch.Tensor, target: torch.Tensor,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
        return mse_rank_loss(pred, target, self.config.margin, self.config.rank_weight, weights)

    # ------------------------------------------------------------------ evaluation

    def predict(self, indices: Sequence[int]) -> dict[str, np.ndarray]:
        """Scores of the samples at ``indices``; each process scores its share, every process gets them all."""
        self.prepare()
        indices = list(indices)
        return gather_rows(self.accelerator, len(indices), lambda rows: self._predict([indices[r] for r in rows]))

    def _predict(self, indices: list[int]) -> dict[str, np.ndarray]:
        if self.features is not None:
            with self._cached_threads(True):
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
        """Metrics and predictions in the data set's label units."""
        predictions = {o: to_label_units(self.model, self.dataset, o, p) for o, p in self.predict(indices).items()}
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
        directory = self.split_dir(k)
        finished = self._recover(lambda: finished_result(directory), f"training {directory.name} again")
        if finished is not None:
            return finished
        progress = self._start_split(k, split, directory)
        bar = progress_bar(range(progress["epoch"], self.config.epochs), desc=f"split {k}", unit="epoch",
                           disable=not self.show, initial=progress["epoch"], total=self.config.epochs)
        for epoch in bar:
            record = self._run_epoch(k, epoch, split)
            progress["history"].append(record)
            progress["epoch"] = epoch + 1
            score, best = self._selection_score(record), progress["best"]
            # a checkpoint's JSON stores a best score of -inf (none finite yet) as null
            if best is None or not split.val or score > (-np.inf if best["score"] is None else best["score"]):
                progress["best"] = {"epoch": epoch + 1, "score": score}
                with self._averaged():
                    self.best_state = {n: v.detach().clone() for n, v in trainable_state_dict(self.model).items()}
            save_checkpoint(directory, trainable_state_dict(self.model), self.best_state, self.optimizer, progress,
                            self.ema.state()[0] if self.ema is not None else None, self.accelerator)
            self._stop_if_asked(k, epoch + 1)
            # no validation part (e.g. --recipe paper) or an undefined score: show none, not "-inf"
            shown = {"val": f"{score:.3f}"} if np.isfinite(score) else {}
            bar.set_postfix(loss=f"{record['train_loss']:.4f}", **shown)
            if self.on_epoch_end is not None:
                self.on_epoch_end(k, epoch, record)
        return self._finish_split(k, split, directory, progress)

    def _averaged(self):
        """The weights that are validated, selected and saved: the average when one is kept, else the model's."""
        return self.ema.applied() if self.ema is not None else nullcontext()

    def _stop_if_asked(self, k: int, epochs: int) -> None:
        """After an epoch's checkpoint: when any process got SIGTERM / SIGINT, raise :class:`Preempted` on all."""
        signum = self.signals.requested(self.accelerator)
        if signum:
            raise Preempted(signum, f"after epoch {epochs} of split {k}; checkpoint written to {self.split_dir(k)}; "
                                    "run the same command again with --resume (resume=True) to continue")

    def _stop_inside_epoch(self, k: int, epoch: int) -> None:
        """Before each batch: when any process got SIGTERM / SIGINT, give the epoch up and raise :class:`Preempted`
        on all. The split's checkpoint is the last finished epoch's, so a resume redoes this one bit for bit; an
        epoch without cached features can take long, longer than a scheduler's grace period."""
        signum = self.signals.requested(self.accelerator)
        if not signum:
            return
        directory = self.split_dir(k)
        kept = (f"checkpoint of epoch {epoch} in {directory}" if step_folders(directory)
                else f"nothing of split {k} saved yet")
        raise Preempted(signum, f"in epoch {epoch + 1} of split {k} (cut short, it runs again on resume); {kept}; run "
                                "the same command again with --resume (resume=True) to continue")

    def split_dir(self, k: int) -> Path:
        if self.output_dir is None:
            raise ValueError("output_dir is not set; pass output_dir= to Trainer")
        return self.output_dir / f"split_{k:02d}"

    def _start_split(self, k: int, split: Split, directory: Path) -> dict[str, Any]:
        self.load_state(self.initial_state)
        self.optimizer = self._make_optimizer()
        trainable = {n: p for n, p in self.model.named_parameters() if p.requires_grad}
        self.ema = EMA(trainable, self.config.ema_decay) if self.config.ema_decay else None
        main = self.accelerator.is_main_process
        checkpoint = self._recover(lambda: load_checkpoint(directory, main) if step_folders(directory) else None,
                                   f"restarting split {k} from its first epoch")
        if checkpoint is not None:
            self.load_state(checkpoint.part("model"))
            self.best_state = checkpoint.part("best")
            if self.ema is not None:
                self.ema.load_state(checkpoint.part("ema"))
            checkpoint.restore(self.optimizer)
            return checkpoint.meta["progress"]
        remove_checkpoints(directory, self.accelerator)  # damaged ones: never "newest" over the fresh ones
        self.best_state = dict(self.initial_state)
        val = self._validate(split.val)
        untrained = {"val": val["val"], "test": self._test(split.test)[0]}
        return {"epoch": 0, "history": [], "best": None, "untrained": untrained}

    def _recover(self, read: Callable[[], Any], fallback: str) -> Any:
        """``read()``; if it finds a damaged file, a warning naming it and what is done instead, and None."""
        try:
            return read()
        except ValueError as error:
            if self.accelerator.is_main_process:
                warnings.warn(f"{error}; {fallback}", stacklevel=3)
            return None

    def _run_epoch(self, k: int, epoch: int, split: Split) -> dict[str, Any]:
        start = time.perf_counter()
        train_loss = self.train_epoch(split.train, epoch, k)
        self._check_finite(k, epoch)
        middle = time.perf_counter()
        with self._averaged():
            record = {"epoch": epoch + 1, "train_loss": train_loss, **self._validate(split.val)}
        record.update(train_seconds=middle - start, eval_seconds=time.perf_counter() - middle)
        return record

    def _check_finite(self, k: int, epoch: int) -> None:
        """Diverged weights stop the run here, before they are validated, selected or checkpointed: the last
        checkpoint (an epoch earlier) stays the finite one a resume starts from."""
        check_finite_weights(trainable_state_dict(self.model), f"training diverged in split {k}, epoch {epoch + 1}",
                             f"nothing of this epoch was written. Try a lower lr (now {self.config.lr:g}) or full "
                             "precision (mixed_precision 'no')")

    def _finish_split(self, k: int, split: Split, directory: Path, progress: dict[str, Any]) -> dict[str, Any]:
        self.load_state(self.best_state)
        test, predictions = self._test(split.test)
        result = {"split": k, "n_train": len(split.train), "n_val": len(split.val), "n_test": len(split.test),
                  "best_epoch": progress["best"]["epoch"], "best_val_score": progress["best"]["score"],
                  "selection": {"one_epoch_serves": list(self.outputs), "metric": self.config.select_metric,
                                "ema_decay": self.config.ema_decay,
                                "outputs": per_output_best(progress["history"], self.outputs,
                                                           self.config.select_metric, progress["best"]["epoch"])},
                  "untrained": progress["untrained"], "test": test, "history": progress["history"],
                  "test_predictions": predictions}
        if self.accelerator.is_main_process:
            save_tensors(self.best_state, directory / BEST)
            write_json(directory / RESULT, result)
        remove_checkpoints(directory, self.accelerator)
        return read_json(directory / RESULT)

    def run(self) -> dict[str, Any]:
        """All splits, then the chosen model, ``report.json`` and plots (see ``protocol``); returns the report.
        SIGTERM / SIGINT stop it after the current epoch's checkpoint with :class:`Preempted`."""
        with self.signals:
            return run_splits(self)


def train(model: MSTCLIPIQA, dataset: QualityDataset, config: TrainConfig | None = None,
          output_dir: str | Path = "runs/mst-clipiqa", splits: Sequence[Split] | None = None,
          resume: bool = False) -> dict[str, Any]:
    """Train and evaluate over splits (see :class:`Trainer`); returns the report also written to ``output_dir``."""
    return Trainer(model, dataset, config, output_dir, splits, resume).run()
