"""A scorer adapter that does not fit (wrong rank or shape, NaN) is refused and leaves the model exactly as
it was: no LoRA layer stays injected, the active adapter and the trainable flags are the same."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig
from mst_clipiqa.reward.training import active_adapter, adapter_names, add_adapter, load_adapter, save_adapter


def tiny(encoders_backend: str = "open_clip") -> MSTCLIPIQA:
    torch.manual_seed(0)
    return MSTCLIPIQA(MSTCLIPIQAConfig.tiny("A", backend=encoders_backend))


def snapshot(model: MSTCLIPIQA) -> dict:
    return {"modules": [(n, type(m).__name__) for n, m in model.named_modules()],
            "state": {k: v.clone() for k, v in model.state_dict().items()},
            "flags": {n: p.requires_grad for n, p in model.named_parameters()},
            "adapters": adapter_names(model), "active": active_adapter(model)}


def assert_same(before: dict, after: dict) -> None:
    assert {k: v for k, v in after.items() if k != "state"} == {k: v for k, v in before.items() if k != "state"}
    assert after["state"].keys() == before["state"].keys()
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = tiny()
    add_adapter(model, "other", rank=4, encoders=True)
    return save_adapter(model, tmp_path_factory.mktemp("adapter") / "other")


def _wrong_rank(directory):
    config = json.loads((directory / "adapter_config.json").read_text())
    (directory / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))


def _wrong_shape(directory):
    state = load_file(str(directory / "adapter_model.safetensors"))
    key = sorted(state)[0]
    save_file({**state, key: torch.zeros(state[key].shape[0] + 1, state[key].shape[1])},
              str(directory / "adapter_model.safetensors"))


def _nan(directory):
    state = load_file(str(directory / "adapter_model.safetensors"))
    key = sorted(state)[1]
    save_file({**state, key: torch.full_like(state[key], float("inf"))}, str(directory / "adapter_model.safetensors"))


@pytest.mark.parametrize(("damage", "message"), [(_wrong_rank, "do not fit this model"),
                                                 (_wrong_shape, "do not fit this model"),
                                                 (_nan, "NaN or inf")])
@pytest.mark.parametrize("with_adapter", [False, True], ids=["plain", "with-an-adapter"])
def test_a_bad_adapter_leaves_the_model_as_it_was(saved, tmp_path, damage, message, with_adapter):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in saved.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    damage(bad)
    model = tiny()
    if with_adapter:
        add_adapter(model, "first", rank=2, encoders=True)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        scores = model(images)["quality"]
    before = snapshot(model)
    with pytest.raises(ValueError, match=message) as error:
        load_adapter(model, bad)
    assert str(bad) in str(error.value)
    assert_same(before, snapshot(model))
    with torch.no_grad():
        assert torch.equal(model(images)["quality"], scores)
    assert load_adapter(model, saved) == "other"  # a good adapter still loads afterwards
