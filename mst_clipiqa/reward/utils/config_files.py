"""Settings as YAML files keyed by command-line option names: what ``mst-clipiqa CMD --config FILE.yaml`` reads
and what a run folder records as ``config.yaml``, so that a finished run's file starts the same run again.

    lr: 1.0e-4            # --lr
    no-cache: true        # --no-cache (a flag: true gives it, false leaves it out)
    sde-window: [0, 2]    # --sde-window 0 2

Keys may use dashes or underscores; a null value means "the default"."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .files import atomic_write

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

CONFIG_NAME = "config.yaml"  # a run folder's resolved settings


def option_name(key: str) -> str:
    """``--learning_rate`` / ``learning_rate`` / ``learning-rate`` -> ``learning-rate``."""
    return str(key).lstrip("-").replace("_", "-")


def option_values(config: DataclassInstance) -> dict[str, Any]:
    """A settings dataclass (fields made with :func:`~.options.option`) as its command-line options and values:
    each field under its flag's name; a boolean whose flag switches it off (``--no-cache`` for ``use_cache``)
    as that flag, true when the setting is off. Fields without a flag (``cli=False``) are left out; a field
    holding settings of its own (``config.run``) adds their options."""
    values = {}
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value):  # settings composed of settings (config.run): their options, flat
            values.update(option_values(value))
            continue
        if not f.metadata.get("cli", True):
            continue
        negative = isinstance(f.default, bool) and f.default  # its flag turns it off (as the CLI builds it)
        values[option_name(f.metadata.get("flag", f.name))] = (not value) if negative else value
    return values


def write_config(path: str | Path, values: Mapping[str, Any]) -> None:
    """Write ``values`` (option name -> value; tuples and paths as YAML lists and strings), atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(yaml.safe_dump({option_name(k): _plain(v) for k, v in values.items()}, sort_keys=False),
                       encoding="utf-8")


def read_config(path: str | Path) -> dict[str, Any]:
    """The option name -> value mapping of a YAML settings file; anything else is a ``ValueError`` naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: no such settings file; expected a YAML file of option: value lines") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML ({' '.join(str(error).split())})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} holds a YAML {type(values).__name__}; expected a mapping of option: value lines")
    return {option_name(k): v for k, v in values.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value) if isinstance(value, Path) else value
