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
    options = ["--reward-aggregation", aggregation, "--uncertainty", uncertainty]
    assert _finetune(straight, "--max-steps", "2", *options) == 0
    assert _finetune(resumed, "--max-steps", "1", *options) == 0
    assert _finetune(resumed, "--max-steps", "2", "--resume", *options) == 0
    capsys.readouterr()
    logs = [json.loads((run / "log.json").read_text()) for run in (straight, resumed)]
    assert (logs[0]["config"]["reward_aggregation"], logs[0]["config"]["uncertainty"]) == (aggregation, uncertainty)
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

    with pytest.warns(RuntimeWarning, match="uncertainty rose from 0.1 to 0.2"):
        flags, watch = run([(1.0, 0.1), (1.0, 0.1), (2.0, 0.2), (2.0, 0.2)])
    assert flags == [False, False, False, True]
    assert run([(1.0, 0.1), (1.0, 0.1), (2.0, 0.105), (2.0, 0.105)])[0][-1] is False  # sigma within 10%
    assert run([(2.0, 0.1), (2.0, 0.1), (1.0, 0.2), (1.0, 0.2)])[0][-1] is False  # the reward fell
    resumed = SigmaWatch(window=4, rise=0.1)
    resumed.load_state_dict(json.loads(json.dumps(watch.state_dict())))
    assert resumed.history == watch.history
