"""Adapters that connect the MST-CLIPIQA reward (or any differentiable reward) to diffusers pipelines.

    from mst_clipiqa.integrations import best_of_n, RewardFinetuner, RewardFinetuneConfig, ddpo_reward_fn

* ``best_of_n`` / ``rank_images``: N seeded candidates per prompt, scored and ranked.
* ``RewardFinetuner``: LoRA fine-tuning of the denoiser by DRaFT-K, AlignProp or ReFL; multi-process,
  resumable (``save_every`` / ``resume``), tracked (``log_with``), with LR schedules and an EMA.
* ``DPOTrainer`` / ``train_dpo``: Diffusion-DPO on preference pairs that ``preference_pairs`` labels by a
  reward (``load_pairs`` reads them back); ``HackingMonitor``: held-out scorers and diversity for any trainer.
* ``PolicyTrainer``: online RL of the denoiser's LoRA by DDPO, GRPO or DiffusionNFT with any reward,
  differentiable or not, on the same run plumbing (``PolicyFinetuneConfig``; ``TRAINERS`` maps methods to
  trainers).
* ``optimize_noise``: one sample's initial noise optimised for the reward (ReNO), weights untouched.
* ``guided_sample``: reward-gradient guidance at the last sampler steps (universal guidance / DPS).
* ``ddpo_reward_fn``: the ``reward_fn(images, prompts, prompt_metadata)`` contract of DDPO.
* ``RemoteReward``: a reward served by ``mst-clipiqa serve`` (Ray Serve), as a reward form; ``serving``: the
  protocol and servers. ``flow_grpo_reward_fn``, ``FlowFactoryPointwiseReward``, ``trl_async_reward_fn``, ...:
  drop-ins for Flow-GRPO, Flow-Factory and trl's asynchronous DDPO.
* ``register_family`` / ``PipelineFamily``: the pipeline families the loop and best-of-N drive
  (SD 1.x/2.x, SDXL, LCM, SD3, FLUX.1, PixArt-alpha/sigma built in).
* Rewards: any ``reward(images, prompts)`` or ``reward(images)`` returning (B,) or named (B,) tensors, an
  ``nn.Module``, other libraries' forms through ``from_trl`` / ``from_imscore`` / ``from_pyiqa``, or a dict of them.

Vocabulary: the generator gets a *LoRA* (``add_lora`` / ``save_lora``, what
``pipe.load_lora_weights`` reads); the scorer gets *adapters* (``reward.add_adapter``).
"""

from typing import TYPE_CHECKING

from mst_clipiqa.reward.utils.lazy import load_lazily

if TYPE_CHECKING:  # the exports, for tools; at run time each loads when first read (load_lazily)
    from .finetune import (
        TRAINERS,
        DiffusionDPOObjective,
        DiffusionTrainer,
        DPOConfig,
        DPOTrainer,
        HackingMonitor,
        LoraEMA,
        NonFiniteError,
        PolicyConfig,
        PolicyFinetuneConfig,
        PolicyOptimizer,
        PolicyTrainer,
        PromptSource,
        RewardFinetuneConfig,
        RewardFinetuner,
        RunConfig,
        complete_checkpoints,
        diversity,
        dpo_loss,
        group_advantages,
        pipeline_sampler,
        train_dpo,
        train_policy,
    )
    from .inference import (
        Candidate,
        GuidedSamples,
        NoiseOptimization,
        NoiseOptimizationConfig,
        Ranking,
        best_of_n,
        chi_nll,
        contact_sheet,
        generate_candidates,
        guidance_schedule,
        guided_sample,
        image_grid,
        load_pairs,
        optimize_noise,
        overlay_map,
        preference_pairs,
        rank_images,
        regenerate,
    )
    from .pipelines import (
        DenoiserFamily,
        FluxFamily,
        LCMFamily,
        PipelineFamily,
        PixArtAlphaFamily,
        PixArtSigmaFamily,
        PromptSampler,
        SD3Family,
        SDXLFamily,
        StochasticSampler,
        Trajectory,
        UNetFamily,
        add_lora,
        decode_latents,
        denoise,
        denoiser_family,
        encode_prompt,
        find_family,
        load_lora,
        pipeline_family,
        register_family,
        registered_families,
        save_lora,
        straight_through_clamp,
    )
    from .reward_adapters import RewardAdapter, from_imscore, from_pyiqa, from_trl
    from .rewards import NamedScores, ddpo_reward_fn, named_rewards, objective, score_images
    from .serving import RemoteReward, RemoteRewardError
    from .stacks import (
        FlowFactoryGroupwiseReward,
        FlowFactoryPointwiseReward,
        flow_grpo_reward_fn,
        flow_grpo_scorer,
        trl_async_reward_fn,
    )

__all__ = [
    "Candidate", "Ranking", "best_of_n", "generate_candidates", "rank_images", "regenerate", "score_images",
    "ddpo_reward_fn", "decode_latents", "straight_through_clamp", "DenoiserFamily", "FluxFamily", "LCMFamily",
    "PipelineFamily", "PixArtAlphaFamily", "PixArtSigmaFamily", "SD3Family", "SDXLFamily", "UNetFamily",
    "denoiser_family", "find_family", "pipeline_family", "register_family", "registered_families",
    "RewardFinetuneConfig", "RewardFinetuner", "contact_sheet", "image_grid", "add_lora", "load_lora", "save_lora",
    "encode_prompt", "named_rewards", "objective", "Trajectory", "denoise", "PromptSource", "LoraEMA",
    "complete_checkpoints", "GuidedSamples",
    "guidance_schedule", "guided_sample", "PromptSampler", "NoiseOptimization", "NoiseOptimizationConfig",
    "chi_nll", "optimize_noise",
    "NamedScores", "DiffusionTrainer", "RunConfig", "DPOConfig", "DPOTrainer", "DiffusionDPOObjective", "dpo_loss",
    "train_dpo", "HackingMonitor", "diversity", "pipeline_sampler", "preference_pairs", "load_pairs",
    "PolicyConfig", "PolicyFinetuneConfig", "PolicyOptimizer", "PolicyTrainer", "TRAINERS", "group_advantages",
    "train_policy", "StochasticSampler", "NonFiniteError", "RewardAdapter", "from_imscore", "from_pyiqa", "from_trl",
    "RemoteReward", "RemoteRewardError", "flow_grpo_scorer", "flow_grpo_reward_fn", "FlowFactoryPointwiseReward",
    "FlowFactoryGroupwiseReward", "trl_async_reward_fn", "overlay_map",
]

load_lazily(__name__)
