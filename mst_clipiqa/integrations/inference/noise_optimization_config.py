"""Settings of initial-noise optimisation (ReNO), as data: no torch here, so ``mst-clipiqa optimize --help``
needs none. Each field's help is what the command shows for its flag."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mst_clipiqa.reward.utils.options import option

__all__ = ["NoiseOptimizationConfig"]


@dataclass
class NoiseOptimizationConfig:
    """Settings of :func:`~.noise_optimization.optimize_noise`; the optimiser's defaults are ReNO's (SGD with
    Nesterov momentum, learning rate 5, gradient norm clipped to 0.1, noise-norm regulariser 0.01).

    ``steps``: iterations, one reward evaluation each. ``gradient_steps``: K, the last sampler steps whose
    denoiser Jacobian the gradient goes through (None: all, the exact gradient). ``patience``: iterations
    without a monitor improvement before the run stops (with ``monitor=``). ``base_distance_coeff``: DRaFT+'s
    penalty on the distance between a LoRA-tuned denoiser's predictions and its base model's.
    ``num_inference_steps``, ``guidance_scale``, ``height``, ``width``: the sampler, None for what
    ``pipe(prompt)`` uses; ``negative_prompt`` and ``encode_kwargs`` (``max_sequence_length``, ...): the
    pipeline's text options. ``reward_weights`` / ``monitor_weights`` weight the named outputs of the reward
    and of the monitor.
    """

    steps: int = option(50, "iterations = reward evaluations")
    lr: float = option(5.0, "SGD learning rate (ReNO's; Nesterov momentum)")
    momentum: float = option(0.9, "SGD momentum, Nesterov when > 0")
    regularization: float = option(0.01, "weight of the noise-norm regulariser (chi NLL)")
    grad_clip: float | None = option(0.1, "gradient-norm clip (None: no clipping)", type=float)
    gradient_steps: int | None = option(None, "K: backpropagate through the last K sampler steps only (default: "
                                              "all)", type=int)
    gradient_checkpointing: bool = option(False, "recompute denoiser activations in the backward pass (less "
                                                 "memory, slower)")
    patience: int = option(5, "iterations without monitor improvement before stopping")
    base_distance_coeff: float = option(0.0, "DRaFT+ (LoRA-tuned pipelines): weight of the squared distance "
                                             "between the tuned and the base denoiser's predictions")
    seed: int = option(0, "the start noise's seed (the noise pipe(generator=seed) draws)")
    num_inference_steps: int | None = option(None, "sampler steps (default: the pipeline's)", type=int)
    guidance_scale: float | None = option(None, "classifier-free guidance scale (default: the pipeline's)",
                                          type=float)
    height: int | None = option(None, "image height in pixels (default: the pipeline's)", type=int)
    width: int | None = option(None, "image width in pixels (default: the pipeline's)", type=int)
    negative_prompt: str | None = option(None, "negative prompt (with classifier-free guidance)")
    encode_kwargs: dict[str, Any] = field(default_factory=dict, metadata={"help": "encode_prompt arguments",
                                                                         "cli": False})
    reward_weights: Mapping[str, float] | None = option(None, "weights of the reward's named outputs", cli=False)
    monitor_weights: Mapping[str, float] | None = option(None, "weights of the monitor's named outputs", cli=False)
    progress_bar: bool = option(True, "show a progress bar", flag="--quiet")

    def __post_init__(self) -> None:
        self.check_steps(self.num_inference_steps)

    def check_steps(self, num_inference_steps: int | None) -> None:
        """A ValueError naming every bad setting; ``gradient_steps`` against ``num_inference_steps`` (the
        sampler's, once the pipeline is known) when given."""
        problems = [*self._optimizer_problems()]
        steps, k = num_inference_steps, self.gradient_steps
        if steps is not None and not (isinstance(steps, int) and steps >= 1):
            problems.append(f"num_inference_steps must be an integer >= 1, got {steps!r}")
        elif k is not None and not (isinstance(k, int) and 1 <= k <= (steps or math.inf)):
            problems.append(f"gradient_steps must be in [1, num_inference_steps={steps}] or None (all steps), "
                            f"got {k!r}")
        if problems:
            raise ValueError("; ".join(problems))

    def _optimizer_problems(self) -> list[str]:
        problems = []
        if not isinstance(self.steps, int) or self.steps < 1:
            problems.append(f"steps must be an integer >= 1 (reward evaluations), got {self.steps!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"lr must be a finite number > 0, got {self.lr!r}")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (math.isfinite(self.regularization) and self.regularization >= 0):
            problems.append(f"regularization must be a finite number >= 0, got {self.regularization!r}")
        if self.grad_clip is not None and not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            problems.append(f"grad_clip must be a number > 0 or None (no clipping), got {self.grad_clip!r}")
        if not isinstance(self.patience, int) or self.patience < 1:
            problems.append(f"patience must be an integer >= 1, got {self.patience!r}")
        if not (math.isfinite(self.base_distance_coeff) and self.base_distance_coeff >= 0):
            problems.append(f"base_distance_coeff must be a finite number >= 0, got {self.base_distance_coeff!r}")
        return problems

    def sampler_options(self) -> dict[str, Any]:
        """The ``PromptSampler`` arguments these settings give (the negative prompt only when set)."""
        negative = {} if self.negative_prompt is None else {"negative_prompt": self.negative_prompt}
        return {"num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                "height": self.height, "width": self.width, **self.encode_kwargs, **negative}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
