"""Each recipe in recipes/ loads (YAML whose keys are the command's long option names) through the CLI's own
``--config`` reader, parses with the command's parser and builds a valid trainer config."""
import argparse
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from mst_clipiqa.cli import build_parser
from mst_clipiqa.cli.commands.finetune import method_options
from mst_clipiqa.cli.commands.optimize import config_from_args
from mst_clipiqa.cli.config_file import with_config
from mst_clipiqa.cli.options import dataclass_values
from mst_clipiqa.integrations.finetune.config import RunConfig
from mst_clipiqa.integrations.finetune.method_configs import CONFIGS

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
REQUIRED = ["--model", "tiny", "--prompts", "prompts.txt", "--out", "run"]


def parsed(command: str, path: Path, *words: str) -> argparse.Namespace:
    """``mst-clipiqa COMMAND --config PATH WORDS...`` parsed as the CLI parses it."""
    parser = build_parser([command])
    return parser.parse_args(with_config([command, "--config", str(path), *words], command,
                                         parser.command_parsers[command]))


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
        args = parsed("optimize", path, "--model", "tiny", "--prompt", "a", "--out", "o")
        config = config_from_args(args)
        assert (config.num_inference_steps, config.steps) == (recipe["num-inference-steps"], recipe["steps"])
        return
    if recipe["method"] == "best-of-n":
        args = parsed("plan", path)
        assert args.method == "best-of-n" and args.batch_size >= 1
        return
    extra = ["--pairs", "pairs"] if recipe["method"] == "dpo" else []
    args = parsed("finetune", path, *REQUIRED, *extra)
    config_cls = CONFIGS[args.method]
    options = method_options(args, config_cls, CONFIGS)  # as `finetune` reads them: a flag of another method stops it
    if "method" in {f.name for f in fields(config_cls)}:
        options["method"] = args.method
    run = RunConfig(**dataclass_values(args, RunConfig), output_dir="run")
    config_cls(**options, run=run)  # the config checks its values as it does in a run
    assert run.mixed_precision == "bf16" and args.dtype == "bf16"
    assert run.height == recipe["height"] and run.lora_rank == recipe["lora-rank"]
    assert run.learning_rate == float(recipe["learning-rate"])
    # every value carries its source: a comment on each line that sets a setting other than the names
    for line in text.splitlines():
        key = line.split(":")[0]
        if line and not line.startswith("#") and key not in ("pipeline", "method", "width", "lora-alpha"):
            assert "#" in line, f"{path.name}: {line!r} names no source"
