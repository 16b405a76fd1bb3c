"""accelerate's own settings (its config file, `accelerate launch` flags, ACCELERATE_MIXED_PRECISION) reach both
trainers when the library's flag is not given; conflicts and lone processes are reported; runs record what ran."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from mst_clipiqa.cli import main
from mst_clipiqa.integrations import RewardFinetuneConfig, RewardFinetuner, RunConfig
from mst_clipiqa.integrations.finetune.config import from_flat_settings
from mst_clipiqa.integrations.pipelines.tiny import tiny_sd_pipeline
from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward
from mst_clipiqa.reward.datasets.synthetic import make_synthetic_dataset
from mst_clipiqa.reward.training import TrainConfig, train
from mst_clipiqa.runtime.processes import launcher_precision, new_accelerator

ROOT = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("finetune_worker.py")
ENV = "ACCELERATE_MIXED_PRECISION"


def tiny_reward() -> MSTCLIPIQAReward:
    torch.manual_seed(0)
    return MSTCLIPIQAReward(MSTCLIPIQA(MSTCLIPIQAConfig.tiny("A")))


def finetune(tmp_path: Path, **settings) -> dict:
    config = from_flat_settings(RewardFinetuneConfig, {"num_inference_steps": 2, "max_steps": 1, "batch_size": 1,
                                                       "cpu": True, "output_dir": str(tmp_path / "run"),
                                                       "progress_bar": False, **settings})
    RewardFinetuner(tiny_sd_pipeline(), tiny_reward(), ["a cat"], config).train()
    return json.loads((tmp_path / "run" / "log.json").read_text())


def test_the_launchers_precision_is_used_when_the_library_leaves_it_open(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert launcher_precision(None) is None and launcher_precision("bf16") == "bf16"
    monkeypatch.setenv(ENV, "bf16")
    assert launcher_precision(None) == "bf16" and launcher_precision("bf16") == "bf16"
    monkeypatch.setenv(ENV, "no")  # what `accelerate launch` sets when nothing asks: never a conflict
    assert launcher_precision("fp16") == "fp16"


def test_a_conflict_names_both_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV, "bf16")
    with pytest.raises(ValueError, match=r"mixed_precision='no' \(this library's --mixed-precision.*"
                                         r"accelerate's mixed_precision='bf16' \(ACCELERATE_MIXED_PRECISION"):
        launcher_precision("no")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    assert main(["finetune", "--pipeline", "tiny", "--model", "tiny", "--prompts", str(prompts), "--max-steps", "1",
                 "--mixed-precision", "no", "--cpu", "--quiet", "--out", str(tmp_path / "run")]) != 0
    assert "conflicts with accelerate's" in capsys.readouterr().err


def test_a_bf16_launcher_setting_gives_a_bf16_fine_tuning_run_recorded_in_the_log(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "bf16")
    log = finetune(tmp_path)
    assert log["config"]["run"]["mixed_precision"] == "bf16"
    assert log["environment"] == {"world_size": 1, "device": "cpu", "distributed_type": "NO",
                                  "mixed_precision": "bf16", "sharding": "none"}


def test_without_any_setting_the_run_is_fp32_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    log = finetune(tmp_path)
    assert log["config"]["run"]["mixed_precision"] == log["environment"]["mixed_precision"] == "no"


def test_a_config_precision_the_passed_accelerator_does_not_run_is_an_error(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    accelerator = new_accelerator(cpu=True, mixed_precision="no")
    config = RewardFinetuneConfig(num_inference_steps=2,
                                  run=RunConfig(mixed_precision="bf16", cpu=True, progress_bar=False))
    with pytest.raises(ValueError, match="mixed_precision='bf16' in the config, but the Accelerator passed in runs "
                                         "mixed_precision='no'"):
        RewardFinetuner(tiny_sd_pipeline(), tiny_reward(), ["a cat"], config, accelerator=accelerator)


def test_the_iqa_trainer_takes_the_launchers_precision_and_reports_it(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "bf16")
    data = make_synthetic_dataset(tmp_path / "data", n_scenes=3, levels=(0.5, 1.0))
    torch.manual_seed(0)
    config = TrainConfig(epochs=1, batch_size=16, n_splits=1, progress=False, cpu=True, cache_dir=str(tmp_path / "c"))
    train(MSTCLIPIQA(MSTCLIPIQAConfig.tiny("A")), data, config, tmp_path / "run")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["settings"]["train"]["mixed_precision"] == "bf16"
    assert report["environment"]["mixed_precision"] == "bf16"
    assert report["environment"]["world_size"] == 1 and report["environment"]["device"] == "cpu"
    assert config.mixed_precision is None  # the caller's settings are left as they were


def test_a_lone_process_from_a_multi_cpu_launch_warns_with_the_fix(monkeypatch):
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")  # accelerate launch's simple launcher with N > 1 processes
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.warns(RuntimeWarning, match="runs alone.*accelerate launch --multi_gpu --num_processes N"):
        new_accelerator(cpu=True)
    monkeypatch.delenv("MASTER_ADDR")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new_accelerator(cpu=True)


def test_preparing_the_frozen_reward_is_refused_with_the_fix():
    reward = Accelerator(cpu=True).prepare(tiny_reward())
    assert not isinstance(reward, torch.nn.parallel.DistributedDataParallel)
    with pytest.raises(ValueError, match="do not prepare a frozen reward.*reward.to\\(accelerator.device\\)"):
        reward(torch.rand(1, 3, 32, 32))


def accelerate_launch(tmp_path: Path, config: str, *cli: str) -> subprocess.CompletedProcess:
    (tmp_path / "accelerate.yaml").write_text(config)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop(ENV, None)
    return subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(tmp_path / "accelerate.yaml"), str(WORKER), "--record", str(tmp_path / "records"),
                           "--", *cli], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_a_bf16_accelerate_config_gives_a_bf16_two_process_run(tmp_path):
    # MULTI_GPU falls back to two CPU processes with gloo on a machine without CUDA
    config = "distributed_type: MULTI_GPU\nnum_processes: 2\nnum_machines: 1\nmixed_precision: bf16\n" \
             "main_process_port: 29517\n"
    out = tmp_path / "run"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\na dog\n")
    done = accelerate_launch(tmp_path, config, "finetune", "--pipeline", "tiny", "--model", "tiny", "--prompts",
                             str(prompts), "--out", str(out), "--num-inference-steps", "2", "--max-steps", "1",
                             "--batch-size", "1", "--quiet")
    assert done.returncode == 0, done.stderr[-3000:]
    log = json.loads((out / "log.json").read_text())
    assert log["config"]["run"]["mixed_precision"] == "bf16"
    assert log["environment"]["mixed_precision"] == "bf16" and log["environment"]["world_size"] == 2
    assert [r["step"] for r in log["history"]] == [1]
    assert done.stdout.count("1 steps on 2 process(es) (") == 1 and "mixed precision bf16)" in done.stdout


def test_a_real_multi_cpu_launch_without_mpi_warns(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("from mst_clipiqa.runtime.processes import new_accelerator\n"
                      "acc = new_accelerator()\nprint('ran', acc.num_processes, acc.mixed_precision)\n")
    (tmp_path / "multi_cpu.yaml").write_text("distributed_type: MULTI_CPU\nnum_processes: 2\nnum_machines: 1\n"
                                             "mixed_precision: bf16\nuse_cpu: true\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop(ENV, None)
    done = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(tmp_path / "multi_cpu.yaml"), str(script)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("ran 1 bf16") == 1  # one process, with the config's precision
    assert "--multi_cpu needs mpirun" in done.stderr and "--multi_gpu --num_processes N" in done.stderr
