"""peft LoRA on a diffusers denoiser: add, toggle, save and load.

Denoisers with diffusers' adapter support (UNets, SD3, Flux) get it through
``add_adapter``, and their LoRA is saved in diffusers format for
``pipe.load_lora_weights``. Those without (PixArt's transformer, whose pipeline
has no LoRA loader) get peft's layers directly, saved in peft's own format
(``adapter_config.json`` + ``adapter_model.safetensors``, what
``peft.PeftModel.from_pretrained`` reads); :func:`load_lora` loads either.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .families import pipeline_family

__all__ = ["DEFAULT_TARGET_MODULES", "add_lora", "lora_parameters", "named_lora_parameters", "adapters_disabled",
           "save_lora", "load_lora"]

DEFAULT_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
_PEFT_WEIGHTS, _PEFT_PREFIX = "adapter_model.safetensors", "base_model.model."


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
        _inject(denoiser, config)
    if not lora_parameters(denoiser):
        raise ValueError(f"no module of {type(denoiser).__name__} matches target_modules {list(target_modules)}")
    return config


def _inject(denoiser: nn.Module, config: Any) -> None:
    if hasattr(denoiser, "add_adapter"):  # diffusers' PeftAdapterMixin
        denoiser.add_adapter(config)
        return
    from peft import inject_adapter_in_model

    inject_adapter_in_model(config, denoiser, adapter_name="default")
    denoiser.peft_config = {"default": config}


def lora_parameters(denoiser: nn.Module) -> list[nn.Parameter]:
    """The trainable LoRA weights."""
    return list(named_lora_parameters(denoiser).values())


def named_lora_parameters(denoiser: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable LoRA weights by name."""
    return {name: p for name, p in denoiser.named_parameters() if "lora_" in name and p.requires_grad}


@contextmanager
def adapters_disabled(denoiser: nn.Module) -> Iterator[None]:
    """Run the frozen base model (LoRA bypassed) inside the block."""
    from diffusers.utils.peft_utils import set_adapter_layers

    set_adapter_layers(denoiser, enabled=False)
    try:
        yield
    finally:
        set_adapter_layers(denoiser, enabled=True)


def save_lora(pipe: Any, denoiser: nn.Module, directory: str | Path, denoiser_name: str = "unet") -> Path:
    """Save the denoiser's LoRA so that :func:`load_lora` (``pipe.load_lora_weights`` where the pipeline
    has it) restores it: diffusers format with the adapter config as metadata, or peft's format.

    ``denoiser`` must be unwrapped (``accelerator.unwrap_model``), not a DDP wrapper.
    """
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    directory = Path(directory)
    state = {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(denoiser).items()}
    config = denoiser.peft_config["default"]
    if not hasattr(type(pipe), "save_lora_weights"):
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(str(directory))
        save_file({_PEFT_PREFIX + k: v for k, v in state.items()}, str(directory / _PEFT_WEIGHTS))
        return directory
    kwargs: dict[str, Any] = {f"{denoiser_name}_lora_layers": convert_state_dict_to_diffusers(state)}
    accepted = inspect.signature(type(pipe).save_lora_weights).parameters
    if f"{denoiser_name}_lora_adapter_metadata" in accepted:
        kwargs[f"{denoiser_name}_lora_adapter_metadata"] = config.to_dict()
    type(pipe).save_lora_weights(save_directory=str(directory), safe_serialization=True, **kwargs)
    return directory


def load_lora(pipe: Any, directory: str | Path) -> None:
    """Load a LoRA written by :func:`save_lora` (or ``RewardFinetuner``) into ``pipe``'s denoiser:
    ``pipe.load_lora_weights`` where the pipeline has it, else peft's format."""
    if hasattr(pipe, "load_lora_weights"):
        pipe.load_lora_weights(str(directory))
        return
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    directory = Path(directory)
    if not (directory / _PEFT_WEIGHTS).is_file():
        raise ValueError(f"{directory} holds no {_PEFT_WEIGHTS}; expected a folder written by save_lora")
    denoiser = pipeline_family(pipe).denoiser
    _inject(denoiser, LoraConfig.from_pretrained(str(directory)))
    state = {k.removeprefix(_PEFT_PREFIX): v for k, v in load_file(str(directory / _PEFT_WEIGHTS)).items()}
    result = set_peft_model_state_dict(denoiser, state)
    if result.unexpected_keys:
        raise ValueError(f"the LoRA in {directory} does not fit {type(denoiser).__name__}: unexpected keys "
                         f"{result.unexpected_keys[:3]}")
