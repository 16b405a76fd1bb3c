"""Settings of a reward fine-tuning run, as data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .lora import DEFAULT_TARGET_MODULES
from .methods import METHODS

__all__ = ["RewardFinetuneConfig"]

Method = Literal["draft", "alignprop", "refl"]


@dataclass
class RewardFinetuneConfig:
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
    """

    method: Method = "draft"
    num_inference_steps: int = 20
    draft_k: int = 1
    alignprop_k_range: tuple[int, int] | None = None
    refl_window: int = 10
    guidance_scale: float = 1.0
    negative_prompt: str | None = None
    height: int | None = None
    width: int | None = None
    eta: float = 0.0
    encode_kwargs: dict[str, Any] = field(default_factory=dict)

    lora_rank: int = 4
    lora_alpha: float | None = None
    lora_target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES

    learning_rate: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 2
    gradient_accumulation_steps: int = 1
    max_grad_norm: float | None = 1.0
    max_steps: int = 100
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    seed: int = 0

    gradient_checkpointing: bool | None = None
    decode_chunk_size: int = 1
    decode_checkpointing: bool = True

    kl_coeff: float = 0.0
    reward_weights: Mapping[str, float] | None = None

    output_dir: str | None = None
    sample_every: int = 0
    sample_prompts: tuple[str, ...] = ()
    sample_seeds: tuple[int, ...] = (0, 1, 2, 3)
    save_lora: bool = True
    progress_bar: bool = True

    def __post_init__(self) -> None:
        require(self.method in METHODS, f"method must be one of {sorted(METHODS)}, got {self.method!r}")
        steps = self.num_inference_steps
        require(steps >= 1, f"num_inference_steps must be >= 1, got {steps}")
        require(1 <= self.draft_k <= steps, f"draft_k must be in [1, num_inference_steps={steps}], "
                                             f"got {self.draft_k}")
        lo, hi = self.alignprop_k_range or (1, steps)
        require(1 <= lo <= hi <= steps, f"alignprop_k_range must satisfy 1 <= low <= high <= "
                                         f"num_inference_steps={steps}, got {(lo, hi)}")
        require(self.refl_window >= 1, f"refl_window must be >= 1, got {self.refl_window}")
        for name in ("batch_size", "gradient_accumulation_steps", "decode_chunk_size", "lora_rank"):
            require(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        require(self.max_steps >= 0, f"max_steps must be >= 0, got {self.max_steps}")
        require(self.kl_coeff >= 0, f"kl_coeff must be >= 0, got {self.kl_coeff}")
        require(self.mixed_precision in ("no", "fp16", "bf16"),
                 f"mixed_precision must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}")
        require(self.sample_every == 0 or bool(self.sample_prompts),
                 "sample_every > 0 needs sample_prompts (the fixed prompts whose drift is saved)")

    @property
    def checkpoint_denoiser(self) -> bool:
        if self.gradient_checkpointing is not None:
            return self.gradient_checkpointing
        return self.method == "alignprop"


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
