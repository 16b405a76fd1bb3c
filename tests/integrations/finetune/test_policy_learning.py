"""Each method raises a non-differentiable reward (numpy brightness) on held-out prompts and seeds, paired
sample by sample, whatever the seed, and bad rewards stop a run with a clear error."""

import os

import numpy as np
import pytest
import torch

from mst_clipiqa.integrations.finetune import PolicyFinetuneConfig, RunConfig, train_policy
from mst_clipiqa.integrations.finetune.policy_loop import group_batch
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd3_pipeline, tiny_sd_pipeline

PROMPTS = ["a cat", "a dog", "a red car", "a tree"]
HELD_OUT = ["a house", "a boat"] * 6
HELD_OUT_SEEDS = list(range(100, 112))
MARGIN = 2e-4  # brightness in [0, 1]; the samples' spread on the held-out set is about 3e-3


def brightness(images):
    return images.detach().cpu().numpy().mean(axis=(1, 2, 3))


CASES = {  # method: (pipeline, learning rate, epochs, sampling steps, settings)
    "ddpo": (tiny_sd_pipeline, 1e-2, 8, 3, {"sde_window": (0, 1)}),
    "grpo": (tiny_sd3_pipeline, 3e-2, 10, 4, {"sde_window": (0, 3)}),
    "nft": (tiny_sd3_pipeline, 1e-2, 6, 3, {}),
}
# The seed draws the LoRA's initialisation, the prompts and the noise; every method passes for each of seeds 0-4.
# ddpo trains the first of its 3 DDIM steps only: the other two have standard deviations 0.04 and 0.02 (the first
# 0.65), and a step's term of the policy gradient, A eps / std x d mean / d theta, has a mean that does not depend on
# std and a spread that grows as 1 / std. Trained on all 3 steps ddpo passed for seeds 0-2 only (gains -0.1e-3 and
# -2.5e-3 at seeds 3 and 4; docs/online_rl.md). grpo leaves out its last flow step (std 0.0007): seeds 0-4 gained
# +3.9 +- 1.5e-3 with it left out, +1.3 +- 0.6e-3 on all 4 steps (both 5 of 5). CI runs seeds 0 and 1;
# MST_LEARNING_SEEDS=0,1,2,3,4 runs all.
SEEDS = [int(s) for s in os.environ.get("MST_LEARNING_SEEDS", "0,1").split(",")]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("method", list(CASES))
def test_method_raises_a_numpy_reward_on_held_out_prompts_and_seeds(method, seed):
    make, lr, epochs, steps, settings = CASES[method]
    run = train_policy(make(), brightness, PROMPTS, PolicyFinetuneConfig(
        method, num_inference_steps=steps, guidance_scale=1.0, group_size=4, prompts_per_step=4, per_prompt_stats=False,
        **settings, run=RunConfig(max_steps=0, learning_rate=lr, weight_decay=0.01, seed=seed, progress_bar=False)))
    before = run.evaluate(HELD_OUT, HELD_OUT_SEEDS)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        stats = run.policy.step(*group_batch(PROMPTS, 4, 4, generator), generator)
        assert np.isfinite(list(stats.values())).all()
    gain = run.evaluate(HELD_OUT, HELD_OUT_SEEDS) - before
    mean, se = float(gain.mean()), float(gain.std() / len(gain) ** 0.5)
    assert mean > MARGIN and mean > 4 * se, (mean, se)


@pytest.mark.parametrize("make, method", [(tiny_sd3_pipeline, "grpo"), (tiny_sd_pipeline, "ddpo")])
def test_first_update_has_ratio_one_and_zero_kl(make, method):
    """The recorded steps recomputed by the unchanged policy (in training mode, guided, through the
    update's own path) give the recorded log-probabilities exactly: the flow SDE and DDIM at eta 1."""
    run = train_policy(make(), brightness, PROMPTS, PolicyFinetuneConfig(
        method, num_inference_steps=2, guidance_scale=2.0, group_size=2, prompts_per_step=2, kl_coeff=0.04,
        run=RunConfig(max_steps=1, progress_bar=False)))
    stats = run.log.history[0]
    assert stats["ratio_min"] == stats["ratio_max"] == 1.0
    assert stats["approx_kl"] == 0.0 and stats["kl"] == 0.0 and stats["clip_fraction"] == 0.0


def test_nan_rewards_raise_or_skip_their_groups():
    def flaky(images):
        out = brightness(images)
        out[1] = np.nan
        return out

    with pytest.raises(ValueError, match="1 of 4 rewards are NaN"):
        train_policy(tiny_sd3_pipeline(), flaky, PROMPTS, PolicyFinetuneConfig(
            "grpo", num_inference_steps=2, guidance_scale=1.0, group_size=2, prompts_per_step=2,
            run=RunConfig(max_steps=1, progress_bar=False)))
    with pytest.warns(RuntimeWarning, match=r"skipping 1 group\(s\), 2 samples"):
        run = train_policy(tiny_sd3_pipeline(), flaky, PROMPTS, PolicyFinetuneConfig(
            "grpo", num_inference_steps=2, guidance_scale=1.0, group_size=2, prompts_per_step=2,
            run=RunConfig(max_steps=1, on_nonfinite="skip", progress_bar=False)))
    assert run.log.history[0]["skipped"] == 2
    assert all(torch.isfinite(p).all() for p in run.policy.params)


def test_nft_needs_a_flow_matching_pipeline():
    with pytest.raises(ValueError, match="flow-matching"):
        train_policy(tiny_sd_pipeline(), brightness, PROMPTS, PolicyFinetuneConfig("nft", run=RunConfig(max_steps=0)))
