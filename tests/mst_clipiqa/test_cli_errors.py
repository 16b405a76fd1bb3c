"""Every user error of every command: one line on standard error, exit status 2, nothing written; Ctrl-C: one
line naming --resume, exit status 130; --help without torch."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mst_clipiqa.cli import COMMANDS, main
from tests.conftest import SAMPLE

ROOT = Path(__file__).resolve().parents[2]
IMAGE = SAMPLE / "images" / "AttnGAN_normal_007.jpg"
DATA = ["--dataset", "agiqa3k", "--data", str(SAMPLE)]
# each command's smallest valid command line (OUT: a fresh output folder), before the option under test
BASE = {
    "score": ["score", str(IMAGE), "--model", "tiny"],
    "rank": ["rank", str(IMAGE), "--model", "tiny", "--out", "OUT"],
    "eval": ["eval", "--model", "tiny", *DATA],
    "train": ["train", "--model", "tiny", *DATA, "--out", "OUT", "--epochs", "1", "--n-splits", "1"],
    "finetune": ["finetune", "--pipeline", "tiny", "--model", "tiny", "--prompts", "PROMPTS", "--out", "OUT",
                 "--max-steps", "1", "--num-inference-steps", "2"],
    "optimize": ["optimize", "--pipeline", "tiny-turbo", "--prompt", "a cat", "--model", "tiny", "--out", "OUT",
                 "--steps", "1"],
    "pairs": ["pairs", "--pipeline", "tiny", "--model", "tiny", "--prompts", "PROMPTS", "--out", "OUT", "--n", "2"],
    "demo": ["demo", "--fast", "--offline", "--out", "OUT"],
    "plan": ["plan", "--pipeline", "tiny", "--resolution", "64", "--num-inference-steps", "2"],
    "serve": ["serve", "--model", "tiny"],
}
WITH_MODEL = ["score", "rank", "eval", "train", "finetune", "optimize"]
WITH_DEVICE = WITH_MODEL
WITH_OUT = ["rank", "train", "finetune", "optimize", "demo"]


@pytest.fixture
def paths(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\na dog\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    return {"OUT": str(tmp_path / "out"), "PROMPTS": str(prompts), "FILE": str(blocker), "TMP": str(tmp_path)}


def command_line(name: str, paths: dict[str, str], *extra: str, replace: dict[str, str] | None = None) -> list[str]:
    values = {**paths, **(replace or {})}
    args = [values.get(a, a) for a in BASE[name]]
    return args + [values.get(a, a) for a in extra]


def fails_in_one_line(args: list[str], capsys) -> str:
    """Run the CLI, expect exit status 2 and exactly one line on stderr; return that line."""
    try:
        status = main(args)
    except SystemExit as stop:  # argparse's errors
        status = stop.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert status == 2, (status, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_bad_flag_is_one_line_pointing_at_help(name, paths, capsys):
    line = fails_in_one_line(command_line(name, paths, "--no-such-flag"), capsys)
    assert "unrecognized arguments: --no-such-flag" in line and f"see 'mst-clipiqa {name} --help'" in line


def test_a_renamed_flag_names_its_new_name(paths, capsys):
    line = fails_in_one_line(command_line("finetune", paths, "--num-steps", "10"), capsys)
    assert line.startswith("mst-clipiqa finetune: error: --num-steps is --num-inference-steps now"), line


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_missing_required_option_is_one_line(name, capsys):
    try:
        status = main([name, "--quiet-typo"] if name == "demo" else [name])
    except SystemExit as stop:
        status = stop.code
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "--help" in err[0]


@pytest.mark.parametrize("name", WITH_MODEL)
def test_an_unknown_model_name_lists_the_built_in_ones(name, paths, capsys):
    line = fails_in_one_line(command_line(name, paths, replace={"tiny": "tinyy"}), capsys)
    from mst_clipiqa.reward import MODEL_NAMES

    assert ", ".join(MODEL_NAMES) in line and {"tiny", "tiny-hf", "paper-A", "paper-B"} <= set(MODEL_NAMES)
    assert "did you mean 'tiny'?" in line
    assert not Path(paths["OUT"]).exists()


@pytest.mark.parametrize("name", WITH_MODEL)
def test_missing_weights_offline_say_so_and_how_to_go_on(name, paths, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # nothing cached
    line = fails_in_one_line(command_line(name, paths, replace={"tiny": "paper-A"}), capsys)
    assert "not in the local cache and HF_HUB_OFFLINE=1 is set" in line and "'tiny'" in line


def test_missing_weights_offline_print_our_line_only(tmp_path):
    """open_clip logs 'ERROR:root:Failed to download weights' before it raises; a fresh process shows only ours."""
    done = subprocess.run([sys.executable, "-m", "mst_clipiqa", "score", str(IMAGE), "--model", "paper-A"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1",
                               "HF_HOME": str(tmp_path / "empty-cache")})
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1, done.stderr
    assert done.stderr.startswith("mst-clipiqa score: error: ") and "HF_HUB_OFFLINE=1" in done.stderr


@pytest.mark.parametrize("name", WITH_DEVICE)
def test_a_gpu_flag_without_a_gpu_fails_instead_of_running_on_the_cpu(name, paths, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    line = fails_in_one_line(command_line(name, paths, "--device", "cuda"), capsys)
    assert "--device cuda: no CUDA GPU is available here" in line
    assert not Path(paths["OUT"]).exists()


@pytest.mark.parametrize("name", ["train", "finetune"])
def test_fp16_on_the_cpu_is_refused_before_anything_runs(name, paths, capsys):
    line = fails_in_one_line(command_line(name, paths, "--device", "cpu", "--mixed-precision", "fp16"), capsys)
    assert "--mixed-precision fp16 needs a CUDA GPU" in line and "bf16" in line
    assert not Path(paths["OUT"]).exists()


@pytest.mark.parametrize("name, option", [("score", "--prompts"), ("rank", "--prompts"), ("finetune", "--prompts"),
                                          ("finetune", "--eval-prompts")])
def test_a_missing_prompts_file_is_named(name, option, paths, capsys):
    missing = str(Path(paths["TMP"]) / "no-such-prompts.txt")
    if (name, option) == ("finetune", "--prompts"):  # its own option: replace the base command line's file
        args = command_line(name, paths, replace={"PROMPTS": missing})
    else:
        args = command_line(name, paths, option, missing)
    line = fails_in_one_line(args, capsys)
    assert "no-such-prompts.txt does not exist" in line and "one prompt per line" in line


@pytest.mark.parametrize("name", WITH_OUT)
@pytest.mark.parametrize("where", ["file", "below-a-file", "read-only"])
def test_an_output_folder_that_cannot_be_written_is_refused_first(name, where, paths, capsys, monkeypatch):
    readonly = Path(paths["TMP"]) / "read-only"
    readonly.mkdir()
    out = {"file": paths["FILE"], "below-a-file": paths["FILE"] + "/run", "read-only": str(readonly / "run")}[where]
    real_access = os.access
    # the tests may run as root, whom chmod does not stop: the check asks os.access, so ask it here
    monkeypatch.setattr(os, "access", lambda p, mode: not str(p).startswith(str(readonly)) and real_access(p, mode))
    line = fails_in_one_line(command_line(name, paths, replace={"OUT": out}), capsys)
    expected = {"file": "is a file; expected a folder", "below-a-file": "is a file, so no folder can hold",
                "read-only": "is read-only"}[where]
    assert f"--out {out}" in line and expected in line, line
    assert Path(paths["FILE"]).read_text() == "keep me" and not any(readonly.iterdir())


@pytest.mark.parametrize("name, option", [("score", "--output"), ("rank", "--output"), ("eval", "--json-out")])
@pytest.mark.parametrize("where", ["folder", "below-a-file"])
def test_an_output_file_that_cannot_be_written_is_refused_first(name, option, where, paths, capsys):
    target = paths["TMP"] if where == "folder" else paths["FILE"] + "/scores.csv"
    line = fails_in_one_line(command_line(name, paths, option, target), capsys)
    assert f"{option} {target}" in line and ("is a folder" if where == "folder" else "is a file") in line


def test_a_full_disk_is_one_line_naming_the_file(paths, capsys, monkeypatch):
    output = Path(paths["TMP"]) / "scores.csv"
    output.write_text("earlier scores")
    real = Path.write_text

    def full(self, *args, **kwargs):
        if self.parent == output.parent and self.name.startswith(f".{output.name}."):  # atomic_write's temporary
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    line = fails_in_one_line(command_line("score", paths, "--output", str(output)), capsys)
    assert "No space left on device" in line and str(output) in line and "free some space" in line, line
    assert output.read_text() == "earlier scores" and sorted(p.name for p in output.parent.glob(".scores*")) == []


@pytest.mark.parametrize("name, target", [("train", "mst_clipiqa.reward.training.Trainer.run"),
                                          ("finetune", "integrations.RewardFinetuner.train")])
def test_ctrl_c_is_one_line_naming_resume_and_exit_130(name, target, paths, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    status = main(command_line(name, paths, *(["--eval-images", "0"] if name == "finetune" else []),
                               "--device", "cpu"))
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 130 and len(err) == 1 and "interrupted" in err[0] and "--resume" in err[0], err


def test_ctrl_c_in_a_command_without_resume_does_not_mention_it(paths, capsys, monkeypatch):
    monkeypatch.setattr("reward.MSTCLIPIQAReward.score_outputs", lambda *a, **k: (_ for _ in ()).throw(
        KeyboardInterrupt))
    status = main(command_line("score", paths))
    err = capsys.readouterr().err.strip()
    assert status == 130 and err == "mst-clipiqa score: interrupted"


def imported_after(args: list[str]) -> list[str]:
    code = ("import sys\nfrom mst_clipiqa.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'diffusers', 'open_clip', "
            "'transformers', 'numpy'}))")
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"'))


@pytest.mark.parametrize("args", [["--help"], ["score", "--help"], ["rank", "--help"], ["eval", "--help"],
                                  ["optimize", "--help"], ["demo", "--help"], ["score", "--bogus"], ["nonsense"]])
def test_help_and_argument_errors_import_no_heavy_library(args):
    assert imported_after(args) == []
