"""Training settings as data; each field's help lives next to it and is what ``mst-clipiqa train --help`` shows."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..datasets.splits import BY_CHOICES
from ..model.fusion_inits import FUSION_INITS
from ..utils.options import option
from ..utils.precision import PRECISIONS
from .recipes import PURPOSE, RECIPES, SCHEDULES, SPLIT_METHODS

if TYPE_CHECKING:
    from ..datasets import QualityDataset

# names only (the trainer maps them to torch's optimizers and the metrics): mst-clipiqa train --help needs no torch
OPTIMIZER_NAMES = ("adam", "adamw")
SELECT_METRIC_NAMES = ("srcc", "plcc", "krcc")
CHOICES = {"optimizer": OPTIMIZER_NAMES, "split_by": ("auto", *BY_CHOICES), "select_metric": SELECT_METRIC_NAMES,
           "mixed_precision": PRECISIONS, "init": ("keep", *FUSION_INITS), "schedule": SCHEDULES,
           "recipe": RECIPES,
           "split_method": SPLIT_METHODS}
# Settings that may change between a run and its resumption without changing the result.
RESUME_FREE = ("progress", "num_workers", "threads", "cache_dir", "encode_batch_size", "eval_batch_size")
# Settings about the machine or the task, not the recipe.
NOT_RECIPE = (*RESUME_FREE, "use_cache", "mixed_precision", "cpu", "outputs")


@dataclass
class TrainConfig:
    """Training settings. The defaults are the ``protocol`` recipe: the field's ten seeded 8:2 splits
    (grouped by prompt where the field does so), 10% of the data carved from the training part for
    validation (model selection by ``select_metric``; a validation part of fewer than ``min_val_groups``
    prompts joins the training part and the last epoch is kept), loss MSE + 1.0 x pairwise margin-ranking
    (margin 0.1), and an optimiser setting that moves the heads from their zero-shot start.
    ``TrainConfig.paper()`` is the reference implementation's setting (see ``recipes``). Each
    field's ``help`` says what it does.
    """

    recipe: str = option("protocol", "the recipe these settings start from (see reward.training.recipes)", cli=False)
    epochs: int = option(60, "passes over each split's training part (the best one is kept)")
    batch_size: int = option(8, "images per optimisation step, per process")
    lr: float = option(1e-4, "peak learning rate")
    temperature_lr: float | None = option(
        0.1, "learning rate of template heads' log temperature, without weight decay (None in Python: lr)",
        type=float, metavar="LR")
    schedule: str = option("constant", "learning-rate schedule over the run (cosine: decays to 0)")
    weight_decay: float = option(1e-3, "weight decay")
    optimizer: str = option("adam", "optimiser")
    init: str = option("keep", "start the fusion and heads afresh (random: the reference's; zero_shot: identity "
                                "fusion), or keep the model's weights")
    margin: float = option(0.1, "margin of the pairwise ranking loss")
    rank_weight: float = option(1.0, "weight lambda of the ranking loss next to MSE")
    outputs: tuple[str, ...] | None = option(
        None, "named outputs to train and evaluate (default: every model output the data set scores)", cli=False)
    seed: int = option(0, "seed of the splits, the data order and tiny models' random weights")
    n_splits: int = option(10, "number of seeded random splits (the field's protocol: 10)")
    split_method: str = option("seeded", "how splits are drawn: seeded (n_splits seeded splits by split_by), or "
                                          "reference (the reference code's one random_split with this seed over the "
                                          "rows in file order, int((1 - test_fraction) n) of them for training)")
    split_by: str = option("auto", "split by image, or keep each prompt's images together (stricter); auto: as "
                                    "the field splits the data set (AGIQA-3K by prompt, others by image)")
    test_fraction: float = option(0.2, "fraction of the data in each split's test part")
    val_fraction: float = option(0.1, "fraction of the data carved from training for model selection (never test)")
    min_val_groups: int = option(
        3, "fewest prompts (images when split by image) a validation part must hold to select an epoch on; a "
           "smaller one joins the training part and the last epoch is kept (1: select on any part)", metavar="N")
    select_metric: str = option("srcc", "validation metric that picks the best epoch")
    ema_decay: float = option(0.0, "per-step decay of an exponential moving average of the trained weights, "
                                   "which is then what each epoch is validated with, what selection keeps and "
                                   "what is saved (0: the raw weights)")
    use_cache: bool = option(True, "encode each image once and train on the cached embeddings", flag="--no-cache")
    cache_dir: str | None = option(
        None, "feature cache folder (default: $MST_CLIPIQA_CACHE or ~/.cache/mst-clipiqa/features)")
    encode_batch_size: int = option(32, "images per encoder batch")
    eval_batch_size: int = option(256, "samples per evaluation batch")
    num_workers: int = option(0, "data-loading worker processes")
    threads: int | None = option(
        None, "intra-op threads for head training and evaluation on cached features (default: 1 on the CPU, "
              "where more only wait on each other; the encoders keep torch's setting)", type=int, metavar="N")
    mixed_precision: str | None = option(
        None, "autocast precision (default: accelerate's, from `accelerate launch --mixed_precision`, its config "
              "file or ACCELERATE_MIXED_PRECISION, else no)", type=str)
    cpu: bool = option(False, "use the CPU even if a GPU is present")
    ensemble: int = option(1, "train an ensemble of K fusions with their heads, each on its own bootstrap resample "
                              "of the training part, over one encoder pass: the model scores with their mean and "
                              "reports their spread as uncertainty (1: one; a model that is an ensemble stays one)",
                           metavar="K")
    lora_rank: int = option(0, "train a LoRA adapter of this rank on the fusion and heads instead of the weights")
    lora_alpha: float = option(16.0, "LoRA scaling alpha")
    lora_dropout: float = option(0.0, "LoRA dropout")
    lora_encoders: bool = option(False, "also adapt the vision encoders' attention (disables the feature cache)")
    adapter_name: str = option("default", "name of the trained adapter")
    progress: bool = option(True, "show progress bars", flag="--quiet")

    def __post_init__(self) -> None:
        if self.outputs is not None:
            self.outputs = (self.outputs,) if isinstance(self.outputs, str) else tuple(self.outputs)
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 (or None: the default policy), got {self.threads}")
        if self.ensemble > 1 and self.lora_rank:
            raise ValueError(f"ensemble={self.ensemble} with lora_rank={self.lora_rank}: an adapter adapts one fusion; "
                             "train an ensemble without LoRA")
        for name in ("epochs", "batch_size", "n_splits", "encode_batch_size", "eval_batch_size", "ensemble",
                     "min_val_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature_lr is not None and self.temperature_lr <= 0:
            raise ValueError(f"temperature_lr must be > 0 (or None: the same as lr), got {self.temperature_lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0: no average), got {self.ema_decay}")
        if self.lr <= 0 or self.weight_decay < 0 or self.margin < 0 or self.rank_weight < 0:
            raise ValueError(f"lr={self.lr}, weight_decay={self.weight_decay}, margin={self.margin}, "
                             f"rank_weight={self.rank_weight}; expected lr > 0 and the others >= 0")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed and not (name == "mixed_precision" and self.mixed_precision is None):
                raise ValueError(f"{name} must be one of {sorted(allowed)}, got {getattr(self, name)!r}")
        if self.lora_rank < 0 or (self.lora_encoders and not self.lora_rank):
            raise ValueError(f"lora_rank={self.lora_rank}, lora_encoders={self.lora_encoders}; expected "
                             "lora_rank >= 0, and lora_rank >= 1 when lora_encoders is set")
        if self.lora_rank and self.init != "keep":
            raise ValueError(f"init={self.init!r} with lora_rank={self.lora_rank}: an adapter trains on top of the "
                             "model's weights; expected init='keep'")

    @classmethod
    def from_recipe(cls, name: str = "protocol", **overrides: Any) -> TrainConfig:
        """The recipe ``name`` (``protocol`` or ``paper``), with ``overrides`` on top."""
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; expected one of {sorted(RECIPES)}")
        return cls(**{**RECIPES[name], **overrides, "recipe": name})

    @classmethod
    def paper(cls, **overrides: Any) -> TrainConfig:
        """The reference implementation's setting (see ``reward.training.recipes``)."""
        return cls.from_recipe("paper", **overrides)

    @classmethod
    def protocol(cls, **overrides: Any) -> TrainConfig:
        """The field's protocol with heads that learn: the defaults."""
        return cls.from_recipe("protocol", **overrides)

    def overrides(self) -> dict[str, Any]:
        """Settings that differ from this config's recipe (machine settings and outputs left out)."""
        base = self.from_recipe(self.recipe).to_dict()
        return {k: v for k, v in self.to_dict().items() if k not in NOT_RECIPE and v != base[k]}

    def describe(self, dataset: QualityDataset | None = None) -> str:
        """One paragraph: the recipe, what it is for, its main settings and what was changed."""
        by = self.resolved_split_by(dataset) if dataset is not None else self.split_by
        main = (f"init {self.init}, {self.optimizer} lr {self.lr:g} ({self.schedule}), weight decay "
                f"{self.weight_decay:g}, batch {self.batch_size}, {self.epochs} epochs; {self.n_splits} split(s) by "
                f"{by}, test {self.test_fraction:g}, validation {self.val_fraction:g} (from the train part; "
                f"{self._selection()}), seed {self.seed}")
        changed = ", ".join(f"{k}={v}" for k, v in self.overrides().items())
        text = f"recipe {self.recipe}: {PURPOSE[self.recipe]}\n  {main}"
        return text + (f"\n  changed from the recipe: {changed}" if changed else "")

    def _selection(self) -> str:
        if not self.val_fraction:
            return "last epoch"
        return f"selection by {self.select_metric} on >= {self.min_val_groups} groups, else last epoch"

    def resolved_split_by(self, dataset: QualityDataset) -> str:
        """``split_by``, with ``auto`` resolved to the data set's convention."""
        return dataset.split_by if self.split_by == "auto" else self.split_by

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
