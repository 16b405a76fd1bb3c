"""Each method raises a non-differentiable reward (numpy brightness) on held-out prompts and seeds, paired
sample by sample, and bad rewards stop a run with a clear error."""

import numpy as np
import pytest
import torch

from integrations.finetune import train_policy
from integrations.finetune.policy_loop import group_batch
from integrations.pipelines.tiny import tiny_sd3_pipeline, tiny_sd_pipeline

PROMPTS = ["a cat", "a dog", "a red car", "a tree"]
HELD_OUT = ["a house", "a boat"] * 6
HELD_OUT_SEEDS = list(range(100, 112))
MARGIN = 2e-4  # brightness in [0, 1]; the samples' spread on the held-out set is about 3e-3


def brightness(images):
    return images.detach().cpu().numpy().mean(axis=(1, 2, 3))


CASES = {  # method: (pipeline, learning rate, epochs, sampling steps)
    "ddpo": (tiny_sd_pipeline, 1e-2, 8, 3),
    "grpo": (tiny_sd3_pipeline, 3e-2, 10, 4),
    "nft": (tiny_sd3_pipeline, 1e-2, 6, 3),
}


@pytest.mark.parametrize("method", list(CASES))
def test_method_raises_a_numpy_reward_on_held_out_prompts_and_seeds(method):
    make, lr, epochs, steps = CASES[method]
    run = train_policy(make(), brightness, PROMPTS, method, epochs=0, learning_rate=lr, num_inference_steps=steps,
                       guidance_scale=1.0, group_size=4, prompts_per_epoch=4, per_prompt_stats=False)
    before = run.evaluate(HELD_OUT, HELD_OUT_SEEDS)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        stats = run.policy.step(*group_batch(PROMPTS, 4, 4, generator), generator)
        assert np.isfinite(list(stats.values())).all()
    gain = run.evaluate(HELD_OUT, HELD_OUT_SEEDS) - before
    mean, se = float(gain.mean()), float(gain.std() / len(gain) ** 0.5)
    assert mean > MARGIN and mean > 4 * se, (mean, se)


def test_first_update_has_ratio_one_and_zero_kl():
    run = train_policy(tiny_sd3_pipeline(), brightness, PROMPTS, "grpo", epochs=1, num_inference_steps=2,
                       guidance_scale=2.0, group_size=2, prompts_per_epoch=2, kl_coeff=0.04)
    stats = run.log[0]
    assert stats["ratio_min"] == stats["ratio_max"] == 1.0
    assert stats["approx_kl"] == 0.0 and stats["kl"] == 0.0 and stats["clip_fraction"] == 0.0


def test_nan_rewards_raise_or_skip_their_groups():
    def flaky(images):
        out = brightness(images)
        out[1] = np.nan
        return out

    with pytest.raises(ValueError, match="1 of 4 rewards are NaN"):
        train_policy(tiny_sd3_pipeline(), flaky, PROMPTS, "grpo", epochs=1, num_inference_steps=2, guidance_scale=1.0,
                     group_size=2, prompts_per_epoch=2)
    with pytest.warns(RuntimeWarning, match=r"skipping 1 group\(s\), 2 samples"):
        run = train_policy(tiny_sd3_pipeline(), flaky, PROMPTS, "grpo", epochs=1, num_inference_steps=2,
                           guidance_scale=1.0, group_size=2, prompts_per_epoch=2, on_nonfinite="skip")
    assert run.log[0]["skipped"] == 2
    assert all(torch.isfinite(p).all() for p in run.policy.params)


def test_nft_needs_a_flow_matching_pipeline():
    with pytest.raises(ValueError, match="flow-matching"):
        train_policy(tiny_sd_pipeline(), brightness, PROMPTS, "nft", epochs=0)
