"""LoRA adapters (peft) on the fusion and heads, and optionally on the vision encoders' attention.

An adapter adapts a trained model to a new generator or domain: it is a
few thousand weights, saved and loaded apart from the model, and several can
sit in one model and be switched by name (``None`` = the base model)::

    add_adapter(model, "midjourney", rank=8)      # only its LoRA weights train
    ...train...
    save_adapter(model, "adapters/midjourney")
    load_adapter(base_model, "adapters/midjourney")
    set_adapter(base_model, None)                 # back to the base model

A saved adapter is a peft folder (``adapter_config.json`` written by peft's ``LoraConfig``,
``adapter_model.safetensors`` with the keys ``PeftModel`` saves), so ``PeftModel.from_pretrained(model,
folder)`` loads it, and ``load_adapter`` reads folders written by peft. Every function also takes an
``MSTCLIPIQAReward`` and acts on its model, which stays frozen: a reward passes gradients to pixels only.

Encoder adapters (``encoders=True``) change the image embeddings, so training
with them cannot use the feature cache. The text tower is never adapted: the
template head's text features are computed once.
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from peft.tuners.tuners_utils import BaseTunerLayer
from safetensors import safe_open
from safetensors.torch import save_file

from ..utils import adapter_rollback
from .files import read_weights
from .mstclipiqa import BACKBONE_PREFIXES, MSTCLIPIQA, is_adapter_key

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
LEGACY_FORMAT = "mst-clipiqa-lora"  # before peft's format; read with a DeprecationWarning
PEFT_PREFIX = "base_model.model."  # how PeftModel names the weights of the model it wraps
METADATA_KEY = "mst_clipiqa"  # safetensors metadata: the adapter's name and the heads it was trained for
HEAD_TARGETS = r"fusion\.(W_h|W_g|W_c|W_f)|heads\.[^.]+\.(W_1|W_2|w_o|cross_attn)"
EXPECTED = "a folder written by save_adapter or by peft (adapter_config.json, adapter_model.safetensors)"


def target_modules(model: MSTCLIPIQA, encoders: bool = False) -> str:
    """The regex (peft full-match) of the layers an adapter adapts; each backbone names its own attention."""
    model, _ = _scorer(model)
    if not encoders:
        return f"({HEAD_TARGETS})"
    streams = "|".join(rf"{name}\.({backbone.adapter_targets})" for name, backbone in
                       (("coarse", model.coarse), ("fine", model.fine)))
    return f"({HEAD_TARGETS}|{streams})"


def _scorer(model: Any) -> tuple[MSTCLIPIQA, bool]:
    """The model to act on, and whether it belongs to a reward (which keeps it frozen)."""
    if isinstance(model, MSTCLIPIQA):
        return model, False
    inner = getattr(model, "model", None)
    if isinstance(inner, MSTCLIPIQA):
        return inner, True
    raise TypeError(f"expected an MSTCLIPIQA model or an MSTCLIPIQAReward, got {type(model).__name__}")


def _layers(model: torch.nn.Module) -> list[BaseTunerLayer]:
    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def adapter_names(model: MSTCLIPIQA) -> list[str]:
    """Names of the adapters injected into ``model``."""
    return list(getattr(_scorer(model)[0], "peft_config", {}))


def has_encoder_adapter(model: MSTCLIPIQA) -> bool:
    """Whether any adapter adapts the vision encoders (then the feature cache cannot be used)."""
    return any(n.startswith(BACKBONE_PREFIXES) and is_adapter_key(n) for n, _ in _scorer(model)[0].named_parameters())


def add_adapter(model: MSTCLIPIQA, name: str = "default", rank: int = 8, alpha: float = 16.0,
                dropout: float = 0.0, encoders: bool = False) -> MSTCLIPIQA:
    """Inject a new LoRA adapter, make it the active one and the only trainable weights (of a model; a
    reward's model stays frozen)."""
    if rank < 1:
        raise ValueError(f"LoRA rank must be >= 1, got {rank}")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules(model, encoders))
    _inject(_scorer(model)[0], config, name)
    set_adapter(model, name)
    return model


def _inject(model: MSTCLIPIQA, config: LoraConfig, name: str) -> None:
    if name in adapter_names(model):
        raise ValueError(f"the model already has an adapter named {name!r}; adapters: {adapter_names(model)}")
    with warnings.catch_warnings():  # peft warns that several adapters will share the model: that is the point
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        inject_adapter_in_model(config, model, adapter_name=name)


def set_adapter(model: MSTCLIPIQA, name: str | None) -> None:
    """Activate adapter ``name`` and make its weights the only trainable ones; ``None``: the base model."""
    model, frozen = _scorer(model)
    if name is not None and name not in adapter_names(model):
        raise ValueError(f"unknown adapter {name!r}; this model has {adapter_names(model) or 'no adapters'}")
    for layer in _layers(model):
        layer.enable_adapters(name is not None)
        if name is not None:
            layer.set_adapter(name)
    if name is not None:
        for param_name, param in model.named_parameters():
            param.requires_grad_(not frozen and f".{name}." in param_name and is_adapter_key(param_name))


def active_adapter(model: MSTCLIPIQA) -> str | None:
    """The name of the active adapter; ``None`` for the base model."""
    layers = _layers(_scorer(model)[0])
    if not layers or layers[0].disable_adapters:
        return None
    return layers[0].active_adapters[0]


def save_adapter(model: MSTCLIPIQA, directory: str | Path, name: str | None = None) -> Path:
    """Write adapter ``name`` (default: the active one) as a peft folder: ``adapter_config.json`` and
    ``adapter_model.safetensors`` (its weights only, named as ``PeftModel`` names them)."""
    model, _ = _scorer(model)
    name = name or active_adapter(model)
    if name not in adapter_names(model):
        raise ValueError(f"no adapter {name!r} to save; this model has {adapter_names(model) or 'no adapters'}")
    directory = Path(directory)
    config = copy.copy(model.peft_config[name])
    config.inference_mode = True  # as PeftModel.save_pretrained writes it
    config.save_pretrained(str(directory))
    state = get_peft_model_state_dict(model, adapter_name=name)
    metadata = {"format": "pt", METADATA_KEY: json.dumps({"name": name, "heads": model.config.heads})}
    save_file({PEFT_PREFIX + k: v.detach().cpu().contiguous() for k, v in state.items()},
              str(directory / ADAPTER_WEIGHTS), metadata=metadata)
    return directory


def _read_config(model: MSTCLIPIQA, directory: Path) -> tuple[LoraConfig, dict[str, Any]]:
    """The adapter's LoraConfig, and what the folder says of its name and heads."""
    path = directory / ADAPTER_CONFIG
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {path}: {error}; expected {EXPECTED}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a JSON object; expected {EXPECTED}")
    if data.get("format") == LEGACY_FORMAT:
        warnings.warn(f"{directory} is an adapter in the old {LEGACY_FORMAT!r} format, read for one more release; "
                      "load it and save it again with save_adapter to get a peft folder", DeprecationWarning,
                      stacklevel=3)
        try:
            config = LoraConfig(r=data["rank"], lora_alpha=data["alpha"], lora_dropout=data["dropout"],
                                target_modules=target_modules(model, data["encoders"]))
            return config, {"name": data["name"], "heads": data["heads"]}
        except KeyError as error:
            raise ValueError(f"{path} lacks the field {error} of the {LEGACY_FORMAT!r} format") from None
    if "peft_type" not in data:
        raise ValueError(f"{path} has no peft_type (nor format {LEGACY_FORMAT!r}); expected {EXPECTED}")
    if data["peft_type"] != "LORA":
        raise ValueError(f"{path} is a {data['peft_type']} adapter; only LoRA (peft_type LORA) adapters are supported")
    if data.get("modules_to_save"):
        raise ValueError(f"{path} sets modules_to_save {data['modules_to_save']}; an MST-CLIPIQA adapter holds LoRA "
                         "weights only")
    try:
        config = LoraConfig.from_pretrained(str(directory))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path} is not a valid LoRA config: {error}") from error
    return config, _saved_info(directory / ADAPTER_WEIGHTS)


def _saved_info(path: Path) -> dict[str, Any]:
    """The name and heads save_adapter records in the weights' metadata ({} for other folders)."""
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        return json.loads(metadata.get(METADATA_KEY, "{}"))
    except Exception:  # a missing or damaged file is named by read_weights, which reads it next
        return {}


def _adapter_weights(directory: Path) -> dict[str, torch.Tensor]:
    path = directory / ADAPTER_WEIGHTS
    if not path.exists() and (directory / "adapter_model.bin").exists():
        raise ValueError(f"{directory} holds adapter_model.bin (a pickle), which is never loaded; save the adapter "
                         "with safetensors (peft's default, safe_serialization=True)")
    return {k.removeprefix(PEFT_PREFIX): v for k, v in read_weights(path).items()}


def load_adapter(model: MSTCLIPIQA, directory: str | Path, name: str | None = None,
                 activate: bool = True) -> str:
    """Inject the adapter saved in ``directory`` (by ``save_adapter`` or peft) under ``name`` (default: its saved
    name, else ``"default"``); returns the name. A failure leaves the model exactly as it was."""
    target, _ = _scorer(model)
    directory = Path(directory)
    config, info = _read_config(target, directory)
    if info.get("heads", target.config.heads) != target.config.heads:
        raise ValueError(f"adapter in {directory} was trained for heads {info['heads']}; "
                         f"this model has {target.config.heads}")
    name = name or info.get("name") or "default"
    weights = _adapter_weights(directory)  # a damaged file is named before the model changes
    if name in adapter_names(target):
        raise ValueError(f"the model already has an adapter named {name!r}; pass another name")
    previous = active_adapter(target)
    with adapter_rollback(target):  # any failure below removes the adapter again: the model is as it was
        _inject(target, config, name)
        _set_weights(target, weights, name, directory)
    set_adapter(model, name if activate else previous)
    return name


def _set_weights(model: MSTCLIPIQA, weights: dict[str, torch.Tensor], name: str, directory: Path) -> None:
    try:
        result = set_peft_model_state_dict(model, weights, adapter_name=name)
    except RuntimeError as error:  # tensors of the wrong shape
        raise ValueError(f"adapter weights in {directory} do not fit this model: {error}") from error
    missing = [k for k in result.missing_keys if f".{name}." in k and is_adapter_key(k)]
    if missing or result.unexpected_keys:
        raise ValueError(f"adapter weights in {directory / ADAPTER_WEIGHTS} do not match its config on this model: "
                         f"missing {len(missing)} tensor(s) {missing[:5]}, unexpected {result.unexpected_keys[:5]}")


def _merge_into_base(model: MSTCLIPIQA, name: str) -> None:
    """Bake ``name`` into every adapted layer and replace the layer by its base (all adapters dropped)."""
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


def trainable_state_dict(model: MSTCLIPIQA) -> dict[str, torch.Tensor]:
    """Fusion, heads and every adapter, encoder adapters included (``trained_state_dict`` drops those)."""
    model, _ = _scorer(model)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(BACKBONE_PREFIXES) or is_adapter_key(k)}


def merge_adapters(model: MSTCLIPIQA, name: str | None = None) -> MSTCLIPIQA:
    """Bake adapter ``name`` (default: the active one) into the weights and remove every adapter.

    The result is a plain model again: ``save_pretrained`` writes it in the base
    format, and it scores exactly as the model did with that adapter active. Returns what it was given
    (a reward's model stays frozen).
    """
    given, (model, frozen) = model, _scorer(model)
    name = name or active_adapter(model)
    if name not in adapter_names(model):
        raise ValueError(f"no adapter {name!r} to merge; this model has {adapter_names(model) or 'no adapters'}")
    _merge_into_base(model, name)
    del model.peft_config
    model.coarse.requires_grad_(False)
    model.fine.requires_grad_(False)
    for param in [*model.fusion.parameters(), *model.heads.parameters(), *model.members.parameters()]:
        param.requires_grad_(not frozen)
    return given
