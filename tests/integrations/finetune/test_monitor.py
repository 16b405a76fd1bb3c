import math

import pytest
import torch

from mst_clipiqa.integrations import generate_candidates
from mst_clipiqa.integrations.finetune.monitor import HackingMonitor, diversity, image_features, pipeline_sampler
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
from mst_clipiqa.reward import MSTCLIPIQAReward


def brightness(images):
    return images.mean(dim=(1, 2, 3))


def _seeded(seeds, size=16):
    return torch.stack([torch.rand(3, size, size, generator=torch.Generator().manual_seed(s)) for s in seeds])


class LevelRun:
    """A constructed run: its one weight is the image brightness it samples, raised a little every step."""

    def __init__(self):
        self.level = 0.2

    def sample(self, prompts, seeds):
        return (self.level + 0.02 * (_seeded(seeds) - 0.5)).clamp(0, 1)

    def state(self):
        return {"level": torch.tensor(self.level)}


def _run(run, monitor, steps=20, rate=0.05):
    for step in range(steps):
        monitor(step, state=run.state)
        if monitor.should_stop:
            return step
        run.level += rate
    return None


def test_rising_reward_with_a_disagreeing_monitor_stops_early_and_keeps_the_monitors_best(tmp_path):
    run = LevelRun()
    # The monitor prefers brightness 0.5; the reward (brightness) keeps rising past it.
    peaked = lambda images: -(brightness(images) - 0.5) ** 2
    logged = []
    monitor = HackingMonitor(run.sample, peaked, ["a", "b"], [0, 1, 2], reward=brightness, every=2, patience=2,
                             log=lambda record, step: logged.append(step))
    stopped_at = _run(run, monitor)
    assert monitor.best_step == 6  # level 0.2 + 6 * 0.05 = 0.5
    assert stopped_at == 10  # two evaluations (steps 8, 10) without improvement
    assert float(monitor.best_state["level"]) == pytest.approx(0.5)
    assert logged == [0, 2, 4, 6, 8, 10] == [r["step"] for r in monitor.records]
    rewards = [r["reward"] for r in monitor.records]
    assert rewards == sorted(rewards) and monitor.records[-1]["monitor"] < monitor.records[3]["monitor"]
    assert monitor.plot(tmp_path / "monitor.png").stat().st_size > 0


def test_pipeline_sampler_gives_each_prompt_and_seed_its_best_of_n_image():
    pipe = tiny_sd_pipeline()
    sample = pipeline_sampler(pipe, num_inference_steps=1)
    images = sample(["a", "b", "a"], [3, 4, 5])
    assert torch.equal(images[[0, 2]], generate_candidates(pipe, "a", [3, 5], progress=False, num_inference_steps=1))
    assert torch.equal(images[1], generate_candidates(pipe, "b", [4], progress=False, num_inference_steps=1)[0])


def test_no_early_stop_while_the_reward_falls_with_the_monitor():
    run = LevelRun()
    run.level = 0.9
    monitor = HackingMonitor(run.sample, brightness, ["a"], [0, 1], reward=brightness, every=1, patience=2)
    assert _run(run, monitor, steps=8, rate=-0.05) is None  # both fall: no hacking, no stop
    assert monitor.best_step == 0 and float(monitor.best_state["level"]) == pytest.approx(0.9)


@pytest.mark.parametrize("clip", [False, True])
def test_logged_diversity_drops_for_a_collapsing_run(clip, tiny_models):
    common = _seeded([99])[0]
    mix = {"c": 0.0}

    def sample(prompts, seeds):
        return (1 - mix["c"]) * _seeded(seeds) + mix["c"] * common

    reward = MSTCLIPIQAReward(tiny_models()).eval() if clip else None
    monitor = HackingMonitor(sample, brightness, ["a", "b"], [0, 1, 2, 3], reward=reward, every=1)
    for step, c in enumerate((0.0, 0.5, 0.9, 1.0)):
        mix["c"] = c
        monitor(step)
    values = [r["diversity"] for r in monitor.records]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert values[-1] == pytest.approx(0.0, abs=1e-5) and values[0] > 0.01


def test_features_are_the_rewards_clip_embeddings_when_it_has_them(tiny_models):
    images = _seeded([0, 1, 2])
    reward = MSTCLIPIQAReward(tiny_models()).eval()
    clip = image_features(images, None, {"mst": reward})
    assert clip.shape == (3, tiny_models().encode_images(images)[0].shape[1])
    assert torch.allclose(clip.norm(dim=1), torch.ones(3), atol=1e-5)
    pixels = image_features(images, brightness)
    assert pixels.shape == (3, 3 * 16 * 16)
    assert diversity(pixels) == pytest.approx(float(torch.pdist(images.flatten(1)).mean()) / (3 * 16 * 16) ** 0.5)


def test_bad_settings_are_named():
    sample = LevelRun().sample
    with pytest.raises(ValueError, match="at least 2 samples"):
        HackingMonitor(sample, brightness, ["a"], [0])
    with pytest.raises(ValueError, match="every must be"):
        HackingMonitor(sample, brightness, ["a"], [0, 1], every=0)
    with pytest.raises(ValueError, match="patience must be"):
        HackingMonitor(sample, brightness, ["a"], [0, 1], patience=0)
    with pytest.raises(ValueError, match="N >= 2"):
        diversity(torch.zeros(1, 4))


def test_a_monitor_that_cannot_score_says_so_and_one_that_partly_can_warns():
    from mst_clipiqa.integrations.finetune.monitor import MonitorError

    run = LevelRun()
    never = HackingMonitor(run.sample, lambda images: brightness(images) * float("nan"), ["a"], [0, 1],
                           reward=brightness, every=1, patience=2)
    with pytest.raises(MonitorError, match=r"cannot score: it returned NaN or inf for all 2 held-out images at step 0"):
        _run(run, never)  # was a bare StopIteration once patience ran out
    assert never.records == []

    def half(images):
        scores = brightness(images).clone()
        scores[0] = float("nan")
        return scores

    partly = HackingMonitor(run.sample, half, ["a"], [0, 1, 2], reward=brightness, every=1, patience=2)
    with pytest.warns(RuntimeWarning, match="NaN or inf for 1 of 3 held-out images at step 0; its record averages"):
        record = partly(0, state=run.state)
    assert math.isfinite(record["monitor"])


def _count_encodes(model, monkeypatch):
    encoded = []
    encode = model.encode_images
    monkeypatch.setattr(model, "encode_images", lambda images, tokens=False: encoded.append(len(images))
                        or encode(images, tokens))
    return encoded


def test_an_mst_clipiqa_reward_gives_the_monitor_its_scores_sigma_and_diversity_in_one_pass(tiny_models,
                                                                                            monkeypatch):
    model = tiny_models()
    reward = MSTCLIPIQAReward(model).eval()
    encoded = _count_encodes(model, monkeypatch)
    monitor = HackingMonitor(lambda prompts, seeds: _seeded(seeds), brightness, ["a"], [0, 1, 2], reward=reward,
                             score_batch_size=2)
    record = monitor.evaluate(0)
    assert encoded == [2, 1]  # the held-out grid once, in batches of score_batch_size, diversity included
    monkeypatch.undo()
    alone = reward(_seeded([0, 1, 2]), return_uncertainty=True)
    assert record["reward"] == pytest.approx(float(alone.scores.mean()), rel=1e-5)
    assert record["reward_sigma"] == pytest.approx(float(alone.sigma.mean()), rel=1e-5)
    assert record["diversity"] == pytest.approx(diversity(image_features(_seeded([0, 1, 2]), reward)), rel=1e-5)
    assert "reward_sigma" not in HackingMonitor(lambda p, s: _seeded(s), brightness, ["a"], [0, 1],
                                                reward=brightness).evaluate(0)


def test_an_mst_clipiqa_monitor_gives_the_diversity_from_its_scoring_pass_when_the_reward_cannot(tiny_models,
                                                                                                monkeypatch):
    model = tiny_models("B")
    judge = MSTCLIPIQAReward(model).eval()
    encoded = _count_encodes(model, monkeypatch)
    monitor = HackingMonitor(lambda prompts, seeds: _seeded(seeds), {"mst": judge}, ["a", "b"], [0, 1],
                             reward=brightness)
    record = monitor.evaluate(0)
    assert encoded == [4]  # one pass scores the monitor and embeds the images
    monkeypatch.undo()
    images = _seeded([0, 1, 0, 1])
    assert record["monitor"] == pytest.approx(float(judge(images, ["a", "a", "b", "b"]).mean()), rel=1e-5)
    assert record["diversity"] == pytest.approx(diversity(image_features(images, judge)), rel=1e-5)
