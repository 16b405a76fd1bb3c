"""Frozen-encoder outputs computed once and kept on disk, so training touches the encoders once per image.

Layout under the cache root (all safetensors, no pickle)::

    images-<key>/<sha256 of the image file>.safetensors    {"coarse": (Dc,), "fine": (Df,)}
    prompts-<key>/<sha256 of the prompt text>.safetensors  {"states": (L, W)}  (valid tokens only)
    */settings.json                                        what <key> hashes, for humans

``<key>`` hashes everything that changes an embedding: both backbone configs,
a digest of their weights (random or imported weights have no name to trust),
the preprocessing specs, the resize-and-crop size, the autocast precision and
``CACHE_VERSION``. Images are keyed by a hash of the file's bytes rather than
path + size + mtime: an edit that keeps size and mtime (``cp -p``, rsync, a
re-export) still invalidates, a moved data set still hits, and hashing a file
costs far less than decoding it. Entries are written atomically, so a killed
run or several processes never leave a half-written file.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..model import MSTCLIPIQA
from ..utils import atomic_write, precision_dtype
from .features import CachedFeatures, encode_files, encode_prompt_states, unique_prompts

CACHE_VERSION = 2  # 2: fitted images are no longer clipped to [0, 1]
CACHE_ENV = "MST_CLIPIQA_CACHE"


def default_cache_dir() -> Path:
    """``$MST_CLIPIQA_CACHE``, else ``~/.cache/mst-clipiqa/features``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "mst-clipiqa" / "features"))


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """Hash of every tensor in a state dict (names, dtypes, shapes and bytes)."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in sorted(state.items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def encoder_settings(model: MSTCLIPIQA, precision: str = "no") -> dict:
    """Everything that determines the image embeddings and prompt token states."""
    precision_dtype(precision)  # rejects unknown names
    return {
        "version": CACHE_VERSION,
        "coarse": asdict(model.config.coarse), "fine": asdict(model.config.fine),
        "coarse_spec": asdict(model.coarse.image_spec), "fine_spec": asdict(model.fine.image_spec),
        "fit": {"size": model.fit_size, "resize": "short side, bicubic, antialias", "crop": "centre"},
        "precision": precision,
        "weights": {"coarse": state_digest(model.coarse.state_dict()), "fine": state_digest(model.fine.state_dict())},
    }


def settings_key(settings: object) -> str:
    """Short hash of JSON-able settings (key order ignored)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def atomic_save(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors write to a temporary file in the same folder, then ``os.replace``."""
    with atomic_write(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


class FeatureCache:
    """The on-disk feature store for one model's frozen encoders (see the module docstring).

    ``features(paths, prompts)`` returns :class:`CachedFeatures`, encoding only
    what is missing. Under DDP pass ``shard=(rank, world)`` and a ``barrier``:
    each process encodes its share of the missing entries, then all read.
    """

    def __init__(self, root: str | Path | None, model: MSTCLIPIQA, precision: str = "no", batch_size: int = 32,
                 num_workers: int = 0, progress: bool = True, settings: dict | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.model = model
        self.precision = precision
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.progress = progress
        settings = settings or encoder_settings(model, precision)  # callers that already hashed the weights pass it
        text_settings = {"version": CACHE_VERSION, "coarse": settings["coarse"],
                         "weights": settings["weights"]["coarse"]}
        self.image_dir = self._open(f"images-{settings_key(settings)}", settings)
        self.prompt_dir = self._open(f"prompts-{settings_key(text_settings)}", text_settings)
        self.key = self.image_dir.name

    def _open(self, name: str, settings: dict) -> Path:
        directory = self.root / name
        directory.mkdir(parents=True, exist_ok=True)
        if not (directory / "settings.json").exists():
            (directory / "settings.json").write_text(json.dumps(settings, indent=1, sort_keys=True))
        return directory

    def features(self, paths: Sequence[str | Path], prompts: Sequence[str] | None = None,
                 shard: tuple[int, int] = (0, 1), barrier: Callable[[], None] | None = None) -> CachedFeatures:
        f_c, f_f = self.image_features(paths, shard, barrier)
        if prompts is None or not self.model.config.needs_prompts:
            return CachedFeatures(f_c, f_f)
        order, index = unique_prompts(prompts)
        return CachedFeatures(f_c, f_f, self.prompt_states(order, shard, barrier), index)

    def image_features(self, paths: Sequence[str | Path], shard: tuple[int, int] = (0, 1),
                       barrier: Callable[[], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, Dc), (N, Df) float32 CPU embeddings of image files, encoding only uncached ones."""
        keys = [file_digest(p) for p in paths]
        entries = [self.image_dir / f"{k}.safetensors" for k in keys]
        missing = list({k: p for k, p, e in zip(keys, paths, entries) if not e.exists()}.items())
        mine = missing[shard[0]::shard[1]]
        if mine:
            def store(start: int, f_c: torch.Tensor, f_f: torch.Tensor) -> None:
                for (key, _), c, f in zip(mine[start:start + len(f_c)], f_c, f_f):
                    atomic_save({"coarse": c, "fine": f}, self.image_dir / f"{key}.safetensors")
            encode_files(self.model, [p for _, p in mine], self.batch_size, self.num_workers, self.precision,
                         self.progress, on_batch=store)
        if barrier is not None:
            barrier()
        loaded = [load_file(str(e)) for e in entries]
        return torch.stack([d["coarse"] for d in loaded]), torch.stack([d["fine"] for d in loaded])

    def prompt_states(self, prompts: Sequence[str], shard: tuple[int, int] = (0, 1),
                      barrier: Callable[[], None] | None = None) -> list[torch.Tensor]:
        """Token states of each prompt, encoding only uncached ones."""
        entries = [self.prompt_dir / f"{text_digest(p)}.safetensors" for p in prompts]
        mine = [(p, e) for p, e in zip(prompts, entries) if not e.exists()][shard[0]::shard[1]]
        if mine:
            for (_, entry), states in zip(mine, encode_prompt_states(self.model, [p for p, _ in mine])):
                atomic_save({"states": states}, entry)
        if barrier is not None:
            barrier()
        return [load_file(str(e))["states"] for e in entries]
