import pytest

from mst_clipiqa.integrations import load_pairs, preference_pairs

from .preference_data import PROMPTS, SAMPLER, bright_pipe, brightness


@pytest.fixture(scope="session")
def pairs_dir(tmp_path_factory):
    """Every pair of 8 seeds for 8 prompts, labelled by brightness (written once for the session)."""
    directory = tmp_path_factory.mktemp("pairs")
    preference_pairs(bright_pipe(), PROMPTS, brightness, directory, n=8, pairs="all", progress=False, **SAMPLER)
    return directory


@pytest.fixture(scope="session")
def pairs(pairs_dir, tmp_path_factory):
    return load_pairs(pairs_dir, cache_dir=tmp_path_factory.mktemp("hf-cache"))
