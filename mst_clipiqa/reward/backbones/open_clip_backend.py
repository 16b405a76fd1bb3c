"""open_clip backend: a model name plus pretrained tag, a checkpoint file, or an in-code config."""
from __future__ import annotations

import os
import types

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.tokenizer import SimpleTokenizer

from ..utils.quiet import log_dropped, loggers_quiet
from .base import CLIPBackbone, patch_grid
from .config import BackboneConfig
from .preprocess import ImageSpec

_TEXT_PARTS = ("transformer", "token_embedding", "ln_final", "text_projection", "positional_embedding")


class OpenCLIPBackbone(CLIPBackbone):
    """A frozen open_clip ``CLIP`` model (OpenAI-style text tower)."""

    adapter_targets = r"model\.visual\.transformer\.resblocks\.\d+\.attn"

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
        for block in self._blocks():
            block.attention = types.MethodType(_self_attention, block)
        self.freeze()

    def _blocks(self) -> list[torch.nn.Module]:
        towers = [self.model.visual.transformer] + ([self.model.transformer] if self.has_text else [])
        return [block for tower in towers for block in tower.resblocks]

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)

    def encode_image_tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        visual = self.model.visual
        if visual.attn_pool is not None or visual.pool_type != "tok":
            raise ValueError(f"quality maps need a class-token vision tower; this one pools by {visual.pool_type!r}")
        pooled, tokens = visual._pool(visual.transformer(visual._embeds(pixels)))
        if visual.final_ln_after_pool:
            tokens = visual.ln_post(tokens)
        return pooled @ visual.proj, patch_grid(tokens @ visual.proj)

    def text_parameters(self):
        return (p for name, p in self.model.named_parameters() if not name.startswith("visual."))

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


def _self_attention(block, q_x: torch.Tensor, k_x=None, v_x=None, attn_mask=None) -> torch.Tensor:
    """Batch-first self-attention as one in-projection matmul and SDPA.

    ``nn.MultiheadAttention`` transposes batch-first input to a strided view;
    with frozen weights, matmul then runs one small GEMM per token position
    (about a third of the reward's CPU time, and a weight copy per call under bf16).
    """
    attn = block.attn
    if k_x is not None or v_x is not None or type(attn) is not torch.nn.MultiheadAttention:
        return type(block).attention(block, q_x, k_x, v_x, attn_mask)  # cross-attention, or a LoRA wrapper
    b, n, d = q_x.shape
    qkv = F.linear(q_x, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(b, n, 3, attn.num_heads, d // attn.num_heads).permute(2, 0, 3, 1, 4)
    mask = attn_mask.to(q.dtype) if attn_mask is not None else None
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.out_proj(out.transpose(1, 2).reshape(b, n, d))


def _create(config: BackboneConfig) -> torch.nn.Module:
    if config.arch is None:
        try:
            # the error below says it, in our line: open_clip's "Failed to download" and, with the Hub unreachable,
            # huggingface_hub's two lines per retry (ten retries a weights file)
            with log_dropped("Failed to download", module=open_clip), loggers_quiet("huggingface_hub"):
                return open_clip.create_model(config.name, pretrained=config.pretrained)
        except (RuntimeError, FileNotFoundError) as error:  # open_clip < 3 raises the latter
            if "download" not in str(error).lower():
                raise
            why = "HF_HUB_OFFLINE=1 is set" if os.environ.get("HF_HUB_OFFLINE") == "1" else "the download failed"
            raise ValueError(f"open_clip {config.name} ({config.pretrained} weights): not in the local cache and "
                             f"{why}; download them once with network access, or use the offline model 'tiny'"
                             ) from None
    model = open_clip.model.CLIP(**config.arch)
    if config.pretrained:
        open_clip.load_checkpoint(model, config.pretrained, weights_only=True)
    return model
