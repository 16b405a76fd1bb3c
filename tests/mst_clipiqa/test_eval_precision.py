"""``eval --mixed-precision`` keys the feature cache as ``train`` does, so a bf16 run's cache is reused."""
from __future__ import annotations

import pytest

from mst_clipiqa.cli import main
from mst_clipiqa.reward.datasets import make_synthetic_dataset
from mst_clipiqa.reward.training import feature_cache


def test_eval_reuses_the_cache_a_bf16_train_filled(tmp_path, monkeypatch, capsys):
    data, cache = tmp_path / "synthetic", tmp_path / "cache"
    make_synthetic_dataset(data, n_scenes=3, levels=(1.0,))
    common = ["--model", "tiny", "--variant", "B", "--dataset", "synthetic", "--data", str(data),
              "--cache-dir", str(cache), "--device", "cpu"]
    assert main(["train", *common, "--out", str(tmp_path / "run"), "--epochs", "1", "--n-splits", "1",
                 "--mixed-precision", "bf16", "--quiet"]) == 0
    filled = sorted(p.name for p in cache.iterdir())

    def encoding(*args, **kwargs):
        raise AssertionError("eval encoded images again instead of reading the cache")

    monkeypatch.setattr(feature_cache, "encode_files", encoding)
    assert main(["eval", *common, "--mixed-precision", "bf16"]) == 0
    assert sorted(p.name for p in cache.iterdir()) == filled
    with pytest.raises(AssertionError, match="encoded images again"):  # fp32 features are a different entry
        main(["eval", *common])
    capsys.readouterr()
