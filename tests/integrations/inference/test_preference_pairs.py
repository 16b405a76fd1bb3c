import io

import numpy as np
import pytest
import torch
from PIL import Image

from mst_clipiqa.integrations import regenerate
from mst_clipiqa.integrations.inference.preference_pairs import load_pairs, preference_pairs, select_pairs, shard_path
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline

from ..preference_data import PROMPTS, SAMPLER, bright_pipe, brightness


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_winner_scores_at_least_loser_in_every_row(pairs):
    assert len(pairs) > 0
    for row in pairs:
        win, lose = (row["score_0"], row["score_1"]) if row["label_0"] == 1.0 else (row["score_1"], row["score_0"])
        assert win >= lose
        assert row["label_0"] in (0.0, 1.0)


def test_pairs_load_with_datasets_in_the_diffusion_dpo_layout(pairs):
    import datasets

    assert isinstance(pairs, datasets.Dataset)
    assert {"jpg_0", "jpg_1", "label_0", "caption", "seed_0", "seed_1", "score_0", "score_1"} <= set(pairs.features)
    assert set(pairs["caption"]) == set(PROMPTS)
    n = 8
    assert len(pairs) <= len(PROMPTS) * n * (n - 1) // 2  # "all": every untied pair of 8 samples
    row = pairs[0]
    assert _pixels(row["jpg_0"]).shape == (32, 32, 3)
    assert row["scores_0"] == {"reward": pytest.approx(row["score_0"])}


def test_seeds_regenerate_the_stored_images_exactly(pairs):
    pipe = bright_pipe()
    for row in pairs.select(range(0, len(pairs), 37)):
        for k in ("0", "1"):
            image = regenerate(pipe, row["caption"], row[f"seed_{k}"], batch_seeds=row[f"batch_seeds_{k}"],
                               **SAMPLER)
            stored = _pixels(row[f"jpg_{k}"])
            assert np.array_equal((image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy(),
                                  stored)
            assert float(brightness(image[None])[0]) == pytest.approx(row[f"score_{k}"], abs=1e-6)


def test_rerun_skips_finished_shards_and_refuses_other_settings(tmp_path):
    pipe, prompts = tiny_sd_pipeline(), ["a", "b"]
    kwargs = dict(n=3, pairs="best-worst", progress=False, num_inference_steps=1)
    first = preference_pairs(pipe, prompts, brightness, tmp_path, **kwargs)
    assert len(first.written) == 2 and first.rows == 2
    shard = shard_path(tmp_path, 1)
    saved = shard.read_bytes()
    shard.unlink()
    again = preference_pairs(pipe, prompts, brightness, tmp_path, **kwargs)
    assert again.written == [shard] and again.skipped == [shard_path(tmp_path, 0)]
    assert shard.read_bytes() == saved  # the same seeds make the same shard
    with pytest.raises(ValueError, match=r"other settings \(\['n'\]"):
        preference_pairs(pipe, prompts, brightness, tmp_path, **{**kwargs, "n": 4})


def test_processes_split_the_prompts(tmp_path):
    pipe, prompts = tiny_sd_pipeline(), ["a", "b", "c"]
    kwargs = dict(n=2, progress=False, num_inference_steps=1, world_size=2)
    rank0 = preference_pairs(pipe, prompts, brightness, tmp_path, rank=0, **kwargs)
    rank1 = preference_pairs(pipe, prompts, brightness, tmp_path, rank=1, **kwargs)
    assert rank0.written == [shard_path(tmp_path, 0), shard_path(tmp_path, 2)]
    assert rank1.written == [shard_path(tmp_path, 1)]
    rows = load_pairs(tmp_path, cache_dir=tmp_path / "cache")
    assert sorted(rows["prompt_index"]) == [0, 1, 2]
    assert sorted(list(rows["seed_0"]) + list(rows["seed_1"])) == list(range(6))  # prompt p: seeds 2p, 2p + 1


def test_several_rewards_are_weighted(tmp_path):
    rewards = {"bright": brightness, "red": lambda images: images[:, 0].mean(dim=(1, 2))}
    weights = {"bright": 1.0, "red": -2.0}
    preference_pairs(tiny_sd_pipeline(), ["a"], rewards, tmp_path, n=3, pairs="all", weights=weights,
                     progress=False, num_inference_steps=1, image_format="jpeg")
    rows = load_pairs(tmp_path, cache_dir=tmp_path / "cache")
    for row in rows:
        for k in ("0", "1"):
            named = row[f"scores_{k}"]
            assert row[f"score_{k}"] == pytest.approx(named["bright"] - 2.0 * named["red"])
        assert Image.open(io.BytesIO(row["jpg_0"])).format == "JPEG"


def test_pair_rules():
    scores = [0.3, 0.9, 0.1, 0.5]
    assert select_pairs(scores, "best-worst") == [(1, 2)]
    assert len(select_pairs(scores, "all")) == 6
    assert select_pairs(scores, "margin>0.45") == [(0, 1), (1, 2)]
    assert select_pairs([0.2, 0.2], "best-worst") == [] and select_pairs([0.2, 0.2], "all") == []
    for bad in ("best", "margin>", "margin>-1", "margin>nan"):
        with pytest.raises(ValueError, match="pairs must be one of"):
            select_pairs(scores, bad)
    assert select_pairs(scores, "margin>0") == select_pairs(scores, "all")


def test_bad_inputs_are_named(tmp_path):
    pipe = tiny_sd_pipeline()
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        preference_pairs(pipe, ["a"], brightness, tmp_path, n=1)
    with pytest.raises(ValueError, match="prompts must be a list of strings"):
        preference_pairs(pipe, "a", brightness, tmp_path)
    with pytest.raises(ValueError, match="image_format"):
        preference_pairs(pipe, ["a"], brightness, tmp_path, image_format="gif")
    with pytest.raises(ValueError, match="rank must be in"):
        preference_pairs(pipe, ["a"], brightness, tmp_path, rank=2, world_size=2)
    with pytest.raises(ValueError, match="holds no pair shards"):
        load_pairs(tmp_path)


def test_non_finite_scores_are_never_paired_and_never_self_paired():
    nan, inf = float("nan"), float("inf")
    assert select_pairs([nan, 0.2, 0.5], "best-worst") == [(1, 2)]
    assert select_pairs([nan, 0.3], "best-worst") == [] and select_pairs([nan, nan], "best-worst") == []
    assert select_pairs([inf, 0.1, -inf, 0.4], "all") == [(1, 3)]


def test_a_nan_score_gives_no_row_and_a_tied_prompt_no_shard(tmp_path):
    def first_is_nan(images):
        scores = torch.as_tensor(brightness(images)).clone()
        scores[0] = float("nan")
        return scores

    kwargs = dict(n=3, progress=False, num_inference_steps=1)
    with pytest.warns(RuntimeWarning, match="NaN for 1 of 3"):
        preference_pairs(tiny_sd_pipeline(), ["a"], first_is_nan, tmp_path / "nan", **kwargs)
    for row in load_pairs(tmp_path / "nan", cache_dir=tmp_path / "cache"):
        assert row["seed_0"] != row["seed_1"] and row["jpg_0"] != row["jpg_1"]
        assert np.isfinite([row["score_0"], row["score_1"]]).all()

    calls = []

    def flat_for_b(images):  # prompt "b" (the second pipeline call) scores every candidate the same
        calls.append(len(images))
        scores = torch.as_tensor(brightness(images))
        return scores if len(calls) == 1 else torch.zeros_like(scores)

    out = tmp_path / "ties"
    written = preference_pairs(tiny_sd_pipeline(), ["a", "b"], flat_for_b, out, **kwargs)
    assert written.written == [shard_path(out, 0)] and not shard_path(out, 1).exists()
    assert [p.name for p in written.no_pairs] == ["prompt-000001.no-pairs.json"]
    assert len(load_pairs(out, cache_dir=tmp_path / "cache")) == 1
    again = preference_pairs(tiny_sd_pipeline(), ["a", "b"], flat_for_b, out, **kwargs)
    assert again.written == [] and len(again.skipped) == 2  # the tied prompt is done, not redone


def test_empty_and_truncated_shards_are_handled_by_name(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    preference_pairs(tiny_sd_pipeline(), ["a"], brightness, tmp_path, n=2, progress=False, num_inference_steps=1)
    empty = shard_path(tmp_path, 1)
    pq.write_table(pa.Table.from_pylist([], schema=pq.read_schema(shard_path(tmp_path, 0))), str(empty))
    assert len(load_pairs(tmp_path, cache_dir=tmp_path / "cache")) == 1  # an older version's empty shard
    data = shard_path(tmp_path, 0).read_bytes()
    shard_path(tmp_path, 0).write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"prompt-000000.parquet is not a readable parquet shard .*run the same"):
        load_pairs(tmp_path)
    shard_path(tmp_path, 0).unlink()
    with pytest.raises(ValueError, match="hold no pairs"):
        load_pairs(tmp_path)


def test_a_stop_request_ends_the_export_after_the_prompt_in_hand(tmp_path):
    import os
    import signal

    from mst_clipiqa.runtime.preemption import Preempted

    def stop_at_first(images):
        if not shard_path(tmp_path, 0).exists():
            os.kill(os.getpid(), signal.SIGTERM)
        return brightness(images)

    kwargs = dict(n=2, progress=False, num_inference_steps=1)
    message = r"stopped by SIGTERM after 1 of 3 prompts; .*run the same command again"
    with pytest.raises(Preempted, match=message) as stop:
        preference_pairs(tiny_sd_pipeline(), ["a", "b", "c"], stop_at_first, tmp_path, **kwargs)
    assert stop.value.exit_status == 143
    assert shard_path(tmp_path, 0).is_file() and not shard_path(tmp_path, 1).exists()
    again = preference_pairs(tiny_sd_pipeline(), ["a", "b", "c"], stop_at_first, tmp_path, **kwargs)
    assert len(again.written) == 2 and again.skipped == [shard_path(tmp_path, 0)]


def test_loading_pairs_draws_no_progress_bar_of_datasets(pairs_dir, tmp_path, capfd):
    from datasets.utils.logging import is_progress_bar_enabled

    capfd.readouterr()
    assert len(load_pairs(pairs_dir, cache_dir=tmp_path / "fresh-cache")) > 0  # a fresh cache: datasets generates
    assert "Generating" not in capfd.readouterr().err and is_progress_bar_enabled()


def test_async_scoring_writes_the_same_pairs(tmp_path):
    settings = dict(n=3, pairs="all", progress=False, **SAMPLER)
    sync = preference_pairs(tiny_sd_pipeline(), PROMPTS[:2], brightness, tmp_path / "sync", **settings)
    overlapped = preference_pairs(tiny_sd_pipeline(), PROMPTS[:2], brightness, tmp_path / "async",
                                  async_scoring=True, chunk_size=1, **settings)
    assert sync.rows == overlapped.rows
    cache = tmp_path / "cache"
    for a, b in zip(load_pairs(tmp_path / "sync", cache_dir=cache), load_pairs(tmp_path / "async", cache_dir=cache)):
        assert (a["seed_0"], a["seed_1"], a["label_0"]) == (b["seed_0"], b["seed_1"], b["label_0"])


def test_a_stop_request_inside_a_prompt_gives_it_up_at_the_next_chunk(tmp_path, monkeypatch):
    import os
    import signal

    from mst_clipiqa.runtime.preemption import Preempted

    pipe, calls = tiny_sd_pipeline(), []
    generate = type(pipe).__call__

    def signalling(self, *args, **kwargs):  # the first chunk of the second prompt: SIGTERM while it is made
        calls.append(shard_path(tmp_path, 0).exists())
        if calls.count(True) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", signalling)
    kwargs = dict(n=3, chunk_size=1, progress=False, num_inference_steps=1)
    with pytest.raises(Preempted, match=r"after 1 of 3 prompts \(prompt 1 was cut short: a rerun makes it\); "):
        preference_pairs(pipe, ["a", "b", "c"], brightness, tmp_path, **kwargs)
    assert calls == [False] * 3 + [True]  # of prompt 1's three chunks, only the one in hand was made
    assert shard_path(tmp_path, 0).is_file() and not shard_path(tmp_path, 1).exists()
    monkeypatch.undo()
    again = preference_pairs(tiny_sd_pipeline(), ["a", "b", "c"], brightness, tmp_path, **kwargs)
    assert len(again.written) == 2 and again.skipped == [shard_path(tmp_path, 0)]


def test_freed_text_encoders_write_the_same_pairs(tmp_path):
    import gc
    import weakref

    pipe, prompts = tiny_sd_pipeline(), ["a", "b"]
    encoder = weakref.ref(pipe.text_encoder)
    kwargs = dict(n=3, pairs="best-worst", progress=False, num_inference_steps=1)
    kept = preference_pairs(tiny_sd_pipeline(), prompts, brightness, tmp_path / "kept", **kwargs)
    freed = preference_pairs(pipe, prompts, brightness, tmp_path / "freed", text_encoders="free", **kwargs)
    gc.collect()
    assert encoder() is None and pipe.text_encoder is None
    assert [p.read_bytes() for p in freed.written] == [p.read_bytes() for p in kept.written] and kept.rows == 2
