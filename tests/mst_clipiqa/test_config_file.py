"""``--config FILE.yaml``: a command's options from a file, flags overriding it, and the ``config.yaml`` a
``train`` run folder records starting the same run."""
from __future__ import annotations

import pytest

from mst_clipiqa.cli import build_parser, main
from mst_clipiqa.cli.config_file import option_arities, with_config


def parse(argv: list[str]):
    """The namespace ``main(argv)`` would run with."""
    command = argv[0]
    parser = build_parser([command])
    return parser.parse_args(with_config(argv, command, parser.command_parsers[command]))


def test_file_options_reach_the_command_and_flags_override_them(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: tiny\ndataset: synthetic\ndata: somewhere\nn_splits: 3\nlr: 1.0e-2\n"
                      "no-cache: true\nlora_encoders: false\nadapter: [a, b]\n")
    args = parse(["train", "--config", str(recipe), "--out", "run", "--lr", "0.5", "--adapter", "c"])
    assert (args.model, args.n_splits, args.lr, args.use_cache) == ("tiny", 3, 0.5, False)
    assert not hasattr(args, "lora_encoders")  # false leaves the flag off: the recipe decides
    assert args.adapter == ["a", "b", "c"]  # a repeatable option: the file's, then the command line's


def test_a_value_that_starts_with_a_dash_stays_a_value(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("negative-prompt: -blurry, low quality\n")
    args = parse(["optimize", "--config", str(recipe), "--pipeline", "tiny", "--model", "tiny", "--prompt", "a",
                  "--out", "o"])
    assert args.negative_prompt == "-blurry, low quality"


def test_lists_fill_options_of_several_values(tmp_path):
    recipe = tmp_path / "grpo.yaml"
    recipe.write_text("method: grpo\nsde_window: [0, 2]\nsample-seeds: [5, 6, 7]\n")
    args = parse(["finetune", "--config", str(recipe), "--pipeline", "tiny", "--model", "tiny", "--out", "o"])
    assert (args.method, args.sde_window, args.sample_seeds) == ("grpo", [0, 2], [5, 6, 7])


def test_the_usage_line_says_how_many_values_each_option_takes():
    usage = ("usage: x [-h] --model MODEL [--adapter DIR] [--csv-columns KEY=COLUMN,...] [--quiet]\n"
             "  [--sde-window START STOP] [--sample-seeds SAMPLE_SEEDS [SAMPLE_SEEDS ...]] --data DATA\n"
             "  [--gradient-checkpointing | --no-gradient-checkpointing]")
    assert option_arities(usage) == {"model": 1, "adapter": 1, "csv-columns": 1, "quiet": 0, "sde-window": 2,
                                     "sample-seeds": None, "data": 1, "gradient-checkpointing": 0,
                                     "no-gradient-checkpointing": 0}


def test_an_on_off_flag_set_in_a_file_reaches_the_command(tmp_path):
    (tmp_path / "run.yaml").write_text("pipeline: sdxl\nmethod: grpo\ngradient-checkpointing: true\n")
    parser = build_parser(["plan"])
    args = parser.parse_args(with_config(["plan", "--config", str(tmp_path / "run.yaml")], "plan",
                                         parser.command_parsers["plan"]))
    assert (args.pipeline, args.method, args.gradient_checkpointing) == ("sdxl", "grpo", True)


@pytest.mark.parametrize("text, expected", [
    ("lrr: 3\n", "unknown option 'lrr'; this command's options are adapter, adapter-name, "),
    ("- lr\n", "holds a YAML list; expected a mapping"),
    ("lr: [\n", "is not valid YAML"),
    ("lr: fast\n", "--lr: invalid float value: 'fast'"),
])
def test_a_bad_file_is_one_line(tmp_path, capsys, text, expected):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(recipe), "--model", "tiny", "--dataset", "csv", "--data", "x", "--out", "o"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith("mst-clipiqa train: error:") and expected in err


def test_a_missing_file_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["optimize", "--config", str(tmp_path / "none.yaml")])
    assert "none.yaml: no such settings file" in capsys.readouterr().err
