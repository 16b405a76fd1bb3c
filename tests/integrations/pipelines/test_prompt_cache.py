"""Text encoders released once the prompts are encoded: each prompt encoded once, the encoders offloaded (back for a
new prompt) or freed (a new prompt refused in one line), and a run's LoRA the same whichever the setting."""

import functools
import gc
import weakref

import pytest
import torch

from mst_clipiqa.integrations import PolicyTrainer, RewardFinetuneConfig, RewardFinetuner
from mst_clipiqa.integrations.finetune.config import from_flat_settings
from mst_clipiqa.integrations.finetune.policy_config import PolicyFinetuneConfig
from mst_clipiqa.integrations.pipelines.families import denoiser_family
from mst_clipiqa.integrations.pipelines.prompt_cache import PromptCache, text_encoders
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd3_pipeline, tiny_sd_pipeline

PROMPTS = ["a cat", "a dog"]


def brightness(images):
    return images.mean(dim=(1, 2, 3))


def counted(pipe):
    calls = []
    original = pipe.encode_prompt

    @functools.wraps(original)
    def encode_prompt(*args, **kwargs):
        calls.append(kwargs["prompt"])
        return original(*args, **kwargs)

    pipe.encode_prompt = encode_prompt
    return calls


def test_each_prompt_is_encoded_once_as_the_family_encodes_it_alone():
    pipe = tiny_sd_pipeline()
    family = denoiser_family(pipe)
    cache = PromptCache(family, "keep")
    calls = counted(pipe)
    first = cache.encode(["a cat", "a dog", "a cat"], guidance=True)
    again = cache.encode(["a dog", "a cat"], guidance=True)
    assert calls == [["a cat"], ["a dog"]]
    alone = family.encode(["a dog"], guidance=True)
    assert set(first) == set(alone) == {"prompt_embeds", "negative_prompt_embeds"}
    for name in alone:
        assert torch.equal(first[name][1:2], alone[name]) and torch.equal(again[name][0:1], alone[name])
        assert torch.equal(first[name][0], first[name][2])


def test_offloaded_encoders_come_back_for_a_new_prompt_and_leave_again():
    pipe = tiny_sd_pipeline()
    cache = PromptCache(denoiser_family(pipe), "offload")
    moves = []
    for name, module in text_encoders(pipe).items():
        to = module.to
        module.to = lambda *a, _to=to, _name=name, **k: (moves.append((_name, str(a[0]))), _to(*a, **k))[1]
    cache.warm(PROMPTS)
    assert moves == [("text_encoder", "cpu")]
    cache.encode(["a new prompt"])
    assert moves[1:] == [("text_encoder", "cpu"), ("text_encoder", "cpu")]  # to the device (the CPU here), back
    cache.encode(["a cat"])
    assert len(moves) == 3  # cached: no move


def reward_run(mode, **extra):
    pipe = tiny_sd_pipeline()
    encoder = weakref.ref(pipe.text_encoder)
    torch.manual_seed(0)
    config = from_flat_settings(RewardFinetuneConfig, dict(
        text_encoders=mode, max_steps=2, batch_size=2, height=32, width=32, num_inference_steps=2, lora_rank=2,
        learning_rate=1e-2, progress_bar=False, **extra))
    trainer = RewardFinetuner(pipe, brightness, PROMPTS, config)
    trainer.train()
    gc.collect()
    return trainer, encoder


def test_freed_text_encoders_leave_the_run_unchanged_and_refuse_a_new_prompt():
    kept, kept_encoder = reward_run("keep")
    freed, freed_encoder = reward_run("free")
    assert kept_encoder() is not None and freed_encoder() is None  # gone from memory, not just unlinked
    assert freed.pipe.text_encoder is None
    a, b = kept.trained_parameters(), freed.trained_parameters()
    assert all(torch.equal(a[k], b[k]) for k in a) and any(a[k].abs().sum() > 0 for k in a)
    assert torch.equal(freed.sample(["a dog"], [7]), kept.sample(["a dog"], [7]))
    with pytest.raises(ValueError, match="'a new prompt' was not encoded before the text encoders were freed"):
        freed.sample(["a new prompt"], [0])


def test_the_policy_trainer_encodes_from_the_cache_too():
    def run(mode):
        config = from_flat_settings(PolicyFinetuneConfig, dict(
            method="grpo", text_encoders=mode, num_inference_steps=2, guidance_scale=1.0, group_size=2,
            prompts_per_step=2, max_steps=1, lora_rank=2, learning_rate=1e-2, progress_bar=False,
            encode_kwargs={"max_sequence_length": 8}, height=32, width=32))
        trainer = PolicyTrainer(tiny_sd3_pipeline(), brightness, PROMPTS, config)
        trainer.train()
        return trainer

    kept, freed = run("keep"), run("free")
    assert not text_encoders(freed.pipe) and len(text_encoders(kept.pipe)) == len(text_encoders(tiny_sd3_pipeline()))
    a, b = kept.trained_parameters(), freed.trained_parameters()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_free_needs_prompts_known_before_the_run():
    config = from_flat_settings(RewardFinetuneConfig, dict(text_encoders="free", max_steps=1, progress_bar=False))
    with pytest.raises(ValueError, match="text_encoders='free' needs a list of prompts"):
        RewardFinetuner(tiny_sd_pipeline(), brightness, lambda: ("a cat", {}), config)
