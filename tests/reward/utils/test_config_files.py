"""Settings files keyed by option names: a settings dataclass written and read back."""
from dataclasses import dataclass
from pathlib import Path

import pytest

from mst_clipiqa.reward.utils.config_files import option_values, read_config, write_config
from mst_clipiqa.reward.utils.options import option


@dataclass
class Settings:
    learning_rate: float = option(1e-3, "step size")
    use_cache: bool = option(True, "cache features", flag="--no-cache")
    verbose: bool = option(True, "print", flag="--quiet")
    cpu: bool = option(False, "run on the CPU")
    seeds: tuple[int, ...] = option((0, 1), "seeds", nargs="+", type=int)
    name: str = option("x", "internal", cli=False)


def test_fields_go_under_their_flags_and_off_switches_say_whether_they_are_on(tmp_path):
    values = option_values(Settings(use_cache=False, cpu=True))
    assert values == {"learning-rate": 1e-3, "no-cache": True, "quiet": False, "cpu": True, "seeds": (0, 1)}
    write_config(tmp_path / "config.yaml", {**values, "data": Path("/d")})
    assert read_config(tmp_path / "config.yaml") == {**values, "seeds": [0, 1], "data": "/d"}


@dataclass
class Composed:
    run: Settings
    beta: float = option(0.1, "strength")


def test_composed_settings_give_their_options_flat():
    assert option_values(Composed(Settings(cpu=True))) == {**option_values(Settings(cpu=True)), "beta": 0.1}


def test_keys_with_underscores_or_dashes_read_alike(tmp_path):
    (tmp_path / "a.yaml").write_text("--learning_rate: 0.5\nno-cache: true\n")
    assert read_config(tmp_path / "a.yaml") == {"learning-rate": 0.5, "no-cache": True}
    (tmp_path / "empty.yaml").write_text("")
    assert read_config(tmp_path / "empty.yaml") == {}


def test_what_is_not_a_mapping_is_named(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(ValueError, match="list.yaml holds a YAML list; expected a mapping"):
        read_config(tmp_path / "list.yaml")
