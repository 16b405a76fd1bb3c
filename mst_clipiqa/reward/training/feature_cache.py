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
run or several processes never leave a half-written file. Each entry carries
a digest of its tensors; an entry that does not load, has the wrong names or
shapes, holds NaN or fails its digest (a disk error, a bad copy) is re-encoded,
with one warning naming the files.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from mst_clipiqa.runtime.preemption import Preempted, stop_requested

from ..model import MSTCLIPIQA
from ..utils import atomic_write, precision_dtype, read_tensors, save_tensors
from .features import CachedFeatures, encode_files, encode_prompt_states, unique_prompts

CACHE_VERSION = 2  # 2: fitted images are no longer clipped to [0, 1]
CACHE_ENV = "MST_CLIPIQA_CACHE"


def default_cache_dir() -> Path:
    """``$MST_CLIPIQA_CACHE``, else ``~/.cache/mst-clipiqa/features``."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "mst-clipiqa" / "features"))


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes; a file that is gone is a ``ValueError`` naming it."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except FileNotFoundError:
        raise ValueError(f"image file {path} no longer exists (deleted or moved after the data set was "
                         "loaded?)") from None
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


def encoder_settings(model: MSTCLIPIQA, precision: str = "no", preprocess: str = "tensor") -> dict:
    """Everything that determines the image embeddings and prompt token states."""
    precision_dtype(precision)  # rejects unknown names
    fit = {"size": model.fit_size, "resize": "short side, bicubic, antialias", "crop": "centre"}
    if preprocess == "pil":
        fit = {**fit, "resize": "short side, PIL bicubic on 8-bit pixels"}
    return {
        "version": CACHE_VERSION,
        "coarse": asdict(model.config.coarse), "fine": asdict(model.config.fine),
        "coarse_spec": asdict(model.coarse.image_spec), "fine_spec": asdict(model.fine.image_spec),
        "fit": fit,
        "precision": precision,
        "weights": {"coarse": state_digest(model.coarse.state_dict()), "fine": state_digest(model.fine.state_dict())},
    }


def settings_key(settings: object) -> str:
    """Short hash of JSON-able settings (key order ignored)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


class FeatureCache:
    """The on-disk feature store for one model's frozen encoders (see the module docstring).

    ``features(paths, prompts)`` returns :class:`CachedFeatures`, encoding only
    what is missing. Under DDP pass ``shard=(rank, world)`` and a ``barrier``:
    each process encodes its share of the missing entries, then all read.
    """

    def __init__(self, root: str | Path | None, model: MSTCLIPIQA, precision: str = "no", batch_size: int = 32,
                 num_workers: int = 0, progress: bool = True, settings: dict | None = None,
                 preprocess: str = "tensor"):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.model = model
        self.precision = precision
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.progress = progress
        self.preprocess = preprocess
        # callers that already hashed the weights pass settings
        settings = settings or encoder_settings(model, precision, preprocess)
        text_settings = {"version": CACHE_VERSION, "coarse": settings["coarse"],
                         "weights": settings["weights"]["coarse"]}
        self.image_dir = self._open(f"images-{settings_key(settings)}", settings)
        self.prompt_dir = self._open(f"prompts-{settings_key(text_settings)}", text_settings)
        self.key = self.image_dir.name

    def _open(self, name: str, settings: dict) -> Path:
        directory = self.root / name
        if not (directory / "settings.json").exists():
            with atomic_write(directory / "settings.json") as tmp:  # several processes may open it at once
                tmp.write_text(json.dumps(settings, indent=1, sort_keys=True))
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
        keys = [self.image_dir / f"{file_digest(p)}.safetensors" for p in paths]

        def encode(todo: list[tuple[Path, str | Path]]) -> None:
            def store(start: int, f_c: torch.Tensor, f_f: torch.Tensor) -> None:
                for (entry, _), c, f in zip(todo[start:start + len(f_c)], f_c, f_f):
                    save_entry({"coarse": c, "fine": f}, entry)
                _stop_if_asked(start + len(f_c), len(todo), self.image_dir)
            encode_files(self.model, [p for _, p in todo], self.batch_size, self.num_workers, self.precision,
                         self.progress, on_batch=store, preprocess=self.preprocess)

        shapes = {"coarse": (self.model.coarse.embed_dim,), "fine": (self.model.fine.embed_dim,)}
        loaded = self._fill(dict(zip(keys, paths)), shapes, encode, shard, barrier)
        rows = [loaded[k] for k in keys]
        return torch.stack([r["coarse"] for r in rows]), torch.stack([r["fine"] for r in rows])

    def prompt_states(self, prompts: Sequence[str], shard: tuple[int, int] = (0, 1),
                      barrier: Callable[[], None] | None = None) -> list[torch.Tensor]:
        """Token states of each prompt, encoding only uncached ones."""
        keys = [self.prompt_dir / f"{text_digest(p)}.safetensors" for p in prompts]

        def encode(todo: list[tuple[Path, str]]) -> None:
            for (entry, _), states in zip(todo, encode_prompt_states(self.model, [p for _, p in todo])):
                save_entry({"states": states}, entry)

        loaded = self._fill(dict(zip(keys, prompts)), {"states": (None, self.model.coarse.text_width)}, encode,
                            shard, barrier)
        return [loaded[k]["states"] for k in keys]

    def _fill(self, entries: dict[Path, Any], shapes: dict[str, tuple[int | None, ...]],
              encode: Callable[[list[tuple[Path, Any]]], None], shard: tuple[int, int],
              barrier: Callable[[], None] | None) -> dict[Path, dict[str, torch.Tensor]]:
        """Every entry's tensors: sound ones read, missing or damaged ones encoded (this process's share).

        Every process reads before any writes (the first barrier), so all agree
        on what is missing and share it out the same way.
        """
        loaded, damaged = {}, []
        for entry in entries:
            if entry.exists():
                try:
                    loaded[entry] = read_entry(entry, shapes)
                except ValueError as error:
                    damaged.append(str(error))
        if damaged and shard[0] == 0:
            more = f" (and {len(damaged) - 3} more)" if len(damaged) > 3 else ""
            warnings.warn(f"feature cache: re-encoding {len(damaged)} damaged entries: {'; '.join(damaged[:3])}{more}",
                          stacklevel=4)
        todo = [(e, item) for e, item in entries.items() if e not in loaded]
        if barrier is not None:
            barrier()
        if todo[shard[0]::shard[1]]:
            encode(todo[shard[0]::shard[1]])
        if barrier is not None:
            barrier()
        loaded.update({entry: read_entry(entry, shapes) for entry, _ in todo})
        return loaded


def _stop_if_asked(done: int, total: int, where: Path) -> None:
    """Between batches of a long encoding (a trainer's StopSignals active): stop, keeping the entries written."""
    signum = stop_requested()
    if signum and done < total:
        raise Preempted(signum, f"while encoding features: {done} of {total} images are cached in {where}; run the "
                                "same command again with --resume to continue from them")


def save_entry(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """A cache entry with the digest of its tensors, which :func:`read_entry` checks."""
    save_tensors(tensors, path, {"digest": state_digest(tensors)})


def read_entry(path: Path, shapes: dict[str, tuple[int | None, ...]]) -> dict[str, torch.Tensor]:
    """A cache entry's tensors, checked: they load, have the expected names and shapes (None: any size
    but 0), are finite float32 and match the stored digest. A damaged entry raises ``ValueError`` naming the file."""
    tensors, metadata = read_tensors(path, "a feature-cache entry")
    digest = metadata.get("digest")
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if set(found) != set(shapes) or any(not _fits(found[k], shape) for k, shape in shapes.items()):
        raise ValueError(f"{path} holds {found}; expected {shapes}")
    if any(t.dtype != torch.float32 for t in tensors.values()):
        raise ValueError(f"{path} holds {sorted({str(t.dtype) for t in tensors.values()})}; expected torch.float32")
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise ValueError(f"{path} holds NaN or infinite values")
    if digest is not None and digest != state_digest(tensors):  # entries from before digests were stored have none
        raise ValueError(f"{path} does not match its stored digest")
    return tensors


def _fits(shape: tuple[int, ...], expected: tuple[int | None, ...]) -> bool:
    return len(shape) == len(expected) and all(e == s if e is not None else s > 0 for s, e in zip(shape, expected))
