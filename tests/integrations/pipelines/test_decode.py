"""A VAE whose config asks for the fp32 upcast decodes in fp32 under the trainers' autocast, gradients to the
latents; any other VAE runs in the autocast dtype."""
import pytest
import torch

from mst_clipiqa.integrations.pipelines import decode_latents
from mst_clipiqa.integrations.pipelines.tiny import _tiny_vae


@pytest.mark.parametrize("weights,force_upcast,runs_in", [
    (torch.bfloat16, True, torch.float32), (torch.float32, True, torch.float32),
    (torch.bfloat16, False, torch.bfloat16), (torch.float32, False, torch.bfloat16)])
def test_upcast_decode_leaves_autocast_and_keeps_the_gradient(conv_dtypes, weights, force_upcast, runs_in):
    torch.manual_seed(0)
    vae = _tiny_vae(force_upcast=force_upcast).to(weights).requires_grad_(False)
    seen = conv_dtypes(vae)
    latents = torch.randn(2, 4, 8, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        images = decode_latents(vae, latents, chunk_size=1, gradient_checkpointing=True)
    images.mean().backward()  # outside autocast, as the trainers do: the recomputation keeps the decode's dtype
    assert seen == {runs_in}
    assert images.dtype == torch.float32 and torch.isfinite(images).all()
    assert torch.isfinite(latents.grad).all() and latents.grad.abs().sum() > 0
    assert vae.dtype == (torch.float32 if force_upcast else weights)
