"""``train_policy``: a ``PolicyTrainer`` trained in this process; its old keywords name their config fields."""

import pytest
import torch

from mst_clipiqa.integrations.finetune import PolicyConfig, PolicyFinetuneConfig, RunConfig, group_batch, train_policy
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd3_pipeline

from .test_policy_learning import PROMPTS, brightness


def test_the_old_keywords_train_what_the_config_trains():
    with pytest.warns(DeprecationWarning, match=r"method= -> method=; epochs= -> run.max_steps=; "
                                                r"prompts_per_epoch= -> prompts_per_step=; .*seed= -> run.seed="):
        old = train_policy(tiny_sd3_pipeline(), brightness, PROMPTS, "grpo", epochs=1, prompts_per_epoch=2,
                           group_size=2, num_inference_steps=2, guidance_scale=1.0, seed=3)
    new = train_policy(tiny_sd3_pipeline(), brightness, PROMPTS, PolicyFinetuneConfig(
        "grpo", prompts_per_step=2, group_size=2, num_inference_steps=2, guidance_scale=1.0,
        run=RunConfig(max_steps=1, seed=3)))
    assert old.config == new.config and old.global_step == 1
    assert all(torch.equal(a, b) for a, b in zip(old.policy.params, new.policy.params))
    assert any(p.abs().sum() > 0 for name, p in old.trained_parameters().items() if "lora_B" in name)


def test_an_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['prompts_per_epochs'\]"):
        train_policy(tiny_sd3_pipeline(), brightness, PROMPTS, prompts_per_epochs=2)


def test_group_batch_repeats_each_drawn_prompt_group_size_times():
    prompts, seeds, groups = group_batch(PROMPTS, 3, 2, torch.Generator().manual_seed(0))
    assert len(prompts) == len(seeds) == 6 and prompts[0::2] == prompts[1::2] and len(set(seeds)) == 6
    assert groups.tolist() == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="num_prompts and group_size must be >= 1"):
        group_batch(PROMPTS, 0, 2, torch.Generator())


def test_a_config_of_the_method_alone_and_the_old_keywords_make_the_trainers_config():
    from mst_clipiqa.integrations.finetune.policy_loop import _config_from_keywords

    with pytest.warns(DeprecationWarning, match="epochs= -> run.max_steps="):
        config = _config_from_keywords(PolicyConfig(method="ddpo", kl_coeff=0.1), {"epochs": 2, "group_size": 3})
    assert config == PolicyFinetuneConfig(method="ddpo", kl_coeff=0.1, group_size=3, run=RunConfig(max_steps=2))
