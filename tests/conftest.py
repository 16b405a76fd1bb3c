import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "data" / "agiqa3k-mini"
BACKENDS = ("open_clip", "transformers")


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads; on a busy 2-core machine they lose ~10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_models():
    """One tiny model per (variant, backend), built once; tests must not mutate them."""
    cache = {}

    def get(variant: str = "A", backend: str = "open_clip", **overrides) -> MSTCLIPIQA:
        key = (variant, backend, repr(sorted(overrides.items())))
        if key not in cache:
            torch.manual_seed(0)
            cache[key] = MSTCLIPIQA(MSTCLIPIQAConfig.tiny(variant=variant, backend=backend, **overrides))
        return cache[key]

    return get


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """The 48-image AGIQA-3K sample shipped in ``examples/data`` (never a folder outside the repository)."""
    return SAMPLE


@pytest.fixture
def conv_dtypes():
    """``watch(module)`` -> the set, filled as it runs (backward's recomputation too), of the dtypes its Conv2d
    layers compute in: their outputs' (an input's dtype says nothing under autocast, which casts inside the op)."""
    def watch(module):
        seen = set()
        for layer in module.modules():
            if isinstance(layer, torch.nn.Conv2d):
                layer.register_forward_hook(lambda _, args, out: seen.add(out.dtype))
        return seen
    return watch
