"""``mst-clipiqa train --ensemble K``, ``score --uncertainty --maps DIR`` and ``rank --maps DIR``."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from PIL import Image

from mst_clipiqa.cli import main
from mst_clipiqa.reward import MSTCLIPIQAReward
from mst_clipiqa.reward.datasets.synthetic import make_synthetic_dataset


def test_an_ensemble_trained_by_the_cli_scores_with_sigma_columns_and_writes_maps(tmp_path, capsys):
    data, out = tmp_path / "synthetic", tmp_path / "run"
    make_synthetic_dataset(data, n_scenes=3, levels=(0.5, 1.0))
    assert main(["train", "--model", "tiny", "--dataset", "synthetic", "--data", str(data), "--out", str(out),
                 "--epochs", "1", "--n-splits", "1", "--lr", "1e-3", "--ensemble", "3", "--cache-dir",
                 str(tmp_path / "cache"), "--quiet", "--device", "cpu"]) == 0
    capsys.readouterr()
    images = sorted(data.rglob("*.png"))[:3]
    maps = tmp_path / "maps"
    assert main(["score", "--model", str(out / "model"), *map(str, images), "--uncertainty", "--maps", str(maps),
                 "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert list(rows[0]) == ["image", "quality", "quality_sigma", "quality_sigma_head", "quality_sigma_streams",
                             "quality_sigma_ensemble"]
    reward = MSTCLIPIQAReward.from_pretrained(out / "model")
    expected = reward.score(images, return_uncertainty=True)
    for row, score, sigma in zip(rows, expected.scores, expected.sigma):
        assert abs(float(row["quality"]) - float(score)) < 1e-5
        assert abs(float(row["quality_sigma"]) - float(sigma)) < 1e-5
        assert float(row["quality_sigma_ensemble"]) > 0
    for path, values in zip(images, reward.score_maps(images)):
        grey = torch.from_numpy(np.asarray(Image.open(maps / f"{path.stem}_map.png")).copy())
        expected_grey = ((values - 1) / 4).clamp(0, 1).mul(255).round()
        assert torch.equal(grey[::16, ::16].float(), expected_grey)  # one 16-pixel square per region


def _count_encodes(monkeypatch):
    """A list that grows by each batch's size whenever the model encodes images."""
    from mst_clipiqa.reward import MSTCLIPIQA

    encoded, encode = [], MSTCLIPIQA.encode_images

    def counted(self, batch, tokens=False):
        encoded.append(len(batch))
        return encode(self, batch, tokens)

    monkeypatch.setattr(MSTCLIPIQA, "encode_images", counted)
    return encoded


def test_score_with_uncertainty_and_maps_encodes_each_image_once(tmp_path, capsys, monkeypatch, sample_dir):
    encoded = _count_encodes(monkeypatch)
    images = sorted(sample_dir.rglob("*.jpg"))[:3]
    assert main(["score", "--model", "tiny", *map(str, images), "--uncertainty", "--maps", str(tmp_path / "maps"),
                 "--batch-size", "2", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO("\n".join(capsys.readouterr().out.splitlines()[:4]))))
    assert sum(encoded) == len(images) == len(rows) and len(list((tmp_path / "maps").glob("*_map.png"))) == 3
    monkeypatch.undo()
    reward = MSTCLIPIQAReward.from_pretrained("tiny")
    alone = reward.score_maps(images)
    for path, values in zip(images, alone):  # the maps of the shared pass are the maps of a pass of their own
        grey = torch.from_numpy(np.asarray(Image.open(tmp_path / "maps" / f"{path.stem}_map.png")).copy())
        low, high = reward.score_range
        assert torch.equal(grey[::16, ::16].float(), ((values - low) / (high - low)).clamp(0, 1).mul(255).round())
    scores = reward.score(images, return_uncertainty=True)
    assert [float(r["quality_sigma"]) for r in rows] == pytest.approx(scores.sigma.tolist(), abs=1e-5)


def test_rank_with_maps_overlays_each_image_from_the_pass_that_ranks_it_and_lists_the_files(tmp_path, capsys,
                                                                                             monkeypatch, sample_dir):
    from mst_clipiqa.integrations import overlay_map
    from mst_clipiqa.reward import load_image

    images = sorted(sample_dir.rglob("*.jpg"))[:3]
    assert main(["rank", *map(str, images), "--model", "tiny", "--format", "csv"]) == 0
    plain = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    encoded = _count_encodes(monkeypatch)
    maps = tmp_path / "maps"
    assert main(["rank", *map(str, images), "--model", "tiny", "--maps", str(maps), "--out", str(tmp_path / "out"),
                 "--batch-size", "2", "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    assert encoded == [2, 1]  # one encoder pass ranks the images and maps them
    monkeypatch.undo()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["image"] for r in rows] == [r["image"] for r in plain]
    assert [float(r["score"]) for r in rows] == pytest.approx([float(r["score"]) for r in plain], abs=1e-5)
    listed = err.split("wrote:")[1].split()
    assert sorted(str(maps / f"{path.stem}_map.png") for path in images) == sorted(p for p in listed
                                                                                     if p.startswith(str(maps)))
    reward = MSTCLIPIQAReward.from_pretrained("tiny")
    for path, values in zip(images, reward.score_maps(images, batch_size=2)):
        expected = overlay_map(load_image(path), values, reward.score_range)
        assert Image.open(maps / f"{path.stem}_map.png").tobytes() == expected.tobytes()
