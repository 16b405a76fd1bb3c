"""What a fine-tuning run trains against, as short strings a checkpoint records and a resume compares: the reward,
the pipeline and its denoiser's architecture, the prompts or the preference pairs."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from torch import nn

from mst_clipiqa.reward.utils import jsonable

__all__ = ["digest", "module_digest", "pairs_identity", "pipeline_identity", "prompts_identity", "reward_identity"]


def digest(value: Any) -> str:
    """A short digest of JSON-able ``value``."""
    text = json.dumps(jsonable(value), sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def module_digest(module: nn.Module) -> str:
    """A short digest of a module's tensors (names, shapes, values)."""
    hasher = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        hasher.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode() + tensor.float().cpu().numpy().tobytes())
    return hasher.hexdigest()[:16]


def _kind(obj: Any) -> str:
    kind = obj if callable(obj) and not isinstance(obj, nn.Module) and hasattr(obj, "__qualname__") else type(obj)
    # by the first import names, as checkpoints recorded them before mst_clipiqa/ held reward/ and integrations/
    return f"{kind.__module__.removeprefix('mst_clipiqa.')}.{kind.__qualname__}"


def reward_identity(reward: Any, prefix: str = "reward") -> dict[str, str]:
    """Fields naming a reward: its kind; for a module its weights' digest; for a scorer with a model config (an
    MST-CLIPIQA reward, bare or in ``NamedScores``) that config's digest, variant and output weights. A dict of
    rewards gives the fields of each by name."""
    if isinstance(reward, Mapping):
        fields = {k: v for name, fn in reward.items() for k, v in reward_identity(fn, f"{prefix}[{name}]").items()}
        return {f"{prefix}s": ", ".join(sorted(map(str, reward))), **fields}
    out = {prefix: _kind(reward)}
    scorer = reward.reward if isinstance(getattr(reward, "reward", None), nn.Module) else reward
    model = getattr(scorer, "model", None)
    if hasattr(config := getattr(model, "config", None), "to_dict"):
        out[f"{prefix}_model"] = digest(config.to_dict())
        out[f"{prefix}_variant"] = str(getattr(config, "variant", ""))
        out[f"{prefix}_outputs"] = json.dumps(jsonable(getattr(scorer, "weights", getattr(model, "outputs", None))))
    if isinstance(reward, nn.Module):
        out[f"{prefix}_weights"] = module_digest(reward)
    return out


def pipeline_identity(pipe: Any, family: Any, denoiser: nn.Module) -> dict[str, str]:
    """The pipeline's class and family, its scheduler's class, and the denoiser's class and config."""
    # "_name_or_path" and the like say where it was loaded from, not what it is
    config = {k: v for k, v in dict(getattr(denoiser, "config", None) or {}).items() if not k.startswith("_")}
    return {"pipeline": type(pipe).__name__, "pipeline_family": type(family).__name__,
            "scheduler": type(pipe.scheduler).__name__, "denoiser": f"{type(denoiser).__name__} {digest(config)}"}


def prompts_identity(prompts: list[str] | None, prompt_fn: Any) -> dict[str, str]:
    """A digest of the prompt list, or the name of the ``prompt_fn``."""
    return {"prompts": f"{len(prompts)} prompt(s) {digest(prompts)}" if prompts is not None else _kind(prompt_fn)}


def pairs_identity(rows: Any) -> dict[str, str]:
    """A digest of preference pairs' content (both images, encoded or PIL, the label and the caption of every row,
    in order): the same pairs saved elsewhere match, other pairs do not."""
    hasher = hashlib.sha256()
    for row in rows:
        for image in (row["jpg_0"], row["jpg_1"]):
            if not isinstance(image, (bytes, bytearray)):  # a PIL image
                image = f"{image.mode}{image.size}".encode() + image.tobytes()
            hasher.update(hashlib.sha256(image).digest())
        hasher.update(json.dumps([repr(row["label_0"]), str(row["caption"])]).encode())
    return {"pairs": f"{len(rows)} pair(s) {hasher.hexdigest()[:16]}"}
