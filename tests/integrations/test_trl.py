"""trl as it is (0.23.1, the last release with DDPO and AlignProp): its trainers run a few steps on a saved tiny
SD pipeline with this library's reward, through ddpo_reward_fn and ddpo_reward_fn(differentiable=True)."""

import pytest
import torch
from accelerate import PartialState

from mst_clipiqa.integrations import ddpo_reward_fn
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward

trl = pytest.importorskip("trl", reason="trl is a test extra (pip install trl==0.23.1)")
if not hasattr(trl, "AlignPropTrainer"):
    pytest.skip(f"trl {trl.__version__} has no DDPO / AlignProp (removed after 0.23.1)", allow_module_level=True)

PROMPTS = ["a cat", "a red car", "a lighthouse"]
# trl 0.23.1's sampler needs classifier-free guidance (> 1) on diffusers 0.42
COMMON = dict(num_epochs=2, sample_num_steps=2, sample_guidance_scale=2.0, train_batch_size=2, save_freq=10**6,
              mixed_precision="no")


@pytest.fixture(scope="module")
def saved_pipeline(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_sd")
    tiny_sd_pipeline().save_pretrained(folder)
    PartialState()  # trl's pipeline logs through accelerate's logger before its trainer builds the Accelerator
    return str(folder)


@pytest.fixture
def reward():
    torch.manual_seed(0)
    return MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny("B")))


def prompt_fn():
    return PROMPTS[int(torch.randint(len(PROMPTS), ()))], {}


def recording(reward_fn, calls):
    def fn(images, prompts, metadata):
        rewards, named = reward_fn(images, prompts, metadata)
        calls.append((images, list(prompts), rewards))
        return rewards, named
    return fn


def lora_weights(pipeline) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in pipeline.unet.named_parameters() if "lora" in n}


def run(trainer_cls, config, reward_fn, saved_pipeline, tmp_path):
    pipeline = trl.DefaultDDPOStableDiffusionPipeline(saved_pipeline, use_lora=True)
    trainer = trainer_cls(config(**COMMON, project_kwargs={"project_dir": str(tmp_path)}), reward_fn, prompt_fn,
                          pipeline)
    before = lora_weights(pipeline)
    trainer.train()
    after = lora_weights(pipeline)
    assert before and any(not after[n].equal(w) for n, w in before.items())  # the LoRA trained


def test_ddpo_trainer_runs_with_ddpo_reward_fn(saved_pipeline, reward, tmp_path):
    calls = []
    run(trl.DDPOTrainer, lambda **kw: trl.DDPOConfig(**kw, sample_batch_size=2, sample_num_batches_per_epoch=1,
                                                     per_prompt_stat_tracking=False),
        recording(ddpo_reward_fn(reward), calls), saved_pipeline, tmp_path)
    assert len(calls) == 2
    for images, prompts, rewards in calls:  # trl's images as the reward scores them itself
        assert rewards.shape == (2,) and not rewards.requires_grad
        torch.testing.assert_close(rewards, reward(images.float(), prompts).cpu())


def test_alignprop_trainer_runs_with_the_differentiable_reward_fn(saved_pipeline, reward, tmp_path):
    calls = []
    run(trl.AlignPropTrainer, lambda **kw: trl.AlignPropConfig(**kw, truncated_backprop_rand=False,
                                                               truncated_backprop_timestep=1),
        recording(ddpo_reward_fn(reward, differentiable=True), calls), saved_pipeline, tmp_path)
    assert len(calls) == 2
    for images, prompts, rewards in calls:
        assert images.requires_grad and rewards.requires_grad and rewards.shape == (2,)
        torch.testing.assert_close(rewards.detach(), reward(images.detach(), prompts))


def test_the_no_gradient_reward_fn_in_alignprop_names_the_fix(saved_pipeline, reward, tmp_path):
    with pytest.raises(ValueError, match=r"scores without gradients.*AlignPropTrainer.*differentiable=True"):
        run(trl.AlignPropTrainer, lambda **kw: trl.AlignPropConfig(**kw, truncated_backprop_rand=False,
                                                                   truncated_backprop_timestep=1),
            ddpo_reward_fn(reward), saved_pipeline, tmp_path)


def test_the_differentiable_reward_fn_refuses_what_it_cannot_backpropagate(reward):
    with pytest.raises(ValueError, match=r"differentiable=True\) got ndarray .*\(B, 3, H, W\) float tensor"):
        ddpo_reward_fn(reward, differentiable=True)(torch.rand(2, 32, 32, 3).numpy(), ["a", "b"], [{}, {}])
