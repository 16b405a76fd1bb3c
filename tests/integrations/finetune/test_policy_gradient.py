"""PolicyTrainer on the shared run plumbing: a killed grpo / ddpo run resumes bit for bit (LoRA, AdamW, DDPO's
per-prompt statistics, the log), two processes train one LoRA, and the statistics of every step are logged."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from mst_clipiqa.integrations import PolicyFinetuneConfig, PolicyTrainer
from mst_clipiqa.integrations.finetune.config import from_flat_settings
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd3_pipeline, tiny_sd_pipeline

PROMPTS = ["a cat", "a dog", "a red car"]


def brightness(images):
    return images.detach().cpu().numpy().mean(axis=(1, 2, 3))


def policy_config(out, **overrides):
    settings = dict(method="grpo", num_inference_steps=2, guidance_scale=1.0, group_size=2, prompts_per_step=2,
                    learning_rate=1e-2, max_steps=4, save_every=2, lora_rank=2, kl_coeff=0.04, inner_epochs=2,
                    minibatch_size=2, lr_scheduler="linear", use_ema=True, progress_bar=False,
                    output_dir=None if out is None else str(out))
    return from_flat_settings(PolicyFinetuneConfig, {**settings, **overrides})


def lora_of(trainer):
    return {k: v.detach().clone() for k, v in trainer.trained_parameters().items()}


@pytest.mark.parametrize(("method", "make"), [("grpo", tiny_sd3_pipeline), ("ddpo", tiny_sd_pipeline)])
def test_a_killed_run_resumes_bit_for_bit(tmp_path, method, make):
    extra = {"stat_min_count": 2} if method == "ddpo" else {}
    straight = PolicyTrainer(make(), brightness, PROMPTS, policy_config(tmp_path / "straight", method=method, **extra))
    straight.train()
    PolicyTrainer(make(), brightness, PROMPTS, policy_config(tmp_path / "resumed", method=method, **extra)).train(
        max_steps=2)  # as if killed after checkpoint 2
    resumed = PolicyTrainer(make(), brightness, PROMPTS,
                            policy_config(tmp_path / "resumed", method=method, resume=True, **extra))
    assert resumed.global_step == 2
    resumed.train()
    after, reference = lora_of(resumed), lora_of(straight)
    assert after.keys() == reference.keys() and all(torch.equal(after[k], reference[k]) for k in after)
    assert resumed.log.history == straight.log.history
    assert resumed.policy.state_dict() == straight.policy.state_dict()
    if method == "ddpo":
        assert set(straight.policy.state_dict()["tracker"]) <= set(PROMPTS)
    assert (tmp_path / "resumed" / "lora").is_dir()


def test_each_step_logs_reward_advantage_ratio_kl_and_learning_rate(tmp_path):
    config = policy_config(tmp_path / "run", max_steps=2, save_every=0, sample_every=2, sample_prompts=("a boat",),
                           sample_seeds=(0, 1))
    trainer = PolicyTrainer(tiny_sd3_pipeline(), {"bright": brightness, "dark": lambda x: 1 - brightness(x)},
                            PROMPTS, config)
    log = trainer.train()
    for record in log.history:
        for key in ("reward", "reward_std", "advantage_mean", "advantage_std", "approx_kl", "clip_fraction",
                    "ratio_mean", "ratio_min", "ratio_max", "kl", "lr", "reward/bright", "reward/dark"):
            assert np.isfinite(record[key]), key
    assert log.history[0]["lr"] > log.history[1]["lr"]  # the linear schedule decays
    assert sorted(p.name for p in (tmp_path / "run" / "samples").iterdir()) == ["step_000000.png",
                                                                               "step_000002.png"]


def test_nft_needs_a_flow_pipeline_and_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="'nft'.*flow-matching"):
        PolicyTrainer(tiny_sd_pipeline(), brightness, PROMPTS, policy_config(None, method="nft", save_every=0))
    with pytest.raises(ValueError, match="gradient_accumulation_steps=2, expected 1"):
        policy_config(tmp_path, gradient_accumulation_steps=2)
    with pytest.raises(ValueError, match="group_size must be >= 1"):
        policy_config(tmp_path, group_size=0)


DEGENERATE = {  # each setting trained nothing and reported success
    "grpo group of one": (dict(group_size=1), "group_size must be >= 2.*advantage 0"),
    "nft group of one": (dict(method="nft", group_size=1), "group_size must be >= 2"),
    "ddpo batch of one": (dict(method="ddpo", per_prompt_stats=False, group_size=1, prompts_per_step=1),
                          "prompts_per_step x group_size must be >= 2"),
    "advantages clipped to 0": (dict(adv_clip_max=0.0), "adv_clip_max must be > 0.*no-op"),
    "nft advantages clipped to 0": (dict(method="nft", adv_clip_max=0.0), "adv_clip_max must be > 0"),
    "ratio clipped to 1": (dict(clip_range=0.0), "clip_range must be > 0"),
    "nft beta 0": (dict(method="nft", nft_beta=0.0), "nft_beta must be > 0"),
    "no noise": (dict(eta=0.0, noise_level=0.0), "no step with noise"),
    "empty window": (dict(sde_window=(1, 1)), "sde_window must be .*no step of it"),
    "window past the end": (dict(sde_window=(1, 5)), r"sde_window must be .*num_inference_steps \(2\)"),
    "negative steps per call": (dict(steps_per_call=-1), "steps_per_call must be >= 1, or 0 for every"),
    "per-prompt statistics never used": (dict(method="ddpo", stat_min_count=20), "stat_min_count .* <= "),
    "learning rate 0": (dict(learning_rate=0.0), "learning_rate must be > 0"),
    "LoRA scale 0": (dict(lora_alpha=0.0), "lora_alpha must be > 0"),
    "reversed gradients": (dict(max_grad_norm=-1.0), "max_grad_norm must be >= 0"),
}


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_settings_that_make_an_update_a_no_op_are_refused_at_config_time(case):
    overrides, message = DEGENERATE[case]
    with pytest.raises(ValueError, match=message):
        policy_config(None, **{"save_every": 0, **overrides})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    config = policy_config(None, max_steps=2, save_every=0, cpu=True, use_ema=False)
    trainer = PolicyTrainer(tiny_sd3_pipeline(), brightness, PROMPTS, config)
    shares = trainer.rollout_batch()
    trainer.train()
    out[rank] = (lora_of(trainer), trainer.num_processes, shares, trainer.log.history)


def test_two_processes_train_one_lora_with_groups_spanning_them():
    out = mp.get_context("spawn").Manager().dict()
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    (lora0, world, share0, log0), (lora1, _, share1, log1) = out[0], out[1]
    assert world == 2 and all(torch.equal(lora0[k], lora1[k]) for k in lora0)
    assert any(not torch.equal(v, torch.zeros_like(v)) for v in lora0.values())
    assert share0[2].tolist() == share1[2].tolist() == [0, 1]  # each prompt's group has a sample on each rank
    assert share0[0] == share1[0] and share0[1] != share1[1]  # same prompts, own seeds
    assert [r["reward"] for r in log0] == [r["reward"] for r in log1]  # rewards gathered over both ranks


def test_a_nan_reward_raises_or_skips_its_group_and_the_checkpoint_stays_finite(tmp_path):
    def half_nan(images):
        values = brightness(images)
        values[0] = np.nan
        return values

    with pytest.raises(ValueError, match="1 of 4 rewards are NaN or infinite"):
        PolicyTrainer(tiny_sd3_pipeline(), half_nan, PROMPTS, policy_config(tmp_path / "raise", max_steps=1)).train()
    trainer = PolicyTrainer(tiny_sd3_pipeline(), half_nan, PROMPTS,
                            policy_config(tmp_path / "skip", max_steps=1, save_every=1, on_nonfinite="skip"))
    with pytest.warns(RuntimeWarning, match=r"skipping 1 group\(s\), 2 samples"):
        trainer.train()
    from safetensors.torch import load_file

    saved = [load_file(p) for p in (tmp_path / "skip" / "checkpoints").rglob("*.safetensors")]
    assert saved and all(bool(torch.isfinite(t).all()) for tensors in saved for t in tensors.values())


def test_skip_skips_a_batch_whose_rewards_are_all_nan_and_the_run_goes_on(tmp_path):
    calls = []

    def nan_once(images):
        calls.append(len(images))
        values = brightness(images)
        return values * np.nan if len(calls) == 1 else values

    trainer = PolicyTrainer(tiny_sd3_pipeline(), nan_once, PROMPTS,
                            policy_config(tmp_path, max_steps=2, save_every=0, on_nonfinite="skip", inner_epochs=1,
                                          kl_coeff=0.0, use_ema=False))
    before = lora_of(trainer)
    with pytest.warns(RuntimeWarning, match=r"dropped a batch \(reward returned NaN or inf for 4 of 4"):
        log = trainer.train()
    assert trainer.global_step == 2 and len(log.history) == 2 and trainer.skipped_batches == 1
    assert all(np.isfinite(r["reward"]) for r in log.history)
    assert any(not torch.equal(before[k], v) for k, v in lora_of(trainer).items())
