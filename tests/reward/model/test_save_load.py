import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, from_pretrained


@pytest.mark.parametrize("backend", ["open_clip", "transformers"])
def test_round_trip_gives_identical_scores(tmp_path, backend):
    torch.manual_seed(1)
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny(backend=backend, heads={"quality": "template", "align": "prompt"},
                                             init="random"))
    images, prompts = torch.rand(3, 3, 70, 64), ["a cat", "a dog", "a cat"]
    with torch.no_grad():
        before = model(images, prompts)
    model.save_pretrained(tmp_path)
    loaded = from_pretrained(tmp_path)
    with torch.no_grad():
        after = loaded(images, prompts)
    assert all(torch.equal(before[k], after[k]) for k in before)
    trained = load_file(str(tmp_path / "model.safetensors"))
    assert trained and not any(k.startswith(("coarse.", "fine.")) for k in trained)
    assert any(k.startswith("fusion.") for k in trained) and any(k.startswith("heads.align.") for k in trained)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["heads"] == {"quality": "template", "align": "prompt"}


def test_named_backbones_are_referenced_not_saved(tmp_path, monkeypatch):
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny())
    model.config.coarse.pretrained = model.config.fine.pretrained = "openai"  # as if fetchable by name
    model.save_pretrained(tmp_path)
    assert not (tmp_path / "backbones.safetensors").exists()
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["coarse"]["pretrained"] == "openai"


def test_from_pretrained_asks_the_hub_for_config_and_safetensors_only(tmp_path, monkeypatch):
    MSTCLIPIQA(MSTCLIPIQAConfig.tiny()).save_pretrained(tmp_path)
    asked = {}

    def fake_snapshot(repo_id, allow_patterns, **kwargs):
        asked.update(repo_id=repo_id, allow_patterns=allow_patterns, **kwargs)
        return str(tmp_path)

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot)
    model = MSTCLIPIQA.from_pretrained("someone/mst-clipiqa-agiqa3k", revision="v1")
    assert asked == {"repo_id": "someone/mst-clipiqa-agiqa3k", "allow_patterns": ["*.json", "*.safetensors"],
                     "revision": "v1"}
    assert model.outputs == ("quality",)


def test_load_rejects_mismatched_weights(tmp_path):
    MSTCLIPIQA(MSTCLIPIQAConfig.tiny()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["heads"] = {"quality": "prompt"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not match the config: missing"):
        MSTCLIPIQA.from_pretrained(tmp_path)


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="has no config.json"):
        MSTCLIPIQA.from_pretrained(tmp_path)


def test_missing_backbones_file_is_refused_not_replaced_by_random_encoders(tiny_models, tmp_path):
    tiny_models("A").save_pretrained(tmp_path)
    (tmp_path / "backbones.safetensors").unlink()
    with pytest.raises(ValueError) as error:
        MSTCLIPIQA.from_pretrained(tmp_path)
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'backbones.safetensors'} is missing: {tmp_path / 'config.json'} says "
                              "the coarse and fine backbone weights are stored with the model")
    assert "would be random" in message


@pytest.mark.parametrize("drop", ["fine.model.visual.proj", "coarse.model.transformer.resblocks.1."])
def test_backbones_file_missing_a_tensor_or_a_layer_is_named(tiny_models, tmp_path, drop):
    tiny_models("A").save_pretrained(tmp_path)
    path = tmp_path / "backbones.safetensors"
    state = load_file(str(path))
    kept = {k: v for k, v in state.items() if not k.startswith(drop)}
    save_file(kept, str(path))
    with pytest.raises(ValueError) as error:
        MSTCLIPIQA.from_pretrained(tmp_path)
    message = str(error.value)
    lost = [k for k in tiny_models("A").state_dict() if k.startswith(drop)]
    assert message.startswith(f"weights in {path} do not match the config: missing {len(lost)} tensor(s) "
                              f"{lost[:5]}")
