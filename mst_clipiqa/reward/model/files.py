"""A saved model's files: where they are (a ``save_pretrained`` folder or a Hub repo) and reading them safely.

Every reader names the file it could not use: a missing, empty or truncated file, or one holding NaN / inf
weights, is a ``ValueError`` that says which file and what is wrong, never a random or silently wrong model.
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..utils import check_finite_tensors
from .model_configs import model_config_names

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BACKBONES_NAME = "backbones.safetensors"
REWARD_CONFIG_NAME = "reward_config.json"  # an MSTCLIPIQAReward's options, beside its model
MODEL_TYPE = "mst-clipiqa"  # config.json's model_type, as Hugging Face configs name their model


def resolve_model_dir(path: str | Path, **hub_kwargs) -> Path:
    """The local directory of a saved model, downloading ``*.json`` / ``*.safetensors`` from the Hub for an id."""
    local = Path(path)
    if local.is_dir():
        return _checked_model_dir(local)
    text = str(path)
    expected = "expected a directory written by save_pretrained or a Hub id (owner/name)"
    if local.exists():
        raise ValueError(f"{text} is a file; {expected}")
    missing = f"no local folder {text} ({local.resolve()} does not exist)"
    if not _could_be_hub_id(text):
        raise ValueError(f"{missing}; {expected}, or {_builtin_hint(text)}")
    from huggingface_hub import snapshot_download

    try:
        directory = snapshot_download(text, allow_patterns=["*.json", "*.safetensors"], **hub_kwargs)
    except OSError as error:  # every Hub failure (offline, no such repo or revision, HTTP) is an OSError
        raise ValueError(f"{missing}, and as a Hub id {_hub_failure(error)}; {expected}") from error
    return _checked_model_dir(Path(directory), f"Hub repo {text}")


def _builtin_hint(text: str) -> str:

    names = model_config_names()
    close = difflib.get_close_matches(text, names, n=1)
    return f"a built-in model name ({', '.join(names)})" + (f"; did you mean {close[0]!r}?" if close else "")


def _checked_model_dir(directory: Path, name: str | None = None) -> Path:
    if not (directory / CONFIG_NAME).is_file():
        raise ValueError(f"{name or directory} has no {CONFIG_NAME}; expected a directory written by save_pretrained")
    return directory


def _could_be_hub_id(text: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if text.count("/") != 1:
        return False
    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _hub_failure(error: OSError) -> str:
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(error, RepositoryNotFoundError):
        return "the Hub has no such repo (or it is private or gated: log in with `hf auth login`)"
    if isinstance(error, RevisionNotFoundError):
        return "the Hub repo has no such revision"
    if isinstance(error, (LocalEntryNotFoundError, ConnectionError)):
        return "the Hub was not reachable (offline or HF_HUB_OFFLINE=1) and the local Hub cache has no copy"
    return f"it could not be fetched from the Hub ({type(error).__name__}: {error})"


def check_readable(path: Path, what: str) -> None:
    """A file that exists and is not empty; else a ``ValueError`` naming it and what it should hold."""
    if not path.is_file():
        raise ValueError(f"{path} not found; expected {what}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes); expected {what}. Was it written completely?")


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, each finite; a damaged file is a ``ValueError`` naming it."""
    path = Path(path)
    check_readable(path, "a safetensors weights file")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or damaged?): {error}") from error
    check_finite(state, path)
    return state


def check_finite(state: Mapping[str, torch.Tensor], source: object) -> None:
    """NaN or inf in any floating-point tensor is a ``ValueError`` naming ``source`` and the first such keys."""
    check_finite_tensors(state, source)
