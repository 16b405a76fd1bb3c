"""Reward at inference time, generator weights untouched: best-of-N ranking, noise optimisation (ReNO),
reward-gradient guidance, the image grids they save, and preference pairs labelled by a reward."""

from typing import TYPE_CHECKING

from mst_clipiqa.reward.utils.lazy import load_lazily

if TYPE_CHECKING:  # the exports, for tools; at run time each loads when first read (load_lazily)
    from ..pipelines.prompt_sampler import PromptSampler
    from .best_of_n import best_of_n, generate_candidates, rank_images, regenerate, score_images
    from .grid import contact_sheet, image_grid, to_pil
    from .guidance import GuidedSamples, guidance_schedule, guided_sample
    from .noise_optimization import NoiseOptimization, chi_nll, optimize_noise
    from .noise_optimization_config import NoiseOptimizationConfig
    from .overlays import overlay_map, quality_maps
    from .preference_pairs import PAIR_RULES, PairsWritten, load_pairs, preference_pairs, select_pairs
    from .ranking import Candidate, Ranking

__all__ = ["PromptSampler", "Candidate", "Ranking", "best_of_n", "generate_candidates", "rank_images", "regenerate",
           "score_images", "contact_sheet", "image_grid", "to_pil", "GuidedSamples", "guidance_schedule",
           "guided_sample", "NoiseOptimization", "NoiseOptimizationConfig", "chi_nll", "optimize_noise", "PAIR_RULES",
           "PairsWritten", "load_pairs", "preference_pairs", "select_pairs", "overlay_map", "quality_maps"]

load_lazily(__name__)
