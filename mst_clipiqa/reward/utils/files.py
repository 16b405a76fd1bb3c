"""Atomic file writes, strict JSON and the one safetensors reader: a killed process never leaves a half-written
file behind, and a damaged file is named when it is read."""
from __future__ import annotations

import json
import math
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors import safe_open

if TYPE_CHECKING:  # torch loads where tensors are written (the JSON helpers serve torch-free config modules)
    import torch


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed.

    The file gets the permissions a plain ``open(path, "w")`` would give: it is created with mode 0o666, which
    the process umask narrows (mkstemp's files are owner-only). An ``OSError`` that names no file (a full disk
    says only "No space left on device") is given ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.strerror is not None and error.filename in (None, str(tmp), tmp):
            error.filename = str(path)  # "[Errno 28] No space left on device: 'path'"
        raise


def jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become ``None`` (JSON has no NaN)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)  # paths, dtypes, devices: their readable names


def write_json(path: str | Path, data: Any) -> Path:
    """Write strict JSON atomically."""
    text = json.dumps(jsonable(data), indent=1, allow_nan=False) + "\n"
    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; a damaged file raises a ``ValueError`` that names it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is damaged ({type(error).__name__}: {error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is damaged: expected a JSON object, found {type(data).__name__}")
    return data


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path,
                      metadata: dict[str, str] | None = None) -> None:
    """safetensors' ``save_file`` (``tensors`` moved to the CPU); a failed write (a full disk) is an ``OSError``
    naming ``path``, not safetensors' own error type."""
    from safetensors.torch import save_file

    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    except Exception as error:
        code = re.search(r"IoError\(Os \{ code: (\d+)", str(error))
        if type(error).__name__ != "SafetensorError" or code is None:
            raise
        number = int(code.group(1))
        raise OSError(number, os.strerror(number), str(path)) from None


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (moved to the CPU) as safetensors, atomically."""
    with atomic_write(path) as tmp:
        write_safetensors(tensors, tmp, metadata)


def read_tensors(path: str | Path,
                 expected: str = "a safetensors file") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (copies, not views of the mapped file) and string metadata of a safetensors file.

    A missing or damaged file raises a ``ValueError`` that names it and says what was ``expected`` there.
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {k: handle.get_tensor(k).clone() for k in handle.keys()}, handle.metadata() or {}
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{path} does not load ({type(error).__name__}: {error}); expected {expected}") from None
