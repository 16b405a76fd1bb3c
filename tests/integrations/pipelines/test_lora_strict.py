"""LoRA files loaded strictly: a partial, misnamed, misshapen or NaN LoRA (diffusers format on tiny SD, peft
format on tiny PixArt) is refused naming the file and keys, and the denoiser is left exactly as it was."""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mst_clipiqa.integrations import add_lora, load_lora, save_lora
from mst_clipiqa.integrations.pipelines.tiny import tiny_pixart_pipeline, tiny_sd_pipeline

FORMATS = {"sd": (tiny_sd_pipeline, "unet", "pytorch_lora_weights.safetensors"),
           "pixart": (tiny_pixart_pipeline, "transformer", "adapter_model.safetensors")}


@pytest.fixture(scope="module", params=list(FORMATS))
def saved(request, tmp_path_factory):
    make, attr, file = FORMATS[request.param]
    pipe = make()
    add_lora(getattr(pipe, attr), rank=2, seed=0)
    with torch.no_grad():
        for name, p in getattr(pipe, attr).named_parameters():
            if "lora_B" in name:
                p.normal_()  # a trained LoRA: B no longer zero, so a tensor left out would change images
    directory = save_lora(pipe, getattr(pipe, attr), tmp_path_factory.mktemp(request.param) / "lora", attr)
    return request.param, directory, file


def snapshot(module: torch.nn.Module) -> dict:
    return {"modules": [(n, type(m).__name__) for n, m in module.named_modules()],
            "state": {k: v.clone() for k, v in module.state_dict().items()},
            "flags": {n: p.requires_grad for n, p in module.named_parameters()},
            "peft_config": dict(getattr(module, "peft_config", None) or {})}


def assert_same(before: dict, after: dict) -> None:
    assert after["modules"] == before["modules"] and after["flags"] == before["flags"]
    assert after["peft_config"] == before["peft_config"]
    assert after["state"].keys() == before["state"].keys()
    assert all(torch.equal(after["state"][k], v) for k, v in before["state"].items())


def damaged(directory: Path, file: str, tmp_path: Path, edit) -> Path:
    copy = tmp_path / "damaged"
    copy.mkdir()
    for f in directory.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    with safe_open(str(directory / file), "pt") as f:
        state, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()  # noqa: SIM118
    save_file(edit(state), str(copy / file), metadata=metadata)
    return copy


def _partial(state):
    keep = sorted({k.split(".lora")[0] for k in state})[::2]
    return {k: v for k, v in state.items() if k.split(".lora")[0] in keep}


def _extra_module(state):
    key = next(iter(state))
    return {**state, key.replace("to_k", "to_nowhere"): state[key].clone()}


def _wrong_shape(state):
    key = next(k for k in state if "lora_A" in k or "lora.down" in k)
    return {**state, key: torch.zeros(state[key].shape[0] + 1, state[key].shape[1])}


def _nan(state):
    key = sorted(state)[3]
    return {**state, key: torch.full_like(state[key], float("nan"))}


CASES = {"partial": (_partial, r"lacks \d+ tensor\(s\) its config names"),
         "module it lacks": (_extra_module, r"(tensor\(s\) for modules the denoiser lacks|to_nowhere)"),
         "wrong shape": (_wrong_shape, r"(wrong shape|size mismatch)"),
         "nan": (_nan, r"holds NaN or inf values in 1 tensor\(s\)")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_lora_refused_naming_file_and_keys_and_model_unchanged(saved, tmp_path, case):
    family, directory, file = saved
    edit, message = CASES[case]
    make, attr, _ = FORMATS[family]
    pipe = make()
    before = snapshot(getattr(pipe, attr))
    bad = damaged(directory, file, tmp_path, edit)
    with pytest.raises(ValueError, match=message) as error:
        load_lora(pipe, bad)
    assert str(bad / file) in str(error.value)
    assert_same(before, snapshot(getattr(pipe, attr)))
    load_lora(pipe, directory)  # and the model takes a good LoRA afterwards
    assert len(getattr(pipe, attr).peft_config) == 1


def test_peft_config_naming_modules_the_denoiser_lacks_refused(tmp_path):
    pipe = tiny_pixart_pipeline()
    add_lora(pipe.transformer, rank=2, seed=0)
    directory = save_lora(pipe, pipe.transformer, tmp_path / "lora", "transformer")
    config = json.loads((directory / "adapter_config.json").read_text())
    config["target_modules"] = [*config["target_modules"], "no_such_proj"]
    (directory / "adapter_config.json").write_text(json.dumps(config))
    fresh = tiny_pixart_pipeline()
    before = snapshot(fresh.transformer)
    with pytest.raises(ValueError, match=r"adapter_config\.json names target modules \['no_such_proj'\]"):
        load_lora(fresh, directory)
    assert_same(before, snapshot(fresh.transformer))


def test_a_good_lora_gives_the_saved_denoiser(saved):
    family, directory, _ = saved
    make, attr, _ = FORMATS[family]
    pipe = make()
    load_lora(pipe, directory)
    loaded = {k: v for k, v in getattr(pipe, attr).state_dict().items() if "lora_B" in k}
    assert loaded and all(v.abs().sum() > 0 for v in loaded.values())  # the trained B, not a zero init
