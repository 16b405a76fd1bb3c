"""Resumable fine-tuning: a run killed (SIGKILL) and resumed ends bit for bit where an uninterrupted one does."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mst_clipiqa.cli import build_parser, main
from mst_clipiqa.integrations import RewardFinetuner, complete_checkpoints
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline

from .test_finetuner import PROMPTS, config, make_reward

ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("finetune_worker.py")


def cli(prompts: Path, out: Path, *extra: str) -> list[str]:
    # AlignProp draws its gradient windows, the prompts and the seeds from the streams each step reseeds; the
    # schedule warms up then decays, and the EMA and AdamW carry state: a resume must restore all of them.
    return ["finetune", "--pipeline", "tiny", "--model", "tiny", "--prompts", str(prompts), "--out", str(out),
            "--method", "alignprop", "--num-inference-steps", "3", "--max-steps", "6", "--learning-rate", "1e-2",
            "--lr-scheduler", "cosine", "--lr-warmup-steps", "2", "--use-ema", "--ema-decay", "0.9",
            "--save-every", "2", "--keep-checkpoints", "3", "--quiet", *extra]


def killed(args: list[str], tmp_path: Path, **kill: int) -> None:
    """Run the command in a subprocess that SIGKILLs itself at the given point."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in kill.items()]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(WORKER), "--record", str(tmp_path / "records"), *flags, "--", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


def run_raising(argv: list[str]) -> int:
    """The command without the CLI's conversion of ValueError into exit status 2."""
    args = build_parser().parse_args(argv)
    return args.func(args)


def assert_same_tensors(a: Path, b: Path) -> None:
    left, right = load_file(a), load_file(b)
    assert sorted(left) == sorted(right)
    for key in left:
        assert torch.equal(left[key], right[key]), key


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("a red car\na cat on a sofa\na lighthouse at dusk\n")
    return path


def test_killed_and_resumed_run_equals_an_uninterrupted_one(tmp_path, prompts):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert main(cli(prompts, whole)) == 0

    # killed while publishing the step-4 checkpoint: its folder is complete but unpublished (half-written)
    killed(cli(prompts, broken), tmp_path, kill_publishing=4)
    assert [p.name for p in complete_checkpoints(broken)] == ["step_00000002"]
    assert (broken / "checkpoints" / "step_00000004.tmp").is_dir()
    # resumed from step 2, then killed in the middle of step 5 (after a complete step-4 checkpoint)
    killed(cli(prompts, broken, "--resume"), tmp_path, kill_in_step=5)
    assert [p.name for p in complete_checkpoints(broken)] == ["step_00000002", "step_00000004"]
    assert main(cli(prompts, broken, "--resume")) == 0

    assert_same_tensors(whole / "lora" / "pytorch_lora_weights.safetensors",
                        broken / "lora" / "pytorch_lora_weights.safetensors")
    last_whole, last_broken = complete_checkpoints(whole)[-1], complete_checkpoints(broken)[-1]
    assert last_whole.name == last_broken.name == "step_00000006"
    assert_same_tensors(last_whole / "state.safetensors", last_broken / "state.safetensors")  # LoRA, AdamW, EMA
    state = [json.loads((p / "state.json").read_text()) for p in (last_whole, last_broken)]
    for key in ("step", "history", "optimizer", "ema"):
        assert state[0][key] == state[1][key], key
    logs = [json.loads((p / "log.json").read_text())["history"] for p in (whole, broken)]
    assert logs[0] == logs[1] and [r["step"] for r in logs[0]] == [1, 2, 3, 4, 5, 6]
    assert not list((broken / "checkpoints").glob("*.tmp"))  # the half-written one was cleared by the next


def test_a_folder_with_checkpoints_is_not_overwritten_nor_resumed_with_other_settings(tmp_path, prompts):
    out = tmp_path / "run"
    assert main(cli(prompts, out, "--max-steps", "3")) == 0
    with pytest.raises(ValueError, match="holds checkpoints of an earlier run"):
        run_raising(cli(prompts, out))
    with pytest.raises(ValueError, match=r"\['learning_rate'\] differ"):
        run_raising(cli(prompts, out, "--resume", "--learning-rate", "1e-3"))
    # a longer run may continue a finished one, on the schedule of its new length: cosine after 2 warm-up
    # steps, at step n = 3 of 4: 0.5 * (1 + cos(pi * (3 - 2) / (4 - 2))) of the peak rate (3 steps ended at 0)
    assert main(cli(prompts, out, "--resume", "--max-steps", "4")) == 0
    history = json.loads((out / "log.json").read_text())["history"]
    assert [r["step"] for r in history] == [1, 2, 3, 4]
    assert history[-1]["lr"] == pytest.approx(0.5e-2)


def test_a_second_live_run_in_the_same_folder_is_refused(tmp_path):
    first = RewardFinetuner(tiny_sd_pipeline(), make_reward(), PROMPTS, config(max_steps=1, output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="is in use by another run"):
        RewardFinetuner(tiny_sd_pipeline(), make_reward(), PROMPTS, config(max_steps=1, output_dir=str(tmp_path),
                                                                           resume=True))
    first.train()  # finishing releases the folder
    RewardFinetuner(tiny_sd_pipeline(), make_reward(), PROMPTS, config(max_steps=1, output_dir=str(tmp_path),
                                                                       resume=True))
