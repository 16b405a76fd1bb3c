"""Several processes: ``torchrun`` on CPU gives one 2-process fine-tuning run, not two independent ones."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mst_clipiqa.cli import main

ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("finetune_worker.py")
PROMPTS = ["a red car", "a cat on a sofa", "a lighthouse at dusk", "a bowl of fruit"]


def launch(tmp_path: Path, *cli: str) -> tuple[subprocess.CompletedProcess, list[list[dict]]]:
    """``torchrun --nproc_per_node 2`` of the finetune command; returns the run and each rank's records."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(WORKER), "--record", str(tmp_path / "records"), "--", *cli],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done, [json.loads((tmp_path / "records" / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_processes_train_one_lora_on_different_data(tmp_path):
    prompts, out = tmp_path / "prompts.txt", tmp_path / "run"
    prompts.write_text("\n".join(PROMPTS))
    cli = ["finetune", "--pipeline", "tiny", "--model", "tiny", "--prompts", str(prompts), "--out", str(out),
           "--num-inference-steps", "3", "--max-steps", "3", "--learning-rate", "1e-2", "--save-every", "2",
           "--sample-every", "3", "--sample-prompts", "a cat", "--sample-seeds", "0", "--quiet"]
    done, (rank0, rank1) = launch(tmp_path, *cli)

    assert [s["step"] for s in rank0] == [s["step"] for s in rank1] == [1, 2, 3]
    # every optimizer step leaves the same LoRA weights on both processes ...
    assert [s["lora"] for s in rank0] == [s["lora"] for s in rank1]
    assert len({s["lora"] for s in rank0}) == 3  # ... and the weights did change every step
    # ... trained on different prompts and noise
    assert not {seed for s in rank0 for seed in s["seeds"]} & {seed for s in rank1 for seed in s["seeds"]}
    assert [s["prompts"] for s in rank0] != [s["prompts"] for s in rank1]

    # one set of outputs, with metrics over both processes' images
    assert done.stdout.count("steps on 2 process(es)") == 1
    history = json.loads((out / "log.json").read_text())["history"]
    for record, a, b in zip(history, rank0, rank1):
        rewards = a["rewards"] + b["rewards"]
        assert record["reward"] == pytest.approx(sum(rewards) / len(rewards), rel=1e-6)
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["step_000000.png", "step_000003.png"]
    assert (out / "lora" / "pytorch_lora_weights.safetensors").is_file()
    checkpoint = out / "checkpoints" / "step_00000003"
    assert sorted(p.name for p in checkpoint.iterdir()) == ["state.json", "state.safetensors"]

    # one process may continue a 2-process run: the checkpoint holds no per-process state
    assert main([*cli[:cli.index("--max-steps") + 1], "4", *cli[cli.index("--max-steps") + 2:], "--resume"]) == 0
    assert [r["step"] for r in json.loads((out / "log.json").read_text())["history"]] == [1, 2, 3, 4]
