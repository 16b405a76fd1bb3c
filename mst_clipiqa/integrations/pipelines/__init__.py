"""What drives a diffusers pipeline differentiably: the pipeline families, the denoising loop and its
scheduler steps, latent decoding, the generator's LoRA, prompt handling, the prompt sampler that inference
methods build on, the stochastic samplers with log-probabilities that online RL trains
(:mod:`.stochastic`), and tiny pipelines for tests (:mod:`integrations.pipelines.tiny`)."""

from typing import TYPE_CHECKING

from mst_clipiqa.reward.utils.lazy import load_lazily

if TYPE_CHECKING:  # the exports, for tools; at run time each loads when first read (load_lazily)
    from .decode import decode_latents, straight_through_clamp, unscale_latents
    from .families import (
        Conditioning,
        DenoiserFamily,
        Embeddings,
        FluxFamily,
        LCMFamily,
        PipelineFamily,
        PixArtAlphaFamily,
        PixArtSigmaFamily,
        SD3Family,
        SDXLFamily,
        UNetFamily,
        denoiser_family,
        find_family,
        pipeline_family,
        register_family,
        registered_families,
        with_negative,
    )
    from .lora import DEFAULT_TARGET_MODULES, add_lora, load_lora, save_lora
    from .prompt_sampler import PromptSampler
    from .prompts import encode_prompt
    from .sampling import Trajectory, denoise, guided_prediction, step_kwargs
    from .stochastic import Rollout, StepOutput, StochasticSampler, policy_scheduler, sampler_kind

__all__ = ["decode_latents", "straight_through_clamp", "unscale_latents", "Conditioning", "DenoiserFamily",
           "Embeddings", "FluxFamily", "LCMFamily", "PipelineFamily", "PixArtAlphaFamily", "PixArtSigmaFamily",
           "SD3Family", "SDXLFamily", "UNetFamily", "denoiser_family", "find_family", "pipeline_family",
           "register_family", "registered_families", "with_negative", "DEFAULT_TARGET_MODULES", "add_lora",
           "load_lora", "save_lora", "PromptSampler", "encode_prompt", "Trajectory", "denoise",
           "guided_prediction", "step_kwargs", "Rollout", "StepOutput", "StochasticSampler",
           "policy_scheduler", "sampler_kind"]

load_lazily(__name__)
