"""The policy's samplers: each recorded log-probability is the Gaussian log-density of its transition,
computed here independently from diffusers' own scheduler steps; the flow SDE keeps the ODE's marginals."""

import math

import pytest
import torch

from mst_clipiqa.integrations.finetune import gaussian_kl
from mst_clipiqa.integrations.pipelines import StochasticSampler
from mst_clipiqa.integrations.pipelines.lora import adapters_disabled, add_lora
from mst_clipiqa.integrations.pipelines.tiny import (
    tiny_flux_pipeline,
    tiny_lcm_pipeline,
    tiny_sd3_pipeline,
    tiny_sd_pipeline,
    tiny_sdxl_pipeline,
)
from mst_clipiqa.integrations.pipelines.transitions import flow_sde_mean, flow_sde_sigma, flow_sde_std

PROMPTS, SEEDS = ["a cat", "a red car"], [3, 11]


def _normal_log_prob(sample, mean, std):
    return torch.distributions.Normal(mean.double(), float(std)).log_prob(sample.double()).flatten(1).mean(1)


def _independent_ddim(sampler, out, i, x):
    sched, t = sampler.scheduler, sampler.timesteps[i]
    mean = sched.step(out, t, x, eta=sampler.eta, variance_noise=torch.zeros_like(x), return_dict=False)[0]
    prev = t - sched.config.num_train_timesteps // sched.num_inference_steps
    return mean, sampler.eta * float(sched._get_variance(t, prev)) ** 0.5


def _independent_lcm(sampler, out, i, x):
    sched = sampler.scheduler
    sched._step_index = i
    denoised = sched.step(out, sampler.timesteps[i], x, return_dict=False)[1]
    alpha_prev = float(sched.alphas_cumprod[int(sampler.timesteps[i + 1])])
    return alpha_prev**0.5 * denoised, (1 - alpha_prev) ** 0.5


def _independent_flow(sampler, out, i, x):
    sched = sampler.scheduler
    t, t_next = float(sched.sigmas[i]), float(sched.sigmas[i + 1])
    sched._step_index = i
    euler = sched.step(out, sampler.timesteps[i], x, return_dict=False)[0]  # x + v dt, diffusers' sign of dt
    denominator = 1 - (float(sched.sigmas[1]) if t == 1 else t)
    constant = sampler.sigma_schedule == "constant"  # DanceGRPO
    sigma = sampler.noise_level * (1.0 if constant else math.sqrt(t / denominator))
    mean = euler + sigma**2 / (2 * t) * (x + (1 - t) * out) * (t_next - t)
    return mean, sigma * math.sqrt(t - t_next)


CASES = {
    "sd-cfg": (tiny_sd_pipeline, dict(guidance_scale=5.0, eta=1.0), _independent_ddim),
    "sdxl": (tiny_sdxl_pipeline, dict(guidance_scale=1.0, eta=0.7), _independent_ddim),
    "lcm": (tiny_lcm_pipeline, dict(), _independent_lcm),
    "sd3-cfg": (tiny_sd3_pipeline, dict(guidance_scale=4.0, noise_level=0.7), _independent_flow),
    "flux": (tiny_flux_pipeline, dict(noise_level=0.9), _independent_flow),
    "flux-constant": (tiny_flux_pipeline, dict(noise_level=0.5, sigma_schedule="constant"), _independent_flow),
}


@pytest.mark.parametrize("name", list(CASES))
def test_recorded_log_prob_is_the_transitions_gaussian_log_density(name):
    make, kwargs, independent = CASES[name]
    sampler = StochasticSampler(make(), num_steps=3, **kwargs)
    model = sampler.family.denoiser
    rollout = sampler.rollout(model, PROMPTS, SEEDS)
    assert rollout.steps and rollout.log_probs.shape == (2, len(rollout.steps))
    cond = sampler.conditioning(rollout.embeds)
    for k, i in enumerate(rollout.steps):
        x = rollout.latents[:, k]
        with torch.no_grad():
            out = sampler.prediction(model, x, i, cond).float()
        mean, std = independent(sampler, out, i, x)
        expected = _normal_log_prob(rollout.next_latents[:, k], mean, std)
        torch.testing.assert_close(rollout.log_probs[:, k].double(), expected, atol=1e-5, rtol=0)


def test_ratio_is_one_and_kl_zero_before_the_first_update():
    sampler = StochasticSampler(tiny_sd3_pipeline(), num_steps=3, guidance_scale=3.0)
    model = sampler.family.denoiser
    add_lora(model, rank=2, seed=0)
    rollout = sampler.rollout(model, PROMPTS, SEEDS)
    for k in range(len(rollout.steps)):
        out = sampler.step_output(model, rollout, k)
        assert torch.equal(torch.exp(out.log_prob - rollout.log_probs[:, k]), torch.ones(2))
        with torch.no_grad(), adapters_disabled(model):
            ref = sampler.step_output(model, rollout, k)
        assert torch.equal(gaussian_kl(out.mean, ref.mean, out.std), torch.zeros(2))


@pytest.mark.parametrize("make, kwargs", [(tiny_sd_pipeline, dict(guidance_scale=5.0)),
                                          (tiny_sd3_pipeline, dict(guidance_scale=3.0)),
                                          (tiny_flux_pipeline, dict(noise_level=0.9))])
def test_steps_recomputed_in_one_call_match_the_per_step_loop(make, kwargs):
    """Every recorded step in one denoiser call (each row at its own timestep, guidance's halves lined up)
    gives the per-step recomputation's log-probabilities and means, and the same gradients."""
    sampler = StochasticSampler(make(), num_steps=3, **kwargs)
    model = sampler.family.denoiser
    add_lora(model, rank=2, seed=0)
    params = [p for p in model.parameters() if p.requires_grad]
    with torch.no_grad():  # a LoRA that is not zero, so its gradients depend on every step's input
        for p in params:
            p.add_(0.01 * torch.randn_like(p))
    rollout = sampler.rollout(model, PROMPTS, SEEDS)
    ks = list(range(len(rollout.steps)))
    assert len(ks) >= 2
    batched = sampler.step_outputs(model, rollout, ks)
    grads = torch.autograd.grad(sum(o.log_prob.sum() for o in batched), params)
    looped = [sampler.step_output(model, rollout, k) for k in ks]
    expected = torch.autograd.grad(sum(o.log_prob.sum() for o in looped), params)
    for k, one, many in zip(ks, looped, batched):
        torch.testing.assert_close(many.log_prob, one.log_prob, atol=1e-5, rtol=0)
        torch.testing.assert_close(many.log_prob, rollout.log_probs[:, k], atol=1e-5, rtol=0)
        torch.testing.assert_close(many.mean, one.mean, atol=1e-5, rtol=1e-5)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("make", [tiny_sd_pipeline, tiny_sd3_pipeline])
def test_deterministic_steps_are_the_schedulers_own(make):
    sampler = StochasticSampler(make(), num_steps=3, guidance_scale=1.0)
    latents = torch.randn(2, *sampler.family.latent_shape(1, sampler.height, sampler.width)[1:])
    out = torch.randn_like(latents)
    for i in range(3):
        sampler.scheduler._step_index = i
        kw = {"eta": 0.0} if sampler.kind == "ddim" else {}
        expected = sampler.scheduler.step(out, sampler.timesteps[i], latents, **kw, return_dict=False)[0]
        torch.testing.assert_close(sampler.transition_mean(out, i, latents, stochastic=False), expected)


def test_sde_window_records_only_its_steps_and_runs_the_ode_elsewhere():
    sampler = StochasticSampler(tiny_sd3_pipeline(), num_steps=4, guidance_scale=1.0, sde_window=(1, 3))
    model = sampler.family.denoiser
    rollout = sampler.rollout(model, PROMPTS, SEEDS)
    assert rollout.steps == [1, 2]
    noise, _ = sampler.family.initial_noise(SEEDS, sampler.height, sampler.width, torch.float32)
    x, _ = sampler.family.start(sampler.scheduler, noise, 4)
    with torch.no_grad():
        out = sampler.prediction(model, x, 0, sampler.conditioning(rollout.embeds))
    torch.testing.assert_close(rollout.latents[:, 0], sampler.transition_mean(out, 0, x, stochastic=False))
    with pytest.raises(ValueError, match="sde_window"):
        StochasticSampler(tiny_sd3_pipeline(), num_steps=4, sde_window=(3, 6))


def test_lcm_default_window_leaves_out_its_deterministic_last_step():
    sampler = StochasticSampler(tiny_lcm_pipeline(), num_steps=3)
    assert sampler.steps == [0, 1]


def _toy_marginals(noise_level, schedule, sign=1.0, steps=400, n=20000, m=1.5, s=0.5):
    """x0 ~ N(m, s^2) elementwise: the exact velocity E[noise - x0 | x_t] is linear in x_t."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, generator=gen, dtype=torch.float64)
    ts = torch.linspace(1, 0, steps + 1, dtype=torch.float64).tolist()
    for t, t_next in zip(ts[:-1], ts[1:]):
        var = (1 - t) ** 2 * s**2 + t**2
        centred = x - (1 - t) * m
        v = t / var * centred - (m + (1 - t) * s**2 / var * centred)
        sigma = flow_sde_sigma(t, noise_level, schedule, t_cap=ts[1])
        dt = t_next - t
        if sign > 0:
            mean = flow_sde_mean(x, v, t, t_next, sigma)
        else:
            mean = x + (v - sigma**2 / (2 * t) * (x + (1 - t) * v)) * dt
        x = mean + flow_sde_std(t, t_next, sigma) * torch.randn(n, generator=gen, dtype=torch.float64)
    return float(x.mean()), float(x.var())


@pytest.mark.parametrize("schedule,level", [("flow_grpo", 0.7), ("constant", 0.7)])
def test_flow_sde_keeps_the_odes_marginals_on_a_gaussian_toy(schedule, level):
    mean, var = _toy_marginals(level, schedule)
    assert abs(mean - 1.5) < 0.03 and abs(var - 0.25) < 0.03
    wrong_mean, wrong_var = _toy_marginals(level, schedule, sign=-1.0)
    assert abs(wrong_var - 0.25) > 0.1  # the other sign of the score correction does not keep them
