"""Settings of a reward fine-tuning run, as data; each field's help is what ``mst-clipiqa finetune --help`` shows."""

from __future__ import annotations

import argparse
import functools
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, ClassVar, Literal, Protocol

from mst_clipiqa.reward.utils.options import option

from ..pipelines.lora_targets import DEFAULT_TARGET_MODULES
from .tracking import tracker_names

__all__ = ["RunConfig", "RewardFinetuneConfig", "LR_SCHEDULES", "CHOICES", "RESUME_FREE", "composed",
           "flat_settings", "from_flat_settings", "renamed_fields", "TrainerConfig"]

Method = Literal["draft", "alignprop", "refl"]
METHODS = ("draft", "alignprop", "refl")  # finetuner.METHODS holds where each keeps gradients
PRECISIONS = ("no", "fp16", "bf16")  # accelerate's names; reward.utils.PRECISIONS maps them to dtypes
ON_NONFINITE = ("raise", "skip")
# diffusers.optimization.get_scheduler's names (piecewise_constant needs rules, so it is left out).
LR_SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
TEXT_ENCODERS = ("keep", "offload", "free")  # what pipelines.PromptCache does with them (torch-free here)
CHOICES = {"method": METHODS, "mixed_precision": PRECISIONS, "lr_scheduler": LR_SCHEDULES,
           "on_nonfinite": ON_NONFINITE, "text_encoders": TEXT_ENCODERS}
# Settings that may change between a run and its resumption: they change what is written, not what is trained.
RESUME_FREE = ("max_steps", "output_dir", "save_every", "keep_checkpoints", "resume", "log_with", "tracker_project",
               "sample_every", "sample_prompts", "sample_seeds", "save_lora", "progress_bar", "monitor_every",
               "patience", "monitor_prompts", "monitor_seeds", "on_nonfinite", "async_scoring", "sigma_patience",
               "text_encoders")


def _named_weight(text: str) -> tuple[str, float]:
    """``quality=0.7`` -> ``("quality", 0.7)`` (a command-line reward weight)."""
    name, _, weight = text.partition("=")
    try:
        if name.strip():
            return name.strip(), float(weight)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=WEIGHT, e.g. quality=0.7")


@dataclass
class RunConfig:
    """The settings every diffusion trainer shares: sampling (for sample grids and the monitor), the LoRA, the
    optimizer and its schedule, precision, processes, the run folder and checkpoints, trackers, the EMA and the
    hacking monitor (``monitor_every``, ``patience``, ``monitor_prompts`` x ``monitor_seeds``; the scorers are the
    trainer's ``monitor=``). A trainer's config holds one as ``run``, beside the fields of its method.
    """

    negative_prompt: str | None = option(None, "negative prompt under classifier-free guidance")
    height: int | None = option(None, "image height in pixels (default: the pipeline's)", type=int)
    width: int | None = option(None, "image width in pixels (default: the pipeline's)", type=int)
    encode_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "encode_prompt arguments",
                                                                         "cli": False})
    text_encoders: str = option("offload", "once the training, sample and monitor prompts are encoded (each "
                                           "once, kept on the CPU): offload the text encoders to the CPU (back "
                                           "for a new prompt), free them (a new prompt is an error) or keep them")
    lora_rank: int = option(4, "rank of the denoiser's LoRA")
    lora_alpha: float | None = option(None, "LoRA alpha (default: the rank, i.e. scale 1)", type=float)
    lora_target_modules: tuple[str, ...] = option(DEFAULT_TARGET_MODULES, "denoiser modules that get a LoRA",
                                                   nargs="+", metavar="NAME")
    learning_rate: float = option(1e-4, "peak learning rate (AdamW)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    lr_scheduler: str = option("constant", "learning-rate schedule (diffusers' get_scheduler)")
    lr_warmup_steps: int = option(0, "optimizer steps of linear warm-up from 0 (schedules other than constant)")
    batch_size: int = option(2, "images per micro-batch, per process")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step")
    max_grad_norm: float | None = option(1.0, "clip the gradient norm to this (0 or None: no clipping)")
    max_steps: int = option(100, "optimizer steps in all; a resumed run continues up to this")
    mixed_precision: str | None = option(
        None, "autocast precision; the LoRA weights stay fp32 (default: accelerate's, from `accelerate launch "
              "--mixed_precision`, its config file or ACCELERATE_MIXED_PRECISION, else no)", type=str)
    cpu: bool = option(False, "use the CPU even if a GPU is present")
    seed: int = option(0, "seed of the LoRA initialisation and of every process's prompts and noise")
    on_nonfinite: str = option("raise", "a NaN / inf reward, loss or gradient norm, or a monitor that cannot score: "
                                        "raise (stop the run, naming where) or skip (drop the batch, no optimizer "
                                        "step, or the evaluation, with a warning)")
    use_ema: bool = option(False, "keep an EMA of the LoRA weights (diffusers' EMAModel) and use it for "
                                   "evaluation, sample grids and the saved LoRA")
    ema_decay: float = option(0.999, "highest EMA decay (diffusers ramps it up as (1 + n) / (10 + n))")
    output_dir: str | None = option(None, "run folder", cli=False)
    save_every: int = option(0, "write a resumable checkpoint every N optimizer steps (0: none)")
    keep_checkpoints: int = option(2, "how many of the newest checkpoints to keep")
    resume: bool = option(False, "continue from the newest complete checkpoint in the run folder "
                                  "(a fresh start when there is none)")
    log_with: str | None = option(None, "accelerate tracker(s), comma-separated: tensorboard, wandb, ...")
    tracker_project: str = option("mst-clipiqa-finetune", "tracker project name (TensorBoard: OUT/NAME)")
    sample_every: int = option(0, "save (and log) a grid of sample prompts x seeds every N steps (0: never)")
    sample_prompts: tuple[str, ...] = option((), "prompts of the sample grids", nargs="+", metavar="PROMPT")
    sample_seeds: tuple[int, ...] = option((0, 1, 2, 3), "seeds of the sample grids", nargs="+", type=int)
    save_lora: bool = option(True, "save the LoRA at the end", flag="--no-save-lora")
    progress_bar: bool = option(True, "show a progress bar", flag="--quiet")
    monitor_every: int = option(10, "evaluate the hacking monitor every N optimizer steps (and before the first)")
    patience: int | None = option(None, "stop when the monitor has not improved for N evaluations while the reward "
                                        "still rises, keeping the monitor's best LoRA (default: never stop)", type=int)
    monitor_prompts: tuple[str, ...] = option((), "held-out prompts of the hacking monitor", nargs="+",
                                              metavar="PROMPT")
    monitor_seeds: tuple[int, ...] = option((20000, 20001, 20002, 20003), "held-out seeds of the hacking monitor",
                                            nargs="+", type=int)

    def __post_init__(self) -> None:
        for name in ("lora_target_modules", "sample_prompts", "sample_seeds", "monitor_prompts", "monitor_seeds"):
            setattr(self, name, tuple(getattr(self, name)))
        self._check_run()

    def _check_run(self) -> None:
        for name in ("batch_size", "gradient_accumulation_steps", "lora_rank", "keep_checkpoints", "monitor_every"):
            require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "lr_warmup_steps", "save_every", "sample_every"):
            require(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        require(self.patience is None or self.patience >= 1, f"patience must be >= 1 or None, got {self.patience}")
        require(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}: the LoRA would not move")
        require(self.lora_alpha is None or self.lora_alpha > 0,
                f"lora_alpha must be > 0 or None, got {self.lora_alpha}: the LoRA's scale alpha / rank would be 0")
        require(self.max_grad_norm is None or self.max_grad_norm >= 0, f"max_grad_norm must be >= 0 or None (0: no "
                f"clipping), got {self.max_grad_norm}: a negative bound would reverse the gradients")
        require(0.0 <= self.ema_decay <= 1.0, f"ema_decay must be in [0, 1], got {self.ema_decay}")
        require(self.lr_warmup_steps == 0 or self.lr_scheduler != "constant",
                "lr_warmup_steps > 0 needs a schedule with warm-up (constant_with_warmup, linear, cosine, ...); "
                "the constant schedule has none")
        # a trainer's method is its own to check
        for name in ("mixed_precision", "lr_scheduler", "on_nonfinite", "text_encoders"):
            if name == "mixed_precision" and self.mixed_precision is None:  # the launcher's, read when the run starts
                continue
            require(getattr(self, name) in CHOICES[name],
                    f"{name} must be one of {sorted(CHOICES[name])}, got {getattr(self, name)!r}")
        require(self.sample_every == 0 or bool(self.sample_prompts),
                "sample_every > 0 needs sample_prompts (the fixed prompts whose drift is saved)")
        tracker_names(self.log_with)
        for name in ("save_every", "resume", "log_with"):
            require(not getattr(self, name) or self.output_dir is not None,
                    f"{name} needs output_dir (the run folder for checkpoints and logs)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class TrainerConfig(Protocol):
    """What a trainer reads of its config: the shared run settings as ``run``, and ``to_dict()`` (what the log,
    the checkpoints and ``config.yaml`` record)."""

    run: RunConfig

    def to_dict(self) -> dict[str, Any]: ...


def _warn_renamed(cls: type, kwargs: dict[str, Any]) -> None:
    renamed: Mapping[str, str] = getattr(cls, "renamed", {})
    for old in set(kwargs) & set(renamed):
        warnings.warn(f"{cls.__name__}({old}=...) is {renamed[old]}=... now", DeprecationWarning, stacklevel=3)
        kwargs[renamed[old]] = kwargs.pop(old)


def renamed_fields(cls: type) -> type:
    """Let a config take the old names of renamed fields (``cls.renamed``: old -> new), with a
    DeprecationWarning."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        _warn_renamed(cls, kwargs)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


def composed(cls: type) -> type:
    """Let a method's config (a dataclass with a ``run: RunConfig`` field) take the run settings flat, as before
    they were composed: ``RewardFinetuneConfig(max_steps=3)`` is ``RewardFinetuneConfig(run=RunConfig(
    max_steps=3))`` and ``config.max_steps`` reads ``config.run.max_steps``, each with a DeprecationWarning.
    ``cls.renamed`` maps old field names to new ones (taken and read with a DeprecationWarning too)."""
    init, own = cls.__init__, {f.name for f in fields(cls)}
    run_names = {f.name for f in fields(RunConfig)} - own

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        _warn_renamed(cls, kwargs)
        flat = {name: kwargs.pop(name) for name in list(kwargs) if name in run_names}
        if flat:
            warnings.warn(f"{cls.__name__}({', '.join(sorted(flat))}=...): run settings are composed now; pass "
                          f"run=RunConfig({', '.join(sorted(flat))}=...)", DeprecationWarning, stacklevel=2)
            kwargs["run"] = replace(kwargs["run"], **flat) if "run" in kwargs else RunConfig(**flat)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    for name in run_names:
        setattr(cls, name, _Moved(name, f"run.{name}"))
    for old, new in getattr(cls, "renamed", {}).items():
        setattr(cls, old, _Moved(old, new))
    return cls


class _Moved:
    """The old place of a setting (``config.max_steps``, now ``config.run.max_steps``): reads it there, with a
    DeprecationWarning; on the class, the default."""

    def __init__(self, old: str, path: str):
        self.old, self.path = old, path

    def __get__(self, config: Any, owner: type) -> Any:
        *parents, name = self.path.split(".")
        if config is None:
            return getattr(RunConfig if parents else owner, name, None)
        warnings.warn(f"config.{self.old} is config.{self.path} now", DeprecationWarning, stacklevel=2)
        for part in parents:
            config = getattr(config, part)
        return getattr(config, name)


def flat_settings(config: Mapping[str, Any], renamed: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A config's settings in one flat dict (the run settings beside the method's), from ``to_dict()`` or from
    what a run folder recorded: a run written before configs were composed stored them flat, under the old
    names ``renamed`` maps."""
    config = dict(config)
    if isinstance(config.get("run"), Mapping):
        return {**config.pop("run"), **config}
    renamed = renamed or {}
    out = {k: v for k, v in config.items() if k not in renamed}
    out.update({new: config[old] for old, new in renamed.items() if old in config})
    return out


def from_flat_settings(config_cls: type, settings: Mapping[str, Any]) -> Any:
    """A method config from one flat mapping of settings (its own fields and :class:`RunConfig`'s, as
    :func:`flat_settings` gives them or as command-line flags come): the run settings go into ``run``."""
    run_names = {f.name for f in fields(RunConfig)}
    own = {k: v for k, v in settings.items() if k not in run_names}
    return config_cls(**own, run=RunConfig(**{k: v for k, v in settings.items() if k in run_names}))


@composed
@dataclass
class RewardFinetuneConfig:
    """Settings of a reward fine-tuning run: the method's fields, and the shared run settings as ``run``
    (a :class:`RunConfig`).

    Methods (``method``):
      * ``"draft"``: DRaFT-K, gradients through the last ``draft_k`` sampling steps.
      * ``"alignprop"``: per trajectory, gradients through the last K steps with
        K drawn uniformly from ``alignprop_k_range`` (default: 1 to all steps);
        every denoiser call under activation checkpointing.
      * ``"refl"``: sampling without gradients to a random step among the last
        ``refl_window`` (ImageReward: 10 of 40), one denoiser call with gradients,
        decode its predicted x0.

    Against reward hacking: ``base_distance_coeff`` > 0 adds DRaFT+'s
    ``base_distance_coeff * mean((pred_lora - pred_base)^2)`` on the steps with gradients;
    ``reward_weights`` weights named reward outputs; ``run.sample_every`` saves a grid
    of ``run.sample_prompts`` x ``run.sample_seeds`` every N steps (and before training).
    """

    method: Method = option("draft", "where the sampling loop keeps gradients: draft (DRaFT-K), alignprop or refl")
    num_inference_steps: int = option(20, "sampling steps per image")
    guidance_scale: float = option(1.0, "classifier-free guidance scale (> 1: two denoiser calls per step)")
    eta: float = option(0.0, "DDIM eta (> 0: stochastic sampling)")
    draft_k: int = option(1, "DRaFT-K: the last K sampling steps keep gradients")
    alignprop_k_range: tuple[int, int] | None = option(
        None, "AlignProp: K drawn uniformly in LOW..HIGH per image (default: 1..all steps)", nargs=2, type=int,
        metavar=("LOW", "HIGH"))
    refl_window: int = option(10, "ReFL: the step with gradients is drawn among the last N steps")
    gradient_checkpointing: bool | None = option(
        None, "checkpoint the denoiser: draft, alignprop, refl each of its calls (default: on for alignprop "
              "only); ddpo, grpo, nft, dpo: diffusers' per-block checkpointing (default: off)",
        action=argparse.BooleanOptionalAction)
    decode_chunk_size: int = option(1, "latents per VAE decode call")
    decode_checkpointing: bool = option(True, "checkpoint the VAE decoder", flag="--no-decode-checkpointing")
    base_distance_coeff: float = option(0.0, "DRaFT+: weight of the squared distance between the LoRA's and the "
                                             "base model's predictions on the steps with gradients")
    reward_weights: Mapping[str, float] | None = option(
        None, "weights of named reward outputs (default: 1 each)", nargs="+", type=_named_weight,
        metavar="NAME=WEIGHT")
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "the shared run settings", "cli": False})
    renamed: ClassVar[dict[str, str]] = {"kl_coeff": "base_distance_coeff"}  # DRaFT+'s, named apart from the KL

    def __post_init__(self) -> None:
        if self.alignprop_k_range is not None:
            self.alignprop_k_range = tuple(self.alignprop_k_range)
        if self.reward_weights is not None and not isinstance(self.reward_weights, Mapping):
            self.reward_weights = dict(self.reward_weights)  # NAME=WEIGHT pairs from the command line
        require(1 <= self.num_inference_steps <= 1000, "num_inference_steps must be in [1, 1000] (a UNet's training "
                f"schedule has 1000 timesteps), got {self.num_inference_steps}")
        self._check_sampling()
        require(self.decode_chunk_size >= 1, f"decode_chunk_size must be >= 1, got {self.decode_chunk_size}")
        require(self.base_distance_coeff >= 0, f"base_distance_coeff must be >= 0, got {self.base_distance_coeff}")

    def _check_sampling(self) -> None:
        require(self.method in METHODS, f"method must be one of {sorted(METHODS)}, got {self.method!r}")
        steps = self.num_inference_steps
        require(1 <= self.draft_k <= steps, f"draft_k must be in [1, num_inference_steps={steps}], "
                                             f"got {self.draft_k}")
        lo, hi = self.alignprop_k_range or (1, steps)
        require(1 <= lo <= hi <= steps, f"alignprop_k_range must satisfy 1 <= low <= high <= "
                                         f"num_inference_steps={steps}, got {(lo, hi)}")
        require(self.refl_window >= 1, f"refl_window must be >= 1, got {self.refl_window}")

    @property
    def checkpoint_denoiser(self) -> bool:
        if self.gradient_checkpointing is not None:
            return self.gradient_checkpointing
        return self.method == "alignprop"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
