"""Sizes in a config.json are bounded before anything is built: absurd sizes are refused fast and without
allocating, naming the field, its value and the limit; sizes must agree with the weight file's shapes."""
import json
import os
import re
import time

import pytest

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig
from mst_clipiqa.reward.model.limits import MAX_PARAMETERS, model_parameter_estimate

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _set(data: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


OVERSIZED = [
    ("fusion_hidden", 3_000_000, "fusion_hidden"),
    ("fusion_hidden", 10**9, "fusion_hidden"),
    ("coarse.arch.vision_cfg.layers", 1_000_000, "coarse.arch.vision_cfg.layers"),
    ("fine.arch.vision_cfg.image_size", 100_000, "fine.arch.vision_cfg.image_size"),
    ("levels", [f"level {i}" for i in range(100_000)], "levels"),
    ("coarse.arch.vision_cfg.width", 10**9, "coarse.arch.vision_cfg.width"),
    ("coarse.arch.text_cfg.vocab_size", 10**10, "coarse.arch.text_cfg.vocab_size"),
    ("fine.arch.text_cfg.vocab_size", 10**10, "fine.arch.text_cfg.vocab_size"),
]


@pytest.mark.parametrize(("field", "value", "named"), OVERSIZED, ids=[f"{f}={str(v)[:12]}" for f, v, _ in OVERSIZED])
def test_oversized_config_refused_fast_without_allocating(tmp_path, field, value, named):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(_set(MSTCLIPIQAConfig.tiny().to_dict(), field, value)))
    before, start = resident_bytes(), time.perf_counter()
    with pytest.raises(ValueError, match="limit") as error:
        MSTCLIPIQA(MSTCLIPIQAConfig.from_json(path))
    elapsed, grown = time.perf_counter() - start, resident_bytes() - before
    assert named in str(error.value)
    assert elapsed < 1.0, f"refusing took {elapsed:.2f} s"
    assert grown < 200 * 2**20, f"memory grew by {grown / 2**20:.0f} MB"


@pytest.mark.parametrize("backend", ["open_clip", "transformers"])
def test_parameter_estimate_bounds_sizes_each_within_its_limit(backend):
    tower = ("vision_cfg", "width", "layers") if backend == "open_clip" else \
        ("vision_config", "hidden_size", "num_hidden_layers")
    data = MSTCLIPIQAConfig.tiny(backend=backend).to_dict()
    _set(data, f"coarse.arch.{tower[0]}.{tower[1]}", 16384)
    _set(data, f"coarse.arch.{tower[0]}.{tower[2]}", 256)
    with pytest.raises(ValueError, match=re.escape(f"parameters, above the limit of {MAX_PARAMETERS:.3g}")):
        MSTCLIPIQAConfig.from_dict(data)


@pytest.mark.parametrize("variant", ["A", "B"])
@pytest.mark.parametrize("backend", ["open_clip", "transformers"])
def test_estimate_is_close_to_the_built_model(tiny_models, variant, backend):
    model = tiny_models(variant, backend)
    built = sum(p.numel() for p in model.parameters())
    estimate = model_parameter_estimate(model.config)
    # open_clip builds a text tower for the fine stream too and drops it: the estimate counts what is allocated
    assert 0.9 * built <= estimate <= (2.1 if backend == "open_clip" else 1.1) * built


def _saved(tmp_path, tiny_models, **edits):
    directory = tiny_models("A").save_pretrained(tmp_path / "model")
    data = json.loads((directory / "config.json").read_text())
    for field, value in edits.items():
        _set(data, field, value)
    (directory / "config.json").write_text(json.dumps(data))
    return directory


def test_fusion_hidden_disagreeing_with_the_weight_file_refused_before_building(tmp_path, tiny_models):
    directory = _saved(tmp_path, tiny_models, fusion_hidden=60000)
    before = resident_bytes()
    with pytest.raises(ValueError, match=r"fusion_hidden=60000 does not match .*model\.safetensors.*W_h"):
        MSTCLIPIQA.from_pretrained(directory)
    assert resident_bytes() - before < 200 * 2**20


def test_backbone_sizes_disagreeing_with_the_stored_backbones_refused(tmp_path, tiny_models):
    directory = _saved(tmp_path, tiny_models, **{"coarse.arch.vision_cfg.layers": 200})
    with pytest.raises(ValueError, match=r"coarse\.arch implies about .* parameters, but .*backbones\.safetensors"):
        MSTCLIPIQA.from_pretrained(directory)
