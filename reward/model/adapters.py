"""LoRA adapters (peft) on the fusion and heads, and optionally on the vision encoders' attention.

An adapter adapts a trained model to a new generator or domain: it is a
few thousand weights, saved and loaded apart from the model, and several can
sit in one model and be switched by name (``None`` = the base model)::

    add_adapter(model, "midjourney", rank=8)      # only its LoRA weights train
    ...train...
    save_adapter(model, "adapters/midjourney")
    load_adapter(base_model, "adapters/midjourney")
    set_adapter(base_model, None)                 # back to the base model

Encoder adapters (``encoders=True``) change the image embeddings, so training
with them cannot use the feature cache. The text tower is never adapted: the
template head's text features are computed once.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors.torch import save_file

from ..utils import adapter_rollback
from .files import read_weights
from .mstclipiqa import BACKBONE_PREFIXES, MSTCLIPIQA, is_adapter_key

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FORMAT = "mst-clipiqa-lora"
HEAD_TARGETS = r"fusion\.(W_h|W_g|W_c|W_f)|heads\.[^.]+\.(W_1|W_2|w_o|cross_attn)"


def target_modules(model: MSTCLIPIQA, encoders: bool = False) -> str:
    """The regex (peft full-match) of the layers an adapter adapts; each backbone names its own attention."""
    if not encoders:
        return f"({HEAD_TARGETS})"
    streams = "|".join(rf"{name}\.({backbone.adapter_targets})" for name, backbone in
                       (("coarse", model.coarse), ("fine", model.fine)))
    return f"({HEAD_TARGETS}|{streams})"


def _layers(model: torch.nn.Module) -> list[BaseTunerLayer]:
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def adapter_names(model: torch.nn.Module) -> list[str]:
    """Names of the adapters injected into ``model``."""
    return list(getattr(model, "peft_config", {}))


def has_encoder_adapter(model: torch.nn.Module) -> bool:
    return any(n.startswith(BACKBONE_PREFIXES) and is_adapter_key(n) for n, _ in model.named_parameters())


def add_adapter(model: MSTCLIPIQA, name: str = "default", rank: int = 8, alpha: float = 16.0,
                dropout: float = 0.0, encoders: bool = False) -> MSTCLIPIQA:
    """Inject a new LoRA adapter, make it the active one and the only trainable weights."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    if name in adapter_names(model):
        raise ValueError(f"the model already has an adapter named {name!r}; adapters: {adapter_names(model)}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules(model, encoders))
    with warnings.catch_warnings():  # peft warns that several adapters will share the model: that is the point
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(config, model, adapter_name=name)
    set_adapter(model, name)
    return model


def set_adapter(model: MSTCLIPIQA, name: str | None) -> None:
    """Activate adapter ``name`` and make its weights the only trainable ones; ``None``: the base model."""
    if name is not None and name not in adapter_names(model):
        raise ValueError(f"unknown adapter {name!r}; this model has {adapter_names(model) or 'no adapters'}")
    for layer in _layers(model):
        layer.enable_adapters(name is not None)
        if name is not None:
            layer.set_adapter(name)
    if name is not None:
        for param_name, param in model.named_parameters():
            param.requires_grad_(f".{name}." in param_name and is_adapter_key(param_name))


def active_adapter(model: MSTCLIPIQA) -> str | None:
    layers = _layers(model)
    if not layers or layers[0].disable_adapters:
        return None
    return layers[0].active_adapters[0]


def save_adapter(model: MSTCLIPIQA, directory: str | Path, name: str | None = None) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` (the adapter's weights only)."""
    name = name or active_adapter(model)
    if name not in adapter_names(model):
        raise ValueError(f"no adapter {name!r} to save; this model has {adapter_names(model) or 'no adapters'}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    peft_config = model.peft_config[name]
    config = {"format": FORMAT, "version": 1, "name": name, "rank": peft_config.r,
              "alpha": peft_config.lora_alpha, "dropout": peft_config.lora_dropout,
              "encoders": peft_config.target_modules == target_modules(model, True), "heads": model.config.heads}
    (directory / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    state = get_peft_model_state_dict(model, adapter_name=name)
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(directory / ADAPTER_WEIGHTS))
    return directory


def read_adapter_config(directory: str | Path) -> dict:
    path = Path(directory) / ADAPTER_CONFIG
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {path}: {error}; expected a directory written by save_adapter") from None
    if config.get("format") != FORMAT:
        raise ValueError(f"{path} is not an MST-CLIPIQA adapter (format {config.get('format')!r}, "
                         f"expected {FORMAT!r})")
    return config


def load_adapter(model: MSTCLIPIQA, directory: str | Path, name: str | None = None,
                 activate: bool = True) -> str:
    """Inject the adapter saved in ``directory`` under ``name`` (default: its saved name); returns the name."""
    config = read_adapter_config(directory)
    if config["heads"] != model.config.heads:
        raise ValueError(f"adapter in {directory} was trained for heads {config['heads']}; "
                         f"this model has {model.config.heads}")
    name = name or config["name"]
    previous = active_adapter(model)
    path = Path(directory) / ADAPTER_WEIGHTS
    weights = read_weights(path)  # a damaged file is named before the model changes
    with adapter_rollback(model):  # any failure below removes the adapter again: the model is as it was
        add_adapter(model, name, config["rank"], config["alpha"], config["dropout"], config["encoders"])
        try:
            result = set_peft_model_state_dict(model, weights, adapter_name=name)
        except RuntimeError as error:  # tensors of the wrong shape
            raise ValueError(f"adapter weights in {path} do not fit this model (rank {config['rank']} in "
                             f"{ADAPTER_CONFIG}): {error}") from error
        missing = [k for k in result.missing_keys if f".{name}." in k and is_adapter_key(k)]
        if missing or result.unexpected_keys:
            raise ValueError(f"adapter weights in {path} do not fit this model: missing {missing[:5]}, "
                             f"unexpected {list(result.unexpected_keys)[:5]}")
    set_adapter(model, name if activate else previous)
    return name


def trainable_state_dict(model: MSTCLIPIQA) -> dict[str, torch.Tensor]:
    """Fusion, heads and every adapter, encoder adapters included (``trained_state_dict`` drops those)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith(BACKBONE_PREFIXES) or is_adapter_key(k)}


def merge_adapters(model: MSTCLIPIQA, name: str | None = None) -> MSTCLIPIQA:
    """Bake adapter ``name`` (default: the active one) into the weights and remove every adapter.

    The result is a plain model again: ``save_pretrained`` writes it in the base
    format, and it scores exactly as the model did with that adapter active.
    """
    name = name or active_adapter(model)
    if name not in adapter_names(model):
        raise ValueError(f"no adapter {name!r} to merge; this model has {adapter_names(model) or 'no adapters'}")
    for path in [n for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]:
        try:
            layer = model.get_submodule(path)
        except AttributeError:  # inside a layer unloaded already (a MultiheadAttention's out_proj)
            continue
        if hasattr(layer, "unload_and_optionally_merge_module"):  # MultiheadAttention needs peft's own path
            base = layer.unload_and_optionally_merge_module(merge=True, safe_merge=False, adapter_names=[name])
        else:
            layer.merge(adapter_names=[name])
            base = layer.get_base_layer()
        parent, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent), child, base)
    del model.peft_config
    model.coarse.requires_grad_(False)
    model.fine.requires_grad_(False)
    for param in [*model.fusion.parameters(), *model.heads.parameters()]:
        param.requires_grad_(True)
    return model
