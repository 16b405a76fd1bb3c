"""The "where to add" steps of docs/architecture.md, followed to the letter: a new data-set kind, head kind and
built-in model name, each registered by its documented call and then used from the CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from mst_clipiqa.cli import main
from mst_clipiqa.reward import add_model_config, load_model
from mst_clipiqa.reward.datasets import DATASET_KINDS, Layout, load_csv, register_dataset_kind
from mst_clipiqa.reward.datasets.public_splits import LAYOUTS
from mst_clipiqa.reward.model import HEAD_KINDS, HeadSpec, model_configs, register_head_kind


@pytest.fixture
def registries():
    """Leave the registries as they were: a test must not add kinds that other tests then see."""
    saved = dict(DATASET_KINDS), dict(HEAD_KINDS), dict(model_configs._specs())
    yield
    for registry, old in zip((DATASET_KINDS, HEAD_KINDS, model_configs._SPECS), saved):
        registry.clear()
        registry.update(old)


class LinearHead(nn.Module):
    """A new head kind: a sigmoid of a linear map of the fused feature, in (0, 1)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 1)

    def forward(self, z: torch.Tensor, template_features: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(z)).squeeze(-1)


def load_mini(path, **kwargs):
    """A new data-set kind: a CSV of ``file, caption, score`` with scores on 0-10."""
    return load_csv(path, image_col="file", prompt_col="caption", score_cols={"quality": "score"}, name="mini",
                    label_range=(0, 10), **kwargs)


def write_mini(folder):
    rng = np.random.default_rng(0)
    rows = ["file,caption,score"]
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        rows.append(f"{i}.png,a picture {i},{i + 2}")
    (folder / "mini.csv").write_text("\n".join(rows) + "\n")
    return folder / "mini.csv"


def test_a_data_set_kind_head_kind_and_model_name_added_by_the_documented_steps_work_from_the_cli(
        registries, tmp_path, capsys):
    register_dataset_kind("mini", load_mini, Layout(("file", "caption", "score"), ("file",), {"quality": "score"},
                                                     "caption"))
    register_head_kind("linear", HeadSpec(build=lambda config, coarse: LinearHead(coarse.embed_dim),
                                          score_range=lambda levels: (0.0, 1.0), needs_prompt=False))
    spec = json.loads((model_configs._FOLDER / "tiny.json").read_text())
    spec["config"]["fusion_hidden"] = 32
    spec["variant"] = "linear"
    (tmp_path / "tiny-wide.json").write_text(json.dumps(spec))
    assert add_model_config(tmp_path / "tiny-wide.json") == ["tiny-wide"]

    model = load_model("tiny-wide")
    assert model.config.heads == {"quality": "linear"} and model.config.fusion_hidden == 32
    assert isinstance(model.heads["quality"], LinearHead) and model.config.score_ranges["quality"] == (0.0, 1.0)
    assert LAYOUTS["mini"].columns == ("file", "caption", "score")

    data = write_mini(tmp_path)
    out = tmp_path / "eval.json"
    assert main(["eval", "--dataset", "mini", "--data", str(data), "--model", "tiny-wide", "--no-cache",
                 "--device", "cpu", "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["all"]) == {"quality"} and "srcc" in result["all"]["quality"]
    assert "all 6 images" in capsys.readouterr().out


def test_a_taken_name_is_refused(registries):
    with pytest.raises(ValueError, match="dataset kind 'AGIQA-3K' is taken"):
        register_dataset_kind("AGIQA-3K", load_mini)
    with pytest.raises(ValueError, match="head kind 'template' is taken"):
        register_head_kind("template", HEAD_KINDS["template"])
