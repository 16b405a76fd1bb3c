"""Reward fine-tuning: DRaFT-K, AlignProp, ReFL on tiny pipelines built from configs (offline)."""

import json

import pytest
import torch
from torch import nn

from mst_clipiqa.integrations import RewardFinetuneConfig, RewardFinetuner, RunConfig, load_lora
from mst_clipiqa.integrations.finetune.config import from_flat_settings
from mst_clipiqa.integrations.pipelines.tiny import TINY_PIPELINES, tiny_sd_pipeline
from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward

PROMPTS = ["a red car", "a cat on a sofa"]
HELD_OUT_SEEDS = [1000, 1001, 1002, 1003]  # never drawn for training (the trainer draws 31-bit seeds)
STEPS = 4
EXTRA = {"sd3": {"max_sequence_length": 8}, "flux": {"max_sequence_length": 16},  # short T5 padding
         "pixart": {"max_sequence_length": 16, "clean_caption": False, "use_resolution_binning": False}}


def make_reward() -> MSTCLIPIQAReward:
    """A fixed tiny reward (its own instance: the trainer freezes and moves it)."""
    torch.manual_seed(0)
    return MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny(variant="A")))


def held_out_reward(pipe, reward, family="sd") -> torch.Tensor:
    """Per-image reward of the pipeline's own __call__ on held-out seeds (same prompts and seeds every call)."""
    prompts = [p for p in PROMPTS for _ in HELD_OUT_SEEDS]
    generators = [torch.Generator().manual_seed(s) for _ in PROMPTS for s in HELD_OUT_SEEDS]
    with torch.no_grad():
        images = pipe(prompts, num_inference_steps=STEPS, guidance_scale=1.0, generator=generators,
                      output_type="pt", **EXTRA.get(family, {})).images
        return reward(images, prompts)


def assert_clearly_higher(before: torch.Tensor, after: torch.Tensor, margin: float) -> None:
    """The paired gain on the held-out images is above ``margin`` and at least 4 standard errors from zero,
    so seed-to-seed noise of the tiny random models cannot pass for learning."""
    gain = after - before
    stderr = gain.std() / len(gain) ** 0.5
    print(f"held-out reward {before.mean():.3f} -> {after.mean():.3f} (gain {gain.mean():.3f} +- {stderr:.3f})")
    assert gain.mean() > margin and gain.mean() > 4 * stderr


def config(method="draft", family="sd", **overrides) -> RewardFinetuneConfig:
    base = dict(method=method, num_inference_steps=STEPS, learning_rate=1e-2, batch_size=2, max_steps=10,
                refl_window=2, max_grad_norm=None, progress_bar=False, encode_kwargs=EXTRA.get(family, {}))
    return from_flat_settings(RewardFinetuneConfig, {**base, **overrides})


@pytest.mark.parametrize("method", ["draft", "alignprop", "refl"])
def test_each_method_raises_held_out_reward(method):
    pipe, reward = tiny_sd_pipeline(), make_reward()
    before = held_out_reward(pipe, reward)
    trainer = RewardFinetuner(pipe, reward, PROMPTS, config(method))
    log = trainer.train()
    after = held_out_reward(pipe, reward)
    assert len(log.history) == 10
    assert_clearly_higher(before, after, margin=0.05)


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_sdxl_sd3_and_flux_denoisers_are_covered(family):
    pipe, reward = TINY_PIPELINES[family](), make_reward()
    before = held_out_reward(pipe, reward, family)
    # The tiny Flux transformer's attention path is weak: its LoRA needs a larger step.
    lr = {"flux": 1e-1}.get(family, 1e-2)
    RewardFinetuner(pipe, reward, PROMPTS, config("draft", family, learning_rate=lr)).train()
    after = held_out_reward(pipe, reward, family)
    assert_clearly_higher(before, after, margin=0.02)


@pytest.mark.parametrize("method", ["draft", "alignprop", "refl"])
def test_gradients_reach_only_lora_weights(method):
    pipe, reward = tiny_sd_pipeline(), make_reward()
    trainer = RewardFinetuner(pipe, reward, PROMPTS, config(method, base_distance_coeff=0.1))
    loss, stats = trainer.compute_loss(PROMPTS, [3, 4])
    loss.backward()
    modules = {name: m for name, m in pipe.components.items() if isinstance(m, torch.nn.Module)}
    modules["reward"] = reward
    with_grad = [f"{owner}.{n}" for owner, m in modules.items() for n, p in m.named_parameters()
                 if p.grad is not None]
    assert with_grad, "no parameter received a gradient"
    assert all(".lora_A." in n or ".lora_B." in n for n in with_grad), [n for n in with_grad if "lora" not in n]
    assert all(n.startswith("unet.") for n in with_grad)
    lora_b = [p.grad for n, p in pipe.unet.named_parameters() if "lora_B" in n]
    assert max(g.abs().max().item() for g in lora_b) > 0
    assert torch.isfinite(stats["reward"]).all()


@pytest.mark.parametrize("family", ["sd", "sdxl", "sd3", "flux"])
def test_saved_lora_loads_into_fresh_pipeline_and_reproduces_outputs(tmp_path, family):
    pipe, reward = TINY_PIPELINES[family](), make_reward()
    cfg = config(family=family, max_steps=3, lora_alpha=8, output_dir=str(tmp_path), sample_every=2,
                 sample_prompts=("a cat",), sample_seeds=(0, 1))
    RewardFinetuner(pipe, reward, PROMPTS, cfg).train()

    def generate(p):
        with torch.no_grad():
            return p("a dog", num_inference_steps=STEPS, guidance_scale=1.0, output_type="pt",
                     generator=torch.Generator().manual_seed(7), **EXTRA.get(family, {})).images.cpu()

    tuned, fresh = generate(pipe), TINY_PIPELINES[family](device=pipe.device)  # the trainer's device
    base = generate(fresh)
    fresh.load_lora_weights(tmp_path / "lora", weight_name="pytorch_lora_weights.safetensors")  # diffusers<0.40 offline
    assert (tuned - base).abs().max() > 1e-3  # the LoRA changed the model ...
    torch.testing.assert_close(generate(fresh), tuned, atol=1e-5, rtol=0)  # ... and loads back exactly

    log = json.loads((tmp_path / "log.json").read_text())
    assert [r["step"] for r in log["history"]] == [1, 2, 3]
    assert (tmp_path / "reward_curve.png").stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_000000.png", "step_000002.png"]


def test_kl_penalty_is_zero_at_start_and_grows_with_training():
    pipe, reward = tiny_sd_pipeline(), make_reward()
    trainer = RewardFinetuner(pipe, reward, PROMPTS, config(base_distance_coeff=1.0, max_steps=3))
    _, stats = trainer.compute_loss(PROMPTS, [1, 2])
    assert stats["penalty"].item() == 0.0  # LoRA B starts at zero: the model is the base model
    trainer.train()
    _, stats = trainer.compute_loss(PROMPTS, [1, 2])
    assert stats["penalty"].item() > 0.0


def test_named_reward_outputs_are_weighted():
    pipe = tiny_sd_pipeline()
    quality, other = make_reward(), MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny(variant="B")))
    rewards = {"quality": quality, "alignment": other}
    trainer = RewardFinetuner(pipe, rewards, PROMPTS, config(reward_weights={"quality": 1.0, "alignment": -0.5}))
    loss, stats = trainer.compute_loss(PROMPTS, [1, 2])
    expected = stats["reward/quality"] - 0.5 * stats["reward/alignment"]
    torch.testing.assert_close(stats["reward"], expected)
    torch.testing.assert_close(loss.detach(), -expected.mean())


@pytest.mark.parametrize(
    "overrides, message",
    [({"method": "dpo"}, "method"), ({"draft_k": 5}, "draft_k"), ({"alignprop_k_range": (2, 1)}, "alignprop"),
     ({"sample_every": 5}, "sample_prompts"), ({"mixed_precision": "fp8"}, "mixed_precision")],
)
def test_bad_config_is_a_clear_value_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        config(**overrides)


def test_bad_reward_output_is_a_clear_value_error():
    trainer = RewardFinetuner(tiny_sd_pipeline(), lambda images, prompts: images.mean(), PROMPTS, config())
    with pytest.raises(ValueError, match="shape"):
        trainer.compute_loss(PROMPTS, [1, 2])


def test_finetuners_with_different_precisions_can_follow_each_other():
    first = RewardFinetuner(tiny_sd_pipeline(), make_reward(), ["a cat"],
                            RewardFinetuneConfig(run=RunConfig(max_steps=1)))
    assert first.accelerator.mixed_precision == "no"
    # accelerate keeps one state per process: the later run's settings win instead of raising
    second = RewardFinetuner(tiny_sd_pipeline(), make_reward(), ["a cat"],
                             RewardFinetuneConfig(run=RunConfig(max_steps=1, mixed_precision="bf16")))
    assert second.accelerator.mixed_precision == "bf16"


@pytest.mark.parametrize("family", ["lcm", "pixart"])
def test_lcm_and_pixart_finetune_and_their_lora_loads_back(tmp_path, family):
    pipe, reward = TINY_PIPELINES[family](), make_reward()
    before = held_out_reward(pipe, reward, family)
    RewardFinetuner(pipe, reward, PROMPTS, config("draft", family, max_steps=6, output_dir=str(tmp_path))).train()
    after = held_out_reward(pipe, reward, family)
    assert_clearly_higher(before, after, margin=0.05)

    fresh = TINY_PIPELINES[family]()
    if family == "lcm":
        fresh.load_lora_weights(tmp_path / "lora", weight_name="pytorch_lora_weights.safetensors")
    else:  # PixArt's pipelines have no LoRA loader: peft's format, read by load_lora
        assert not hasattr(fresh, "load_lora_weights")
        load_lora(fresh, tmp_path / "lora")
    torch.testing.assert_close(held_out_reward(fresh, reward, family), after, atol=1e-5, rtol=0)


def test_trl_style_reward_and_a_dict_of_reward_forms():
    quality = make_reward()

    def trl_reward(images, prompts, metadata):  # trl's DDPO contract: (rewards, reward_metadata)
        assert len(metadata) == len(images)
        return 2 * quality(images, prompts), {"scorer": "mst"}

    class Brightness(nn.Module):  # an image-only module reward
        def forward(self, images):
            return images.mean(dim=(1, 2, 3))

    trainer = RewardFinetuner(tiny_sd_pipeline(), {"trl": trl_reward, "bright": Brightness()}, PROMPTS,
                              config(reward_weights={"trl": 1.0, "bright": 0.5}))
    loss, stats = trainer.compute_loss(PROMPTS, [1, 2])
    loss.backward()
    images = trainer.sample(PROMPTS, [1, 2])  # the same seeds: the images the loss scored
    torch.testing.assert_close(stats["reward/trl"], 2 * quality(images, PROMPTS), atol=1e-4, rtol=0)
    torch.testing.assert_close(stats["reward/bright"], images.mean(dim=(1, 2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(stats["reward"], stats["reward/trl"] + 0.5 * stats["reward/bright"])
    assert max(p.grad.abs().max().item() for p in trainer.params if p.grad is not None) > 0


def test_reward_without_gradient_is_a_clear_error():
    quality = make_reward()

    def numpy_reward(images, prompts, metadata):
        return quality(images, prompts).detach().cpu().numpy(), {}

    trainer = RewardFinetuner(tiny_sd_pipeline(), {"aesthetic": numpy_reward}, PROMPTS, config())
    with pytest.raises(ValueError, match="'aesthetic' returned no gradient .* torch.no_grad, .detach"):
        trainer.compute_loss(PROMPTS, [1, 2])


def test_warm_up_then_linear_decay_drives_the_optimizer():
    pipe = tiny_sd_pipeline()
    trainer = RewardFinetuner(pipe, make_reward(), PROMPTS, config(max_steps=5, lr_scheduler="linear",
                                                                  lr_warmup_steps=2))
    start = [p.detach().clone() for p in trainer.params]
    trainer.train_step()  # at learning rate 0: the optimizer does step, but the weights stay
    assert all(torch.equal(a, b) for a, b in zip(start, trainer.params))
    log = trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(start, trainer.params))
    # diffusers' linear schedule: n / warmup during warm-up, then down to 0 at max_steps (n counted from 0)
    assert [r["lr"] for r in log.history] == pytest.approx([0.0, 5e-3, 1e-2, 1e-2 * 2 / 3, 1e-2 / 3])
    assert all(r["grad_norm"] > 0 for r in log.history)


def test_prompts_from_a_file_or_a_prompt_fn(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red car\n\n  a cat on a sofa  \n")
    trainer = RewardFinetuner(tiny_sd_pipeline(), make_reward(), path, config(max_steps=1))
    assert trainer.prompts == ["a red car", "a cat on a sofa"]

    drawn = []

    def prompt_fn():  # DDPO's contract, drawing from the global generator the fine-tuner seeds per process
        drawn.append(PROMPTS[int(torch.randint(2, ()))])
        return drawn[-1], {"source": "test"}

    trainer = RewardFinetuner(tiny_sd_pipeline(), make_reward(), prompt_fn, config(max_steps=2))
    trainer.train()
    first = list(drawn)
    drawn.clear()
    RewardFinetuner(tiny_sd_pipeline(), make_reward(), prompt_fn, config(max_steps=2)).train()
    assert len(first) == 4 and drawn == first  # seeded: the same prompts again


@pytest.mark.parametrize("method", ["draft", "refl"])
def test_the_region_aware_reward_trains_the_lora_and_never_the_rewards_weights(method):
    from functools import partial

    pipe, reward = tiny_sd_pipeline(), make_reward()
    region_reward = partial(reward.region_score, temperature=0.1)
    trainer = RewardFinetuner(pipe, region_reward, PROMPTS, config(method))
    loss, stats = trainer.compute_loss(PROMPTS, [3, 4])
    loss.backward()
    assert all(p.grad is None for p in reward.parameters())
    lora_b = [p.grad for n, p in pipe.unet.named_parameters() if "lora_B" in n]
    assert all(g is not None and torch.isfinite(g).all() for g in lora_b) and max(g.abs().max() for g in lora_b) > 0


@pytest.mark.parametrize("method", ["alignprop", "refl"])
def test_every_process_draws_the_same_gradient_window(method):
    """Where gradients start decides how many denoiser passes a step makes, and DDP's first passes are collectives:
    processes drawing other windows from their own streams waited on each other for ever (ReFL on 2 processes)."""
    trainer = RewardFinetuner(tiny_sd_pipeline(), make_reward(), PROMPTS, config(method, num_inference_steps=8,
                                                                                   refl_window=8))
    windows = []
    for rank in (0, 1):  # each process's own streams, as seed_processes gives them
        trainer.rng.manual_seed(rank)
        windows.append([trainer._gradient_window(4) for trainer.global_step in range(5)])
    for (grad_from, stop_at), (other_from, other_stop) in zip(*windows):
        assert torch.equal(grad_from, other_from) and stop_at == other_stop
    assert len({int(grad_from.min()) for grad_from, _ in windows[0]}) > 1  # still drawn anew at every step
