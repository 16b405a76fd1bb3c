"""The trainer base: a new trainer gets run folder, checkpoints, bit-exact resumption and its own checkpointed
state by implementing the documented hooks; the fine-tuner decodes through its pipeline family."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from mst_clipiqa.integrations import RewardFinetuneConfig, RewardFinetuner
from mst_clipiqa.integrations.finetune.base import DiffusionTrainer, lr_schedule
from mst_clipiqa.integrations.finetune.config import from_flat_settings
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
from mst_clipiqa.reward import MSTCLIPIQAReward

from .test_finetuner import PROMPTS, config, make_reward


class ToyTrainer(DiffusionTrainer):
    """Pulls a vector towards noisy targets drawn from the trainer's generator; counts its steps as extra state."""

    name = "toy"

    def __init__(self, config, accelerator=None):
        super().__init__(config, accelerator)
        weights = nn.Linear(4, 1, bias=False)
        nn.init.zeros_(weights.weight)
        optimizer = torch.optim.AdamW(weights.parameters(), lr=config.run.learning_rate)
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
    return from_flat_settings(RewardFinetuneConfig, {"output_dir": str(tmp_path), "max_steps": 4, "save_every": 2,
                                                     "learning_rate": 0.1, "progress_bar": False, "cpu": True,
                                                     **overrides})


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


def test_a_checkpoint_holds_no_generator_state_so_any_process_count_resumes_it_alike(tmp_path):
    """Every unit of work is seeded by (seed, step, process): a checkpoint of the previous release, written by two
    processes with their generator files, resumes on one as this release's own, bit for bit."""
    straight = ToyTrainer(toy_config(tmp_path / "straight"))
    straight.train()
    ToyTrainer(toy_config(tmp_path / "resumed")).train(max_steps=2)
    folder = tmp_path / "resumed" / "checkpoints" / "step_00000002"
    assert sorted(p.name for p in folder.iterdir()) == ["state.json", "state.safetensors"]
    meta = json.loads((folder / "state.json").read_text())
    (folder / "state.json").write_text(json.dumps({**meta, "world_size": 2}))  # as the previous release wrote it
    for rank in (0, 1):
        (folder / f"rng_{rank}.safetensors").write_bytes(b"generator states this release does not read")
    resumed = ToyTrainer(toy_config(tmp_path / "resumed", resume=True))
    assert resumed.global_step == 2
    resumed.train()
    assert torch.equal(resumed.unwrapped.weight, straight.unwrapped.weight)
    assert resumed.log.history == straight.log.history


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


class FailingToy(ToyTrainer):
    def train_step(self):
        if self.global_step == 1:
            raise RuntimeError("the second step failed")
        return super().train_step()


def test_a_trainer_whose_train_raises_releases_its_run_folder(tmp_path):
    failed = FailingToy(toy_config(tmp_path, save_every=1))
    with pytest.raises(RuntimeError, match="the second step failed"):
        failed.train()
    retry = ToyTrainer(toy_config(tmp_path, save_every=1, resume=True))  # `failed` is still alive
    assert retry.global_step == 1
    assert retry.train().history[-1]["step"] == 4


OLD_RUN = Path(__file__).with_name("data") / "run_0e0797a_checkpoints"  # data/make_run_0e0797a.py, release 0e0797a


def old_run_config(tmp_path, **overrides):
    """The settings of the old run (written flat, with DRaFT+'s penalty as ``kl_coeff``), composed."""
    settings = {"num_inference_steps": 2, "max_steps": 2, "batch_size": 1, "learning_rate": 1e-2, "lora_rank": 2,
                "save_every": 1, "cpu": True, "progress_bar": False, "output_dir": str(tmp_path),
                "base_distance_coeff": 0.1, "resume": True, **overrides}
    return from_flat_settings(RewardFinetuneConfig, settings)


def test_a_checkpoint_of_the_flat_config_release_resumes_or_is_refused_naming_the_field(tmp_path):
    shutil.copytree(OLD_RUN, tmp_path / "checkpoints")
    trainer = RewardFinetuner(tiny_sd_pipeline(), MSTCLIPIQAReward.from_pretrained("tiny"), ["a red car", "a cat"],
                              old_run_config(tmp_path))
    assert trainer.global_step == 1 and trainer.train().history[-1]["step"] == 2
    with pytest.raises(ValueError, match=r"\['base_distance_coeff'\] differ from the run that wrote it"):
        RewardFinetuner(tiny_sd_pipeline(), MSTCLIPIQAReward.from_pretrained("tiny"), ["a red car", "a cat"],
                        old_run_config(tmp_path, base_distance_coeff=0.2, max_steps=3))


def test_the_progress_bar_names_its_number_and_scale():
    """The reward trainers' number is the reward on its scale; DPO's is not a reward at all, and says so."""
    from mst_clipiqa.integrations import DPOTrainer, RewardFinetuner
    from mst_clipiqa.reward import MSTCLIPIQAReward

    finetuner = object.__new__(RewardFinetuner)  # only the label is under test: no pipeline, no run
    finetuner.reward = MSTCLIPIQAReward.from_pretrained("tiny")
    low, high = finetuner.reward.score_range
    assert finetuner.progress_key() == f"reward ({low:g}-{high:g})"
    finetuner.reward = MSTCLIPIQAReward.from_pretrained("tiny", normalize=True)
    assert finetuner.progress_key() == "reward (0-1)"
    assert object.__new__(DPOTrainer).progress_key() == "implicit margin (log-ratio)"


def test_the_contract_of_a_subclass_is_checked_when_it_is_built(tmp_path):
    class NoStep(DiffusionTrainer):
        def trained_parameters(self):
            return {}

    with pytest.raises(TypeError, match="abstract method 'train_step'|abstract method train_step"):
        NoStep(toy_config(tmp_path))

    class NoOptimizer(ToyTrainer):
        def __init__(self, config):
            DiffusionTrainer.__init__(self, config)
            self.model = nn.Linear(1, 1)
            self.start_run()

    with pytest.raises(TypeError, match=r"NoOptimizer.__init__ must set self.optimizer, self.lr_scheduler before "
                                        r"start_run\(\)"):
        NoOptimizer(toy_config(tmp_path))
    with pytest.raises(TypeError, match=r"ToyTrainer must define sample\(prompts, seeds\) for sample grids"):
        ToyTrainer(toy_config(tmp_path, sample_every=1, sample_prompts=["a cat"]))
    with pytest.raises(TypeError, match=r"ToyTrainer must define sample\(prompts, seeds\) for the hacking monitor"):
        ToyTrainer(toy_config(tmp_path)).hacking_monitor(make_reward())
