"""Each recipe in recipes/ loads (YAML whose keys are the command's long option names), parses with the
command's own parser and builds a valid trainer config: a minimal reader, until the CLI's --config loader."""
from pathlib import Path

import pytest
import yaml

from mst_clipiqa.cli import build_parser
from mst_clipiqa.cli.commands.optimize import config_from_args
from mst_clipiqa.cli.options import dataclass_values
from mst_clipiqa.integrations.finetune.config import RunConfig, from_flat_settings
from mst_clipiqa.integrations.finetune.method_configs import CONFIGS

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
REQUIRED = ["--model", "tiny", "--prompts", "prompts.txt", "--out", "run"]


def argv(recipe: dict) -> list[str]:
    words = []
    for key, value in recipe.items():
        if value is True:
            words.append(f"--{key}")
        elif isinstance(value, list):
            words += [f"--{key}", *map(str, value)]
        else:
            words += [f"--{key}", str(value)]
    return words


def test_every_pipeline_has_every_method():
    names = {p.stem for p in RECIPES}
    for pipe in ("sd15", "sdxl", "sd35m", "flux"):
        for method in ("draft", "alignprop", "grpo", "nft", "dpo", "best-of-n"):
            assert f"{pipe}-{method}" in names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_parses_and_validates(path):
    recipe = yaml.safe_load(path.read_text())
    text = path.read_text()
    assert all(f"\n{key}:" in "\n" + text for key in recipe)  # a flat mapping of option names
    if "method" not in recipe:  # noise optimisation: one image, no trainer
        args = build_parser(["optimize"]).parse_args(["optimize", *argv(recipe), "--model", "tiny", "--prompt", "a",
                                                      "--out", "o"])
        config = config_from_args(args)
        assert (config.num_inference_steps, config.steps) == (recipe["num-inference-steps"], recipe["steps"])
        return
    if recipe["method"] == "best-of-n":
        args = build_parser(["plan"]).parse_args(["plan", *argv(recipe)])
        assert args.method == "best-of-n" and args.batch_size >= 1
        return
    extra = ["--pairs", "pairs"] if recipe["method"] == "dpo" else []
    args = build_parser(["finetune"]).parse_args(["finetune", *argv(recipe), *REQUIRED, *extra])
    config_cls = CONFIGS[args.method]
    config = from_flat_settings(config_cls, {**dataclass_values(args, RunConfig), **dataclass_values(args, config_cls),
                                             "output_dir": "run"})
    run = config.run
    assert run.mixed_precision == "bf16" and args.dtype == "bf16"
    assert run.height == recipe["height"] and run.lora_rank == recipe["lora-rank"]
    assert run.learning_rate == float(recipe["learning-rate"])
    # every value carries its source: a comment on each line that sets a setting other than the names
    for line in text.splitlines():
        key = line.split(":")[0]
        if line and not line.startswith("#") and key not in ("pipeline", "method", "width", "lora-alpha"):
            assert "#" in line, f"{path.name}: {line!r} names no source"
