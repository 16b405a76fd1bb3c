import logging

import pytest
import torch

from mst_clipiqa.reward import BackboneConfig, MSTCLIPIQAConfig
from mst_clipiqa.reward.backbones import build_backbone


def test_paper_config_asks_open_clip_for_openai_weights(monkeypatch):
    import open_clip

    asked = []
    tiny = MSTCLIPIQAConfig.tiny()

    def fake_create(name, pretrained=None):
        asked.append((name, pretrained))
        arch = tiny.coarse.arch if name == "ViT-B-32" else tiny.fine.arch
        return open_clip.model.CLIP(**arch)

    monkeypatch.setattr(open_clip, "create_model", fake_create)
    config = MSTCLIPIQAConfig.paper("B")
    build_backbone(config.coarse), build_backbone(config.fine)
    assert asked == [("ViT-B-32", "openai"), ("ViT-B-16", "openai")]


def test_paper_config_asks_transformers_for_hub_ids(monkeypatch):
    from transformers import CLIPModel, CLIPVisionModelWithProjection

    asked = []
    tiny = MSTCLIPIQAConfig.tiny(backend="transformers")
    real_models = {CLIPModel: tiny.coarse, CLIPVisionModelWithProjection: tiny.fine}

    def fake(cls):
        def from_pretrained(name):
            asked.append((cls.__name__, name))
            return build_backbone(real_models[cls]).model
        return from_pretrained

    for cls in real_models:
        monkeypatch.setattr(cls, "from_pretrained", fake(cls))
    config = MSTCLIPIQAConfig.paper("A", backend="transformers")
    build_backbone(config.coarse), build_backbone(config.fine)
    assert asked == [("CLIPModel", "openai/clip-vit-base-patch32"),
                     ("CLIPVisionModelWithProjection", "openai/clip-vit-base-patch16")]


def test_open_clip_local_checkpoint_is_loaded_weights_only(tmp_path):
    config = MSTCLIPIQAConfig.tiny().coarse
    source = build_backbone(config)
    path = tmp_path / "clip.pt"
    torch.save(source.model.state_dict(), path)
    loaded = build_backbone(BackboneConfig("open_clip", "mine", str(path), config.arch))
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))


def test_vision_only_backbone_has_no_text_tower():
    fine = build_backbone(MSTCLIPIQAConfig.tiny().fine)
    assert not fine.has_text and fine.model.transformer is None
    with pytest.raises(ValueError, match="without its text tower"):
        fine.tokenize(["a"])


def test_unknown_backend_and_missing_arch_are_explained():
    with pytest.raises(ValueError, match="unknown backend 'jax'"):
        build_backbone(BackboneConfig("jax", "x"))
    with pytest.raises(ValueError, match="needs `pretrained`"):
        build_backbone(BackboneConfig("transformers", "my/clip"))


@pytest.mark.parametrize("backend", ["open_clip", "transformers"])
def test_backbone_reports_what_it_expects(backend):
    coarse = build_backbone(MSTCLIPIQAConfig.tiny(backend=backend).coarse)
    assert coarse.image_spec.size == 64 and coarse.embed_dim == 64 and coarse.text_width == 64
    assert coarse.image_spec.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    ids, mask, truncated = coarse.tokenize(["a cat", "a much longer prompt here"])
    assert truncated == 0 and mask.sum(1).tolist() == [4, 7]
    states = coarse.text_states(ids, mask)
    assert states.shape[:2] == ids.shape and states.shape[2] == 64


def test_open_clip_fast_attention_matches_open_clip():
    backbone = build_backbone(MSTCLIPIQAConfig.tiny().coarse)
    pixels = torch.randn(2, 3, 64, 64, requires_grad=True)
    ids, mask, _ = backbone.tokenize(["a cat on a mat", "x"])
    fast_image, fast_text = backbone.encode_image(pixels), backbone.text_states(ids, mask)
    (fast_grad,) = torch.autograd.grad(fast_image.sum(), pixels)
    for block in backbone._blocks():
        del block.attention  # back to open_clip's own nn.MultiheadAttention path
    slow_image, slow_text = backbone.encode_image(pixels), backbone.text_states(ids, mask)
    (slow_grad,) = torch.autograd.grad(slow_image.sum(), pixels)
    assert torch.allclose(fast_image, slow_image, atol=1e-5)
    assert torch.allclose(fast_text, slow_text, atol=1e-5)
    assert torch.allclose(fast_grad, slow_grad, atol=1e-5)


def test_an_unreachable_hub_leaves_our_line_only(monkeypatch):
    """huggingface_hub logs two lines per retry of a failed download (ten a file); the error says it in one."""
    import open_clip

    def unreachable(name, pretrained=None):
        for attempt in range(2):
            logging.getLogger("huggingface_hub.utils._http").warning("Retrying in %ss [Retry %s/5].", 2**attempt,
                                                                      attempt + 1)
        raise RuntimeError(f"Failed to download file (open_clip_model.safetensors) for {name}")

    monkeypatch.setattr(open_clip, "create_model", unreachable)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    hub = logging.getLogger("huggingface_hub")
    level, records, handler = hub.level, [], logging.Handler()
    handler.emit = records.append
    hub.addHandler(handler)
    try:
        with pytest.raises(ValueError, match=r"ViT-B-32 \(openai weights\): not in the local cache and the download"):
            build_backbone(MSTCLIPIQAConfig.paper("A").coarse)
    finally:
        hub.removeHandler(handler)
    assert not records and hub.level == level  # nothing logged, and the level put back
