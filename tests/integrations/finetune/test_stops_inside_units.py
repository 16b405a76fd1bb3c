"""A stop request inside a long unit of a grpo run (a step's rollouts, a monitor evaluation, a sample grid) is
honoured at the next sampler step: one line naming what was cut short and ``--resume``, exit 143, no more
denoiser calls, and a resumed run identical to one never stopped (LoRA, log, monitor records, sample grids)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mst_clipiqa.cli import main
from mst_clipiqa.integrations.finetune import monitor as monitor_module
from mst_clipiqa.integrations.finetune import policy_gradient, trainer_parts
from mst_clipiqa.integrations.pipelines import stochastic

from .test_state import assert_same_tensors


def grpo(prompts, out, *extra: str) -> list[str]:
    return ["finetune", "--method", "grpo", "--pipeline", "tiny-sd3", "--model", "tiny", "--prompts", str(prompts),
            "--out", str(out), "--num-inference-steps", "3", "--group-size", "2", "--prompts-per-step", "1",
            "--guidance-scale", "1", "--max-steps", "2", "--learning-rate", "1e-2", "--save-every", "0",
            "--eval-images", "0", "--monitor", "tiny", "--monitor-every", "1", "--monitor-prompts", "a lighthouse",
            "--monitor-seeds", "0", "1", "--sample-every", "1", "--sample-prompts", "a boat", "--sample-seeds", "3",
            "--quiet", "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("a red circle\na blue square\n")
    return path


@pytest.fixture(scope="module")
def whole(tmp_path_factory, prompts):
    out = tmp_path_factory.mktemp("whole") / "run"
    assert main(grpo(prompts, out)) == 0
    return out


def signal_inside(monkeypatch, unit: str, entry: int, call: int) -> dict:
    """SIGTERM just before denoiser call ``call`` of the ``entry``-th run of ``unit`` ("step", "monitor" or "grid":
    train_step, HackingMonitor.evaluate or after_step); counts the denoiser calls made after it."""
    seen = {"unit": None, "entries": {}, "calls": 0, "after": 0, "sent": None}

    def within(name, method):
        def wrapped(self, *args, **kwargs):
            outer, seen["unit"], seen["calls"] = seen["unit"], name, 0
            seen["entries"][name] = seen["entries"].get(name, 0) + 1
            try:
                return method(self, *args, **kwargs)
            finally:
                seen["unit"] = outer
        return wrapped

    prediction = stochastic.guided_prediction

    def counted(*args, **kwargs):
        if seen["sent"] is not None:
            seen["after"] += 1
        elif seen["unit"] == unit and seen["entries"][unit] == entry:
            seen["calls"] += 1
            if seen["calls"] == call:
                seen["sent"] = time.perf_counter()
                os.kill(os.getpid(), signal.SIGTERM)
        return prediction(*args, **kwargs)

    for owner, name, label in ((policy_gradient.PolicyTrainer, "train_step", "step"),
                               (monitor_module.HackingMonitor, "evaluate", "monitor"),
                               (trainer_parts.TrainerParts, "after_step", "grid")):
        monkeypatch.setattr(owner, name, within(label, getattr(owner, name)))
    monkeypatch.setattr(stochastic, "guided_prediction", counted)
    return seen


@pytest.mark.parametrize("unit, entry, cut, kept", [
    ("step", 2, "step 2 was cut short and runs again on resume", 1),
    ("monitor", 2, "its monitor was cut short and runs again on resume", 1),
    ("grid", 2, "its sample grid was cut short and is drawn on resume", 1)])
def test_a_stop_inside_a_unit_ends_it_at_the_next_sampler_step_and_resume_is_identical(
        whole, prompts, tmp_path, monkeypatch, capsys, unit, entry, cut, kept):
    out = tmp_path / "run"
    seen = signal_inside(monkeypatch, unit, entry, call=2)
    capsys.readouterr()
    assert main(grpo(prompts, out)) == 143
    elapsed = time.perf_counter() - seen["sent"]
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"mst-clipiqa finetune: stopped by SIGTERM at step {kept} ({cut}); checkpoint "), err
    assert "--resume" in err[-1]
    assert seen["after"] == 0 and elapsed < 5  # not one denoiser call more: the rest of the unit is given up
    state = json.loads((out / "checkpoints" / f"step_{kept:08d}" / "state.json").read_text())
    assert state["evaluation_due"] == (unit == "monitor")
    assert state["samples_due"] == (unit != "step")  # a step's grid is due until drawn, its monitor ran first
    assert not (out / "samples" / f"step_{kept:06d}.png").exists() or unit != "grid"
    monkeypatch.undo()
    assert main([*grpo(prompts, out), "--resume"]) == 0
    assert_same_tensors(whole / "lora" / "pytorch_lora_weights.safetensors",
                        out / "lora" / "pytorch_lora_weights.safetensors")
    logs = [json.loads((run / "log.json").read_text())["history"] for run in (whole, out)]
    assert logs[0] == logs[1] and [r["step"] for r in logs[0]] == [1, 2]
    monitors = [json.loads((run / "monitor.json").read_text())["records"] for run in (whole, out)]
    assert monitors[0] == monitors[1] and [r["step"] for r in monitors[0]] == [0, 1, 2]
    grids = [sorted(p.name for p in (run / "samples").iterdir()) for run in (whole, out)]
    assert grids[0] == grids[1] == [f"step_{s:06d}.png" for s in (0, 1, 2)]
    for name in grids[0]:
        assert (whole / "samples" / name).read_bytes() == (out / "samples" / name).read_bytes(), name


# --- two processes (torchrun, gloo) ---------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("unit_stop_worker.py")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def torchrun(tmp_path: Path, plan: list[dict]) -> list[list[dict]]:
    """One ``torchrun --nproc_per_node 2`` that runs each ``{"cli", "unit", "entry", "rank"}`` of ``plan`` in turn:
    SIGTERM to process ``rank`` just before denoiser call 2 of the ``entry``-th ``unit`` (entry 0: no signal).
    Per process, per run: exit status, denoiser calls in that unit, times of the signal and of the run's end."""
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(WORKER), str(tmp_path / "plan.json"), str(tmp_path / "records")],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    files = [tmp_path / "records" / f"rank{r}.json" for r in (0, 1)]
    assert done.returncode == 0 and all(f.is_file() for f in files), done.stderr[-3000:]
    return list(zip(*(json.loads(f.read_text()) for f in files)))


def test_under_torchrun_a_stop_on_one_process_cuts_the_step_or_grid_on_both_and_resume_is_identical(prompts,
                                                                                                   tmp_path):
    """Rank 1 alone is signalled in step 2's rollouts: both processes give the step up at the same sampler step.
    On resume, the main process is signalled inside step 2's sample grid, which it draws alone: both stop, the
    grid stays due. The run then resumed ends as one never stopped."""
    def args(out, *more):
        return ["finetune", "--method", "grpo", "--pipeline", "tiny-sd3", "--model", "tiny", "--prompts",
                str(prompts), "--out", str(out), "--num-inference-steps", "3", "--group-size", "2",
                "--prompts-per-step", "1", "--guidance-scale", "1", "--max-steps", "2", "--learning-rate", "1e-2",
                "--save-every", "0", "--eval-images", "0", "--sample-every", "1", "--sample-prompts", "a boat",
                "--sample-seeds", "3", "--quiet", "--device", "cpu", *more]

    whole, out = tmp_path / "whole", tmp_path / "run"
    runs = torchrun(tmp_path, [{"cli": args(whole), "unit": "step", "entry": 0, "rank": -1},
                               {"cli": args(out), "unit": "step", "entry": 2, "rank": 1},
                               {"cli": args(out, "--resume"), "unit": "grid", "entry": 1, "rank": 0},
                               {"cli": args(out, "--resume"), "unit": "step", "entry": 0, "rank": -1}])
    statuses = [[rank["status"] for rank in run] for run in runs]
    assert statuses == [[0, 0], [143, 143], [143, 143], [0, 0]]
    step, grid = runs[1], runs[2]
    assert [r["calls"] for r in step] == [2, 2]  # the signalled call, then none more on either process
    assert [r["calls"] for r in grid] == [2, 0]  # rank 1 draws no grid
    assert max(r["ended"] for r in step) - step[1]["sent"] < 10
    assert max(r["ended"] for r in grid) - grid[0]["sent"] < 10
    # the step's stop wrote step 1's checkpoint, the grid's step 2's, with its grid still due
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000001", "step_00000002"]
    assert json.loads((out / "checkpoints" / "step_00000002" / "state.json").read_text())["samples_due"]
    assert_same_tensors(whole / "lora" / "pytorch_lora_weights.safetensors",
                        out / "lora" / "pytorch_lora_weights.safetensors")
    logs = [json.loads((run / "log.json").read_text())["history"] for run in (whole, out)]
    assert logs[0] == logs[1] and [r["step"] for r in logs[0]] == [1, 2]
    for name in ("step_000000.png", "step_000001.png", "step_000002.png"):
        assert (whole / "samples" / name).read_bytes() == (out / "samples" / name).read_bytes(), name
