"""PolicyOptimizer: a grpo run that scores each rollout chunk on the scoring thread while the next is sampled
trains the same LoRA, bit for bit, as one that waits; non-finite rewards still go through on_nonfinite; recorded
steps recomputed in one denoiser call train the same LoRA as one call per step."""
import threading

import pytest
import torch

from mst_clipiqa.integrations import PolicyFinetuneConfig, PolicyTrainer
from mst_clipiqa.integrations.finetune import RunConfig, train_policy
from mst_clipiqa.integrations.finetune.config import from_flat_settings
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd3_pipeline, tiny_sd_pipeline

PROMPTS = ["a cat", "a dog", "a red car"]


def config(out, **overrides):
    settings = dict(method="grpo", num_inference_steps=2, guidance_scale=1.0, group_size=2, prompts_per_step=2,
                    learning_rate=1e-2, max_steps=2, save_every=0, lora_rank=2, rollout_chunk=1, progress_bar=False,
                    output_dir=str(out))
    return from_flat_settings(PolicyFinetuneConfig, {**settings, **overrides})


def test_async_scoring_trains_the_same_lora_bit_for_bit(tmp_path):
    threads = set()

    def brightness(images):
        threads.add(threading.current_thread().name)
        return images.mean(dim=(1, 2, 3))

    runs = {}
    for mode in (False, True):
        trainer = PolicyTrainer(tiny_sd3_pipeline(), brightness, PROMPTS, config(tmp_path / str(mode),
                                                                                   async_scoring=mode))
        trainer.train()
        runs[mode] = trainer
    sync, overlapped = (runs[m].trained_parameters() for m in (False, True))
    assert sync.keys() == overlapped.keys() and all(torch.equal(sync[k], overlapped[k]) for k in sync)
    assert runs[False].log.history == runs[True].log.history
    assert any(name.startswith("policy-reward") for name in threads) and threading.main_thread().name in threads


def test_a_non_finite_reward_scored_asynchronously_is_skipped_by_on_nonfinite(tmp_path):
    calls = []

    def one_nan(images):
        calls.append(len(images))
        scores = images.mean(dim=(1, 2, 3))
        first = (torch.arange(len(scores)) == 0) & (len(calls) == 1)  # the first image of the first chunk
        return torch.where(first, torch.nan, scores)

    trainer = PolicyTrainer(tiny_sd3_pipeline(), one_nan, PROMPTS,
                            config(tmp_path / "skip", async_scoring=True, rollout_chunk=2, on_nonfinite="skip",
                                   max_steps=1))
    with pytest.warns(RuntimeWarning, match="1 of 4 rewards are NaN or infinite: skipping 1 group"):
        trainer.train()
    assert calls == [2, 2]
    calls.clear()
    with pytest.raises(ValueError, match="1 of 4 rewards are NaN or infinite; a policy update needs finite"):
        PolicyTrainer(tiny_sd3_pipeline(), one_nan, PROMPTS,
                      config(tmp_path / "raise", async_scoring=True, rollout_chunk=2, max_steps=1)).train()


def test_steps_recomputed_in_one_call_train_the_same_lora():
    """Guided, with the KL term and two inner epochs (the second pass clips): steps_per_call=0 takes the same
    updates as one call per recorded step, up to float rounding."""
    def brightness(images):
        return images.mean(dim=(1, 2, 3))

    params, logs = [], []
    for steps_per_call in (1, 0):
        run = train_policy(tiny_sd_pipeline(), brightness, PROMPTS, PolicyFinetuneConfig(
            "grpo", num_inference_steps=3, guidance_scale=2.0, group_size=2, prompts_per_step=2, kl_coeff=0.04,
            inner_epochs=2, minibatch_size=2, clip_range=1e-2, steps_per_call=steps_per_call,
            run=RunConfig(max_steps=1, learning_rate=1e-2, weight_decay=0.01, seed=1, progress_bar=False)))
        params.append([p.detach().clone() for p in run.policy.params])
        logs.append(run.log.history[-1])
    assert logs[0]["kl"] > 0 and logs[0]["approx_kl"] > 0
    for one, batched in zip(*params):  # Adam's steps are 1e-2: a misplaced step would differ by about that
        torch.testing.assert_close(batched, one, atol=1e-4, rtol=1e-3)
    for key in ("loss", "kl", "approx_kl", "clip_fraction"):
        assert logs[1][key] == pytest.approx(logs[0][key], rel=1e-3, abs=1e-7), key
