import pytest

from integrations.pipelines.tiny_autoencoder import with_linear_autoencoder
from integrations.preference import load_pairs, preference_pairs
from integrations.tiny_pipelines import tiny_sd_pipeline

SAMPLER = {"num_inference_steps": 4, "guidance_scale": 1.0}
PROMPTS = [f"a photo of thing {i}" for i in range(8)]


def brightness(images):
    """A non-differentiable reward: the mean pixel value, through numpy."""
    return images.detach().cpu().numpy().mean(axis=(1, 2, 3))


def bright_pipe():
    """The tiny SD pipeline with an invertible autoencoder, so images encode back to the latents they came from."""
    return with_linear_autoencoder(tiny_sd_pipeline())


@pytest.fixture(scope="session")
def pairs_dir(tmp_path_factory):
    """Every pair of 8 seeds for 8 prompts, labelled by brightness (written once for the session)."""
    directory = tmp_path_factory.mktemp("pairs")
    preference_pairs(bright_pipe(), PROMPTS, brightness, directory, n=8, pairs="all", progress=False, **SAMPLER)
    return directory


@pytest.fixture(scope="session")
def pairs(pairs_dir, tmp_path_factory):
    return load_pairs(pairs_dir, cache_dir=tmp_path_factory.mktemp("hf-cache"))
