"""A LoRA file checked against the denoiser it is loaded into: every tensor its config implies present, no
tensor for a module the denoiser lacks, the right shapes, finite values; errors name the file and the keys."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from mst_clipiqa.reward.utils import check_finite_tensors

PEFT_PREFIX = "base_model.model."  # how peft's own format names the adapted model's modules
# diffusers' and kohya-converted spellings of the two LoRA matrices, as peft names them
_SPELLINGS = ((".lora.down.", ".lora_A."), (".lora.up.", ".lora_B."), (".lora_down.", ".lora_A."),
              (".lora_up.", ".lora_B."))
_OTHER_MODELS = ("text_encoder", "text_encoder_2", "text_encoder_3")  # loaded by diffusers beside the denoiser


def lora_tensors(state: Mapping[str, torch.Tensor], prefix: str, source: object) -> dict[str, torch.Tensor]:
    """The denoiser's LoRA matrices of a file's ``state`` keyed as peft names them in the denoiser
    (``<module>.lora_A.weight``), checked finite; alphas and other models' tensors are left out."""
    check_finite_tensors(state, source)
    out = {}
    for key, value in state.items():
        if key.startswith(tuple(f"{m}." for m in _OTHER_MODELS)) or key.endswith(".alpha"):
            continue
        key = key.removeprefix(PEFT_PREFIX).removeprefix(f"{prefix}.")
        for old, new in _SPELLINGS:
            key = key.replace(old, new)
        out[key] = value
    return out


def injected_tensors(denoiser: nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """Adapter ``adapter``'s LoRA matrices in ``denoiser``, keyed as :func:`lora_tensors` keys a file."""
    marker = re.compile(rf"\.(lora_[A-Za-z_]+)\.{re.escape(adapter)}\.")
    return {marker.sub(r".\1.", name): p for name, p in denoiser.named_parameters() if marker.search(name)}


def lora_problems(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor],
                  targeted: Iterable[str] = ()) -> list[str]:
    """What keeps the file's tensors ``found`` from being exactly the adapter's ``expected`` ones, and from
    covering every module of ``targeted`` (those its config names, when the loader injected fewer)."""
    adapted = {key.split(".lora_")[0] for key in expected}
    wanted = set(expected) | {f"{m}.{matrix}.weight" for m in set(targeted) - adapted
                              for matrix in ("lora_A", "lora_B")}
    missing = sorted(wanted - set(found))
    unexpected = sorted(set(found) - wanted)
    shapes = [f"{k} {list(found[k].shape)} (expected {list(expected[k].shape)})" for k in sorted(expected)
              if k in found and found[k].shape != expected[k].shape]
    return ([f"lacks {len(missing)} tensor(s) its config names, first: {missing[:4]}"] if missing else []) + \
        ([f"has {len(unexpected)} tensor(s) for modules the denoiser lacks, first: {unexpected[:4]}"]
         if unexpected else []) + \
        ([f"has {len(shapes)} tensor(s) of the wrong shape, first: {shapes[:3]}"] if shapes else [])


def targeted_modules(denoiser: nn.Module, metadata: Mapping[str, str] | None, prefix: str) -> set[str]:
    """The modules of ``denoiser`` the adapter config in a diffusers LoRA file's metadata targets (empty
    without one: the loader then adapts the modules the file holds tensors for)."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    try:
        config = json.loads((metadata or {}).get("lora_adapter_metadata", "{}"))
    except json.JSONDecodeError:
        return set()
    targets = config.get(f"{prefix}.target_modules")
    if not targets:
        return set()
    lora = LoraConfig(target_modules=targets, exclude_modules=config.get(f"{prefix}.exclude_modules"))
    return {name for name, module in denoiser.named_modules()
            if isinstance(module, nn.Linear | nn.Conv2d) and check_target_module_exists(lora, name)}


def unmatched_targets(denoiser: nn.Module, targets: Any) -> list[str]:
    """The ``target_modules`` of a peft config (a list of name suffixes) that match no module of ``denoiser``."""
    if isinstance(targets, str) or not isinstance(targets, Sequence | set):
        return []  # a regex (or "all-linear"): peft itself refuses one that matches nothing
    names = [name for name, _ in denoiser.named_modules()]
    return sorted(t for t in targets if not any(n == t or n.endswith(f".{t}") for n in names))
