"""What train and finetune leave behind and report: splits.json that eval reads, an honest fine-tuning summary."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mst_clipiqa.cli import main
from mst_clipiqa.reward.datasets import load_splits
from tests.conftest import SAMPLE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    status = main(["train", "--model", "tiny", "--dataset", "agiqa3k", "--data", str(SAMPLE), "--out",
                   str(root / "run"), "--epochs", "1", "--n-splits", "2", "--cache-dir", str(root / "cache"), "--quiet",
                   "--device", "cpu"])
    assert status == 0
    return root


def test_train_writes_the_splits_it_used(run_folder):
    run = run_folder / "run"
    report = json.loads((run / "report.json").read_text())
    splits = load_splits(run / report["splits_file"], n=48)
    assert [len(s.test) for s in splits] == [s["n_test"] for s in report["splits"]]
    assert [len(s.train) for s in splits] == [s["n_train"] for s in report["splits"]]


def test_eval_of_a_run_folder_scores_the_saved_models_unseen_test_part(run_folder, capsys):
    run = run_folder / "run"
    status = main(["eval", "--model", str(run), "--dataset", "agiqa3k", "--data", str(SAMPLE), "--cache-dir",
                   str(run_folder / "cache"), "--json-out", str(run_folder / "eval.json"), "--device", "cpu"])
    out, err = capsys.readouterr()
    report = json.loads((run / "report.json").read_text())
    k = report["selected_split"]
    assert status == 0 and "warning" not in err, err
    assert f"its model is split {k}'s" in out and "test parts of 1 splits" in out
    result = json.loads((run_folder / "eval.json").read_text())
    assert result["splits"][0]["test"]["quality"]["srcc"] == pytest.approx(
        report["splits"][k]["test"]["quality"]["srcc"], abs=1e-6)


@pytest.mark.parametrize("extra", [[], ["--split-file", "SPLITS"]])
def test_eval_warns_when_it_scores_images_the_model_was_trained_on(extra, run_folder, capsys):
    run = run_folder / "run"
    extra = [str(run / "splits.json") if a == "SPLITS" else a for a in extra]
    status = main(["eval", "--model", str(run / "model"), "--dataset", "agiqa3k", "--data", str(SAMPLE),
                   "--cache-dir", str(run_folder / "cache"), "--device", "cpu", *extra])
    err = capsys.readouterr().err
    split = load_splits(run / "splits.json")[json.loads((run / "report.json").read_text())["selected_split"]]
    scored = set(range(48)) if not extra else {i for s in load_splits(run / "splits.json") for i in s.test}
    seen = len(scored & (set(split.train) | set(split.val)))
    assert status == 0 and seen > 0
    assert f"warning: {seen} of the {len(scored)} images scored were in the model's training" in err


def test_every_command_uses_the_same_feature_cache_default(capsys):
    from mst_clipiqa.reward.training import TrainConfig

    helps = []
    for command in ("train", "eval"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helps.append(" ".join(capsys.readouterr().out.split()))
    default = "$MST_CLIPIQA_CACHE or ~/.cache/mst-clipiqa/features"
    assert all(default in text for text in helps)
    assert default in " ".join(TrainConfig.__dataclass_fields__["cache_dir"].metadata["help"].split())


def test_finetune_reports_held_out_reward_before_and_after_and_lists_its_files(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\na blue square\n")
    out = tmp_path / "run"
    status = main(["finetune", "--pipeline", "tiny", "--model", "tiny", "--prompts", str(prompts), "--out", str(out),
                   "--num-inference-steps", "2", "--max-steps", "2", "--learning-rate", "1e-2", "--eval-images", "4",
                   "--quiet", "--device", "cpu"])
    text = capsys.readouterr().out
    held_out = json.loads((out / "held_out.json").read_text())
    assert status == 0 and "first -> last" not in text
    assert held_out["seeds"] == [10_000, 10_001, 10_002, 10_003] and len(held_out["before"]) == 4
    assert held_out["prompts"] == ["a red circle", "a blue square"] * 2
    assert (f"held-out reward on 4 images (2 prompt(s), seeds 10000-10003, the same before and after): "
            f"{held_out['mean_before']:.4f} -> {held_out['mean_after']:.4f}") in text
    listed = text.split("wrote:")[1].split()
    assert str(out / "lora" / "pytorch_lora_weights.safetensors") in listed and str(out / "held_out.json") in listed
    assert all(p.startswith(str(out)) for p in listed if not p.startswith("(")) and ".lock" not in text


def test_a_train_log_has_progress_lines_and_no_library_warnings(tmp_path):
    """Piped to a file as in CI: whole progress lines, no warnings from scipy or others, no ``val=-inf`` (the
    paper recipe has no validation part)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "mst_clipiqa", "train", "--model", "tiny", "--dataset", "agiqa3k",
                           "--data", str(SAMPLE), "--out", str(tmp_path / "run"), "--recipe", "paper", "--epochs", "2",
                           "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Warning" not in done.stderr and "warn" not in done.stderr.lower() and "-inf" not in done.stderr
    # the paper recipe draws the reference's one split
    assert "split 0: 2/2 epoch in " in done.stderr and "\r" not in done.stderr
