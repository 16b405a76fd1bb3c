"""Brightness-labelled preference pairs from the tiny SD pipeline: shared by the pairs and DPO tests."""
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
from mst_clipiqa.integrations.pipelines.tiny_autoencoder import with_linear_autoencoder

SAMPLER = {"num_inference_steps": 4, "guidance_scale": 1.0}
PROMPTS = [f"a photo of thing {i}" for i in range(8)]


def brightness(images):
    """A non-differentiable reward: the mean pixel value, through numpy."""
    return images.detach().cpu().numpy().mean(axis=(1, 2, 3))


def bright_pipe():
    """The tiny SD pipeline with an invertible autoencoder, so images encode back to the latents they came from."""
    return with_linear_autoencoder(tiny_sd_pipeline())
