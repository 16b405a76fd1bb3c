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
import tempfile
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..io import load_image
from ..model import MSTCLIPIQA, pad_states
from ..preprocess import fit_to_size

CACHE_VERSION = 2  # 2: fitted images are no longer clipped to [0, 1]
CACHE_ENV = "MST_CLIPIQA_CACHE"
PRECISIONS = {"no": None, "fp16": torch.float16, "bf16": torch.bfloat16}


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
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
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
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ImageFiles(Dataset):
    """Image files (or other ``load_image`` inputs) as (3, S, S) tensors, resized and centre-cropped."""

    def __init__(self, items: Sequence, size: int):
        self.items = list(items)
        self.size = size

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        return fit_to_size(load_image(self.items[index]), self.size)


def _autocast(device: torch.device, precision: str):
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def encode_files(model: MSTCLIPIQA, items: Sequence, batch_size: int = 32, num_workers: int = 0,
                 precision: str = "no", progress: bool = False,
                 on_batch: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Stream embeddings (N, Dc), (N, Df) as float32 on the CPU; ``on_batch(start, f_c, f_f)`` sees each batch."""
    loader = DataLoader(ImageFiles(items, model.fit_size), batch_size=batch_size, num_workers=num_workers)
    device, parts, start = model.device, [], 0
    for batch in tqdm(loader, desc="encoding images", unit="batch", disable=not progress, leave=False):
        with _autocast(device, precision):
            f_c, f_f = model.encode_images(batch.to(device))
        f_c, f_f = f_c.float().cpu(), f_f.float().cpu()
        if on_batch is not None:
            on_batch(start, f_c, f_f)
        parts.append((f_c, f_f))
        start += len(batch)
    if not parts:
        raise ValueError("no images to encode; expected at least one")
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


@torch.no_grad()
def encode_prompt_states(model: MSTCLIPIQA, prompts: Sequence[str], batch_size: int = 64) -> list[torch.Tensor]:
    """Token states of each prompt's valid tokens, (L_i, W) float32 on the CPU."""
    states = []
    for start in range(0, len(prompts), batch_size):
        padded, mask = model.encode_prompts(list(prompts[start:start + batch_size]))
        states += [s[m].float().cpu() for s, m in zip(padded, mask)]
    return states


@dataclass
class CachedFeatures:
    """Encoder outputs of N samples: stream embeddings, and prompt token states when a head needs them."""

    f_coarse: torch.Tensor
    f_fine: torch.Tensor
    prompt_states: list[torch.Tensor] | None = None
    prompt_index: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.f_coarse)

    def to(self, device: torch.device | str) -> CachedFeatures:
        states = None if self.prompt_states is None else [s.to(device) for s in self.prompt_states]
        index = None if self.prompt_index is None else self.prompt_index.to(device)
        return CachedFeatures(self.f_coarse.to(device), self.f_fine.to(device), states, index)

    def inputs(self, indices: torch.Tensor | Sequence[int]) -> dict:
        """Keyword arguments of ``MSTCLIPIQA.forward_features`` for the samples at ``indices``."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.f_coarse.device)
        text = None
        if self.prompt_states is not None:
            text = pad_states([self.prompt_states[j] for j in self.prompt_index[idx].tolist()])
        return {"f_coarse": self.f_coarse[idx], "f_fine": self.f_fine[idx], "text": text}


def unique_prompts(prompts: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Distinct prompts in first-seen order, and each item's position among them."""
    order = list(dict.fromkeys(prompts))
    position = {p: i for i, p in enumerate(order)}
    return order, torch.tensor([position[p] for p in prompts], dtype=torch.long)


def encode_features(model: MSTCLIPIQA, items: Sequence, prompts: Sequence[str] | None = None,
                    batch_size: int = 32, num_workers: int = 0, precision: str = "no",
                    progress: bool = False) -> CachedFeatures:
    """Encode in memory, no disk: the path for uncached evaluation and ``mst-clipiqa score``."""
    f_c, f_f = encode_files(model, items, batch_size, num_workers, precision, progress)
    if prompts is None or not model.config.needs_prompts:
        return CachedFeatures(f_c, f_f)
    order, index = unique_prompts(prompts)
    return CachedFeatures(f_c, f_f, encode_prompt_states(model, order), index)


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
