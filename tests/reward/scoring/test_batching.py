"""The one batched scoring loop, and the paths built on it agreeing exactly."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from mst_clipiqa.cli import main
from mst_clipiqa.integrations import score_images
from mst_clipiqa.reward import MSTCLIPIQAReward, load_model, score_in_batches


def write_images(folder, sizes):
    generator = torch.Generator().manual_seed(0)
    paths = []
    for i, (h, w) in enumerate(sizes):
        pixels = (torch.rand(h, w, 3, generator=generator) * 255).to(torch.uint8).numpy()
        paths.append(folder / f"{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def test_cli_score_cli_rank_and_score_images_give_identical_numbers(tmp_path, capsys):
    paths = write_images(tmp_path, [(64, 64)] * 5)
    assert main(["score", str(tmp_path), "--model", "tiny", "--format", "json", "--device", "cpu"]) == 0
    by_score = {row["image"]: row["quality"] for row in json.loads(capsys.readouterr().out)}
    assert main(["rank", str(tmp_path), "--model", "tiny", "--format", "json", "--device", "cpu"]) == 0
    by_rank = {row["image"]: row["score"] for row in json.loads(capsys.readouterr().out)}
    total, _ = score_images(MSTCLIPIQAReward(load_model("tiny")), paths)
    by_api = {p.name: float(v) for p, v in zip(paths, total)}
    assert {p.split("/")[-1]: v for p, v in by_score.items()} == by_rank == by_api
    assert len(set(by_api.values())) == 5  # five different images, five different scores


def test_mixed_sizes_are_grouped_never_resized_and_keep_their_order(tmp_path):
    paths = write_images(tmp_path, [(32, 32), (40, 24), (32, 32), (40, 24), (32, 32)])
    seen = []

    def record(batch, prompts):
        seen.append((tuple(batch.shape), prompts))
        return {"mean": batch.mean(dim=(1, 2, 3))}

    scores = score_in_batches(record, paths, ["p0", "p1", "p2", "p3", "p4"], batch_size=2)
    assert sorted(seen) == sorted([((2, 3, 32, 32), ["p0", "p2"]), ((1, 3, 32, 32), ["p4"]),
                                   ((2, 3, 40, 24), ["p1", "p3"])])
    expected = [torch.from_numpy(np.asarray(Image.open(p))).float().mean() / 255 for p in paths]
    torch.testing.assert_close(scores["mean"], torch.stack(expected))


def test_fit_size_batches_mixed_sizes_together(tmp_path):
    paths = write_images(tmp_path, [(32, 48), (50, 20)])
    shapes = []
    score_in_batches(lambda b, p: shapes.append(b.shape) or {"s": b.mean((1, 2, 3))}, paths, fit_size=16)
    assert shapes == [(2, 3, 16, 16)]


@pytest.mark.parametrize("kwargs, match", [(dict(batch_size=0), "batch_size must be >= 1"),
                                           (dict(prompts=["a"]), "got 1 prompts for 2 images")])
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    paths = write_images(tmp_path, [(8, 8)] * 2)
    with pytest.raises(ValueError, match=match):
        score_in_batches(lambda b, p: {"s": b.mean((1, 2, 3))}, paths, **kwargs)
