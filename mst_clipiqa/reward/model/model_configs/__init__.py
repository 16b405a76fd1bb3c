"""Built-in model names as data: one JSON file per name, ``<name>.json`` in this folder (as open_clip keeps its
architectures), read when first asked for. Each holds ``config`` (``MSTCLIPIQAConfig`` fields other than the
heads), ``variant`` (the default heads: A template, B prompt, or a head kind's name) and ``variant_fixed``
(true when the name implies its variant, as ``paper-A``). :func:`add_model_config` registers more."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["add_model_config", "model_config_names", "model_spec"]

_FOLDER = Path(__file__).parent
_SPECS: dict[str, dict[str, Any]] = {}
_KEYS = {"config", "variant", "variant_fixed"}


def _specs() -> dict[str, dict[str, Any]]:
    if not _SPECS:
        _SPECS.update(_read(path) for path in sorted(_FOLDER.glob("*.json")))
    return _SPECS


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read model config {path}: {error}") from None
    if (not isinstance(spec, dict) or not isinstance(spec.get("config"), dict) or set(spec) - _KEYS
            or not isinstance(spec.get("variant", "A"), str)):
        raise ValueError(f"{path}: expected a JSON object with 'config' (MSTCLIPIQAConfig fields) and optionally "
                         "'variant' ('A', 'B' or a head kind) and 'variant_fixed' (true or false)")
    if "heads" in spec["config"] or "score_ranges" in spec["config"]:
        raise ValueError(f"{path}: 'config' must not set heads or score_ranges; variant and outputs shape the heads")
    return path.stem, {"variant": "A", "variant_fixed": False, **spec}


def add_model_config(path: str | Path) -> list[str]:
    """Register the model config in a ``<name>.json`` file (or every one in a folder) as a built-in model name;
    returns the names added. ``MSTCLIPIQA.from_pretrained(name)`` and ``--model name`` then build it."""
    path = Path(path)
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    specs = dict(_read(file) for file in files)
    taken = sorted(set(specs) & set(_specs()))
    if taken:
        raise ValueError(f"model name(s) {taken} from {path} are taken; choose other file names")
    _SPECS.update(specs)
    return list(specs)


def model_config_names() -> tuple[str, ...]:
    """Every built-in and registered model name."""
    return tuple(_specs())


def model_spec(name: str) -> dict[str, Any]:
    """The registered spec of model ``name`` (a copy: callers may change it)."""
    specs = _specs()
    if name not in specs:
        raise ValueError(f"unknown model name {name!r}; expected one of {list(specs)}")
    return json.loads(json.dumps(specs[name]))
