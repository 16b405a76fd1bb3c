import pytest
import torch

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward
from tests.conftest import BACKENDS


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["A", "B"])
def test_gradients_reach_pixels_and_never_frozen_weights(tiny_models, variant, backend):
    model = tiny_models(variant, backend)
    model.zero_grad(set_to_none=True)
    reward = MSTCLIPIQAReward(model)
    images = torch.rand(2, 3, 72, 96, requires_grad=True)
    prompts = ["a red circle", "a photo of a cat sitting on a very long wooden bench"] if variant == "B" else None
    reward(images, prompts).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert images.grad.abs().sum() > 0
    for name, p in model.named_parameters():  # backbones are frozen; the reward freezes fusion and heads too
        assert not p.requires_grad and p.grad is None, name


def test_backbones_stay_frozen_in_train_mode(tiny_models):
    model = tiny_models("A")
    model.train()
    try:
        assert not model.coarse.training and not model.fine.training
        assert not any(m.training for m in model.coarse.modules())
        assert model.fusion.training
    finally:
        model.eval()


@pytest.mark.parametrize("backend", BACKENDS)
def test_prompt_head_is_batch_invariant(tiny_models, backend):
    model = tiny_models("B", backend)
    torch.nn.init.normal_(model.heads["quality"].alpha, std=1.0)  # alpha=0 would hide the attention path
    images = torch.rand(3, 3, 64, 64)
    short, long = "cat", "a very detailed painting of a lighthouse on a cliff at sunset, with waves and gulls"
    with torch.no_grad():
        alone = model(images[:1], [short])["quality"]
        mixed = model(images, [short, long, "x " * 40])["quality"]
        model._prompt_cache.clear()
        fresh = model(images[[1, 0]], [long, short])["quality"]
    torch.nn.init.zeros_(model.heads["quality"].alpha)
    assert torch.allclose(alone, mixed[:1], atol=1e-5)
    assert torch.allclose(mixed[:2].flip(0), fresh, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_long_prompt_is_truncated_with_one_warning(tiny_models, backend):
    model = tiny_models("B", backend)
    prompt = " ".join(["word"] * 300)
    with pytest.warns(UserWarning, match="truncated") as record:
        scores = model(torch.rand(2, 3, 64, 64), [prompt, prompt + " more"])["quality"]
    assert len([w for w in record if "truncated" in str(w.message)]) == 1
    assert torch.isfinite(scores).all()


def test_each_prompt_is_encoded_once(tiny_models, monkeypatch):
    model = tiny_models("B")
    model._prompt_cache.clear()
    calls = []
    original = model.coarse.text_states
    monkeypatch.setattr(model.coarse, "text_states", lambda ids, mask: calls.append(len(ids)) or original(ids, mask))
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 3, 64, 64), ["one prompt"] * 4)
    assert calls == [1]


def test_named_outputs_each_get_a_head(tiny_models):
    model = tiny_models("A", heads={"quality": "template", "correspondence": "prompt", "authenticity": "template"})
    scores = model(torch.rand(2, 3, 64, 64), ["a", "b"])
    assert set(scores) == {"quality", "correspondence", "authenticity"}
    assert all(s.shape == (2,) for s in scores.values())
    assert model.heads["quality"] is not model.heads["authenticity"]


def test_zero_shot_init_is_identity_and_gate_leans_coarse():
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny())
    gate = torch.sigmoid(model.fusion.W_g(torch.relu(model.fusion.W_h(torch.randn(4, 128)))))
    assert torch.allclose(gate, torch.sigmoid(torch.tensor(2.0)))  # input-independent: a deterministic scorer
    eye = torch.eye(model.coarse.embed_dim)
    assert torch.equal(model.fusion.W_c.weight, eye) and torch.equal(model.fusion.W_f.weight, eye)
    f = torch.randn(3, model.coarse.embed_dim)
    with torch.no_grad():
        z = model.fusion(f, f)  # identical streams: any gate gives back the input
    assert torch.allclose(z, f, atol=1e-6)
    random = MSTCLIPIQA(MSTCLIPIQAConfig.tiny(init="random"))
    assert not torch.equal(random.fusion.W_c.weight, eye)


def test_template_score_is_in_level_range(tiny_models):
    scores = tiny_models("A")(torch.rand(4, 3, 50, 90))["quality"]
    assert ((scores >= 1) & (scores <= 5)).all()


def test_paper_config_shapes_match_the_doc():
    config = MSTCLIPIQAConfig.paper("A", pretrained=False)
    assert (config.coarse.name, config.fine.name) == ("ViT-B-32", "ViT-B-16")
    assert config.fusion_hidden == 128 and config.heads == {"quality": "template"}
    from mst_clipiqa.reward.model.fusion import GatedFusion
    from mst_clipiqa.reward.model.heads import PromptHead

    assert sum(p.numel() for p in GatedFusion(512, 512, 512, 128).parameters()) == 722_560
    head = sum(p.numel() for p in PromptHead(512, 512, 8).parameters())
    assert 1.5e6 < head < 1.65e6  # "about 1.58M parameters on top of the fusion"


def test_half_precision_models_and_images(tiny_models):
    images = torch.rand(2, 3, 64, 64)
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny()).to(torch.bfloat16)
    scores = model(images)["quality"]
    assert scores.dtype == torch.bfloat16 and torch.isfinite(scores).all()
    full = tiny_models("A")
    assert torch.allclose(full(images.bfloat16())["quality"], full(images)["quality"], atol=0.1)


def test_one_prompt_string_applies_to_the_whole_batch(tiny_models):
    model = tiny_models("B")
    images = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(images, "a cat")["quality"], model(images, ["a cat"] * 3)["quality"])


def test_forward_features_is_kept_as_a_deprecated_name_of_score_features(tiny_models):
    model = tiny_models("B")
    f_coarse, f_fine = torch.randn(2, model.coarse.embed_dim), torch.randn(2, model.fine.embed_dim)
    with pytest.warns(DeprecationWarning, match="score_features"):
        old = model.forward_features(f_coarse, f_fine, ["a cat", "a dog"])
    new = model.score_features(f_coarse, f_fine, ["a cat", "a dog"])
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in new)
