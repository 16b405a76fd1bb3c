"""Pipelines by name for the commands: tiny offline ones built from configs, or any diffusers pipeline."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TinyPipeline:
    """An offline pipeline of ``integrations.pipelines.tiny`` (random weights), with the sampler settings its
    real counterpart uses (None: the command's own default) and the encoder options it needs."""

    builder: str
    steps: int | None = None
    guidance_scale: float | None = None
    encode_kwargs: dict[str, Any] = field(default_factory=dict)


TINY = {
    "tiny": TinyPipeline("tiny_sd_pipeline"),
    "tiny-turbo": TinyPipeline("tiny_sd_turbo_pipeline", steps=1, guidance_scale=0.0),
    "tiny-sdxl": TinyPipeline("tiny_sdxl_pipeline"),
    "tiny-sd3": TinyPipeline("tiny_sd3_pipeline", encode_kwargs={"max_sequence_length": 8}),  # short T5 padding
    "tiny-flux": TinyPipeline("tiny_flux_pipeline", encode_kwargs={"max_sequence_length": 16}),
    "tiny-lcm": TinyPipeline("tiny_lcm_pipeline", steps=4, guidance_scale=1.0),
    "tiny-pixart": TinyPipeline("tiny_pixart_pipeline",
                                encode_kwargs={"max_sequence_length": 16, "clean_caption": False}),
}
HELP = f"{' | '.join(TINY)} (offline, random weights) | a diffusers pipeline folder or Hub id"


def load_pipeline(name: str, device: torch.device | str | None = None) -> tuple[Any, TinyPipeline | None]:
    """The pipeline ``name`` (half precision on a GPU for a downloaded one), on ``device``, and its tiny
    settings when it is a tiny one. diffusers is imported only here, never to print ``--help``."""
    if name in TINY:
        from mst_clipiqa.integrations.pipelines import tiny as tiny_pipelines

        tiny = TINY[name]
        return getattr(tiny_pipelines, tiny.builder)(device=device or "cpu"), tiny
    import torch
    from diffusers import DiffusionPipeline
    from diffusers.utils import deprecation_utils

    from mst_clipiqa.reward.utils.quiet import loggers_quiet

    _check_cached_when_offline(name)
    device = torch.device(device or "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    dtype_key = "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
    try:
        with loggers_quiet("diffusers", "transformers"):  # "Couldn't connect to the Hub", weight-loading notices
            pipe = DiffusionPipeline.from_pretrained(name, **{dtype_key: dtype})
    except (OSError, ValueError) as error:
        raise ValueError(f"--pipeline {name}: cannot load it ({error}); expected {HELP}") from None
    return pipe.to(device), None


def _check_cached_when_offline(name: str) -> None:
    """Offline, a Hub id that is not cached is named in one line before diffusers tries and explains at length."""
    from pathlib import Path

    from huggingface_hub import constants, try_to_load_from_cache

    if Path(name).exists() or not constants.HF_HUB_OFFLINE:
        return
    try:
        cached = try_to_load_from_cache(name, "model_index.json")
    except ValueError:  # not a Hub id: diffusers names what is wrong with it
        return
    if not isinstance(cached, str):
        raise ValueError(f"--pipeline {name}: not in the local Hugging Face cache and HF_HUB_OFFLINE=1 is set; "
                         f"download it once with network access, or use an offline one ({', '.join(TINY)})")
