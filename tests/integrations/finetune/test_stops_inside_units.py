"""A stop request inside a long unit of a grpo run (a step's rollouts, a monitor evaluation, a sample grid) is
honoured at the next sampler step: one line naming what was cut short and ``--resume``, exit 143, no more
denoiser calls, and a resumed run identical to one never stopped (LoRA, log, monitor records)."""
from __future__ import annotations

import json
import os
import signal
import time

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
    ("grid", 2, "its sample grid was cut short (not written)", 1)])
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
    assert not (out / "samples" / f"step_{kept:06d}.png").exists() or unit != "grid"
    monkeypatch.undo()
    assert main([*grpo(prompts, out), "--resume"]) == 0
    assert_same_tensors(whole / "lora" / "pytorch_lora_weights.safetensors",
                        out / "lora" / "pytorch_lora_weights.safetensors")
    logs = [json.loads((run / "log.json").read_text())["history"] for run in (whole, out)]
    assert logs[0] == logs[1] and [r["step"] for r in logs[0]] == [1, 2]
    monitors = [json.loads((run / "monitor.json").read_text())["records"] for run in (whole, out)]
    assert monitors[0] == monitors[1] and [r["step"] for r in monitors[0]] == [0, 1, 2]
