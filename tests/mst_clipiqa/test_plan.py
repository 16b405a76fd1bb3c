"""``mst-clipiqa plan`` and ``finetune --dry-run``: the plan printed, the exit status says whether it fits."""
import json

import pytest

from mst_clipiqa.cli import main

TINY = ["--pipeline", "tiny", "--resolution", "64", "--num-inference-steps", "2"]


def test_plan_says_when_it_does_not_fit_and_what_to_change(capsys):
    assert main(["plan", *TINY, "--gpu-memory", "0.01GB", "--json"]) == 1
    record = json.loads(capsys.readouterr().out)
    assert record["fits"] is False and record["peak"] == record["weights"] + record["lora"] + record["step"]
    assert record["advice"]


def test_finetune_dry_run_plans_its_own_settings_and_loads_nothing(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\n")
    assert main(["finetune", "--pipeline", "tiny", "--model", "tiny", "--prompts", str(prompts), "--out",
                 str(tmp_path / "run"), "--num-inference-steps", "2", "--height", "64", "--width", "64",
                 "--method", "alignprop", "--dry-run", "--gpu-memory", "24GB"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tiny alignprop 64x64 batch 2 2 steps, bf16, text encoders offload, checkpointing on")
    assert "fits in 24 GiB" in out
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (["--gpu-memory", "lots"], "--gpu-memory 'lots': expected a size in GB"),
    (["--batch-size", "0"], "--batch-size must be >= 1"),
])
def test_bad_values_get_one_line(args, message, capsys):
    assert main(["plan", *TINY, *args]) == 2
    assert message in capsys.readouterr().err
