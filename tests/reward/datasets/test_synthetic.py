import json
import time

import numpy as np
import pytest
from PIL import Image

from mst_clipiqa.reward.datasets.splits import make_splits
from mst_clipiqa.reward.datasets.synthetic import (
    DEFECT_WEIGHTS,
    apply_defect,
    correspondence_score,
    make_synthetic_dataset,
    quality_score,
)

LEVELS = (0.25, 0.5, 0.75, 1.0)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    start = time.perf_counter()
    ds = make_synthetic_dataset(root, n_scenes=10, levels=LEVELS, size=64, seed=0)
    return root, ds, time.perf_counter() - start


def test_size_layout_and_speed(synthetic):
    root, ds, seconds = synthetic
    per_scene = 1 + len(DEFECT_WEIGHTS) * len(LEVELS)
    assert len(ds) == 10 * per_scene == 210
    assert seconds < 5.0
    assert ds.outputs == ("quality", "correspondence")
    groups = ds.groups()
    assert len(set(groups)) == 10 and groups.count("scene000") == per_scene
    item = ds[0]
    assert item["image"].shape == (3, 64, 64)
    assert all(s.image.parent == root and s.image.is_file() for s in ds.samples)


def test_quality_follows_documented_formula(synthetic):
    _, ds, _ = synthetic
    quality = ds.score_array("quality")
    expected = [5.0] + [5 - 4 * w * s for w in DEFECT_WEIGHTS.values() for s in LEVELS]
    assert np.allclose(quality[:21], expected)
    assert quality.min() >= 1.0 and quality.max() == 5.0
    assert quality_score("banding", 1.0) == pytest.approx(1.8)
    assert quality_score(None, 0.0) == 5.0


def test_prompts_and_correspondence(synthetic):
    _, ds, _ = synthetic
    corr = ds.score_array("correspondence")
    assert set(corr) == {1.0, 3.0, 5.0}
    assert np.mean(corr < 5) == pytest.approx(0.25, abs=0.01)
    assert correspondence_score(2) == 1.0
    by_scene: dict[str, set[str]] = {}
    for sample in ds.samples:
        assert sample.prompt.startswith("a ") and sample.prompt.endswith(" background")
        if sample.scores["correspondence"] == 5.0:
            by_scene.setdefault(sample.group, set()).add(sample.prompt)
    assert all(len(p) == 1 for p in by_scene.values())  # true prompt is one per scene
    for sample in ds.samples:
        if sample.scores["correspondence"] < 5.0:
            (true_prompt,) = by_scene[sample.group]
            wrong = sum(a != b for a, b in zip(sample.prompt.split(), true_prompt.split()))
            assert wrong == (5.0 - sample.scores["correspondence"]) / 2


def test_defects_degrade_monotonically(synthetic):
    root, _, _ = synthetic
    clean = np.asarray(Image.open(root / "s000_clean.png"), dtype=np.float64)
    for defect in DEFECT_WEIGHTS:
        errors = [np.abs(np.asarray(Image.open(root / f"s000_{defect}_{j}.png"), dtype=np.float64)
                         - clean).mean() for j in range(len(LEVELS))]
        assert errors[0] > 0 and errors[-1] > errors[0], defect
    with pytest.raises(ValueError, match="unknown defect 'smear'"):
        apply_defect(clean / 255, "smear", 0.5, np.random.default_rng(0))


def test_deterministic_and_reused(tmp_path, synthetic):
    root, ds, _ = synthetic
    other = make_synthetic_dataset(tmp_path / "again", n_scenes=10, levels=LEVELS, seed=0)
    assert [s.prompt for s in other.samples] == [s.prompt for s in ds.samples]
    for a, b in zip(other.samples[::17], ds.samples[::17]):
        assert a.image.read_bytes() == b.image.read_bytes()
    stamp = (root / "s001_noise_2.png").stat().st_mtime_ns
    reused = make_synthetic_dataset(root, n_scenes=10, levels=LEVELS, seed=0)
    assert (root / "s001_noise_2.png").stat().st_mtime_ns == stamp
    assert [s.scores for s in reused.samples] == [s.scores for s in ds.samples]
    different = make_synthetic_dataset(tmp_path / "seed1", n_scenes=10, levels=LEVELS, seed=1)
    assert [s.prompt for s in different.samples] != [s.prompt for s in ds.samples]


def test_regenerates_on_new_settings_and_removes_stale_files(tmp_path):
    make_synthetic_dataset(tmp_path, n_scenes=3, levels=(0.5,), size=32)
    assert (tmp_path / "s002_clean.png").is_file()
    ds = make_synthetic_dataset(tmp_path, n_scenes=2, levels=(0.5,), size=32)
    assert len(ds) == 2 * 6 and not (tmp_path / "s002_clean.png").exists()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["settings"]["n_scenes"] == 2
    assert Image.open(ds.samples[0].image).size == (32, 32)


def test_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="severities in"):
        make_synthetic_dataset(tmp_path, levels=(0.0, 0.5))
    with pytest.raises(ValueError, match="distinct levels"):
        make_synthetic_dataset(tmp_path, levels=(0.5, 0.5))


def test_prompt_grouped_splits_on_synthetic(synthetic):
    _, ds, _ = synthetic
    for split in make_splits(ds, n_splits=3, by="prompt"):
        split.check_groups(ds.groups())
        assert len(split.test) == 2 * 21
