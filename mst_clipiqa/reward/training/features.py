"""Frozen-encoder outputs in memory: stream embeddings and prompt token states, what the heads train on."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from ..backbones import fit_to_size
from ..backbones.pil_preprocess import PREPROCESS_CHOICES, pil_fit
from ..model import MSTCLIPIQA, pad_states
from ..scoring import load_image
from ..utils import autocast, precision_dtype, progress_bar


class ImageFiles(Dataset):
    """Image files (or other ``load_image`` inputs) as (3, S, S) tensors, resized and centre-cropped
    (``preprocess="pil"``: files and PIL images as the reference's 8-bit PIL path does it)."""

    def __init__(self, items: Sequence, size: int, preprocess: str = "tensor"):
        if preprocess not in PREPROCESS_CHOICES:
            raise ValueError(f"preprocess must be one of {PREPROCESS_CHOICES}, got {preprocess!r}")
        self.items = list(items)
        self.size = size
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.preprocess == "pil":
            return pil_fit(self.items[index], self.size)
        return fit_to_size(load_image(self.items[index]), self.size)


@torch.no_grad()
def encode_files(model: MSTCLIPIQA, items: Sequence, batch_size: int = 32, num_workers: int = 0,
                 precision: str = "no", progress: bool = False,
                 on_batch: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
                 preprocess: str = "tensor") -> tuple[torch.Tensor, torch.Tensor]:
    """Stream embeddings (N, Dc), (N, Df) as float32 on the CPU; ``on_batch(start, f_c, f_f)`` sees each batch."""
    loader = DataLoader(ImageFiles(items, model.fit_size, preprocess), batch_size=batch_size, num_workers=num_workers)
    device, parts, start = model.device, [], 0
    for batch in progress_bar(loader, desc="encoding images", unit="batch", disable=not progress):
        with autocast(device, precision_dtype(precision)):
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
        """Keyword arguments of ``MSTCLIPIQA.score_features`` for the samples at ``indices``."""
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
                    progress: bool = False, preprocess: str = "tensor") -> CachedFeatures:
    """Encode in memory, no disk: the path for uncached evaluation and ``mst-clipiqa score``."""
    f_c, f_f = encode_files(model, items, batch_size, num_workers, precision, progress, preprocess=preprocess)
    if prompts is None or not model.config.needs_prompts:
        return CachedFeatures(f_c, f_f)
    order, index = unique_prompts(prompts)
    return CachedFeatures(f_c, f_f, encode_prompt_states(model, order), index)
