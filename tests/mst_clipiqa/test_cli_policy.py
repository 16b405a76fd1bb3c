"""``mst-clipiqa finetune --method grpo``: the online RL flags reach PolicyTrainer, and the run leaves a LoRA,
a resumable checkpoint, the log of every step and the held-out reward before and after."""
from __future__ import annotations

import json

import yaml

from mst_clipiqa.cli import main


def test_finetune_method_grpo_on_tiny_sd3_for_two_steps(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    out = tmp_path / "run"
    status = main(["finetune", "--method", "grpo", "--pipeline", "tiny-sd3", "--model", "tiny", "--prompts",
                   str(prompts), "--out", str(out), "--num-inference-steps", "3", "--sde-window", "0", "2",
                   "--group-size", "2", "--prompts-per-step", "2", "--inner-epochs", "2", "--clip-range", "1e-3",
                   "--kl-coeff", "0.01", "--noise-level", "0.8", "--guidance-scale", "1", "--max-steps", "2",
                   "--learning-rate", "1e-2", "--save-every", "1", "--eval-images", "2", "--quiet", "--device", "cpu"])
    text = capsys.readouterr().out
    assert status == 0 and "grpo: 2 steps on 1 process(es)" in text
    log = json.loads((out / "log.json").read_text())
    config, history = log["config"], log["history"]
    assert (config["method"], config["sde_window"], config["group_size"], config["inner_epochs"]) == ("grpo", [0, 2],
                                                                                                       2, 2)
    assert (config["clip_range"], config["kl_coeff"], config["noise_level"]) == (1e-3, 0.01, 0.8)
    assert config["eta"] == 1.0  # the policy's default, not DRaFT's eta = 0 (which has no noisy DDIM step)
    assert (config["num_inference_steps"], config["run"]["max_steps"]) == (3, 2)
    recorded = yaml.safe_load((out / "config.yaml").read_text())  # the resolved options, as --config reads them
    assert (recorded["method"], recorded["sde-window"], recorded["kl-coeff"], recorded["max-steps"]) == ("grpo", [0, 2],
                                                                                                      0.01, 2)
    assert [r["step"] for r in history] == [1, 2] and all("clip_fraction" in r and "kl" in r for r in history)
    assert (out / "lora" / "pytorch_lora_weights.safetensors").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir())[-1] == "step_00000002"
    assert len(json.loads((out / "held_out.json").read_text())["before"]) == 2


def _grpo(tmp_path, *extra):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    return ["finetune", "--method", "grpo", "--pipeline", "tiny-sd3", "--model", "tiny", "--prompts", str(prompts),
            "--out", str(tmp_path / "run"), "--group-size", "2", "--prompts-per-step", "2", "--max-steps", "1",
            "--eval-images", "0", "--quiet", "--device", "cpu", *extra]


def test_unbounded_sampling_steps_are_refused_in_one_line(tmp_path, capsys):
    for steps in ("1000000", str(10**12)):
        assert main(_grpo(tmp_path, "--num-inference-steps", steps)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"num_inference_steps must be <= 1000 (sampling steps per rollout; the papers use " \
                                  f"10-50), got {steps}" in err[0], err

