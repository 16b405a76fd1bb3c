"""The trainer base: a new trainer gets run folder, checkpoints, bit-exact resumption and its own checkpointed
state by implementing the documented hooks; the fine-tuner decodes through its pipeline family."""

import torch
from torch import nn

from integrations import RewardFinetuneConfig, RewardFinetuner
from integrations.finetune.base import DiffusionTrainer, lr_schedule
from integrations.pipelines.tiny import tiny_sd_pipeline

from .test_finetuner import PROMPTS, config, make_reward


class ToyTrainer(DiffusionTrainer):
    """Pulls a vector towards noisy targets drawn from the trainer's generator; counts its steps as extra state."""

    name = "toy"

    def __init__(self, config, accelerator=None):
        super().__init__(config, accelerator)
        weights = nn.Linear(4, 1, bias=False)
        nn.init.zeros_(weights.weight)
        optimizer = torch.optim.AdamW(weights.parameters(), lr=config.learning_rate)
        self.lr_scheduler = lr_schedule(config, optimizer)
        self.model, self.optimizer = self.accelerator.prepare(weights, optimizer)
        self.visits = torch.zeros(1)
        self.start_run()

    def trained_parameters(self):
        return dict(self.unwrapped.named_parameters())

    def extra_state(self):
        return {"toy.visits": self.visits}, {"visits": int(self.visits)}

    def load_extra_state(self, tensors, meta):
        self.visits = tensors["toy.visits"].clone()
        assert meta == {"visits": int(self.visits)}

    def train_step(self):
        target = torch.randn(4, generator=self.rng)
        loss = (self.model.weight[0] - target).square().sum()
        self.accelerator.backward(loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_scheduler.step()
        self.visits += 1
        self.global_step += 1
        record = {"step": self.global_step, "reward": -loss.item(), "loss": loss.item()}
        self.log.append(record)
        return record


def toy_config(tmp_path, **overrides):
    return RewardFinetuneConfig(**{"output_dir": str(tmp_path), "max_steps": 4, "save_every": 2, "learning_rate": 0.1,
                                   "progress_bar": False, "cpu": True, **overrides})


def test_a_new_trainer_resumes_bit_for_bit_with_its_own_state(tmp_path):
    straight = ToyTrainer(toy_config(tmp_path / "straight"))
    straight.train()
    ToyTrainer(toy_config(tmp_path / "resumed")).train(max_steps=2)  # as if killed after checkpoint 2
    resumed = ToyTrainer(toy_config(tmp_path / "resumed", resume=True))
    assert resumed.global_step == 2 and int(resumed.visits) == 2
    resumed.train()
    assert torch.equal(resumed.unwrapped.weight, straight.unwrapped.weight)
    assert resumed.log.history == straight.log.history and int(resumed.visits) == 4
    assert (tmp_path / "resumed" / "log.json").exists() and (tmp_path / "resumed" / "reward_curve.png").exists()


def test_finetuning_decodes_through_the_pipeline_family():
    trainer = RewardFinetuner(tiny_sd_pipeline(), make_reward(), PROMPTS, config(max_steps=1))
    calls, decode = [], trainer.family.decode

    def recording_decode(latents, height, width, **kwargs):
        calls.append(latents.shape)
        return decode(latents, height, width, **kwargs)

    trainer.family.decode = recording_decode
    loss, _ = trainer.compute_loss(PROMPTS, [0, 1])
    loss.backward()
    assert len(calls) == 1 and calls[0][0] == len(PROMPTS)
    assert sum(p.grad.abs().sum() for p in trainer.params if p.grad is not None) > 0  # LoRA B starts at 0


def test_the_progress_bar_names_its_number_and_scale():
    """The reward trainers' number is the reward on its scale; DPO's is not a reward at all, and says so."""
    from integrations import DPOTrainer, RewardFinetuner
    from reward import MSTCLIPIQAReward

    finetuner = object.__new__(RewardFinetuner)  # only the label is under test: no pipeline, no run
    finetuner.reward = MSTCLIPIQAReward.from_pretrained("tiny")
    low, high = finetuner.reward.score_range
    assert finetuner.progress_key() == f"reward ({low:g}-{high:g})"
    finetuner.reward = MSTCLIPIQAReward.from_pretrained("tiny", normalize=True)
    assert finetuner.progress_key() == "reward (0-1)"
    assert object.__new__(DPOTrainer).progress_key() == "implicit margin (log-ratio)"
