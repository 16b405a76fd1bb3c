"""Hugging Face transformers backend: a hub id, a local directory, or an in-code CLIPConfig."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer, CLIPVisionConfig, CLIPVisionModelWithProjection
from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from .base import CLIPBackbone, checkpoint_layers, patch_grid
from .config import BackboneConfig
from .preprocess import ImageSpec
from .tokenizer import openai_clip_tokenizer

OPENAI_VOCAB_SIZE = 49408


class HFCLIPBackbone(CLIPBackbone):
    """A frozen transformers ``CLIPModel`` (or ``CLIPVisionModelWithProjection`` without text)."""

    adapter_targets = r"model\.vision_model\.encoder\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|out_proj)"

    def __init__(self, config: BackboneConfig):
        super().__init__()
        self.model = _create(config)
        vision = self.model.config.vision_config if config.text else self.model.config
        self.image_spec = ImageSpec(vision.image_size, tuple(OPENAI_CLIP_MEAN), tuple(OPENAI_CLIP_STD))
        self.embed_dim = self.model.config.projection_dim
        if config.text:
            text = self.model.config.text_config
            self.context_length = text.max_position_embeddings
            self.text_width = text.hidden_size
            self.tokenizer = (openai_clip_tokenizer() if text.vocab_size == OPENAI_VOCAB_SIZE
                              else CLIPTokenizer.from_pretrained(config.pretrained or config.name))
        self.freeze()

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return self.model.visual_projection(pooled)

    def encode_image_tokens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vision = self.model.vision_model
        out = vision(pixel_values=pixels)
        tokens = vision.post_layernorm(out.last_hidden_state[:, 1:])
        return self.model.visual_projection(out.pooler_output), patch_grid(self.model.visual_projection(tokens))

    def text_parameters(self):
        return (p for name, p in self.model.named_parameters()
                if not name.startswith(("vision_model.", "visual_projection.")))

    def tokenize(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, int]:
        self._require_text()
        full = self.tokenizer(texts)["input_ids"]
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.context_length,
                               return_tensors="pt")
        return batch["input_ids"], batch["attention_mask"].bool(), sum(len(i) > self.context_length for i in full)

    def _text(self, ids: torch.Tensor, mask: torch.Tensor):
        self._require_text()
        return self.model.text_model(input_ids=ids, attention_mask=mask.long())

    def text_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._text(ids, mask).last_hidden_state

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model.text_projection(self._text(ids, mask).pooler_output)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        checkpoint_layers(self.model.vision_model.encoder.layers, enable)
        if self.has_text:
            checkpoint_layers(self.model.text_model.encoder.layers, enable)


def _create(config: BackboneConfig) -> torch.nn.Module:
    model_cls = CLIPModel if config.text else CLIPVisionModelWithProjection
    if config.pretrained:
        check_pretrained_source(config.pretrained)
        return model_cls.from_pretrained(config.pretrained)
    if config.arch is None:
        raise ValueError(f"transformers backbone {config.name!r} needs `pretrained` (hub id or directory) "
                         "or an `arch` (CLIPConfig dict) to build with random weights")
    if config.text:
        return CLIPModel(CLIPConfig(**config.arch))
    vision = CLIPVisionConfig(**config.arch["vision_config"], projection_dim=config.arch["projection_dim"])
    return CLIPVisionModelWithProjection(vision)


def check_pretrained_source(source: str) -> None:
    """A local folder that exists, or a name that can be a Hub id; a folder that was deleted or moved is a
    ``ValueError`` naming it (transformers would try it as a Hub id: "Repo id must be in the form ...")."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"pretrained encoder {source} is a file; expected a folder holding a transformers "
                             "CLIP model (config.json and weights) or a Hub id")
        return
    try:
        validate_repo_id(source)
    except HFValidationError:
        raise ValueError(f"pretrained encoder folder {source} does not exist ({path.resolve()}: deleted or "
                         "moved?); expected a folder holding a transformers CLIP model, or a Hub id "
                         "(owner/name)") from None
