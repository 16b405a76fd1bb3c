"""The model config: JSON round trip, and every field checked when it is read, naming the field and file."""
import json

import pytest

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig


def test_config_json_round_trip(tmp_path):
    config = MSTCLIPIQAConfig.tiny("B", backend="transformers", score_ranges={"quality": (0.0, 1.0)})
    config.to_json(tmp_path / "c.json")
    assert MSTCLIPIQAConfig.from_json(tmp_path / "c.json") == config


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="variant must be 'A'"):
        MSTCLIPIQAConfig.tiny(variant="C")
    with pytest.raises(ValueError, match="head 'q' has kind 'linear'"):
        MSTCLIPIQAConfig.tiny(heads={"q": "linear"})
    with pytest.raises(ValueError, match="unknown MSTCLIPIQAConfig fields"):
        MSTCLIPIQAConfig.from_dict({**MSTCLIPIQAConfig.tiny().to_dict(), "colour": 1})


def _edit(data, path, value):
    *parents, last = path.split(".")
    for key in parents:
        data = data[key]
    if value is DELETE:
        del data[last]
    else:
        data[last] = value


DELETE = object()


@pytest.mark.parametrize("field, value, message", [
    ("heads", ["quality"], "config field heads must map each output name"),
    ("fusion_hidden", "16", "config field fusion_hidden must be an integer >= 1, got '16' (str)"),
    ("fusion_hidden", 0, "config field fusion_hidden must be an integer >= 1, got 0"),
    ("attention_heads", 5, "attention_heads=5 does not divide the coarse embedding width 64"),
    ("attention_heads", True, "config field attention_heads must be an integer"),
    ("score_ranges", {"quality": [5, 1]}, "score_ranges['quality'] is (5.0, 1.0); expected finite numbers"),
    ("score_ranges", {"aesthetics": [0, 1]}, "score_ranges names 'aesthetics', which is not an output"),
    ("levels", "good", "config field levels must be two or more distinct strings"),
    ("template", "a photo", "config field template must be a string with a {}"),
    ("temperature_init", "hot", "config field temperature_init must be a finite number, got 'hot'"),
    ("init", "xavier", "config field init must be 'zero_shot' or 'random'"),
    ("coarse.backend", "jax", "config field coarse.backend must be one of"),
    ("coarse.text", False, "config field coarse.text must be true"),
    ("fine.pretrained", 3, "config field fine.pretrained must be a string or null, got 3"),
    ("fine.colour", "red", "config field fine must have backend, name"),
    ("coarse", DELETE, "lacks the required field(s) ['coarse']"),
])
def test_bad_fields_are_named_with_the_file(tmp_path, field, value, message):
    data = MSTCLIPIQAConfig.tiny("B").to_dict()
    _edit(data, field, value)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError) as error:
        MSTCLIPIQAConfig.from_json(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


@pytest.mark.parametrize("text, message", [("", "is empty"), ('{"coarse": {"backend": "open', "is not valid JSON"),
                                           ("[1, 2]", "must be a JSON object")])
def test_empty_or_truncated_config_is_named(tmp_path, text, message):
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        MSTCLIPIQAConfig.from_json(path)
    assert str(path) in str(error.value)


def test_sizes_known_only_after_building_are_checked_too():
    arch = MSTCLIPIQAConfig.tiny(backend="transformers").coarse.arch
    del arch["projection_dim"]  # transformers then projects to its default 512, known once the model is built
    config = MSTCLIPIQAConfig.tiny("B", backend="transformers")
    config.coarse.arch, config.attention_heads = arch, 3
    with pytest.raises(ValueError, match="attention_heads=3 does not divide the coarse embedding width 512"):
        MSTCLIPIQA(config)
    bad_arch = MSTCLIPIQAConfig.tiny()
    bad_arch.coarse.arch["vision_cfg"]["layers"] = "two"
    with pytest.raises(ValueError, match="cannot build the coarse backbone from config field coarse .*'str'"):
        MSTCLIPIQA(bad_arch)
