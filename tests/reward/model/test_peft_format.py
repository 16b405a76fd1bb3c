"""Adapters in peft's format: peft reads the library's, the library reads peft's, a failed load changes nothing."""
from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

from mst_clipiqa.reward import (
    MSTCLIPIQA,
    MSTCLIPIQAConfig,
    MSTCLIPIQAReward,
    active_adapter,
    adapter_names,
    add_adapter,
    load_adapter,
    merge_adapters,
    save_adapter,
    set_adapter,
)
from mst_clipiqa.reward.model.adapters import target_modules

IMAGES, PROMPTS = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)), ["a cat", "a dog"]


def base(backend: str = "transformers") -> MSTCLIPIQA:
    torch.manual_seed(0)
    return MSTCLIPIQA(MSTCLIPIQAConfig.tiny("B", backend=backend))


def scores(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(IMAGES, PROMPTS)["quality"]


def adapted(name: str = "domain", backend: str = "transformers", encoders: bool = True, seed: int = 1) -> MSTCLIPIQA:
    model = base(backend)
    add_adapter(model, name, rank=2, encoders=encoders)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if "lora_B" in param_name:  # LoRA starts as a no-op (B = 0)
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    return model


def snapshot(model: MSTCLIPIQA) -> dict:
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "modules": [(n, type(m).__name__) for n, m in model.named_modules()],
            "grad": {n: p.requires_grad for n, p in model.named_parameters()},
            "adapters": adapter_names(model), "active": active_adapter(model)}


def assert_same(before: dict, after: dict) -> None:
    assert after["modules"] == before["modules"] and after["grad"] == before["grad"]
    assert after["adapters"] == before["adapters"] and after["active"] == before["active"]
    assert after["state"].keys() == before["state"].keys()
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())


@pytest.mark.parametrize("backend", ["open_clip", "transformers"])
def test_peft_loads_a_saved_adapter_with_identical_scores(tmp_path, backend):
    model = adapted(backend=backend)
    expected = scores(model)
    save_adapter(model, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 2 and config["lora_alpha"] == 16.0
    assert config["target_modules"] == target_modules(model, encoders=True)
    keys = load_file(str(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert keys and all(k.startswith("base_model.model.") and "lora_" in k for k in keys)
    peft_model = PeftModel.from_pretrained(base(backend), tmp_path / "adapter")
    assert not torch.equal(scores(base(backend)), expected)  # the adapter matters
    assert torch.equal(scores(peft_model), expected)


def test_the_library_reads_an_adapter_saved_by_peft(tmp_path):
    config = LoraConfig(r=2, lora_alpha=8, target_modules=["W_h", "W_g"])
    peft_model = get_peft_model(base(), config)
    with torch.no_grad():
        for param_name, param in peft_model.named_parameters():
            if "lora_B" in param_name:
                param.normal_(0, 0.5)
    expected = scores(peft_model)
    peft_model.save_pretrained(tmp_path / "by-peft")
    model = base()
    assert load_adapter(model, tmp_path / "by-peft") == "default"
    assert torch.equal(scores(model), expected)
    save_adapter(model, tmp_path / "again")  # and it round-trips through the library's writer
    assert torch.equal(scores(PeftModel.from_pretrained(base(), tmp_path / "again")), expected)


def test_the_old_format_still_loads_with_a_deprecation_warning(tmp_path):
    model = adapted("old", encoders=False)
    expected = scores(model)
    folder = tmp_path / "legacy"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(
        {"format": "mst-clipiqa-lora", "version": 1, "name": "old", "rank": 2, "alpha": 16.0, "dropout": 0.0,
         "encoders": False, "heads": {"quality": "prompt"}}))
    from peft import get_peft_model_state_dict

    save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(model, adapter_name="old").items()},
              str(folder / "adapter_model.safetensors"))
    fresh = base()
    with pytest.warns(DeprecationWarning, match="old 'mst-clipiqa-lora' format"):
        assert load_adapter(fresh, folder) == "old"
    assert torch.equal(scores(fresh), expected)


def test_adapter_functions_take_the_reward_and_keep_it_frozen(tmp_path):
    save_adapter(adapted("mj"), tmp_path / "mj")
    reward = MSTCLIPIQAReward(base())
    plain = reward(IMAGES, PROMPTS).detach()
    assert load_adapter(reward, tmp_path / "mj") == "mj"
    assert adapter_names(reward) == ["mj"] and active_adapter(reward) == "mj"
    add_adapter(reward, "second", rank=2)
    set_adapter(reward, "mj")
    assert torch.equal(reward(IMAGES, PROMPTS).detach(), scores(adapted("mj")))
    assert not any(p.requires_grad for p in reward.parameters())  # gradients go to pixels only
    images = IMAGES.clone().requires_grad_(True)
    reward(images, PROMPTS).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    set_adapter(reward, None)
    assert torch.equal(reward(IMAGES, PROMPTS).detach(), plain)
    assert merge_adapters(reward, "mj") is reward and adapter_names(reward) == []
    assert not any(p.requires_grad for p in reward.parameters())


def _wrong_rank(folder):
    config = json.loads((folder / "adapter_config.json").read_text())
    config["r"] = 3
    (folder / "adapter_config.json").write_text(json.dumps(config))


def _missing_tensor(folder):
    path = folder / "adapter_model.safetensors"
    weights = load_file(str(path))
    weights.pop(sorted(weights)[0])
    save_file(weights, str(path))


def _foreign_tensor(folder):
    path = folder / "adapter_model.safetensors"
    weights = load_file(str(path))
    weights["base_model.model.fusion.nowhere.lora_A.weight"] = torch.zeros(2, 2)
    save_file(weights, str(path))


@pytest.mark.parametrize("damage, match", [(_wrong_rank, "do not fit this model"),
                                           (_missing_tensor, "missing 1 tensor"),
                                           (_foreign_tensor, "unexpected")])
@pytest.mark.parametrize("existing", [False, True])
def test_a_failed_load_leaves_the_model_exactly_as_it_was(tmp_path, damage, match, existing):
    save_adapter(adapted("new", encoders=True), tmp_path / "new")
    damage(tmp_path / "new")
    make = (lambda: adapted("old", encoders=False)) if existing else base
    model, reference = make(), make()
    before = snapshot(model)  # before any forward pass: peft's LoRA MultiheadAttention rounds its weights in one
    with pytest.raises(ValueError, match=match):
        load_adapter(model, tmp_path / "new")
    assert_same(before, snapshot(model))
    assert torch.equal(scores(model), scores(reference))
    assert hasattr(model, "peft_config") == existing


def test_other_peft_methods_and_pickled_weights_are_refused(tmp_path):
    save_adapter(adapted(), tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "IA3"}))
    with pytest.raises(ValueError, match="is a IA3 adapter; only LoRA"):
        load_adapter(base(), tmp_path / "a")
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(config))
    (tmp_path / "a" / "adapter_model.safetensors").rename(tmp_path / "a" / "adapter_model.bin")
    with pytest.raises(ValueError, match="adapter_model.bin .a pickle., which is never loaded"):
        load_adapter(base(), tmp_path / "a")
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({"r": 2}))
    with pytest.raises(ValueError, match="has no peft_type"):
        load_adapter(base(), tmp_path / "a")
