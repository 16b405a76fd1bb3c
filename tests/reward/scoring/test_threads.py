"""One model shared by rewards of different dtypes, called from several threads, gives the serial results:
the prompt cache is locked and the half-precision weight swap never leaks into a float32 call."""
from concurrent.futures import ThreadPoolExecutor

import torch

from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward

PROMPTS = [f"a photo of object {i}" for i in range(6)]


def _calls() -> list[tuple[int, torch.Tensor, list[str]]]:
    generator = torch.Generator().manual_seed(0)
    calls = []
    for i in range(24):
        images = torch.rand(2, 3, 64, 64, generator=generator)
        calls.append((i % 2, images, [PROMPTS[i % 6], PROMPTS[(i * 5 + 1) % 6]]))
    return calls


def _run(rewards, call) -> tuple[torch.Tensor, torch.Tensor]:
    which, images, prompts = call
    images = images.clone().requires_grad_(True)
    scores = rewards[which](images, prompts)
    (grad,) = torch.autograd.grad(scores.sum(), images)
    return scores.detach(), grad


def test_four_threads_over_two_dtype_wrappers_give_the_serial_results():
    torch.manual_seed(0)
    model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny("B", prompt_cache_size=2))  # small: threads evict each other's prompts
    rewards = [MSTCLIPIQAReward(model), MSTCLIPIQAReward(model, dtype=torch.bfloat16)]
    calls = _calls()
    serial = [_run(rewards, call) for call in calls]
    for _ in range(3):
        with ThreadPoolExecutor(4) as pool:
            threaded = list(pool.map(lambda call: _run(rewards, call), calls))
        for (scores, grad), (expected, expected_grad) in zip(threaded, serial):
            assert torch.equal(scores, expected) and torch.equal(grad, expected_grad)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # every swap was undone
    assert len(model._prompt_cache) <= 2
