"""Diffusion-DPO on the shared run plumbing and the hacking monitor of every trainer (tiny pipelines, CPU)."""

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mst_clipiqa.cli import main
from mst_clipiqa.integrations import DPOConfig, DPOTrainer, RewardFinetuner, RunConfig, preference_pairs
from mst_clipiqa.integrations.finetune.config import from_flat_settings
from mst_clipiqa.integrations.inference.preference_pairs import load_pairs
from mst_clipiqa.integrations.pipelines.tiny import tiny_lcm_pipeline, tiny_sd_pipeline

from .test_finetuner import config as finetune_config

PROMPTS = ["a red car", "a cat on a sofa", "a bowl of fruit", "a city at night"]
SAMPLER = {"num_inference_steps": 2, "guidance_scale": 1.0}


def brightness(images):
    return images.mean(dim=(1, 2, 3))


def darkness(images):
    """A monitor that disagrees with ``brightness`` on every image."""
    return 1 - images.mean(dim=(1, 2, 3))


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("pairs")
    preference_pairs(tiny_sd_pipeline(), PROMPTS, brightness, directory, n=3, pairs="all", progress=False, **SAMPLER)
    return directory


def dpo_config(tmp_path, **overrides):
    return from_flat_settings(DPOConfig, {"max_steps": 4, "batch_size": 2, "learning_rate": 1e-2,
                                          "num_inference_steps": 2, "progress_bar": False, "cpu": True,
                                          "output_dir": str(tmp_path), "save_every": 2, **overrides})


def test_dpo_run_killed_after_a_checkpoint_resumes_bit_for_bit(tmp_path, pairs_dir):
    """With a monitor too: its records and patience continue from the checkpoint."""
    def trainer(folder, **overrides):
        config = dpo_config(folder, monitor_prompts=PROMPTS[:1], monitor_seeds=(7, 8), **overrides)
        return DPOTrainer(tiny_sd_pipeline(), pairs_dir, config, reward=brightness, monitor=darkness)

    straight = trainer(tmp_path / "straight", monitor_every=1)
    straight.train()
    assert straight.log.history[0]["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert straight.log.history[0]["reward"] == pytest.approx(0.0, abs=1e-6)  # the implicit reward margin
    trainer(tmp_path / "resumed", monitor_every=1).train(max_steps=2)  # as if killed after checkpoint 2
    resumed = trainer(tmp_path / "resumed", monitor_every=1, resume=True)
    assert resumed.global_step == 2 and len(resumed.monitor.records) == 3
    resumed.train()
    assert resumed.log.history == straight.log.history
    assert resumed.monitor.records == straight.monitor.records and len(straight.monitor.records) == 5
    for name, p in straight.trained_parameters().items():
        assert torch.equal(p, resumed.trained_parameters()[name])
    assert (tmp_path / "resumed" / "lora" / "pytorch_lora_weights.safetensors").exists()
    with pytest.raises(ValueError, match="differ from the run that wrote it"):
        DPOTrainer(tiny_sd_pipeline(), pairs_dir, dpo_config(tmp_path / "resumed", resume=True, beta=100.0))


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, pairs_dir):
    out = tmp_path_factory.mktemp("dpo") / "run"
    DPOTrainer(tiny_sd_pipeline(), pairs_dir, dpo_config(out, max_steps=2, save_every=1), reward=brightness).train()
    return out


@pytest.mark.parametrize("change, field", [("pairs", "pairs"), ("reward", "reward"), ("pipeline", "pipeline")])
def test_dpo_resume_against_other_pairs_reward_or_pipeline_is_refused(dpo_run, pairs_dir, change, field):
    """One line naming each difference; the refused trainer releases the folder, so the right resume follows."""
    pairs = load_pairs(pairs_dir).select(range(4)) if change == "pairs" else pairs_dir
    pipe = tiny_lcm_pipeline() if change == "pipeline" else tiny_sd_pipeline()
    reward = darkness if change == "reward" else brightness
    config = dpo_config(dpo_run, max_steps=3, resume=True)
    with pytest.raises(ValueError, match=rf"trained against something else \([^)]*\b{field}: '[^']*' in the "
                                         rf"checkpoint, '[^']*' now") as refused:
        DPOTrainer(pipe, pairs, config, reward=reward)
    assert "\n" not in str(refused.value) and "remove" not in str(refused.value)
    assert DPOTrainer(tiny_sd_pipeline(), pairs_dir, config, reward=brightness).global_step == 2


def test_monitor_that_disagrees_stops_a_rising_run_and_keeps_its_best_lora(tmp_path):
    """DRaFT-1 raises the brightness; the monitor (darkness) falls from step 0, so with patience 2 the run stops
    at step 2 and the LoRA of step 0, the monitor's best, is what the trainer and its saved LoRA hold."""
    cfg = finetune_config(max_steps=10, learning_rate=5e-2, output_dir=str(tmp_path), monitor_every=1, patience=2,
                          monitor_prompts=PROMPTS[:2], monitor_seeds=(5, 6), save_every=2)
    trainer = RewardFinetuner(tiny_sd_pipeline(), brightness, PROMPTS, cfg, monitor=darkness)
    start = {k: v.detach().clone() for k, v in trainer.trained_parameters().items()}
    trainer.train()
    records = trainer.monitor.records
    assert trainer.global_step == 2 and trainer.monitor.should_stop and trainer.monitor.best_step == 0
    assert records[-1]["reward"] > records[0]["reward"] and records[-1]["monitor"] < records[0]["monitor"]
    for name, p in trainer.trained_parameters().items():
        assert torch.equal(p, start[name]) and torch.equal(p, trainer.monitor.best_state[name])
    saved = json.loads((tmp_path / "monitor.json").read_text())
    assert saved["stopped_early"] and saved["best_step"] == 0 and len(saved["records"]) == 3
    history = json.loads((tmp_path / "log.json").read_text())["history"]
    assert all("monitor" in r and "diversity" in r and "monitor_reward" in r for r in history)
    assert (tmp_path / "monitor.png").exists()
    lora = load_file(tmp_path / "lora" / "pytorch_lora_weights.safetensors")
    ups = [t for n, t in lora.items() if "lora.up" in n]  # zero at initialisation, so zero in the kept LoRA
    assert ups and all(float(t.abs().sum()) == 0 for t in ups)
    again = RewardFinetuner(tiny_sd_pipeline(), brightness, PROMPTS,
                            dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, resume=True)), monitor=darkness)
    again.train()  # the checkpoint holds the stopped monitor: no more steps, the monitor's best LoRA again
    assert again.global_step == 2 and len(again.monitor.records) == 3
    assert all(torch.equal(p, start[name]) for name, p in again.trained_parameters().items())


def test_monitor_needs_its_held_out_prompts():
    with pytest.raises(ValueError, match="monitor_prompts"):
        RewardFinetuner(tiny_sd_pipeline(), brightness, PROMPTS, finetune_config(), monitor=darkness)
    with pytest.raises(ValueError, match="patience must be"):
        DPOConfig(run=RunConfig(patience=0))


def test_two_processes_train_one_dpo_lora_on_their_own_pairs(tmp_path, pairs_dir):
    worker = Path(__file__).with_name("dpo_worker.py")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(worker), str(pairs_dir), str(tmp_path)], capture_output=True, text=True,
                          timeout=600, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["world"] == ranks[1]["world"] == 2
    assert set(ranks[0]["shard"]).isdisjoint(ranks[1]["shard"])
    assert ranks[0]["lora"] == ranks[1]["lora"] and ranks[0]["moved"]
    assert ranks[0]["history"] == ranks[1]["history"]  # the statistics are gathered over both processes


def test_cli_dpo_with_a_monitor_writes_the_run(tmp_path, pairs_dir, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "run"
    code = main(["finetune", "--method", "dpo", "--pairs", str(pairs_dir), "--pipeline", "tiny", "--model", "tiny",
                 "--prompts", str(prompts), "--out", str(out), "--num-inference-steps", "2", "--max-steps", "2",
                 "--batch-size", "2", "--eval-images", "2", "--monitor", "tiny", "--monitor-every", "1", "--quiet",
                 "--device", "cpu"])
    assert code == 0
    assert "dpo: 2 steps" in capsys.readouterr().out
    assert {"monitor.json", "log.json", "held_out.json"} <= {p.name for p in out.iterdir()}
    assert len(json.loads((out / "monitor.json").read_text())["records"]) == 3
    assert main(["finetune", "--method", "dpo", "--pipeline", "tiny", "--model", "tiny", "--out",
                 str(tmp_path / "x")]) != 0
    assert "--method dpo needs --pairs DIR" in capsys.readouterr().err


def test_a_monitor_that_cannot_score_checkpoints_and_stops_or_is_skipped(tmp_path):
    calls = []

    def blind(images):  # scores before training, then never again
        calls.append(0)
        return images.mean(dim=(1, 2, 3)) * (1.0 if len(calls) in (1, 3) else float("nan"))

    cfg = finetune_config(max_steps=3, learning_rate=1e-2, output_dir=str(tmp_path), monitor_every=2, patience=2,
                          monitor_prompts=PROMPTS[:1], monitor_seeds=(5, 6))
    trainer = RewardFinetuner(tiny_sd_pipeline(), brightness, PROMPTS, cfg, monitor=blind)
    with pytest.raises(ValueError, match=r"stopped: the hacking monitor cannot score.*at step 2 \(check.*; "
                                         r"step 2 is checkpointed in .*--resume") as stopped:
        trainer.train()
    assert "\n" not in str(stopped.value) and (tmp_path / "checkpoints" / "step_00000002").is_dir()
    skip = dataclasses.replace(cfg, output_dir=str(tmp_path / "skip"), on_nonfinite="skip", max_steps=2)
    trainer = RewardFinetuner(tiny_sd_pipeline(), brightness, PROMPTS, skip, monitor=blind)
    with pytest.warns(RuntimeWarning, match="cannot score.*skipping this evaluation, training goes on"):
        trainer.train()
    assert trainer.global_step == 2 and [r["step"] for r in trainer.monitor.records] == [0]
    assert all(math.isfinite(r.get("monitor", 0.0)) for r in trainer.log.history)  # no NaN records logged


def test_released_text_encoders_leave_the_dpo_run_unchanged(tmp_path, pairs_dir):
    import gc
    import weakref

    from mst_clipiqa.integrations.pipelines.prompt_cache import text_encoders

    def run(mode):
        pipe = tiny_sd_pipeline()
        encoder, moves = weakref.ref(pipe.text_encoder), []
        if mode != "free":  # the recorder would keep the encoder alive
            to = pipe.text_encoder.to
            pipe.text_encoder.to = lambda *a, **k: (moves.append(str(a[0])), to(*a, **k))[1]
        trainer = DPOTrainer(pipe, pairs_dir, dpo_config(tmp_path / mode, max_steps=2, text_encoders=mode,
                                                         sample_prompts=[PROMPTS[0]]))
        trainer.train()
        gc.collect()
        return trainer, encoder, moves

    (kept, _, kept_moves), (offloaded, _, moves), (freed, encoder, _) = (run(m) for m in ("keep", "offload", "free"))
    assert moves == [*kept_moves, "cpu"]  # offloaded once (to the CPU, this machine's device too), never back
    assert encoder() is None and not text_encoders(freed.pipe)  # gone from memory, not just unlinked
    a = kept.trained_parameters()
    assert any(v.abs().sum() > 0 for v in a.values())
    for other in (offloaded, freed):
        b = other.trained_parameters()
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert torch.equal(other.sample([PROMPTS[0]], [7]), kept.sample([PROMPTS[0]], [7]))
