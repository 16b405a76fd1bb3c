"""A reward passed to accelerator.prepare gets the library's one line on any number of processes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("processes", [2])
def test_preparing_a_reward_on_several_processes_is_our_line(processes, tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               str(Path(__file__).with_name("prepare_reward.py"))]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    outcomes = {path.name: path.read_text() for path in tmp_path.glob("rank*.txt")}
    expected = [f"rank{rank}.txt" for rank in range(processes)]
    assert sorted(outcomes) == expected, done.stdout + done.stderr[-3000:]
    for name, outcome in outcomes.items():
        assert outcome.startswith("ValueError: this MSTCLIPIQAReward was passed to accelerator.prepare"), name
