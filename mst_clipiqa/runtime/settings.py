"""A run's resolved settings as YAML, the format a recipe is written in (``--config recipe.yaml``)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mst_clipiqa.reward.utils import atomic_write, jsonable

__all__ = ["write_yaml"]


def write_yaml(path: str | Path, settings: Mapping[str, Any]) -> Path:
    """Write ``settings`` (nested dicts of JSON-able values; tuples become lists) to ``path`` as block YAML, in
    the order given, atomically."""
    import yaml  # PyYAML: a dependency of accelerate and huggingface_hub

    text = yaml.safe_dump(jsonable(dict(settings)), sort_keys=False, default_flow_style=False, allow_unicode=True)
    path = Path(path)
    with atomic_write(path) as tmp:
        Path(tmp).write_text(text)
    return path
