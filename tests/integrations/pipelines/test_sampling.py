"""The shared differentiable loop, decoding and prompt encoding, on tiny pipelines (offline)."""

import copy

import pytest
import torch

from mst_clipiqa.integrations import add_lora, decode_latents, denoise, denoiser_family, straight_through_clamp
from mst_clipiqa.integrations.pipelines.sampling import step_kwargs
from mst_clipiqa.integrations.pipelines.tiny import TINY_PIPELINES, tiny_sd_pipeline

EXTRA = {"sd3": {"max_sequence_length": 8}, "flux": {"max_sequence_length": 16},
         "pixart": {"max_sequence_length": 16, "clean_caption": False, "use_resolution_binning": False}}


def run_loop(pipe, prompts, seeds, steps=3, guidance=1.0, encode_kwargs=None, **denoise_kwargs):
    family = denoiser_family(pipe)
    scheduler = copy.deepcopy(pipe.scheduler)
    height, width = family.default_size()
    embeds = family.encode(prompts, guidance=family.uses_cfg(guidance), **(encode_kwargs or {}))
    cond = family.conditioning(embeds, guidance, height, width)
    latents, timesteps, generators = family.prepare(scheduler, seeds, height, width, steps, torch.float32)
    out = denoise(family, family.denoiser, scheduler, latents, cond, timesteps, guidance_scale=guidance,
                  extra_step_kwargs=step_kwargs(scheduler, generators), **denoise_kwargs)
    return out, family, height, width


@pytest.mark.parametrize("guidance", [1.0, 3.0])
@pytest.mark.parametrize("name", ["sd", "sdxl", "sd3", "flux", "pixart", "lcm"])
def test_loop_reproduces_the_pipelines_own_sampling(name, guidance):
    pipe = TINY_PIPELINES[name]()
    extra = EXTRA.get(name, {})
    prompts, seeds = ["a red car", "a cat"], [5, 6]
    expected = pipe(prompts, num_inference_steps=3, guidance_scale=guidance, output_type="pt",
                    generator=[torch.Generator().manual_seed(s) for s in seeds], **extra).images
    with torch.no_grad():
        out, family, h, w = run_loop(pipe, prompts, seeds, guidance=guidance, encode_kwargs=extra)
        images = decode_latents(pipe.vae, family.vae_latents(out.latents, h, w))
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name, scheduler, steps, guidance", [
    ("sd", "EulerAncestralDiscreteScheduler", 1, 0.0),  # SD-Turbo
    ("sdxl", "EulerAncestralDiscreteScheduler", 1, 0.0),  # SDXL-Turbo
    ("sdxl", "LCMScheduler", 2, 1.0),  # LCM-LoRA on SDXL
])
def test_distilled_few_step_sampling_is_reproduced(name, scheduler, steps, guidance):
    import diffusers

    pipe = TINY_PIPELINES[name]()
    pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config, timestep_spacing="trailing")
    prompts, seeds = ["a red car", "a cat"], [5, 6]
    expected = pipe(prompts, num_inference_steps=steps, guidance_scale=guidance, output_type="pt",
                    generator=[torch.Generator().manual_seed(s) for s in seeds]).images
    with torch.no_grad():
        out, family, h, w = run_loop(pipe, prompts, seeds, steps=steps, guidance=guidance)
        images = family.decode(out.latents, h, w)
    torch.testing.assert_close(images, expected, atol=1e-5, rtol=0)


def test_per_trajectory_cutoff_keeps_gradients_only_where_asked():
    pipe = tiny_sd_pipeline()
    add_lora(pipe.unet)
    lora = [p for n, p in pipe.unet.named_parameters() if "lora_B" in n]  # A gets no gradient while B = 0
    out, *_ = run_loop(pipe, ["a", "b"], [1, 2], steps=3, grad_from=torch.tensor([1, 3]))  # 3 = no gradient
    first = torch.autograd.grad(out.latents[0].sum(), lora, retain_graph=True, allow_unused=True)
    second = torch.autograd.grad(out.latents[1].sum(), lora, allow_unused=True)
    assert any(g is not None and g.abs().max() > 0 for g in first)
    assert all(g is None or g.abs().max() == 0 for g in second)


def test_no_grad_by_default_and_refl_stop_returns_x0_with_grad():
    pipe = tiny_sd_pipeline()
    add_lora(pipe.unet)
    plain, *_ = run_loop(pipe, ["a"], [1], steps=4)
    assert plain.latents.grad_fn is None
    stopped, *_ = run_loop(pipe, ["a"], [1], steps=4, grad_from=2, stop_at=2)
    assert stopped.latents.requires_grad and stopped.latents.shape == plain.latents.shape


def test_checkpointing_changes_memory_not_gradients():
    pipe = tiny_sd_pipeline()
    add_lora(pipe.unet)
    torch.manual_seed(0)
    for p in pipe.unet.parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.05)  # non-zero LoRA B so every path carries gradient
    lora = [p for p in pipe.unet.parameters() if p.requires_grad]
    grads = []
    for checkpointing in (False, True):
        out, *_ = run_loop(pipe, ["a"], [1], steps=3, grad_from=0, gradient_checkpointing=checkpointing)
        grads.append(torch.autograd.grad(out.latents.square().mean(), lora))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_decode_is_chunked_checkpointed_and_keeps_gradients():
    vae = tiny_sd_pipeline().vae
    latents = (torch.randn(3, 4, 16, 16) * 3).requires_grad_(True)
    whole = decode_latents(vae, latents, chunk_size=3, gradient_checkpointing=False)
    (grad_whole,) = torch.autograd.grad(whole.sum(), latents)
    chunked = decode_latents(vae, latents, chunk_size=1, gradient_checkpointing=True)
    (grad_chunked,) = torch.autograd.grad(chunked.sum(), latents)
    assert whole.shape == (3, 3, 32, 32) and whole.min() >= 0 and whole.max() <= 1
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad_chunked, grad_whole, atol=1e-5, rtol=1e-4)


def test_straight_through_clamp_passes_gradient_where_clamp_cuts_it():
    x = torch.tensor([-0.5, 0.5, 1.5], requires_grad=True)
    y = straight_through_clamp(x)
    assert y.tolist() == [0.0, 0.5, 1.0]
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert grad.tolist() == [1.0, 1.0, 1.0]


def test_unsupported_pipeline_is_a_clear_value_error():
    class NoDenoiser:
        pass

    with pytest.raises(ValueError, match="NoDenoiser is not a registered pipeline family .*register_family"):
        denoiser_family(NoDenoiser())


@pytest.mark.parametrize("stop_at", [None, 0, 2])
def test_every_stop_at_passes_one_interruption_point_per_step(stop_at):
    """Processes of one run stop ReFL trajectories at different steps but must agree at as many points."""
    from mst_clipiqa.runtime.preemption import interruptible

    asked = []
    with interruptible(requested=lambda: asked.append(1) or 0):
        run_loop(tiny_sd_pipeline(), ["a"], [1], steps=4, grad_from=stop_at, stop_at=stop_at)
    assert len(asked) == 4
