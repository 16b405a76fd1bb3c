"""Initial-noise optimisation (ReNO) on tiny one-step and few-step pipelines (offline).

Margins: the tiny reward (template head, scores in [1, 5]) rates plain samples of
these pipelines 1.97 +- 0.6 (mean +- std over 100 seeds). Best-of-N is already the
top of N draws (about +1.3 std for N = 6), so noise optimisation must beat it, at
the same number of reward evaluations, by half a standard deviation (0.3) and by 4
paired standard errors: a gain no luckier draw of seeds gives.
"""

import functools
import math

import pytest
import torch
from safetensors.torch import load_file

from mst_clipiqa.integrations import (
    NoiseOptimizationConfig,
    add_lora,
    best_of_n,
    chi_nll,
    load_lora,
    optimize_noise,
    save_lora,
)
from mst_clipiqa.integrations.pipelines.tiny import (
    TINY_PIPELINES,
    tiny_lcm_pipeline,
    tiny_sd_pipeline,
    tiny_sd_turbo_pipeline,
)
from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward

from ..finetune.test_finetuner import assert_clearly_higher

PROMPT = "a red car"
# name -> (pipeline, sampler steps, CFG scale, gradient_steps K): SD-Turbo's one step; LCM's 4, DRaFT-K = 1
SAMPLERS = {"turbo": (tiny_sd_turbo_pipeline, 1, 0.0, None), "lcm": (tiny_lcm_pipeline, 4, 1.0, 1)}
SEEDS, BUDGET = range(6), 6
D = 4 * 16 * 16  # noise elements of a 32 px image
# 99.7 % of Gaussian noise norms: the chi(D) mode sqrt(D - 1) +- 3 std (std -> 1 / sqrt(2))
BAND = (math.sqrt(D - 1) - 3 / math.sqrt(2), math.sqrt(D - 1) + 3 / math.sqrt(2))


def make_reward() -> MSTCLIPIQAReward:
    torch.manual_seed(0)
    return MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny(variant="A"))).eval()


@functools.cache
def shared(name: str):
    """One pipeline per sampler for the tests that leave it as it is (optimize_noise never changes it)."""
    return SAMPLERS[name][0]()


def run(name: str, reward, *, pipe=None, noise=None, monitor=None, **settings):
    _, steps, guidance, k = SAMPLERS[name]
    options = dict(num_inference_steps=steps, guidance_scale=guidance, gradient_steps=k, progress_bar=False)
    config = NoiseOptimizationConfig(**{**options, **settings})
    return optimize_noise(pipe or shared(name), PROMPT, reward, config, noise=noise, monitor=monitor)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_optimised_sample_beats_its_start_and_best_of_n_at_equal_evaluations(name):
    _, steps, guidance, _ = SAMPLERS[name]
    pipe, reward = shared(name), make_reward()
    results = [run(name, reward, pipe=pipe, steps=BUDGET, seed=s) for s in SEEDS]
    assert all(len(r.history) == BUDGET for r in results)  # one reward evaluation per iteration
    start = torch.tensor([r.initial_reward for r in results])
    optimised = torch.tensor([r.reward for r in results])
    # best-of-N through the pipeline's own __call__, the start seed among its N candidates
    best = torch.tensor([best_of_n(pipe, PROMPT, reward, seeds=[s + 10_000 * j for j in range(BUDGET)],
                                   chunk_size=BUDGET, progress=False, num_inference_steps=steps,
                                   guidance_scale=guidance).winner.score for s in SEEDS])
    assert (best >= start - 1e-4).all()
    assert_clearly_higher(start, optimised, margin=1.0)
    assert_clearly_higher(best, optimised, margin=0.3)


def test_gradients_reach_the_noise_only_also_through_a_loaded_lora(tmp_path):
    tuned = tiny_sd_turbo_pipeline()
    add_lora(tuned.unet)
    for name, p in tuned.unet.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    save_lora(tuned, tuned.unet, tmp_path)
    pipe, reward = tiny_sd_turbo_pipeline(), make_reward()
    load_lora(pipe, tmp_path)
    modules = {**{n: m for n, m in pipe.components.items() if isinstance(m, torch.nn.Module)}, "reward": reward}
    flags = {(owner, n): p.requires_grad for owner, m in modules.items() for n, p in m.named_parameters()}
    result = run("turbo", reward, pipe=pipe, steps=3, seed=1)
    assert (result.noise - result.initial_noise).abs().max() > 1e-3  # the gradient moved the noise
    assert torch.isfinite(result.noise).all()
    with_grad = [key for key in flags if dict(modules[key[0]].named_parameters())[key[1]].grad is not None]
    assert with_grad == []
    assert {(o, n): p.requires_grad for o, m in modules.items() for n, p in m.named_parameters()} == flags
    assert any(requires for (owner, n), requires in flags.items() if "lora" in n)  # trainable LoRA, untouched


def test_regulariser_keeps_the_noise_norm_where_gaussian_noise_lies():
    reward = make_reward()
    held = run("turbo", reward, steps=15, seed=1, regularization=0.01)  # ReNO's weight
    free = run("turbo", reward, steps=15, seed=1, regularization=0.0)
    norms = [r["noise_norm"] for r in held.history]
    assert BAND[0] < min(norms) and max(norms) < BAND[1], (BAND, norms)
    assert max(r["noise_norm"] for r in free.history) > BAND[1]  # without it the norm drifts out
    assert held.reward > held.initial_reward + 1.0


def test_chi_nll_is_lowest_at_the_gaussian_norm():
    direction = torch.nn.functional.normalize(torch.randn(1, D), dim=1)
    radii = torch.tensor([20.0, math.sqrt(D - 1), 45.0])
    values = torch.cat([chi_nll(direction * r) for r in radii])
    assert values[1] < values[0] and values[1] < values[2]


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_kept_result_reproduces_from_its_stored_noise(name, tmp_path):
    pipe = shared(name)
    result = run(name, make_reward(), pipe=pipe, steps=4, seed=3)
    with torch.no_grad():  # LCM's steps draw noise too: the stored seed replays it
        image = pipe(PROMPT, output_type="pt", **result.pipe_kwargs()).images[0]
    torch.testing.assert_close(image, result.image, atol=1e-5, rtol=0)
    paths = result.save(tmp_path)
    assert torch.equal(load_file(paths["noise"])["noise"], result.noise)
    assert {p.name for p in tmp_path.iterdir()} == {"before.png", "after.png", "reward_curve.png",
                                                     "noise.safetensors", "result.json"}


def test_a_disagreeing_monitor_stops_the_run_and_keeps_what_came_before_its_best():
    reward = make_reward()
    disagreeing = lambda images, prompts: -reward(images, prompts)  # falls while the reward rises
    stopped = run("turbo", reward, steps=20, seed=2, monitor=disagreeing, patience=3)
    assert stopped.stopped_early and len(stopped.history) == 4
    assert stopped.iteration == 0 and stopped.reward == stopped.initial_reward
    agreeing = run("turbo", reward, steps=6, seed=2, monitor=reward, patience=3)
    assert not agreeing.stopped_early and len(agreeing.history) == 6
    assert agreeing.reward == max(agreeing.rewards)


def test_weighted_named_outputs_and_a_trl_reward():
    quality = make_reward()

    def trl_reward(images, prompts, metadata):
        return images.mean(dim=(1, 2, 3)), {}

    result = run("turbo", {"quality": quality, "bright": trl_reward}, steps=4, seed=0,
                 reward_weights={"quality": 1.0, "bright": 0.5})
    for record in result.history:
        assert record["reward"] == pytest.approx(record["quality"] + 0.5 * record["bright"], abs=1e-5)
    assert result.reward > result.initial_reward


def test_draft_plus_penalty_needs_a_lora_and_is_recorded():
    reward = make_reward()
    with pytest.raises(ValueError, match="has no LoRA"):
        run("turbo", reward, steps=2, base_distance_coeff=1.0)
    pipe = tiny_sd_turbo_pipeline()
    add_lora(pipe.unet)
    for name, p in pipe.unet.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    result = run("turbo", reward, pipe=pipe, steps=2, base_distance_coeff=1.0)
    assert all(r["penalty"] > 0 for r in result.history)


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": 0}, "steps must be an integer >= 1"),
    ({"lr": -1.0}, "lr must be a finite number > 0"),
    ({"lr": float("nan")}, "lr must be"),
    ({"momentum": 1.0}, r"momentum must be in \[0, 1\)"),
    ({"regularization": -0.1}, "regularization must be"),
    ({"grad_clip": 0.0}, "grad_clip must be a number > 0 or None"),
    ({"gradient_steps": 2}, r"gradient_steps must be in \[1, num_inference_steps=1\]"),
    ({"patience": 0}, "patience must be"),
    ({"base_distance_coeff": -1.0}, "base_distance_coeff must be"),
    ({"num_inference_steps": 0}, "num_inference_steps must be an integer >= 1"),
    ({"noise": torch.randn(1, 4, 8, 8)}, r"noise must be a tensor of shape \(1, 4, 16, 16\)"),
    ({"noise": torch.full((1, 4, 16, 16), float("nan"))}, "NaN or inf"),
    ({"height": 31}, "multiples of 2"),
])
def test_bad_arguments_are_clear_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run("turbo", make_reward(), **kwargs)


def test_a_list_of_prompts_or_an_unregistered_pipeline_is_refused():
    with pytest.raises(ValueError, match="prompt must be one string"):
        optimize_noise(tiny_sd_pipeline(), ["a", "b"], make_reward())
    with pytest.raises(ValueError, match="not a registered pipeline family"):
        optimize_noise(object(), PROMPT, make_reward())


@pytest.mark.parametrize("name", ["sd", "sdxl", "sd3", "flux", "pixart"])
def test_every_family_is_optimised(name):
    """Two sampler steps, gradients through both: 3 iterations gain 1.0 to 1.7 on every family (measured); the
    margin, 0.5, is most of a standard deviation of plain samples (0.6)."""
    extra = {"sd3": {"max_sequence_length": 8}, "flux": {"max_sequence_length": 16},
             "pixart": {"max_sequence_length": 16, "clean_caption": False}}.get(name, {})
    config = NoiseOptimizationConfig(steps=3, num_inference_steps=2, guidance_scale=1.0, progress_bar=False,
                                     encode_kwargs=extra)
    result = optimize_noise(TINY_PIPELINES[name](), PROMPT, make_reward(), config)
    assert result.reward > result.initial_reward + 0.5


def test_the_old_keywords_still_work_naming_their_config_fields():
    reward = make_reward()
    with pytest.warns(DeprecationWarning, match=r"steps= -> steps=; weights= -> reward_weights=; progress= -> "
                                                r"progress_bar=; .*max_sequence_length= -> encode_kwargs="):
        old = optimize_noise(shared("turbo"), PROMPT, {"quality": reward}, steps=2, weights={"quality": 2.0},
                             progress=False, num_inference_steps=1, guidance_scale=0.0, max_sequence_length=77)
    new = optimize_noise(shared("turbo"), PROMPT, {"quality": reward},
                         NoiseOptimizationConfig(steps=2, reward_weights={"quality": 2.0}, progress_bar=False,
                                                 num_inference_steps=1, guidance_scale=0.0,
                                                 encode_kwargs={"max_sequence_length": 77}))
    assert old.rewards == new.rewards and torch.equal(old.noise, new.noise)


def test_the_region_aware_reward_moves_the_noise_and_never_the_rewards_weights():
    reward = make_reward()
    result = run("turbo", functools.partial(reward.region_score, temperature=0.1), steps=2, seed=1)
    assert (result.noise - result.initial_noise).abs().max() > 1e-3 and torch.isfinite(result.noise).all()
    assert all(p.grad is None for p in reward.parameters())
    kept = reward.region_score(result.image[None].float(), [PROMPT], temperature=0.1)
    assert result.reward == pytest.approx(float(kept), abs=1e-4)  # what it optimised: the soft minimum
    assert abs(result.reward - float(reward(result.image[None].float(), [PROMPT]))) > 1e-3  # not the plain score
