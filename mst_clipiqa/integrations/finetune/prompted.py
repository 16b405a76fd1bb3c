"""The base of the trainers that sample their own images from prompts and score them with a reward
(``RewardFinetuner``, ``PolicyTrainer``): the pipeline, its family, the reward and the prompts, and the run's
identity made of them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..pipelines.families import PipelineFamily, denoiser_family
from ..rewards import Rewards
from .base import DiffusionTrainer
from .identity import pipeline_identity, prompts_identity, reward_identity
from .launch import pipeline_precision
from .prompt_sources import Prompts, PromptSource

if TYPE_CHECKING:
    from .config import TrainerConfig

__all__ = ["PromptedTrainer"]


class PromptedTrainer(DiffusionTrainer):
    """A :class:`DiffusionTrainer` of ``pipe``'s denoiser against ``reward`` on prompts from ``prompts`` (a
    list, a text file's ``Path`` or a ``prompt_fn``: see ``PromptSource``). It sets ``pipe``, ``family``,
    ``reward``, ``prompt_source`` and ``prompts`` (the list, or None for a ``prompt_fn``) before the base's
    ``__init__``; ``config`` defaults to ``config_class()``, its precision matched to the pipeline's."""

    pipe: Any  # the diffusers pipeline being tuned
    family: PipelineFamily
    reward: Rewards
    prompt_source: PromptSource
    prompts: list[str] | None

    def __init__(self, pipe: Any, reward: Rewards, prompts: Prompts, config: TrainerConfig | None,
                 accelerator: Any | None):
        self.prompt_source = PromptSource(prompts)
        self.prompts = self.prompt_source.prompts
        self.pipe, self.reward = pipe, reward
        self.family = denoiser_family(pipe)
        super().__init__(pipeline_precision(config or self.config_class(), pipe, accelerator), accelerator)

    def run_identity(self) -> dict[str, str]:
        """The reward, the pipeline, the denoiser's architecture and the prompts."""
        source = self.prompt_source
        return {**super().run_identity(), **reward_identity(self.reward),
                **pipeline_identity(self.pipe, self.family, self.family.denoiser),
                **prompts_identity(source.prompts, source.prompt_fn)}
