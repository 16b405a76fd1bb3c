import math

import pytest
import torch

from mst_clipiqa.integrations.finetune.config import RunConfig
from mst_clipiqa.integrations.finetune.dpo import DPOConfig, DPOTrainer, train_dpo
from mst_clipiqa.integrations.finetune.dpo_objective import DiffusionDPOObjective, dpo_loss, pair_batch
from mst_clipiqa.integrations.pipelines.lora import add_lora, lora_parameters, named_lora_parameters
from mst_clipiqa.integrations.pipelines.tiny import TINY_PIPELINES
from mst_clipiqa.integrations.pipelines.tiny_autoencoder import with_linear_autoencoder

from ..preference_data import bright_pipe, brightness

ENCODE = {"sd3": {"max_sequence_length": 8}, "flux": {"max_sequence_length": 16}}


@pytest.mark.parametrize("name", ["sd", "sd3", "flux"])
def test_loss_at_initialisation_is_log_2_and_trains_only_the_lora(name):
    pipe = with_linear_autoencoder(TINY_PIPELINES[name]())
    objective = DiffusionDPOObjective(pipe, encode_kwargs=ENCODE.get(name))
    assert objective.flow == (name != "sd")
    denoiser = objective.family.denoiser
    add_lora(denoiser, 4, seed=0)
    g = torch.Generator().manual_seed(0)
    winners, losers = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    loss, stats = objective.loss(winners, losers, ["a cat", "a dog"], torch.Generator().manual_seed(1))
    assert float(loss.detach()) == pytest.approx(math.log(2), abs=1e-6)  # -log sigmoid(0): policy = reference
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in lora_parameters(denoiser))
    assert all(p.grad is None for n, p in denoiser.named_parameters() if "lora_" not in n)


def test_dpo_loss_falls_when_the_policy_prefers_the_winner():
    ref_w, ref_l = torch.tensor([1.0, 1.0]), torch.tensor([1.0, 1.0])
    better, _ = dpo_loss(torch.tensor([0.999, 0.999]), ref_l, ref_w, ref_l, beta=5000)
    worse, stats = dpo_loss(torch.tensor([1.001, 1.001]), ref_l, ref_w, ref_l, beta=5000)
    # -log sigmoid(-beta / 2 * (e_w - e_ref_w)) with e_w - e_ref_w = -+0.001
    assert float(better) == pytest.approx(-math.log(1 / (1 + math.exp(-2.5))), rel=1e-4)
    assert float(worse) == pytest.approx(-math.log(1 / (1 + math.exp(2.5))), rel=1e-4)
    assert float(stats["implicit_accuracy"]) == 0.0
    with pytest.raises(ValueError, match=r"share one \(B,\) shape"):
        dpo_loss(torch.zeros(2), torch.zeros(3), torch.zeros(2), torch.zeros(2))
    with pytest.raises(ValueError, match="beta must be"):
        DiffusionDPOObjective(bright_pipe(), beta=0)


def test_pair_batch_puts_the_preferred_image_first(pairs):
    rows = [dict(pairs[i]) for i in range(4)]
    winners, losers, captions = pair_batch(rows, 16, 16)
    assert winners.shape == (4, 3, 16, 16) and captions == [r["caption"] for r in rows]
    full_size = pair_batch(rows, 32, 32)
    for row, win, lose in zip(rows, brightness(full_size[0]), brightness(full_size[1])):
        # the stored 8-bit images score within rounding of the scores of the images they were made from
        assert float(win) == pytest.approx(max(row["score_0"], row["score_1"]), abs=2e-3)
        assert float(lose) == pytest.approx(min(row["score_0"], row["score_1"]), abs=2e-3)
        assert row["score_0"] != row["score_1"]
    with pytest.raises(ValueError, match="tie"):
        pair_batch([{**rows[0], "label_0": 0.5}], 32, 32)


def _held_out_accuracy(trainer: DPOTrainer, rows: list[dict]) -> float:
    """How often the trained policy prefers each held-out pair's labelled winner (DPO's implicit accuracy),
    over 4 fixed draws of timestep and noise."""
    winners, losers, prompts = pair_batch(rows, trainer.objective.height, trainer.objective.width)
    with torch.no_grad():
        return sum(float(trainer.objective.loss(winners, losers, prompts, torch.Generator().manual_seed(k),
                                                denoiser=trainer.unwrapped)[1]["implicit_accuracy"])
                   for k in range(4)) / 4


def test_dpo_learns_the_labelled_preference_over_seeds(pairs):
    """Trained on brightness-labelled pairs, the policy prefers the brighter image of pairs it never trained on
    more often than the same run on flipped labels, on every seed (the samples' own brightness moves too little
    on this random model to follow the labels over seeds: docs/preference.md)."""
    rows = [dict(row) for row in pairs]
    held, train = rows[::4], [row for i, row in enumerate(rows) if i % 4]
    flipped = [{**row, "label_0": 1.0 - row["label_0"]} for row in train]
    gains = []
    for seed in range(3):
        config = DPOConfig(run=RunConfig(learning_rate=2e-3, max_steps=40, batch_size=8, progress_bar=False,
                                         seed=seed))
        tuned, control = DPOTrainer(bright_pipe(), train, config), DPOTrainer(bright_pipe(), flipped, config)
        history = tuned.train().history
        control.train()
        assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)  # the policy starts as the reference
        accuracy = _held_out_accuracy(tuned, held)
        gains.append(accuracy - _held_out_accuracy(control, held))
        assert accuracy > 0.5 and gains[-1] > 0, (seed, accuracy, gains)
    mean, se = sum(gains) / 3, float(torch.tensor(gains).std()) / math.sqrt(3)
    assert mean > 3 * se, gains


class StopAfter:
    """A monitor stand-in: keeps the state of step 0 and stops the run at step ``stop``."""

    def __init__(self, stop):
        self.stop, self.steps, self.should_stop, self.best_state = stop, [], False, None

    def __call__(self, step, state):
        self.steps.append(step)
        if step == 0:
            self.best_state = {k: v.detach().clone() for k, v in state().items()}
        self.should_stop = step == self.stop


def test_train_dpo_stops_with_the_monitor_and_restores_its_best_state(pairs):
    pipe, monitor = bright_pipe(), StopAfter(2)
    history = train_dpo(pipe, list(pairs.select(range(8))),
                        DPOConfig(run=RunConfig(max_steps=5, batch_size=2, learning_rate=1e-2, progress_bar=False)),
                        monitor=monitor)
    assert monitor.steps == [0, 1, 2] and len(history) == 2
    for name, p in named_lora_parameters(pipe.unet).items():
        assert torch.equal(p.detach(), monitor.best_state[name])
    with pytest.raises(ValueError, match="batch_size must be"):
        train_dpo(bright_pipe(), pairs, DPOConfig(run=RunConfig(batch_size=0)))


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_train_dpo_moves_the_lora_of_flow_families(name, pairs):
    pipe = with_linear_autoencoder(TINY_PIPELINES[name]())
    config = DPOConfig(run=RunConfig(max_steps=2, batch_size=2, learning_rate=1e-2, encode_kwargs=ENCODE[name],
                                     progress_bar=False))
    history = train_dpo(pipe, list(pairs.select(range(4))), config)
    assert len(history) == 2 and history[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert any(p.abs().sum() > 0 for n, p in named_lora_parameters(pipe.transformer).items() if "lora_B" in n)


def test_train_dpo_takes_progress_as_the_config_field_it_is(pairs):
    with pytest.warns(DeprecationWarning, match=r"train_dpo\(progress=...\) is config.run.progress_bar now"):
        history = train_dpo(bright_pipe(), list(pairs.select(range(2))),
                            DPOConfig(run=RunConfig(max_steps=1, batch_size=1)), progress=False)
    assert len(history) == 1
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['progres'\]"):
        train_dpo(bright_pipe(), pairs, progres=False)
