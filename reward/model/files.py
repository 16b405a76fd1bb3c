"""Where a saved model's files are: a ``save_pretrained`` directory, or a Hub repo holding one."""
from __future__ import annotations

from pathlib import Path

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BACKBONES_NAME = "backbones.safetensors"


def resolve_model_dir(path: str | Path, **hub_kwargs) -> Path:
    """The local directory of a saved model, downloading ``*.json`` / ``*.safetensors`` from the Hub for an id."""
    local = Path(path)
    if local.is_dir():
        if not (local / CONFIG_NAME).exists():
            raise ValueError(f"{local} has no {CONFIG_NAME}; expected a directory written by save_pretrained")
        return local
    text = str(path)
    if local.exists() or text.startswith(("/", ".", "~")) or text.count("/") != 1:
        raise ValueError(f"{text} is not a directory written by save_pretrained, nor a Hub id (owner/name)")
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(str(path), allow_patterns=["*.json", "*.safetensors"], **hub_kwargs))
