"""The predicted x0 of every kind of scheduler, read without stepping it."""

import copy

import diffusers
import pytest
import torch

from mst_clipiqa.integrations.pipelines.schedulers import predicted_x0, step_kwargs

SD_BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
CASES = [
    ("DDIMScheduler", {"clip_sample": False}),
    ("DDIMScheduler", {"clip_sample": False, "prediction_type": "v_prediction"}),
    ("DDPMScheduler", {"clip_sample": False}),
    ("EulerDiscreteScheduler", {}),
    ("EulerDiscreteScheduler", {"prediction_type": "v_prediction"}),
    ("EulerAncestralDiscreteScheduler", {"timestep_spacing": "trailing"}),
    ("LMSDiscreteScheduler", {}),
    ("LCMScheduler", {"clip_sample": False}),
]


def _unchanged(before: dict, after: dict) -> bool:
    """Every attribute as it was (LCM's boundary scalings add a constant ``sigma_data``, as its step does)."""
    return all(torch.equal(v, after[k]) if isinstance(v, torch.Tensor) else v == after[k]
               for k, v in before.items() if not isinstance(v, (list, dict)))


def _x0_of_a_step(scheduler, out, t, sample):
    probe = copy.deepcopy(scheduler)
    stepped = probe.step(out, t, sample, **step_kwargs(probe, [torch.Generator().manual_seed(0)]))
    x0 = getattr(stepped, "pred_original_sample", None)
    return x0 if x0 is not None else stepped.denoised


@pytest.mark.filterwarnings("ignore:The `scale_model_input` function should be called")
@pytest.mark.parametrize("name, options", CASES)
def test_matches_the_schedulers_own_x0_and_leaves_it_and_the_rng_untouched(name, options):
    scheduler = getattr(diffusers, name)(**SD_BETAS, **options)
    scheduler.set_timesteps(4)
    gen = torch.Generator().manual_seed(1)
    sample = torch.randn(1, 4, 8, 8, generator=gen) * float(scheduler.init_noise_sigma)
    for i, t in enumerate(scheduler.timesteps):
        out = torch.randn(1, 4, 8, 8, generator=gen)
        state, rng = copy.deepcopy(vars(scheduler)), torch.get_rng_state()
        x0 = predicted_x0(scheduler, out, i, t, sample)
        assert _unchanged(state, vars(scheduler)) and torch.equal(torch.get_rng_state(), rng)
        torch.testing.assert_close(x0, _x0_of_a_step(scheduler, out, t, sample), atol=1e-5, rtol=1e-5)
        sample = scheduler.step(out, t, sample, **step_kwargs(scheduler, [gen])).prev_sample


def test_dpm_solver_and_flow_matching():
    dpm = diffusers.DPMSolverMultistepScheduler(**SD_BETAS)
    dpm.set_timesteps(4)
    sample = torch.randn(1, 4, 8, 8)
    for i, t in enumerate(dpm.timesteps):
        out = torch.randn(1, 4, 8, 8)
        history = [m if m is None else m.clone() for m in dpm.model_outputs]
        x0 = predicted_x0(dpm, out, i, t, sample)
        assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(history, dpm.model_outputs))
        probe = copy.deepcopy(dpm)
        if probe.step_index is None:
            probe._init_step_index(t)
        torch.testing.assert_close(x0, probe.convert_model_output(out, sample=sample))
        sample = dpm.step(out, t, sample).prev_sample
    flow = diffusers.FlowMatchEulerDiscreteScheduler()
    flow.set_timesteps(1)  # one Euler step to sigma 0 lands on the predicted x0
    sample, velocity = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    x0 = predicted_x0(flow, velocity, 0, flow.timesteps[0], sample)
    torch.testing.assert_close(x0, flow.step(velocity, flow.timesteps[0], sample).prev_sample)


def test_unknown_prediction_type_is_a_clear_value_error():
    scheduler = diffusers.DDIMScheduler(**SD_BETAS)
    scheduler.register_to_config(prediction_type="score")
    scheduler.set_timesteps(2)
    sample = torch.zeros(1, 4, 8, 8)
    with pytest.raises(ValueError, match="prediction_type 'score'"):
        predicted_x0(scheduler, sample, 0, scheduler.timesteps[0], sample)
