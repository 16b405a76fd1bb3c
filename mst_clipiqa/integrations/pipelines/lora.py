"""peft LoRA on a diffusers denoiser: add, toggle, save and load.

Denoisers with diffusers' adapter support (UNets, SD3, Flux) get it through
``add_adapter``, and their LoRA is saved in diffusers format for
``pipe.load_lora_weights``. Those without (PixArt's transformer, whose pipeline
has no LoRA loader) get peft's layers directly. Every LoRA is also saved in
peft's own format (``adapter_config.json`` + ``adapter_model.safetensors``, what
``peft.PeftModel.from_pretrained(denoiser, folder)`` reads); :func:`load_lora`
loads either, and a folder that holds peft's format alone.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mst_clipiqa.reward.utils import adapter_rollback
from mst_clipiqa.reward.utils.quiet import log_dropped
from mst_clipiqa.runtime.sharding import whole_tensors

from .families import pipeline_family
from .lora_checks import PEFT_PREFIX as _PEFT_PREFIX
from .lora_checks import injected_tensors, lora_problems, lora_tensors, targeted_modules, unmatched_targets
from .lora_targets import DEFAULT_TARGET_MODULES

if TYPE_CHECKING:
    from peft import LoraConfig

__all__ = ["DEFAULT_TARGET_MODULES", "add_lora", "lora_parameters", "named_lora_parameters", "adapters_disabled",
           "lora_state", "save_lora", "load_lora"]

_PEFT_WEIGHTS = "adapter_model.safetensors"
_DIFFUSERS_LORA_LOGGERS = ("diffusers.loaders.lora_base", "diffusers.loaders.lora_pipeline", "diffusers.loaders.peft")


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


def _inject(denoiser: nn.Module, config: LoraConfig) -> None:
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


def lora_state(denoiser: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the denoiser's LoRA tensors by peft's names, whole (a sharded denoiser's are gathered: every
    process calls it then)."""
    from peft.utils import get_peft_model_state_dict

    return {k: v.detach().clone() for k, v in whole_tensors(get_peft_model_state_dict(denoiser)).items()}


def save_lora(pipe: Any, denoiser: nn.Module, directory: str | Path, denoiser_name: str = "unet",
              state: dict[str, torch.Tensor] | None = None) -> Path:
    """Save the denoiser's LoRA so that :func:`load_lora` (``pipe.load_lora_weights`` where the pipeline
    has it) restores it: peft's format (``adapter_config.json``, ``adapter_model.safetensors``), and beside it,
    where the pipeline has a LoRA loader, diffusers' format with the adapter config as metadata.

    ``denoiser`` must be unwrapped (``accelerator.unwrap_model``), not a DDP wrapper. ``state``: its
    :func:`lora_state`, when already gathered.
    """
    from diffusers.utils import convert_state_dict_to_diffusers
    from safetensors.torch import save_file

    directory = Path(directory)
    state = {k: v.detach().float().cpu().contiguous() for k, v in (state or lora_state(denoiser)).items()}
    config = denoiser.peft_config["default"]
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(directory))  # peft's format, always: PeftModel.from_pretrained(denoiser, directory)
    save_file({_PEFT_PREFIX + k: v for k, v in state.items()}, str(directory / _PEFT_WEIGHTS))
    if not hasattr(type(pipe), "save_lora_weights"):
        return directory
    kwargs: dict[str, Any] = {f"{denoiser_name}_lora_layers": convert_state_dict_to_diffusers(state)}
    accepted = inspect.signature(type(pipe).save_lora_weights).parameters
    if f"{denoiser_name}_lora_adapter_metadata" in accepted:
        kwargs[f"{denoiser_name}_lora_adapter_metadata"] = config.to_dict()
    type(pipe).save_lora_weights(save_directory=str(directory), safe_serialization=True, **kwargs)
    return directory


def load_lora(pipe: Any, directory: str | Path) -> None:
    """Load a LoRA written by :func:`save_lora` (or ``RewardFinetuner``) into ``pipe``'s denoiser:
    ``pipe.load_lora_weights`` where the pipeline has it and the folder holds diffusers' file, else peft's format
    (a ``PeftModel.save_pretrained`` folder of this denoiser loads too).

    Strict: a LoRA that lacks tensors its config names, holds tensors for modules the denoiser lacks (or its
    config names such modules), has tensors of the wrong shape or NaN / inf values is a ``ValueError``
    naming the file and the keys, and the denoiser is left exactly as it was.
    """
    directory = Path(directory)
    denoiser = pipeline_family(pipe).denoiser
    before = set(getattr(denoiser, "peft_config", None) or {})
    targeted: set[str] = set()
    if hasattr(pipe, "load_lora_weights") and not _peft_only(directory):
        source, state, targeted = _diffusers_state(pipe, denoiser, directory)
        load = functools.partial(pipe.load_lora_weights, str(source.parent), weight_name=source.name)
    else:
        source, state, load = _peft_load(denoiser, directory)
    with adapter_rollback(denoiser):
        try:
            with log_dropped("No LoRA keys associated to", *_DIFFUSERS_LORA_LOGGERS):  # the text encoders': none
                load()
        except (RuntimeError, ValueError) as error:  # tensors of the wrong shape, or no module matched
            raise ValueError(f"the LoRA in {source} does not fit {type(denoiser).__name__}: {error}") from error
        added = set(getattr(denoiser, "peft_config", None) or {}) - before
        if len(added) != 1:
            raise ValueError(f"the LoRA in {source} added {len(added)} adapters to {type(denoiser).__name__}; "
                             "expected one (a LoRA saved for this denoiser by save_lora)")
        (adapter,) = added
        problems = lora_problems(injected_tensors(denoiser, adapter), state, targeted)
        if problems:
            raise ValueError(f"the LoRA in {source} does not fit {type(denoiser).__name__}: it "
                             + "; it ".join(problems) + ". Nothing was loaded; expected a LoRA saved for this "
                             "denoiser (save_lora)")


def _peft_only(directory: Path) -> bool:
    """A folder in peft's format alone (``PeftModel.save_pretrained``), without diffusers' LoRA file."""
    return (directory / "adapter_config.json").is_file() and not any(
        f.name != _PEFT_WEIGHTS for f in directory.glob("*.safetensors"))


def _diffusers_state(pipe: Any, denoiser: nn.Module, directory: Path
                     ) -> tuple[Path, dict[str, torch.Tensor], set[str]]:
    """The weight file diffusers reads, its denoiser tensors (read and checked before anything loads) and
    the modules its stored adapter config targets."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    files = [directory] if directory.is_file() else sorted(
        (f for f in directory.glob("*.safetensors") if f.name != _PEFT_WEIGHTS),
        key=lambda f: (f.name != "pytorch_lora_weights.safetensors", f.name)) if directory.is_dir() else []
    if not files:
        raise ValueError(f"{directory} holds no LoRA weights (*.safetensors); expected a folder written by "
                         "save_lora")
    with safe_open(str(files[0]), framework="pt") as file:
        metadata = file.metadata()
    state = pipe.lora_state_dict(load_file(str(files[0])))
    state = state[0] if isinstance(state, tuple) else state
    prefix = next((n for n in ("unet", "transformer", "prior") if getattr(pipe, n, None) is denoiser), "unet")
    return files[0], lora_tensors(state, prefix, files[0]), targeted_modules(denoiser, metadata, prefix)


def _peft_load(denoiser: nn.Module, directory: Path) -> tuple[Path, dict[str, torch.Tensor], Callable[[], None]]:
    """peft's format: the file's tensors (checked), and the load: inject the config's adapter and fill it."""
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = directory / _PEFT_WEIGHTS
    if not path.is_file():
        raise ValueError(f"{directory} holds no {_PEFT_WEIGHTS}; expected a folder written by save_lora")
    config = LoraConfig.from_pretrained(str(directory))
    absent = unmatched_targets(denoiser, config.target_modules)
    if absent:
        raise ValueError(f"the LoRA in {directory / 'adapter_config.json'} names target modules {absent} that "
                         f"{type(denoiser).__name__} lacks; expected a LoRA saved for this denoiser (save_lora)")
    state = lora_tensors(load_file(str(path)), "", path)

    def load() -> None:
        _inject(denoiser, config)
        set_peft_model_state_dict(denoiser, state)

    return path, state, load
