"""LoRA adapters: only adapter weights train; adapters save, load and switch; encoder adapters skip the cache."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig
from mst_clipiqa.reward.datasets.synthetic import make_synthetic_dataset
from mst_clipiqa.reward.training import (
    TrainConfig,
    Trainer,
    active_adapter,
    adapter_names,
    add_adapter,
    load_adapter,
    save_adapter,
    set_adapter,
)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), n_scenes=3, levels=(0.5, 1.0))


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(1)
    return torch.rand(4, 3, 64, 64), ["a red circle"] * 2 + ["a blue square above a green triangle"] * 2


def tiny(variant: str = "B", seed: int = 0) -> MSTCLIPIQA:
    torch.manual_seed(seed)
    return MSTCLIPIQA(MSTCLIPIQAConfig.tiny(variant, backend="transformers"))


def _randomise(model: MSTCLIPIQA, name: str) -> None:
    """LoRA starts as a no-op (B = 0); give the adapter weights a visible effect."""
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if f".{name}." in param_name:
                param.normal_(0, 0.5)


def _scores(model: MSTCLIPIQA, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(*batch)["quality"]


def test_only_adapter_weights_train(dataset, tmp_path):
    model = tiny("B")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=2, n_splits=1, lr=1e-2, lora_rank=4, adapter_name="new-domain",
                         cache_dir=str(tmp_path / "cache"), progress=False, cpu=True)
    trainer = Trainer(model, dataset, config, tmp_path / "run")
    trainer.prepare()
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    names = {n for n, p in model.named_parameters() if id(p) in optimised}
    assert names and all(".lora_" in n and ".new-domain." in n for n in names)
    assert all(n.startswith(("fusion.", "heads.")) for n in names)  # encoders stay frozen and cached
    trainer.run()
    after = model.state_dict()
    unchanged = {k for k in after if "lora_" not in k and torch.equal(after[k], before[k.replace("base_layer.", "")])}
    changed = set(after) - unchanged
    assert changed and all("lora_" in k for k in changed)
    saved = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    assert saved and all("lora_" in k for k in saved)


def test_adapters_save_load_and_switch(batch, tmp_path):
    model = tiny("B")
    base = _scores(model, batch)
    for name in ("midjourney", "sdxl"):
        add_adapter(model, name, rank=4)
        _randomise(model, name)
    assert adapter_names(model) == ["midjourney", "sdxl"] and active_adapter(model) == "sdxl"
    sdxl = _scores(model, batch)
    set_adapter(model, "midjourney")
    midjourney = _scores(model, batch)
    assert not torch.allclose(midjourney, sdxl) and not torch.allclose(midjourney, base)
    set_adapter(model, None)
    assert torch.equal(_scores(model, batch), base) and active_adapter(model) is None
    save_adapter(model, tmp_path / "mj", "midjourney")

    fresh = tiny("B")
    assert load_adapter(fresh, tmp_path / "mj") == "midjourney"
    assert torch.allclose(_scores(fresh, batch), midjourney, atol=1e-6)
    load_adapter(fresh, tmp_path / "mj", name="copy", activate=False)
    assert active_adapter(fresh) == "midjourney"
    config = json.loads((tmp_path / "mj" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 16.0


def test_adapter_errors_name_the_problem(tmp_path):
    model = tiny("B")
    add_adapter(model, "a", rank=2)
    with pytest.raises(ValueError, match="already has an adapter named 'a'"):
        add_adapter(model, "a")
    with pytest.raises(ValueError, match="unknown adapter 'b'"):
        set_adapter(model, "b")
    with pytest.raises(ValueError, match="rank must be >= 1"):
        add_adapter(model, "c", rank=0)
    save_adapter(model, tmp_path / "a")
    with pytest.raises(ValueError, match="trained for heads"):
        load_adapter(tiny("A"), tmp_path / "a")
    with pytest.raises(ValueError, match="expected a folder written by save_adapter"):
        load_adapter(tiny("B"), tmp_path / "nowhere")
    weights = next((tmp_path / "a").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    fresh = tiny("B")
    with pytest.raises(ValueError, match=f"{weights} is not a readable safetensors file"):
        load_adapter(fresh, tmp_path / "a")
    assert adapter_names(fresh) == []  # the damaged file left the model as it was


def test_encoder_adapters_train_without_the_cache(dataset, batch, tmp_path):
    model = tiny("A")
    config = TrainConfig(epochs=1, n_splits=1, lr=1e-2, lora_rank=2, lora_encoders=True,
                         cache_dir=str(tmp_path / "cache"), progress=False, cpu=True)
    trainer = Trainer(model, dataset, config, tmp_path / "run")
    trainer.prepare()
    assert trainer.features is None and not (tmp_path / "cache").exists()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith("coarse.model.vision_model.") for n in trainable)
    assert any(n.startswith("fine.model.vision_model.") for n in trainable)
    assert not any("text_model" in n for n in trainable)  # template text features are computed once
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n and n.startswith("fine.")}
    trainer.run()
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)
    fresh = tiny("A")
    load_adapter(fresh, tmp_path / "run" / "adapter")
    assert torch.allclose(_scores(fresh, batch[:1]), _scores(model, batch[:1]), atol=1e-6)
    set_adapter(fresh, None)
    assert not torch.allclose(_scores(fresh, batch[:1]), _scores(model, batch[:1]), atol=1e-6)


@pytest.mark.parametrize("backend", ["open_clip", "transformers"])
def test_encoder_adapters_change_the_embeddings_and_get_gradients(backend):
    torch.manual_seed(0)
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny(backend=backend))
    images = torch.rand(2, 3, 64, 64)
    base = model.encode_images(images)[0].detach()
    add_adapter(model, "encoders", rank=2, encoders=True)
    for name, p in model.named_parameters():
        if "lora_B" in name and name.startswith("coarse."):
            torch.nn.init.normal_(p, std=1.0)
    adapted = model.encode_images(images)[0]
    assert (adapted - base).abs().max() > 1e-3
    adapted.sum().backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("coarse.") and "lora_A" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("backend", ["open_clip", "transformers"])
@pytest.mark.parametrize("encoders", [False, True])
def test_merged_adapter_saves_in_the_base_format_and_scores_the_same(tmp_path, encoders, backend):
    from mst_clipiqa.reward.training import merge_adapters

    torch.manual_seed(0)
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny("B", backend=backend))
    add_adapter(model, "domain", rank=2, encoders=encoders)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    images, prompts = torch.rand(2, 3, 64, 64), ["a cat", "a dog"]
    with torch.no_grad():
        adapted = model(images, prompts)["quality"]
    with pytest.raises(ValueError, match="carries LoRA adapters"):
        model.save_pretrained(tmp_path / "unmerged")
    merge_adapters(model)
    assert adapter_names(model) == [] and not any("lora_" in k for k in model.state_dict())
    model.save_pretrained(tmp_path / "merged")
    with torch.no_grad():
        reloaded = MSTCLIPIQA.from_pretrained(tmp_path / "merged")(images, prompts)["quality"]
    assert torch.allclose(adapted, reloaded, atol=1e-5)


def test_training_a_model_that_carries_adapters_needs_a_new_adapter(dataset, tmp_path):
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny())
    add_adapter(model, "old", rank=2)
    config = TrainConfig(epochs=1, n_splits=1, cache_dir=str(tmp_path / "cache"), progress=False, cpu=True)
    with pytest.raises(ValueError, match=r"carries adapters \['old'\]"):
        Trainer(model, dataset, config, tmp_path / "run").prepare()
