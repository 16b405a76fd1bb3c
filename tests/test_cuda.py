"""What only a GPU shows: CUDA kernels, autocast, inductor, the fp16 loss scale of a resumed fine-tuning run.

Skipped where CUDA is missing (CI has none); on a GPU machine: ``pytest tests/test_cuda.py``. Tiny models, so
these check behaviour, not speed (that is ``benchmarks/bench_gpu.py``).
"""
import copy
import json

import pytest
import torch

from mst_clipiqa.integrations import NoiseOptimizationConfig, RewardFinetuner, best_of_n, optimize_noise, score_images
from mst_clipiqa.integrations.pipelines import decode_latents
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline, tiny_sd_turbo_pipeline
from mst_clipiqa.reward import MSTCLIPIQAReward
from tests.integrations.finetune.test_finetuner import PROMPTS, config, make_reward

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")
BF16_ATOL = 0.05  # bf16 keeps 8 bits of mantissa; the tiny model's scores lie in [1, 5]


def cuda_reward(tiny_models, **kwargs) -> MSTCLIPIQAReward:
    return MSTCLIPIQAReward(copy.deepcopy(tiny_models("A")), **kwargs).to(CUDA).eval()


def assert_gradients_reach_pixels_only(images: torch.Tensor, reward: MSTCLIPIQAReward) -> None:
    assert images.grad is not None and torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in reward.parameters())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_reward_on_cuda_matches_fp32_on_the_cpu_with_gradients(tiny_models, dtype):
    prompts = ["a red car", "a cat", "a house"]
    pixels = torch.rand(3, 3, 96, 80, generator=torch.Generator().manual_seed(0))
    expected = MSTCLIPIQAReward(tiny_models("A"))(pixels, prompts)
    reward = cuda_reward(tiny_models, dtype=dtype)
    images = pixels.to(CUDA).requires_grad_(True)
    scores = reward(images, prompts)
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores.cpu(), expected.detach(), atol=BF16_ATOL, rtol=0)
    scores.sum().backward()
    assert_gradients_reach_pixels_only(images, reward)


def test_an_upcast_vae_decodes_in_fp32_under_fp16_autocast_with_gradients(conv_dtypes):
    vae = tiny_sd_pipeline().vae.to(CUDA, torch.float16)  # its config asks for the upcast, as SDXL's does
    seen = conv_dtypes(vae)
    latents = torch.randn(2, 4, 8, 8, device=CUDA, requires_grad=True)
    with torch.autocast("cuda", dtype=torch.float16):
        images = decode_latents(vae, latents)
    images.mean().backward()
    assert seen == {torch.float32} and torch.isfinite(images).all()
    assert torch.isfinite(latents.grad).all() and latents.grad.abs().sum() > 0


@pytest.mark.parametrize(("fill", "message"), [(float("nan"), "NaN or inf"), (255.0, "divide by 255")])
def test_bad_pixel_values_on_cuda_are_named_after_the_forward_pass_is_queued(tiny_models, fill, message):
    reward = cuda_reward(tiny_models)
    images = torch.rand(2, 3, 64, 64, device=CUDA)
    images[1, 0, 5, 5] = fill
    with pytest.raises(ValueError, match=message):
        reward(images)
    reward(images.nan_to_num(0.0).clamp(0, 1))  # the same reward goes on scoring good pixels


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images_that_need_a_resize_score_like_fp32_ones(tiny_models, dtype):
    reward = cuda_reward(tiny_models)
    pixels = torch.rand(2, 3, 300, 500, device=CUDA, generator=torch.Generator(CUDA).manual_seed(1))
    images = pixels.to(dtype).requires_grad_(True)
    scores = reward(images, ["a cat", "a dog"])
    # the resized image returns in the caller's dtype, so it is rounded once more than the fp32 one
    torch.testing.assert_close(scores, reward(pixels.to(dtype).float(), ["a cat", "a dog"]), atol=BF16_ATOL, rtol=0)
    scores.sum().backward()
    assert images.grad.dtype == dtype
    assert_gradients_reach_pixels_only(images, reward)


def test_inductor_compiled_reward_matches_eager_over_changing_batch_sizes(tiny_models):
    eager, compiled = cuda_reward(tiny_models), cuda_reward(tiny_models, compile=True)
    for batch in (2, 3, 5):
        pixels = torch.rand(batch, 3, 224, 224, device=CUDA, generator=torch.Generator(CUDA).manual_seed(batch))
        prompts = [f"prompt {i}" for i in range(batch)]
        images = [pixels.clone().requires_grad_(True) for _ in range(2)]
        want, got = eager(images[0], prompts), compiled(images[1], prompts)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        want.sum().backward()
        got.sum().backward()
        torch.testing.assert_close(images[1].grad, images[0].grad, atol=1e-5, rtol=1e-3)
        assert_gradients_reach_pixels_only(images[1], compiled)


def test_best_of_n_on_a_cuda_pipeline_ranks_by_the_scores_of_its_images(tiny_models):
    reward = cuda_reward(tiny_models)
    pipe = tiny_sd_pipeline(device=CUDA)
    ranking = best_of_n(pipe, "a cat", reward, n=4, chunk_size=2, num_inference_steps=2, guidance_scale=2.0,
                        progress=False)
    images = torch.stack([c.image for c in ranking.candidates])
    assert images.device.type == "cpu"
    total, _ = score_images(reward, images.to(CUDA), "a cat")
    torch.testing.assert_close(ranking.scores, total.cpu(), atol=1e-5, rtol=0)
    assert ranking.scores.tolist() == sorted(ranking.scores.tolist(), reverse=True)


def test_noise_optimisation_on_cuda_raises_the_reward_of_its_start(tiny_models):
    reward = cuda_reward(tiny_models)
    settings = NoiseOptimizationConfig(steps=8, seed=3, num_inference_steps=1, guidance_scale=0.0, height=32, width=32,
                                     progress_bar=False)
    result = optimize_noise(tiny_sd_turbo_pipeline(device=CUDA), "a lighthouse", reward, settings)
    assert result.reward > result.initial_reward
    assert all(p.grad is None for p in reward.parameters())


def test_fp16_finetuning_saves_and_resumes_its_loss_scale(tmp_path):
    settings = dict(mixed_precision="fp16", max_steps=2, save_every=2, output_dir=str(tmp_path), seed=0)
    first = RewardFinetuner(tiny_sd_pipeline(), make_reward(), PROMPTS, config(**settings))
    first.train()
    assert first.accelerator.device.type == "cuda" and first.accelerator.scaler is not None
    saved = first.accelerator.scaler.state_dict()
    assert (saved["scale"], saved["_growth_tracker"]) != (65536.0, 0)  # two steps moved it from its start
    state = json.loads(next((tmp_path / "checkpoints").glob("step_*/state.json")).read_text())
    assert state["grad_scaler"] == json.loads(json.dumps(saved))

    resumed = RewardFinetuner(tiny_sd_pipeline(), make_reward(), PROMPTS, config(**settings, resume=True))
    assert resumed.global_step == 2
    assert resumed.accelerator.scaler.state_dict() == saved
    log = resumed.train(max_steps=4)
    assert len(log.history) == 4
    assert all(p.dtype == torch.float32 for p in resumed.params)
    assert all(torch.isfinite(p).all() for p in resumed.params)
