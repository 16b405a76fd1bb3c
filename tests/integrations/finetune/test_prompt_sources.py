"""Training prompts from a list, a text file or a prompt_fn, with clear errors for anything else."""

from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from mst_clipiqa.integrations import PromptSource
from mst_clipiqa.integrations.finetune.prompt_sources import read_prompt_file

LINE = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20)


@given(st.lists(LINE, max_size=8))
def test_a_prompt_file_holds_its_non_empty_lines(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    expected = [line.strip() for line in lines if line.strip()]
    if expected:
        assert read_prompt_file(path) == expected
    else:
        with pytest.raises(ValueError, match="holds no prompts"):
            read_prompt_file(path)


def test_lists_draw_from_the_generator_and_prompt_fns_are_called():
    source = PromptSource(["a", "b", "c"])
    first = source.draw(6, torch.Generator().manual_seed(1))
    assert first == source.draw(6, torch.Generator().manual_seed(1)) and set(first) <= {"a", "b", "c"}
    assert PromptSource("one prompt").draw(2, torch.Generator()) == ["one prompt", "one prompt"]
    calls = iter(["x", "y"])
    assert PromptSource(lambda: (next(calls), {"meta": 1})).draw(2, torch.Generator()) == ["x", "y"]
    assert PromptSource(lambda: "bare").draw(1, torch.Generator()) == ["bare"]


@pytest.mark.parametrize("prompts, message", [
    ([], "non-empty list of strings"), (["a", 3], "non-empty list of strings"),
    (Path("/no/such/prompts.txt"), "does not exist"),
])
def test_bad_prompts_are_clear_value_errors(prompts, message):
    with pytest.raises(ValueError, match=message):
        PromptSource(prompts)


def test_a_file_name_given_as_text_is_not_taken_for_a_prompt(tmp_path, monkeypatch):
    (tmp_path / "prompts.txt").write_text("a cat\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"pathlib.Path\('prompts.txt'\)"):
        PromptSource("prompts.txt")
    with pytest.raises(ValueError, match="expected \\(prompt, metadata\\)"):
        PromptSource(lambda: (3, {})).draw(1, torch.Generator())
