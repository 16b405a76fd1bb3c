"""peft LoRA on a diffusers denoiser: add, toggle, save in diffusers format."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["DEFAULT_TARGET_MODULES", "add_lora", "lora_parameters", "named_lora_parameters", "adapters_disabled",
           "save_lora"]

DEFAULT_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")


def add_lora(denoiser: nn.Module, rank: int = 4, alpha: float | None = None,
             target_modules: Sequence[str] = DEFAULT_TARGET_MODULES, seed: int | None = None) -> Any:
    """Freeze ``denoiser`` and add a trainable LoRA adapter (gaussian A, zero B: starts as the base model).

    ``alpha`` defaults to ``rank`` (scale 1); ``seed`` draws A from that seed without touching the global
    generators' state. Returns the ``LoraConfig``.
    """
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if "default" in (getattr(denoiser, "peft_config", None) or {}):
        raise ValueError(f"{type(denoiser).__name__} already has a LoRA adapter named 'default'; "
                         "fine-tune a fresh denoiser, or fuse the existing LoRA first (pipe.fuse_lora())")
    config = LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, init_lora_weights="gaussian",
                        target_modules=list(target_modules))
    denoiser.requires_grad_(False)
    devices = sorted({p.device.index or 0 for p in denoiser.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        denoiser.add_adapter(config)
    if not lora_parameters(denoiser):
        raise ValueError(f"no module of {type(denoiser).__name__} matches target_modules {list(target_modules)}")
    return config


def lora_parameters(denoiser: nn.Module) -> list[nn.Parameter]:
    """The trainable LoRA weights."""
    return list(named_lora_parameters(denoiser).values())


def named_lora_parameters(denoiser: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable LoRA weights by name."""
    return {name: p for name, p in denoiser.named_parameters() if "lora_" in name and p.requires_grad}


@contextmanager
def adapters_disabled(denoiser: nn.Module) -> Iterator[None]:
    """Run the frozen base model (LoRA bypassed) inside the block."""
    denoiser.disable_adapters()
    try:
        yield
    finally:
        denoiser.enable_adapters()


def save_lora(pipe: Any, denoiser: nn.Module, directory: str | Path, denoiser_name: str = "unet") -> Path:
    """Save the denoiser's LoRA with the pipeline class's ``save_lora_weights`` (diffusers format, with
    the adapter config as metadata) so that ``pipe.load_lora_weights(directory)`` restores it.

    ``denoiser`` must be unwrapped (``accelerator.unwrap_model``), not a DDP wrapper.
    """
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(denoiser))
    state = {k: v.detach().float().cpu().contiguous() for k, v in state.items()}
    kwargs: dict[str, Any] = {f"{denoiser_name}_lora_layers": state}
    accepted = inspect.signature(type(pipe).save_lora_weights).parameters
    if f"{denoiser_name}_lora_adapter_metadata" in accepted:
        kwargs[f"{denoiser_name}_lora_adapter_metadata"] = denoiser.peft_config["default"].to_dict()
    directory = Path(directory)
    type(pipe).save_lora_weights(save_directory=str(directory), safe_serialization=True, **kwargs)
    return directory


