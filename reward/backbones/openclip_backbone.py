"""open_clip backend: a model name plus pretrained tag, a checkpoint file, or an in-code config."""
from __future__ import annotations

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.tokenizer import SimpleTokenizer

from ..config import BackboneConfig
from ..preprocess import ImageSpec
from .base import CLIPBackbone

_TEXT_PARTS = ("transformer", "token_embedding", "ln_final", "text_projection", "positional_embedding")


class OpenCLIPBackbone(CLIPBackbone):
    """A frozen open_clip ``CLIP`` model (OpenAI-style text tower)."""

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.model = _create(config)
        preprocess = open_clip.get_model_preprocess_cfg(self.model)
        size = self.model.visual.image_size
        self.image_spec = ImageSpec(
            size=size[0] if isinstance(size, (tuple, list)) else int(size),
            mean=tuple(preprocess.get("mean", OPENAI_DATASET_MEAN)),
            std=tuple(preprocess.get("std", OPENAI_DATASET_STD)),
        )
        self.embed_dim = self.model.visual.output_dim
        if config.text:
            self.context_length = self.model.context_length
            self.text_width = self.model.transformer.width
            self.tokenizer = SimpleTokenizer(context_length=self.context_length)
        else:
            for name in _TEXT_PARTS:
                setattr(self.model, name, None)
        self.freeze()

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, int]:
        self._require_text()
        ids = self.tokenizer(texts)
        lengths = [len(self.tokenizer.encode(t)) + 2 for t in texts]
        positions = torch.arange(ids.shape[1])
        mask = positions[None, :] < torch.tensor(lengths).clamp(max=self.context_length)[:, None]
        return ids, mask, sum(n > self.context_length for n in lengths)

    def text_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self._require_text()
        m = self.model
        x = m.token_embedding(ids) + m.positional_embedding[: ids.shape[1]]
        x = m.transformer(x, attn_mask=m.attn_mask)
        return m.ln_final(x)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self._require_text()
        return self.model.encode_text(ids)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.visual.set_grad_checkpointing(enable)
        if self.has_text:
            self.model.transformer.grad_checkpointing = enable


def _create(config: BackboneConfig) -> torch.nn.Module:
    if config.arch is None:
        return open_clip.create_model(config.name, pretrained=config.pretrained)
    model = open_clip.model.CLIP(**config.arch)
    if config.pretrained:
        open_clip.load_checkpoint(model, config.pretrained, weights_only=True)
    return model
