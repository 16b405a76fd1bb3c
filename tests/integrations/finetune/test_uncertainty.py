"""The reward's uncertainty and GDPO in online RL: the options, and a run through the CLI that resumes bit for bit."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from mst_clipiqa.cli import main
from mst_clipiqa.integrations.finetune import PolicyConfig
from mst_clipiqa.integrations.finetune.uncertainty import kl_weights, uncertainty_reward
from mst_clipiqa.integrations.rewards import NamedScores


def test_the_options_name_what_they_need():
    with pytest.raises(ValueError, match="set kl_coeff > 0"):
        PolicyConfig(uncertainty="kl")
    with pytest.raises(ValueError, match="use method 'grpo'"):
        PolicyConfig(method="ddpo", reward_aggregation="gdpo")
    with pytest.raises(ValueError, match="reward_aggregation must be one of"):
        PolicyConfig(reward_aggregation="mean")
    with pytest.raises(ValueError, match="uncertainty must be one of"):
        PolicyConfig(uncertainty="gated")
    with pytest.raises(ValueError, match="an MSTCLIPIQAReward"):
        uncertainty_reward({"brightness": lambda images: images.mean((1, 2, 3))})


def test_the_reward_behind_named_scores_reports_sigma_and_kl_weights_average_one(tiny_models):
    from mst_clipiqa.reward import MSTCLIPIQAReward

    reward = MSTCLIPIQAReward(tiny_models("A"))
    assert uncertainty_reward({"other": len, "mst": NamedScores(reward)}) is reward
    weights = kl_weights(torch.tensor([0.0, 1.0, 2.0, 1.0]), torch.tensor([2, 1]))
    assert weights.tolist() == [2.0, 1.0]


def _finetune(out, *extra):
    prompts = out.parent / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    return main(["finetune", "--method", "grpo", "--pipeline", "tiny-sd3", "--model", "tiny", "--outputs",
                 "quality,correspondence", "--prompts", str(prompts), "--out", str(out), "--num-inference-steps", "2",
                 "--group-size", "2", "--prompts-per-step", "2", "--kl-coeff", "0.01", "--guidance-scale", "1",
                 "--learning-rate", "1e-2", "--save-every", "1",
                 "--eval-images", "0", "--quiet", "--device", "cpu", *extra])


@pytest.mark.parametrize(("aggregation", "uncertainty"), [("gdpo", "kl"), ("quantile", "shrink")])
def test_grpo_with_two_rewards_and_every_option_through_the_cli_resumes_bit_for_bit(tmp_path, capsys, aggregation,
                                                                                   uncertainty):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    options = ["--reward-aggregation", aggregation, "--uncertainty", uncertainty, "--sigma-patience", "3"]
    assert _finetune(straight, "--max-steps", "2", *options) == 0
    assert _finetune(resumed, "--max-steps", "1", *options) == 0
    assert _finetune(resumed, "--max-steps", "2", "--resume", *options) == 0
    capsys.readouterr()
    logs = [json.loads((run / "log.json").read_text()) for run in (straight, resumed)]
    config = logs[0]["config"]
    assert (config["reward_aggregation"], config["uncertainty"], config["sigma_patience"]) == (aggregation,
                                                                                            uncertainty, 3)
    history = logs[0]["history"]
    per_reward = "reward_mean/quality" if aggregation == "gdpo" else "quantile_mean"
    assert all(per_reward in r and "reward/correspondence" in r and r["sigma_mean"] > 0 for r in history)
    assert all(("kl" in r) and (("shrink_mean" in r) == (uncertainty == "shrink")) for r in history)
    drop = ("seconds", "time")
    clean = [[{k: v for k, v in r.items() if not any(d in k for d in drop)} for r in log["history"]] for log in logs]
    assert clean[0] == clean[1]
    lora = [load_file(run / "lora" / "pytorch_lora_weights.safetensors") for run in (straight, resumed)]
    assert lora[0].keys() == lora[1].keys() and all(torch.equal(lora[0][k], lora[1][k]) for k in lora[0])


def test_the_watch_warns_when_sigma_rises_with_the_reward_and_only_then():
    from mst_clipiqa.integrations.finetune.uncertainty import SigmaWatch

    def run(rows):
        watch = SigmaWatch(window=4, rise=0.1)
        return [watch.update(r, s) for r, s in rows], watch

    with pytest.warns(RuntimeWarning, match=r"uncertainty \(sigma\) rose from 0.1 to 0.2 \(\+100%\)"):
        flags, watch = run([(1.0, 0.1), (1.0, 0.1), (2.0, 0.2), (2.0, 0.2)])
    assert flags == [False, False, False, True]
    assert run([(1.0, 0.1), (1.0, 0.1), (2.0, 0.105), (2.0, 0.105)])[0][-1] is False  # sigma within 10%
    assert run([(2.0, 0.1), (2.0, 0.1), (1.0, 0.2), (1.0, 0.2)])[0][-1] is False  # the reward fell
    resumed = SigmaWatch(window=4, rise=0.1)
    resumed.load_state_dict(json.loads(json.dumps(watch.state_dict())))
    assert resumed.history == watch.history and resumed.in_row == watch.in_row == 1


def test_the_watch_stops_after_patience_updates_in_a_row_and_a_fall_resets_the_count():
    from mst_clipiqa.integrations.finetune.uncertainty import SigmaWatch

    watch = SigmaWatch(window=2, rise=0.1, patience=2)
    with pytest.warns(RuntimeWarning, match="rose"):
        watch.update(1.0, 0.1), watch.update(2.0, 0.2)
    assert (watch.in_row, watch.should_stop) == (1, False)
    watch.update(1.5, 0.3)  # the reward fell: the count starts again
    assert (watch.in_row, watch.should_stop) == (0, False)
    with pytest.warns(RuntimeWarning, match="rose"):
        watch.update(2.0, 0.4)
    watch.update(3.0, 0.8)  # second in a row: it stops instead of warning
    assert watch.should_stop and "rose from 0.4 to 0.8 (+100%) while their reward rose from 2 to 3" in watch.reason
    with pytest.raises(ValueError, match="patience must be >= 1"):
        SigmaWatch(patience=0)
    with pytest.raises(ValueError, match="sigma_patience must be >= 1"):
        PolicyConfig(sigma_patience=0)


PROMPTS = ["a red circle", "a blue square"]


def _policy_config(out=None, **overrides):
    from mst_clipiqa.integrations import PolicyFinetuneConfig
    from mst_clipiqa.integrations.finetune.config import from_flat_settings

    settings = dict(method="grpo", num_inference_steps=2, guidance_scale=1.0, group_size=2, prompts_per_step=2,
                    learning_rate=1e-2, max_steps=1, lora_rank=2, progress_bar=False,
                    output_dir=None if out is None else str(out))
    return from_flat_settings(PolicyFinetuneConfig, {**settings, **overrides})


def test_one_encoder_pass_per_rollout_gives_the_rewards_and_their_sigma(monkeypatch):
    """The MST-CLIPIQA reward scores the rollouts once: its scores (every output, under NamedScores, beside
    another reward) and its sigma come from that pass, in chunk order when scored on the scoring thread."""
    from mst_clipiqa.integrations import PolicyTrainer
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd3_pipeline
    from mst_clipiqa.reward import MSTCLIPIQAReward, load_model

    model = load_model("tiny", outputs=["quality", "correspondence"])
    reward = MSTCLIPIQAReward(model)  # its score: the first output; NamedScores: both
    rewards = {"bright": lambda images: images.mean((1, 2, 3)), "mst": NamedScores(reward)}
    trainer = PolicyTrainer(tiny_sd3_pipeline(), rewards, PROMPTS,
                            _policy_config(uncertainty="shrink", rollout_chunk=1, async_scoring=True))
    encoded = []
    encode = model.encode_images
    monkeypatch.setattr(model, "encode_images", lambda images, tokens=False: encoded.append(len(images))
                        or encode(images, tokens))
    batch = trainer.policy.collect(PROMPTS * 2, [0, 1, 2, 3], torch.tensor([0, 1, 0, 1]))
    assert encoded == [1, 1, 1, 1]  # one pass per rollout chunk, nothing more
    images, prompts = batch.rollout.images.float(), batch.rollout.prompts
    alone = reward(images, prompts, return_uncertainty=True)
    torch.testing.assert_close(batch.sigma, alone.sigma, rtol=1e-5, atol=1e-6)
    named = reward.named_scores(images, prompts)
    for name in ("quality", "correspondence"):
        torch.testing.assert_close(batch.named[f"mst.{name}"], named[name], rtol=1e-5, atol=1e-6)
    assert batch.advantages.stats["sigma_mean"] == pytest.approx(float(alone.sigma.mean()), rel=1e-5)


def test_rising_sigma_stops_the_run_after_a_checkpoint_with_one_line_and_a_resumed_run_stays_stopped(
        tiny_models, tmp_path, capsys):
    from dataclasses import replace

    from mst_clipiqa.integrations import PolicyTrainer
    from mst_clipiqa.integrations.finetune.uncertainty import SigmaWatch
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd3_pipeline
    from mst_clipiqa.reward import MSTCLIPIQAReward

    class Drifting(MSTCLIPIQAReward):
        """Reward and sigma that rise with every scoring pass: the signature of leaving the reward's data."""

        passes = 0

        def forward(self, images, prompts=None, return_uncertainty=False):
            result = super().forward(images, prompts, return_uncertainty)
            if not return_uncertainty:
                return result
            self.passes += 1
            return replace(result, scores=result.scores + self.passes, sigma=torch.full_like(result.sigma,
                                                                                              0.1 * self.passes))

    def trainer(**overrides):
        made = PolicyTrainer(tiny_sd3_pipeline(), Drifting(tiny_models("A")), PROMPTS,
                             _policy_config(tmp_path / "run", max_steps=6, sigma_patience=2, **overrides))
        made.policy.watch.window = 2  # the default window (6 updates) would take longer to fill
        return made

    run = trainer()
    run.train()
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert run.global_step == 3 and [r["sigma_rising"] for r in run.log.history] == [0.0, 1.0, 1.0]
    assert line == (f"stopped at step 3: the rollouts' uncertainty (sigma) rose from 0.2 to 0.3 (+50%) while their "
                    f"reward rose from {run.log.history[1]['reward']:.4g} to {run.log.history[2]['reward']:.4g} over "
                    f"the last 2 updates, on 2 updates in a row (sigma_patience 2); checkpoint written to "
                    f"{tmp_path / 'run'}")
    assert [int(p.name.split("_")[-1]) for p in (tmp_path / "run" / "checkpoints").iterdir()] == [3]
    resumed = trainer(resume=True)
    resumed.train()
    assert resumed.global_step == 3 and "stopped at step 3" in capsys.readouterr().out
    assert isinstance(resumed.policy.watch, SigmaWatch) and resumed.policy.watch.should_stop


@pytest.mark.parametrize("method", ["ddpo", "grpo"])
def test_shrink_divides_each_rollouts_advantage_by_one_plus_its_sigma_over_the_scale(tiny_models, method):
    from mst_clipiqa.integrations import PolicyTrainer
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
    from mst_clipiqa.reward import MSTCLIPIQAReward

    def collect(**options):
        trainer = PolicyTrainer(tiny_sd_pipeline(), MSTCLIPIQAReward(tiny_models("A")), PROMPTS,
                                _policy_config(method=method, **options))
        return trainer.policy.collect(PROMPTS * 2, [0, 1, 2, 3], torch.tensor([0, 1, 0, 1]))

    plain, shrunk = collect(sigma_patience=100), collect(uncertainty="shrink", uncertainty_scale=0.5)
    torch.testing.assert_close(shrunk.sigma, plain.sigma)
    assert bool((plain.sigma > 0).all()) and plain.advantages.values.abs().max() > 0
    torch.testing.assert_close(shrunk.advantages.values, plain.advantages.values / (1 + plain.sigma / 0.5))


def test_ddpo_weights_each_samples_kl_by_its_sigma(tiny_models):
    from mst_clipiqa.integrations import PolicyTrainer
    from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
    from mst_clipiqa.reward import MSTCLIPIQAReward

    def logged_kl(uncertainty):
        torch.manual_seed(0)
        trainer = PolicyTrainer(tiny_sd_pipeline(), MSTCLIPIQAReward(tiny_models("A")), PROMPTS,
                                _policy_config(method="ddpo", uncertainty=uncertainty, kl_coeff=0.1, max_steps=2))
        trainer.train()
        return [r["kl"] for r in trainer.log.history]

    plain, weighted = logged_kl("none"), logged_kl("kl")
    # the first update starts at the reference (KL 0, no KL gradient), so both runs reach step 2 with the same
    # LoRA and rollouts: their KL differs there by the per-sample weights alone
    assert plain[0] == weighted[0] == 0
    assert all(v >= 0 for v in plain + weighted) and plain[1] > 0 and plain[1] != pytest.approx(weighted[1])
