"""Advantages: zero mean within every group, also when a group's samples sit on two processes; a GRPO
step under DDP leaves the LoRA identical on both. Calibrated mixing: each reward through its own running
quantiles."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from mst_clipiqa.integrations.finetune import PolicyConfig, PolicyOptimizer, PromptStatTracker, group_advantages
from mst_clipiqa.integrations.finetune.advantages import QuantileMixer
from mst_clipiqa.integrations.pipelines.lora import add_lora, lora_parameters
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd3_pipeline

REWARDS = torch.tensor([0.1, 0.5, 0.3, 0.9, 2.0, 4.0, 1.0, 3.0, 7.0, 7.5, 6.0, 8.0])
GROUPS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])  # interleaved: each group spans both halves


def _check_groups(values, groups):
    for g in groups.unique():
        part = values[groups == g].double()
        assert abs(float(part.mean())) < 1e-6
        assert abs(float(part.std(unbiased=False)) - 1) < 1e-3


def test_group_advantages_are_normalised_within_each_group():
    adv = group_advantages(REWARDS, GROUPS)
    _check_groups(adv.values, GROUPS)
    assert bool(adv.valid.all()) and adv.stats["skipped"] == 0
    assert adv.stats["reward_mean"] == pytest.approx(float(REWARDS.mean()))


def test_nonfinite_rewards_raise_or_skip_their_group_with_a_warning():
    rewards = REWARDS.clone()
    rewards[4] = float("nan")
    with pytest.raises(ValueError, match="1 of 12 rewards are NaN or infinite"):
        group_advantages(rewards, GROUPS)
    with pytest.warns(RuntimeWarning, match=r"1 of 12 rewards .* skipping 1 group\(s\), 4 samples"):
        adv = group_advantages(rewards, GROUPS, nonfinite="skip")
    assert adv.valid.tolist() == (GROUPS != 1).tolist()
    assert bool(torch.isfinite(adv.values).all()) and bool((adv.values[GROUPS == 1] == 0).all())
    _check_groups(adv.values[GROUPS != 1], GROUPS[GROUPS != 1])


def test_prompt_stat_tracker_uses_the_batch_until_a_prompt_has_min_count_rewards():
    tracker = PromptStatTracker(buffer_size=4, min_count=2)
    prompts = ["a", "b", "a", "b"]
    first = tracker.update(prompts, torch.tensor([1.0, 2.0, 3.0, 6.0]))  # 2 each: per-prompt already
    torch.testing.assert_close(first.values, torch.tensor([-1.0, -1.0, 1.0, 1.0]), atol=1e-5, rtol=0)
    fresh = PromptStatTracker(buffer_size=4, min_count=3)
    batch = fresh.update(prompts, torch.tensor([1.0, 2.0, 3.0, 6.0]))
    r = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    torch.testing.assert_close(batch.values.double(), (r - r.mean()) / (r.std(unbiased=False) + 1e-6))
    assert fresh.state_dict() == {"a": [1.0, 3.0], "b": [2.0, 6.0]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _brightness(images):
    return images.cpu().numpy().mean(axis=(1, 2, 3))


def _ddp_lora_in_sync(rank: int) -> list[bool]:
    """Two GRPO steps of a DDP-wrapped denoiser, each prompt's group split over both ranks; after each,
    whether every LoRA weight equals rank 0's."""
    config = PolicyConfig(method="grpo", num_inference_steps=2, guidance_scale=1.0, kl_coeff=0.04)
    pipe = tiny_sd3_pipeline()
    denoiser = pipe.transformer
    add_lora(denoiser, rank=2, seed=0)
    params = lora_parameters(denoiser)
    model = torch.nn.parallel.DistributedDataParallel(denoiser)
    policy = PolicyOptimizer(config.sampler(pipe), model, torch.optim.AdamW(params, lr=1e-2), params,
                             _brightness, config)
    in_sync = []
    for step in range(2):
        seeds = [100 * step + 10 * rank + i for i in range(4)]
        policy.step(["a cat", "a dog"] * 2, seeds, torch.tensor([0, 1, 0, 1]))
        flat = torch.cat([p.detach().flatten() for p in params])
        copies = [torch.zeros_like(flat) for _ in range(2)]
        torch.distributed.all_gather(copies, flat)
        in_sync.append(torch.equal(copies[0], copies[1]) and not torch.equal(flat, torch.zeros_like(flat)))
    return in_sync


def _worker(rank: int, world: int, port: int, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        rows = slice(rank * 6, rank * 6 + 6)  # rank 0 holds samples 0-5, rank 1 samples 6-11
        adv = group_advantages(REWARDS[rows], GROUPS[rows])
        tracker = PromptStatTracker(buffer_size=8, min_count=2)
        tracked = tracker.update([f"p{g}" for g in GROUPS[rows].tolist()], REWARDS[rows])
        out[rank] = (adv.values, tracked.values, tracker.state_dict(), _ddp_lora_in_sync(rank))
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_match_one_and_keep_the_lora_in_sync():
    manager = mp.get_context("spawn").Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    values = torch.cat([out[0][0], out[1][0]])
    _check_groups(values, GROUPS)
    torch.testing.assert_close(values, group_advantages(REWARDS, GROUPS).values)
    tracked = torch.cat([out[0][1], out[1][1]])
    single = PromptStatTracker(buffer_size=8, min_count=2)
    torch.testing.assert_close(tracked, single.update([f"p{g}" for g in GROUPS.tolist()], REWARDS).values)
    assert out[0][2] == out[1][2] == single.state_dict()
    assert out[0][3] == out[1][3] == [True, True]


def test_gdpo_normalises_each_reward_within_its_group_before_the_weighted_sum():
    from mst_clipiqa.integrations.finetune.advantages import decoupled_advantages

    generator = torch.Generator().manual_seed(0)
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    named = {"wide": 100 * torch.randn(8, generator=generator), "narrow": 0.01 * torch.randn(8, generator=generator)}
    weights = {"wide": 0.5, "narrow": 2.0}
    result = decoupled_advantages(named, groups, weights)
    parts = {name: group_advantages(values, groups).values for name, values in named.items()}
    for values in parts.values():  # each reward's advantages: zero mean in every group
        for g in range(3):
            assert abs(float(values[groups == g].mean())) < 1e-5
    torch.testing.assert_close(result.values, 0.5 * parts["wide"] + 2.0 * parts["narrow"])
    summed = group_advantages(0.5 * named["wide"] + 2.0 * named["narrow"], groups).values
    assert (result.values - summed).abs().max() > 0.5  # the plain sum is the wide reward's alone
    assert set(result.stats) >= {"reward_mean/wide", "reward_mean/narrow", "advantage_mean"}


def test_gdpo_with_one_reward_is_plain_grpo():
    from mst_clipiqa.integrations.finetune.advantages import decoupled_advantages

    rewards, groups = torch.randn(6, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 0, 1, 1, 2, 2])
    one, plain = decoupled_advantages({"quality": rewards}, groups), group_advantages(rewards, groups)
    assert torch.equal(one.values, plain.values) and torch.equal(one.valid, plain.valid)


def test_uncertain_samples_get_shrunk_advantages():
    from mst_clipiqa.integrations.finetune.advantages import shrink_by_uncertainty

    advantages = group_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0, 0, 0, 0]))
    shrunk = shrink_by_uncertainty(advantages, torch.tensor([0.0, 0.5, 0.5, 1.5]), scale=0.5)
    torch.testing.assert_close(shrunk.values, advantages.values * torch.tensor([1.0, 0.5, 0.5, 0.25]))
    with pytest.raises(ValueError, match="scale must be > 0"):
        shrink_by_uncertainty(advantages, torch.zeros(4), scale=0.0)


def test_quantiles_count_the_buffer_below_and_half_the_ties():
    mixer = QuantileMixer(buffer_size=8)
    first = mixer.quantiles("a", torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert first.tolist() == [0.125, 0.375, 0.625, 0.875]
    second = mixer.quantiles("a", torch.tensor([2.5, float("nan")]))  # the buffer: 1, 2, 3, 4, 2.5
    assert second[0].item() == pytest.approx(0.5) and bool(second[1].isnan())


def test_rewards_on_different_scales_mix_by_rank_and_the_buffers_resume():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, generator=generator), torch.randn(6, generator=generator)
    mixed = QuantileMixer()({"a": a, "b": b}, {"a": 1.0, "b": 2.0})
    rescaled = QuantileMixer()({"a": 1000 * a + 7, "b": b}, {"a": 1.0, "b": 2.0})
    torch.testing.assert_close(mixed, rescaled)  # a plain weighted sum would be a's alone
    mixer = QuantileMixer(buffer_size=4)
    mixer({"a": a})
    resumed = QuantileMixer(buffer_size=4)
    resumed.load_state_dict(mixer.state_dict())
    torch.testing.assert_close(resumed({"a": b}), mixer({"a": b}))
    with pytest.raises(ValueError, match="reward weights name"):
        mixer({"a": a}, {"c": 1.0})
