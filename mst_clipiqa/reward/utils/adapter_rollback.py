"""A LoRA load that fails leaves the model exactly as it was: layers, adapter configs, active adapters, flags."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

_ATTRIBUTES = ("peft_config", "_hf_peft_config_loaded")  # peft's and diffusers' records of the adapters


@contextmanager
def adapter_rollback(model: nn.Module) -> Iterator[None]:
    """If the block raises, every adapter it injected into ``model`` (peft's layers, directly or through
    diffusers) is removed again: each LoRA layer that was not there before is replaced by its base layer,
    new adapters leave the layers that were, and the adapter configs, the active adapters and every
    parameter's ``requires_grad`` are restored. Then the error propagates."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    before = {path: (set(_adapters(m)), list(m.active_adapters), m.disable_adapters)
              for path, m in model.named_modules() if isinstance(m, BaseTunerLayer)}
    attributes = {k: _copy(model.__dict__[k]) for k in _ATTRIBUTES if k in model.__dict__}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    try:
        yield
    except BaseException:
        _unwrap_new_layers(model, before)
        for key in _ATTRIBUTES:
            model.__dict__.pop(key, None)
        model.__dict__.update(attributes)
        for name, p in model.named_parameters():
            p.requires_grad_(flags.get(name, p.requires_grad))
        raise


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


def _adapters(layer: Any) -> list[str]:
    return list(getattr(layer, "lora_A", {}) or {}) + list(getattr(layer, "lora_embedding_A", {}) or {})


def _unwrap_new_layers(model: nn.Module, before: dict[str, tuple[set[str], list[str], bool]]) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer

    for path in [p for p, m in model.named_modules() if isinstance(m, BaseTunerLayer)]:
        try:
            layer = model.get_submodule(path)
        except AttributeError:  # inside a layer unwrapped already (a MultiheadAttention's out_proj)
            continue
        if path in before:
            known, active, disabled = before[path]
            for name in set(_adapters(layer)) - known:
                layer.delete_adapter(name)
            layer.set_adapter(active)
            layer.enable_adapters(not disabled)
            continue
        if hasattr(layer, "unload_and_optionally_merge_module"):  # MultiheadAttention needs peft's own path
            base = layer.unload_and_optionally_merge_module(merge=False, safe_merge=False, adapter_names=None)
        else:
            base = layer.get_base_layer()
        parent, _, child = path.rpartition(".")
        setattr(model.get_submodule(parent), child, base)
