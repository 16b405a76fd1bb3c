"""Settings of a reward fine-tuning run, as data; each field's help is what ``mst-clipiqa finetune --help`` shows."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from mst_clipiqa.reward.utils import PRECISIONS, option

from ..pipelines.lora import DEFAULT_TARGET_MODULES
from .methods import METHODS
from .nonfinite import ON_NONFINITE
from .tracking import tracker_names

__all__ = ["RunConfig", "RewardFinetuneConfig", "LR_SCHEDULES", "CHOICES", "RESUME_FREE"]

Method = Literal["draft", "alignprop", "refl"]
# diffusers.optimization.get_scheduler's names (piecewise_constant needs rules, so it is left out).
LR_SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
CHOICES = {"method": METHODS, "mixed_precision": PRECISIONS, "lr_scheduler": LR_SCHEDULES,
           "on_nonfinite": ON_NONFINITE}
# Settings that may change between a run and its resumption: they change what is written, not what is trained.
RESUME_FREE = ("max_steps", "output_dir", "save_every", "keep_checkpoints", "resume", "log_with", "tracker_project",
               "sample_every", "sample_prompts", "sample_seeds", "save_lora", "progress_bar", "monitor_every",
               "patience", "monitor_prompts", "monitor_seeds", "on_nonfinite", "async_scoring")


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
    trainer's ``monitor=``). A trainer's config subclasses it with the fields of its algorithm.
    """

    num_inference_steps: int = option(20, "sampling steps per image")
    guidance_scale: float = option(1.0, "classifier-free guidance scale (> 1: two denoiser calls per step)")
    negative_prompt: str | None = option(None, "negative prompt under classifier-free guidance")
    height: int | None = option(None, "image height in pixels (default: the pipeline's)", type=int)
    width: int | None = option(None, "image width in pixels (default: the pipeline's)", type=int)
    eta: float = option(0.0, "DDIM eta (> 0: stochastic sampling)")
    encode_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "encode_prompt arguments",
                                                                         "cli": False})
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
    on_nonfinite: str = option("raise", "a NaN / inf reward, loss or gradient norm: raise (stop the run, naming "
                                        "where) or skip (drop the batch, no optimizer step, with a warning)")
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
        require(self.num_inference_steps >= 1, f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        for name in ("batch_size", "gradient_accumulation_steps", "lora_rank", "keep_checkpoints", "monitor_every"):
            require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "lr_warmup_steps", "save_every", "sample_every"):
            require(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        require(self.patience is None or self.patience >= 1, f"patience must be >= 1 or None, got {self.patience}")
        require(0.0 <= self.ema_decay <= 1.0, f"ema_decay must be in [0, 1], got {self.ema_decay}")
        require(self.lr_warmup_steps == 0 or self.lr_scheduler != "constant",
                "lr_warmup_steps > 0 needs a schedule with warm-up (constant_with_warmup, linear, cosine, ...); "
                "the constant schedule has none")
        for name in ("mixed_precision", "lr_scheduler", "on_nonfinite"):  # a trainer's method is its own to check
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


@dataclass
class RewardFinetuneConfig(RunConfig):
    """Settings of a reward fine-tuning run.

    Methods (``method``):
      * ``"draft"``: DRaFT-K, gradients through the last ``draft_k`` sampling steps.
      * ``"alignprop"``: per trajectory, gradients through the last K steps with
        K drawn uniformly from ``alignprop_k_range`` (default: 1 to all steps);
        every denoiser call under activation checkpointing.
      * ``"refl"``: sampling without gradients to a random step among the last
        ``refl_window`` (ImageReward: 10 of 40), one denoiser call with gradients,
        decode its predicted x0.

    Against reward hacking: ``kl_coeff`` > 0 adds DRaFT+'s
    ``kl_coeff * mean((pred_lora - pred_base)^2)`` on the steps with gradients;
    ``reward_weights`` weights named reward outputs; ``sample_every`` saves a grid
    of ``sample_prompts`` x ``sample_seeds`` every N steps (and before training).

    Long runs: ``lr_scheduler`` / ``lr_warmup_steps`` (diffusers' ``get_scheduler``),
    ``use_ema`` (an EMA of the LoRA weights for evaluation and the saved LoRA),
    ``save_every`` / ``keep_checkpoints`` / ``resume`` (resumable checkpoints in
    ``output_dir/checkpoints``) and ``log_with`` (accelerate trackers).
    """

    method: Method = option("draft", "where the sampling loop keeps gradients: draft (DRaFT-K), alignprop or refl")
    draft_k: int = option(1, "DRaFT-K: the last K sampling steps keep gradients")
    alignprop_k_range: tuple[int, int] | None = option(
        None, "AlignProp: K drawn uniformly in LOW..HIGH per image (default: 1..all steps)", nargs=2, type=int,
        metavar=("LOW", "HIGH"))
    refl_window: int = option(10, "ReFL: the step with gradients is drawn among the last N steps")
    gradient_checkpointing: bool | None = option(
        None, "checkpoint denoiser calls (default: on for alignprop only)", cli=False)
    decode_chunk_size: int = option(1, "latents per VAE decode call")
    decode_checkpointing: bool = option(True, "checkpoint the VAE decoder", flag="--no-decode-checkpointing")
    kl_coeff: float = option(0.0, "DRaFT+ penalty on the squared distance to the base model's predictions")
    reward_weights: Mapping[str, float] | None = option(
        None, "weights of named reward outputs (default: 1 each)", nargs="+", type=_named_weight,
        metavar="NAME=WEIGHT")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alignprop_k_range is not None:
            self.alignprop_k_range = tuple(self.alignprop_k_range)
        if self.reward_weights is not None and not isinstance(self.reward_weights, Mapping):
            self.reward_weights = dict(self.reward_weights)  # NAME=WEIGHT pairs from the command line
        self._check_sampling()
        require(self.decode_chunk_size >= 1, f"decode_chunk_size must be >= 1, got {self.decode_chunk_size}")
        require(self.kl_coeff >= 0, f"kl_coeff must be >= 0, got {self.kl_coeff}")

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


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
