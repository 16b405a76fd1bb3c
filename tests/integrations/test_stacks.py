"""The drop-ins, called as each stack's own code calls them: Flow-GRPO's per-scorer function and whole reward_fn
(under its thread pool, every image form), Flow-Factory's pointwise and groupwise reward models (built from its
config, PIL or tensor inputs) and trl's DDPOTrainer.compute_rewards in its asynchronous mode (trl's own code)."""
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mst_clipiqa.integrations import (
    FlowFactoryGroupwiseReward,
    FlowFactoryPointwiseReward,
    ddpo_reward_fn,
    flow_grpo_reward_fn,
    flow_grpo_scorer,
    score_images,
    trl_async_reward_fn,
)
from mst_clipiqa.reward import MSTCLIPIQAReward

PROMPTS = ["a cat", "a dog", "a red car", "a boat"]


@pytest.fixture(scope="module")
def reward():
    return MSTCLIPIQAReward.from_pretrained("tiny", variant="B")


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 3, 24, 24, generator=torch.Generator().manual_seed(0))


def flow_grpo_forms(images):
    """What Flow-GRPO's training loop hands a reward: the decoded float NCHW tensor, or uint8 NHWC arrays."""
    uint8 = (images * 255).round().clamp(0, 255).to(torch.uint8).numpy().transpose(0, 2, 3, 1)
    return [(images, images), (uint8, uint8), ([Image.fromarray(a) for a in uint8], uint8)]


def test_flow_grpo_per_scorer_function_under_its_thread_pool(reward, images):
    scorer = flow_grpo_scorer(reward)
    with ThreadPoolExecutor(max_workers=2) as executor:  # Flow-GRPO scores on a thread pool while it samples
        for sent, held in flow_grpo_forms(images):
            scores, metadata = executor.submit(scorer, sent, PROMPTS, [{}] * 4).result()
            weighted = [0.5 * s for s in scores]  # multi_score's weighting
            assert metadata == {} and isinstance(scores, np.ndarray) and scores.dtype == np.float32
            assert np.allclose(weighted, 0.5 * score_images(reward, held, PROMPTS)[0].numpy(), atol=1e-6)


def test_flow_grpo_whole_reward_fn_takes_only_strict_and_returns_named_scores(reward, images):
    reward_fn = flow_grpo_reward_fn({"mst": reward, "bright": lambda x: x.mean(dim=(1, 2, 3))},
                                    weights={"mst": 1.0, "bright": 2.0})
    with ThreadPoolExecutor(max_workers=1) as executor:
        scores, metadata = executor.submit(reward_fn, images, PROMPTS, [{}] * 4, only_strict=True).result()
    assert metadata == {} and set(scores) == {"avg", "mst", "bright"}
    assert np.allclose(scores["avg"], scores["mst"] + 2 * scores["bright"], atol=1e-6)
    assert np.allclose(scores["mst"], reward(images, PROMPTS).numpy(), atol=1e-6)


@pytest.mark.parametrize("kind", [FlowFactoryPointwiseReward, FlowFactoryGroupwiseReward])
def test_flow_factory_reward_models_built_from_its_config_take_pil_or_tensors(reward, images, kind):
    config = SimpleNamespace(extra_kwargs={"model_name_or_path": "tiny"}, batch_size=2)
    accelerator = SimpleNamespace(device=torch.device("cpu"))
    model = kind(config=config, accelerator=accelerator)  # how Flow-Factory's loader builds one
    assert model.required_fields == ("prompt", "image")
    model = kind(reward=reward)
    uint8 = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    pil = model(prompt=PROMPTS, image=[Image.fromarray(a) for a in uint8])
    assert torch.allclose(pil.rewards, score_images(reward, list(uint8), PROMPTS)[0], atol=1e-6)
    tensors = model(prompt=PROMPTS, image=list(images))  # use_tensor_inputs: (C, H, W) in [0, 1]
    assert torch.allclose(tensors.rewards, reward(images, PROMPTS), atol=1e-6)
    assert set(tensors.extra_info) == {"reward"}
    with pytest.raises(ValueError, match="scores images"):
        model(prompt=PROMPTS, video=[[pil]])


def test_trl_ddpo_async_reward_computation_gets_futures(reward, images):
    trl = pytest.importorskip("trl.trainer.ddpo_trainer", reason="trl <= 0.23.1 (the peers extra) has DDPO")
    pairs = [(images[:2], PROMPTS[:2], ({}, {})), (images[2:], PROMPTS[2:], ({}, {}))]
    trainer = SimpleNamespace(executor=ThreadPoolExecutor(2), accelerator=SimpleNamespace(device="cpu"),
                              reward_fn=ddpo_reward_fn(reward))
    with pytest.raises(AttributeError, match="'Tensor' object has no attribute 'result'"):
        trl.DDPOTrainer.compute_rewards(trainer, pairs, is_async=True)  # the plain function, as the issue saw
    trainer.reward_fn = trl_async_reward_fn(reward)
    rewards, metadata = trl.DDPOTrainer.compute_rewards(trainer, pairs, is_async=True)
    assert torch.allclose(torch.cat(rewards), reward(images, PROMPTS), atol=1e-6)
    assert set(metadata[0]) == {"reward"}
