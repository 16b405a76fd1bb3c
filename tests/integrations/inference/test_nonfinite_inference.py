"""A reward that returns NaN on some images or calls never wins a ranking, and never costs noise
optimisation or guidance the finite work done so far."""

import json
import math

import pytest
import torch

from mst_clipiqa.integrations import NoiseOptimizationConfig, best_of_n, guided_sample, optimize_noise, rank_images
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline, tiny_sd_turbo_pipeline

from .test_noise_optimization import PROMPT, make_reward


class NaNAt:
    """``reward`` with NaN for the images at ``positions`` of the calls numbered ``calls`` (all: None)."""

    def __init__(self, reward, positions, calls=None):
        self.reward, self.positions, self.calls, self.count = reward, positions, calls, 0

    def __call__(self, images, prompts):
        scores = self.reward(images, prompts)
        if self.calls is None or self.count in self.calls:
            hit = torch.zeros(len(scores), dtype=torch.bool)
            hit[[p for p in self.positions if p < len(scores)]] = True
            scores = torch.where(hit.to(scores.device), torch.nan, scores)
        self.count += 1
        return scores


def test_best_of_n_ranks_nan_candidates_last_and_names_their_seeds(tmp_path):
    reward = NaNAt(make_reward(), positions=[1, 4])
    with pytest.warns(RuntimeWarning, match=r"NaN for 2 of 6 candidates \(seeds \[11, 14\]\); they are ranked last"):
        ranking = best_of_n(tiny_sd_pipeline(), PROMPT, reward, n=6, seed=10, num_inference_steps=1)
    scores = ranking.scores
    assert sorted(ranking.seeds[-2:]) == [11, 14] and scores[-2:].isnan().all()
    assert torch.isfinite(scores[:4]).all() and torch.all(scores[:3] >= scores[1:4])
    assert math.isfinite(ranking.winner.score) and ranking.winner.seed not in (11, 14)
    paths = ranking.save(tmp_path, sheet=False)
    rows = json.loads(paths["json"].read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))["candidates"]
    assert [r["score"] for r in rows[-2:]] == [None, None]


def test_rank_images_puts_nan_last():
    images = torch.rand(5, 3, 32, 32)
    with pytest.warns(RuntimeWarning, match=r"NaN for 2 of 5 candidates \(images \['#0', '#3'\]\)"):
        ranking = rank_images(images, PROMPT, NaNAt(make_reward(), positions=[0, 3]))
    assert ranking.scores[:3].isfinite().all() and ranking.scores[3:].isnan().all()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"n": 0}, "n must be a positive integer"), ({"n": 2.0}, "n must be a positive integer"),
    ({"seeds": [1.5, 2]}, r"seeds must be integers, got 1.5 \(float\)"),
    ({"seeds": [1, 2.0]}, r"seeds must be integers, got 2.0"), ({"seed": 3.7}, r"seed must be integers, got 3.7"),
])
def test_best_of_n_count_and_seeds_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        best_of_n(tiny_sd_pipeline(), PROMPT, make_reward(), num_inference_steps=1, **{"n": 2, **kwargs})


def test_noise_optimisation_keeps_the_best_finite_iterate_when_the_reward_turns_nan():
    pipe, options = tiny_sd_turbo_pipeline(), dict(num_inference_steps=1, guidance_scale=0.0, progress_bar=False)
    plain = optimize_noise(pipe, PROMPT, make_reward(), NoiseOptimizationConfig(steps=3, **options))
    with pytest.warns(RuntimeWarning, match=r"the reward is nan at iteration 3: noise optimisation stops"):
        result = optimize_noise(pipe, PROMPT, NaNAt(make_reward(), [0], calls={3}),
                                NoiseOptimizationConfig(steps=6, **options))
    assert len(result.history) == 3 and result.stopped_early
    assert result.reward == max(plain.rewards) and torch.equal(result.image, plain.image)
    assert torch.isfinite(result.image).all() and torch.isfinite(result.noise).all()


def test_noise_optimisation_with_a_nan_start_is_a_clear_error():
    with pytest.raises(ValueError, match="iteration 0, for the start noise's image: there is no finite iterate"):
        optimize_noise(tiny_sd_turbo_pipeline(), PROMPT, NaNAt(make_reward(), [0]),
                       NoiseOptimizationConfig(steps=3, num_inference_steps=1, guidance_scale=0.0, progress_bar=False))


def test_guidance_leaves_a_nan_step_unguided_and_keeps_the_image():
    pipe, reward = tiny_sd_pipeline(), make_reward()
    common = dict(seeds=[5, 6], reward_scale=0.05, guided_steps=2, num_inference_steps=2, guidance_scale=1.0,
                  progress=False)
    with pytest.warns(RuntimeWarning, match=r"seed: steps \{6: \[1\]\}"):
        result = guided_sample(pipe, PROMPT, NaNAt(reward, [1], calls={1}), **common)
    clean = guided_sample(pipe, PROMPT, reward, **common)
    assert torch.isfinite(result.images).all() and torch.isfinite(result.rewards).all()
    assert torch.equal(result.images[0], clean.images[0])  # the other seed is guided as before
    assert not torch.equal(result.images[1], clean.images[1])  # its last step went unguided
