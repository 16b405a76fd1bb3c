"""``mst-clipiqa optimize`` on the tiny offline pipeline and reward."""

import json

import pytest

from mst_clipiqa.cli import build_parser, main
from mst_clipiqa.cli.commands.optimize import config_from_args
from mst_clipiqa.cli.config_file import with_config
from mst_clipiqa.integrations import NoiseOptimizationConfig

from .written import written_list


def test_optimize_writes_before_after_curve_noise_and_record(tmp_path, capsys):
    out = tmp_path / "opt"
    status = main(["optimize", "--pipeline", "tiny-turbo", "--prompt", "a lighthouse at dusk", "--model", "tiny",
                   "--out", str(out), "--steps", "4", "--seed", "3", "--device", "cpu", "--monitor", "tiny"])
    printed = capsys.readouterr().out
    assert status == 0
    assert {p.name for p in out.iterdir()} == {"before.png", "after.png", "reward_curve.png", "noise.safetensors",
                                               "result.json", "config.yaml"}
    record = json.loads((out / "result.json").read_text())
    assert record["seed"] == 3 and record["settings"]["num_inference_steps"] == 1
    assert record["reward"] >= record["initial_reward"] and len(record["history"]) == record["evaluations"]
    assert all("monitor" in r for r in record["history"])
    assert f"reward {record['initial_reward']:.4f} -> {record['reward']:.4f}" in printed
    assert len(written_list(printed, out)) == 6
    # the recorded options start the same optimisation: tiny-turbo's one step resolved, the flags given kept
    parser = build_parser(["optimize"])
    argv = ["optimize", "--config", str(out / "config.yaml"), "--out", "o"]
    again = parser.parse_args(with_config(argv, "optimize", parser.command_parsers["optimize"]))
    assert config_from_args(again) == NoiseOptimizationConfig(steps=4, seed=3, num_inference_steps=1,
                                                              guidance_scale=0.0)
    assert (again.prompt, again.monitor) == ("a lighthouse at dusk", "tiny")


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "steps must be an integer >= 1"),
    (["--gradient-steps", "2"], "gradient_steps must be in [1, num_inference_steps=1]"),
    (["--prompt", " "], "--prompt is empty"),
    (["--out", "FILE"], "is a file; expected a folder"),
])
def test_bad_options_exit_2_naming_them(args, message, tmp_path, capsys):
    (tmp_path / "file").write_text("keep me")
    base = {"--pipeline": "tiny-turbo", "--prompt": "a cat", "--model": "tiny", "--out": str(tmp_path / "out"),
            "--device": "cpu"}
    options = {**base, **dict(zip(args[::2], args[1::2]))}
    options = {k: str(tmp_path / "file") if v == "FILE" else v for k, v in options.items()}
    status = main(["optimize", *[x for kv in options.items() for x in kv]])
    assert status == 2 and message in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "keep me" and not (tmp_path / "out").exists()


@pytest.mark.parametrize("old, new", [("--inference-steps", "--num-inference-steps"),
                                      ("--checkpointing", "--gradient-checkpointing")])
def test_a_flag_renamed_to_its_config_field_is_refused_with_the_new_name(old, new, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["optimize", "--pipeline", "tiny-turbo", "--prompt", "a", "--model", "tiny", "--out", "o", old, "1"])
    assert exit_info.value.code == 2 and f"{old} is {new} now" in capsys.readouterr().err
