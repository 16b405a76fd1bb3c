"""A UTF-8 byte-order mark (as Windows editors write) is not part of the first prompt."""
import argparse

import pytest

from mst_clipiqa.cli.scoring_options import prompts_from_args
from mst_clipiqa.integrations.finetune.prompt_sources import read_prompt_file


def test_bom_is_not_part_of_the_first_prompt(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("\ufeffa red car\nun café\n".encode())
    assert read_prompt_file(path) == ["a red car", "un café"]
    args = argparse.Namespace(prompt=None, prompts=path)
    assert prompts_from_args(args, 2, required=True) == ["a red car", "un café"]


def test_a_prompt_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_bytes("un caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"prompts\.txt is not UTF-8 text"):
        read_prompt_file(path)
