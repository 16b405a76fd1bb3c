"""The ``mst-clipiqa`` command line (in-process, tiny models) and the training examples."""
from __future__ import annotations

import contextlib
import csv
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from mst_clipiqa.cli import COMMANDS, build_parser, main
from mst_clipiqa.reward.datasets import save_split_folder
from mst_clipiqa.reward.datasets.splits import make_splits, save_splits
from mst_clipiqa.reward.datasets.synthetic import make_synthetic_dataset

from .written import written_list

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny variant-B run on the synthetic set, made through the CLI."""
    root = tmp_path_factory.mktemp("cli")
    data, out, cache = root / "synthetic", root / "run", root / "cache"
    make_synthetic_dataset(data, n_scenes=3, levels=(0.5, 1.0))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["train", "--model", "tiny", "--variant", "B", "--dataset", "synthetic", "--data", str(data),
                       "--out", str(out), "--epochs", "2", "--n-splits", "2", "--lr", "1e-3", "--cache-dir",
                       str(cache), "--quiet", "--device", "cpu"])
    assert status == 0
    return {"data": data, "out": out, "cache": cache, "root": root, "printed": printed.getvalue()}


def run(args: list[str], capsys) -> tuple[int, str, str]:
    status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_help_names_every_command_and_the_model_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    text = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert list(COMMANDS) == ["train", "eval", "score", "rank", "finetune", "optimize", "pairs", "demo", "plan",
                              "serve"]
    for word in ("train", "eval", "score", "rank", "finetune", "optimize", "tiny-hf", "paper-A", "save_pretrained"):
        assert word in text
    for command, words in {"train": ("--resume", "--lora-rank", "--split-by", "--no-cache", "--ema-decay",
                                     "--temperature-lr", "accelerate launch",
                                     "torchrun --nproc_per_node 2"),
                           "eval": ("--split-file", "--json-out"), "score": ("--prompts", "--format"),
                           "finetune": ("--pipeline", "--method", "--resume", "--log-with", "--save-every",
                                        "--use-ema", "--lr-scheduler", "torchrun --nproc_per_node 2",
                                        "accelerate launch --multi_gpu")}.items():
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert all(word in text for word in words), command


@pytest.mark.parametrize("command", list(COMMANDS))
def test_help_examples_keep_their_line_breaks_and_parse(command, monkeypatch):
    """An example's continued line (a backslash in a non-raw string) joins two lines; every example must parse
    (with the options of the recipe it reads, as main reads them: recipes/ is the repository's)."""
    from mst_clipiqa.cli import CONFIG_COMMANDS, build_parser
    from mst_clipiqa.cli.config_file import with_config

    monkeypatch.chdir(ROOT)
    epilog = build_parser([command])._subparsers._group_actions[0].choices[command].epilog or ""
    assert not re.search(r"\S {4,}--", epilog), "an example lost a line break (write \\\\ for a continued line)"
    for line in re.split(r"(?<!\\)\n", epilog):
        if not line.strip().startswith("mst-clipiqa ") or "..." in line:
            continue
        argv = shlex.split(line.replace("\\\n", " "), comments=True)[1:]
        parser = build_parser([argv[0]])
        if argv[0] in CONFIG_COMMANDS:
            argv = with_config(argv, argv[0], parser.command_parsers[argv[0]])
        assert parser.parse_args(argv).command == argv[0], line


def test_train_writes_model_report_and_plots(trained, capsys):
    out = trained["out"]
    assert out / "report.json" in written_list(trained["printed"], out)
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["test"]["quality"]["srcc"]["count"] == 2
    assert (out / "model" / "config.json").exists() and all((out / p).exists() for p in report["plots"])
    # resuming a finished run re-reports it without training again
    assert run(["train", "--model", "tiny", "--variant", "B", "--dataset", "synthetic", "--data", trained["data"],
                "--out", out, "--epochs", "2", "--n-splits", "2", "--lr", "1e-3", "--cache-dir", trained["cache"],
                "--quiet", "--device", "cpu", "--resume"], capsys)[0] == 0


def test_a_train_run_records_the_settings_that_start_it_again(trained):
    from mst_clipiqa.cli.config_file import with_config
    from mst_clipiqa.cli.options import dataclass_values
    from mst_clipiqa.reward.training import TrainConfig
    from mst_clipiqa.reward.utils.config_files import read_config

    written = trained["out"] / "config.yaml"
    recorded = read_config(written)
    assert (recorded["variant"], recorded["epochs"], recorded["quiet"], recorded["data"]) == (
        "B", 2, True, str(trained["data"]))
    assert "out" not in recorded and "resume" not in recorded
    parser = build_parser(["train"])
    args = parser.parse_args(with_config(["train", "--config", str(written), "--out", "x"], "train",
                                         parser.command_parsers["train"]))
    again = TrainConfig.from_recipe(args.recipe, **dataclass_values(args, TrainConfig))
    ran = json.loads((trained["out"] / "report.json").read_text())["settings"]["train"]
    assert {**again.to_dict(), "mixed_precision": ran["mixed_precision"]} == ran  # accelerate names "no"


def test_eval_reproduces_the_selected_split(trained, capsys):
    out, root = trained["out"], trained["root"]
    report = json.loads((out / "report.json").read_text())
    dataset = make_synthetic_dataset(trained["data"], n_scenes=3, levels=(0.5, 1.0))
    save_splits(make_splits(dataset, 2, seed=0), root / "splits.json")
    status, text, err = run(["eval", "--model", out / "model", "--dataset", "synthetic", "--data", trained["data"],
                           "--split-file", root / "splits.json", "--json-out", root / "eval.json",
                           "--cache-dir", trained["cache"], "--device", "cpu"], capsys)
    assert status == 0 and "srcc" in text, err
    result = json.loads((root / "eval.json").read_text())
    k = report["selected_split"]
    assert result["splits"][k]["test"]["quality"]["srcc"] == pytest.approx(
        report["splits"][k]["test"]["quality"]["srcc"], abs=1e-6)


def test_eval_of_one_split_has_no_nan_spread(trained, capsys):
    root = trained["root"]
    dataset = make_synthetic_dataset(trained["data"], n_scenes=3, levels=(0.5, 1.0))
    save_splits(make_splits(dataset, 1, seed=3), root / "one.json")
    status, text, err = run(["eval", "--model", trained["out"] / "model", "--dataset", "synthetic", "--data",
                             trained["data"], "--split-file", root / "one.json", "--json-out", root / "one-eval.json",
                             "--cache-dir", trained["cache"], "--device", "cpu"], capsys)
    assert status == 0 and "nan" not in text.lower() and "test parts of 1 splits" in text, err
    table, written = text.split("wrote:\n")
    assert all(line.split()[-1] == "-" for line in table.splitlines()[2:])  # the std column
    assert written.split() == [str(root / "one-eval.json")]
    summary = json.loads((root / "one-eval.json").read_text())["summary"]
    assert summary["quality"]["srcc"]["std"] is None and summary["quality"]["srcc"]["count"] == 1


def test_published_split_folder_round_trips_through_split_file(trained, capsys):
    """Splits written in IPCE's layout are the splits train and eval then use."""
    root = trained["root"]
    dataset = make_synthetic_dataset(trained["data"], n_scenes=3, levels=(0.5, 1.0))
    splits = make_splits(dataset, 2, val_fraction=0.0, seed=5)
    folder = save_split_folder(splits, dataset, root / "Database" / "synthetic")
    common = ["--dataset", "synthetic", "--data", trained["data"], "--split-file", folder,
              "--cache-dir", trained["cache"], "--device", "cpu"]
    status, text, err = run(["train", "--model", "tiny", "--variant", "B", "--out", root / "ipce-run", "--epochs", "1",
                             "--quiet", *common], capsys)
    assert status == 0 and f"splits: {folder} (2)" in text, err
    report = json.loads((root / "ipce-run" / "report.json").read_text())
    assert [s["n_test"] for s in report["splits"]] == [len(s.test) for s in splits]
    assert [s["n_train"] + s["n_val"] for s in report["splits"]] == [len(s.train) for s in splits]
    assert all(s["n_val"] > 0 for s in report["splits"])  # carved from the published training part
    assert run(["eval", "--model", root / "ipce-run" / "model", "--json-out", root / "ipce.json", *common],
               capsys)[0] == 0
    by_folder = json.loads((root / "ipce.json").read_text())["splits"]
    assert [s["n_test"] for s in by_folder] == [len(s.test) for s in splits]


def test_score_formats_agree(trained, capsys):
    model, images = trained["out"] / "model", trained["data"]
    n = len(list(images.glob("*.png")))
    status, text, _ = run(["score", images, "--model", model, "--prompt", "a red circle", "--format", "csv"], capsys)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert status == 0 and len(rows) == n and list(rows[0]) == ["image", "quality"]
    _, text, _ = run(["score", images, "--model", model, "--prompt", "a red circle", "--format", "json"], capsys)
    as_json = json.loads(text)
    assert [r["quality"] for r in as_json] == pytest.approx([float(r["quality"]) for r in rows], abs=1e-4)
    _, text, _ = run(["score", images, "--model", model, "--prompt", "a red circle"], capsys)
    assert text.splitlines()[0].split() == ["image", "quality"] and len(text.splitlines()) == n + 1


def test_score_with_a_prompts_file(trained, tmp_path, capsys):
    images = sorted(trained["data"].glob("*.png"))[:2]
    (tmp_path / "prompts.txt").write_text("a red circle\na blue square\n")
    status, text, _ = run(["score", *images, "--model", "tiny", "--variant", "B", "--prompts",
                           tmp_path / "prompts.txt", "--format", "json"], capsys)
    assert status == 0 and len(json.loads(text)) == 2
    status, _, err = run(["score", images[0], "--model", "tiny", "--variant", "B", "--prompts",
                          tmp_path / "prompts.txt"], capsys)
    assert status == 2 and "2 prompts for 1 images" in err


@pytest.mark.parametrize("args, message", [
    (["score", "x.png", "--model", "tiny", "--variant", "C"], "expected A or B"),
    (["score", "x.png", "--model", "paper-A", "--variant", "B"], "is variant A"),
    (["score", "nowhere.png", "--model", "tiny"], "neither an image file nor a folder"),
    (["score", "IMAGES", "--model", "tiny", "--variant", "B"], "pass --prompt TEXT or --prompts FILE"),
])
def test_bad_input_exits_2_with_a_clear_message(args, message, trained, capsys):
    args = [str(trained["data"]) if a == "IMAGES" else a for a in args]
    status, _, err = run(args, capsys)
    assert status == 2 and message in err


@pytest.mark.parametrize("args, message", [
    (["score", "IMAGE", "--output", "FOLDER"], "--output FOLDER is a folder; expected a file path to write"),
    (["score", "IMAGE", "--output", "FILE/scores.csv"], "--output FILE/scores.csv: FILE is a file"),
    (["rank", "IMAGE", "--out", "FILE"], "--out FILE is a file; expected a folder to write the ranking into"),
    (["rank", "IMAGE", "--maps", "FILE"], "--maps FILE is a file; expected a folder to write the quality maps into"),
    (["score", "IMAGE", "--device", "bogus"], "--device 'bogus' is not a device name; expected auto, cpu, cuda, "
                                              "cuda:N or mps"),
    (["score", "IMAGE", "--device", "cuda"], "--device cuda: no CUDA GPU is available here; use --device cpu"),
    (["rank", "IMAGE", "--device", "meta"], "--device meta: expected auto, cpu, cuda, cuda:N or mps"),
    (["train", "--dataset", "synthetic", "--data", "FOLDER", "--out", "FOLDER/run", "--device", "cuda"],
     "--device cuda: no CUDA GPU is available here"),
])
def test_bad_output_paths_and_devices_exit_2_naming_the_value(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # the same answer on a GPU machine
    paths = {"IMAGE": tmp_path / "a.png", "FOLDER": tmp_path / "folder", "FILE": tmp_path / "file"}
    paths["FOLDER"].mkdir()
    paths["FILE"].write_text("keep me")
    Image.new("RGB", (8, 8)).save(paths["IMAGE"])

    def expand(text):
        for key, path in paths.items():
            text = text.replace(key, str(path))
        return text

    status, out, err = run([expand(a) for a in args] + ["--model", "tiny"], capsys)
    assert status == 2 and expand(message) in err and out == ""
    assert paths["FILE"].read_text() == "keep me" and not any(paths["FOLDER"].iterdir())


def test_a_missing_gpu_index_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    status, _, err = run(["score", tmp_path / "a.png", "--model", "tiny", "--device", "cuda:3"], capsys)
    assert status == 2 and "--device cuda:3: this machine has 1 CUDA GPU(s), cuda:0 to cuda:0" in err


def test_console_script_is_installed():
    script = Path(sys.executable).with_name("mst-clipiqa")
    if not script.exists():
        pytest.skip("package not installed in this environment (pip install -e .)")
    result = subprocess.run([str(script), "score", "--help"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0 and "--prompts" in result.stdout


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_examples_run_offline(tmp_path, capsys):
    cache = str(tmp_path / "cache")
    report = _example("train_agiqa3k").main(["--out", str(tmp_path / "agiqa3k"), "--epochs", "1",
                                             "--cache-dir", cache])
    assert report["summary"]["test"]["quality"]["srcc"]["count"] == 10
    assert report["settings"]["train"]["split_by"] == "auto"
    assert "10 split(s) by prompt" in report["recipe"]["description"]
    results = _example("lora_adapt").main(["--out", str(tmp_path / "lora"), "--epochs", "1", "--cache-dir", cache])
    assert set(results) == {"base", "sd15"}
    assert (tmp_path / "lora" / "sd15" / "adapter" / "adapter_model.safetensors").exists()
    assert "adapter sd15" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--lr-warmup-steps", "5"], "needs a schedule with warm-up"),
    (["--log-with", "tensorbored"], "unknown tracker"),
    (["--prompts", "/no/such/prompts.txt"], "does not exist"),
    (["--device", "cuda:1"], "CUDA_VISIBLE_DEVICES"),
    (["--group-size", "4"], "--group-size applies to --method ddpo, grpo, nft, not --method draft"),
    (["--kl-coeff", "0.1"], "--kl-coeff is --base-distance-coeff for --method draft now"),
])
def test_finetune_bad_input_exits_2_before_loading_anything(extra, message, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a cat\n")
    status, _, err = run(["finetune", "--pipeline", "tiny", "--model", "tiny", "--prompts", prompts,
                          "--out", tmp_path / "run", *extra], capsys)
    assert status == 2 and message in err
    assert not (tmp_path / "run").exists()


def test_finetune_help_shows_each_methods_options_under_it(capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    groups = {part.split(":\n", 1)[0]: part for part in capsys.readouterr().out.split("\n\n")}
    draft, policy = groups["--method draft, alignprop, refl"], groups["--method ddpo, grpo, nft"]
    assert "--kl-coeff" in policy and "--kl-coeff" not in draft and "--base-distance-coeff" in draft
    assert "--beta" in groups["--method dpo"]
    assert "ddpo, grpo, nft: sampling steps of the rollouts" in " ".join(groups["sampling (per method)"].split())


def test_every_tiny_pipeline_name_builds_offline():
    from mst_clipiqa.cli.pipeline_loading import TINY, load_pipeline

    for name, settings in TINY.items():
        pipe, tiny = load_pipeline(name)
        assert tiny is settings and callable(pipe), name
    with pytest.raises(ValueError, match="--pipeline nowhere/none: (cannot load it|not in the local Hugging Face)"):
        load_pipeline("nowhere/none")


def test_train_maps_ema_decay_onto_the_config():
    from mst_clipiqa.cli import build_parser
    from mst_clipiqa.cli.options import dataclass_values
    from mst_clipiqa.reward.training import TrainConfig

    args = build_parser(["train"]).parse_args(["train", "--model", "tiny", "--dataset", "synthetic", "--data", "d",
                                               "--out", "o", "--ema-decay", "0.99"])
    assert TrainConfig.from_recipe(args.recipe, **dataclass_values(args, TrainConfig)).ema_decay == 0.99


@pytest.fixture
def images_with_bad_ones(tmp_path):
    from tests.conftest import SAMPLE

    folder = tmp_path / "images"
    folder.mkdir()
    good = sorted((SAMPLE / "images").glob("*.jpg"))[:2]
    for path in good:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "truncated.jpg").write_bytes(good[0].read_bytes()[:300])
    return folder, [p.name for p in good]


def test_score_skips_unreadable_images_names_them_and_says_so_in_its_status(images_with_bad_ones, capsys):
    folder, good = images_with_bad_ones
    status, out, err = run(["score", folder, "--model", "tiny", "--skip-unreadable", "--format", "csv"], capsys)
    assert status == 3
    assert [Path(r["image"]).name for r in csv.DictReader(io.StringIO(out))] == good
    assert err.startswith("mst-clipiqa score: skipped 2 unreadable image(s):") and "broken.png" in err
    assert "truncated.jpg" in err
    status, _, err = run(["score", folder, "--model", "tiny"], capsys)  # without the flag: stops, in one line
    assert status == 2 and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("form", ["csv", "json"])
def test_score_keeps_its_data_on_stdout_and_lists_what_it_wrote_apart(form, images_with_bad_ones, tmp_path, capsys):
    folder, good = images_with_bad_ones
    for name in ("broken.png", "truncated.jpg"):
        (folder / name).unlink()
    maps = tmp_path / "maps"
    status, out, err = run(["score", folder, "--model", "tiny", "--maps", maps, "--format", form], capsys)
    rows = list(csv.DictReader(io.StringIO(out))) if form == "csv" else json.loads(out)
    assert status == 0 and [Path(r["image"]).name for r in rows] == good
    assert len(written_list(err, maps)) == len(good)
    status, out, _ = run(["score", folder / good[0], "--model", "tiny", "--format", form,
                          "--output", tmp_path / f"scores.{form}"], capsys)
    assert status == 0 and written_list(out) == [tmp_path / f"scores.{form}"]


def test_rank_ends_with_what_it_wrote_out_of_the_way_of_its_data(images_with_bad_ones, tmp_path, capsys):
    folder, good = images_with_bad_ones
    status, out, err = run(["rank", folder, "--model", "tiny", "--skip-unreadable", "--format", "json"], capsys)
    assert status == 3 and sorted(Path(r["image"]).name for r in json.loads(out)) == good
    assert err.startswith("mst-clipiqa rank: skipped 2 unreadable image(s):") and "broken.png" in err
    for name in ("broken.png", "truncated.jpg"):
        (folder / name).unlink()
    status, out, err = run(["rank", folder, "--model", "tiny", "--out", tmp_path / "ranked", "--format", "json"],
                           capsys)
    assert status == 0 and len(json.loads(out)) == len(good)  # stdout stays JSON
    listed = err.split("wrote:")[1].split()
    assert str(tmp_path / "ranked" / "ranking.csv") in listed and all(Path(p).is_file() for p in listed)
    status, out, _ = run(["rank", folder, "--model", "tiny", "--output", tmp_path / "r.csv"], capsys)
    assert status == 0 and out.split("wrote:")[1].split() == [str(tmp_path / "r.csv")]
