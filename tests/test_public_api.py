"""Every public name of commit d3bdc1a (before the restructuring) still works: each package's ``__all__``, the
public attributes of the classes they export, and every CLI command with each of its flags.
``public_api_d3bdc1a.json`` was written from that commit; names may be added, none may go."""

import argparse
import importlib
import json
from pathlib import Path

import pytest

from mst_clipiqa.cli import build_parser

PUBLIC = json.loads((Path(__file__).with_name("public_api_d3bdc1a.json")).read_text())


@pytest.mark.parametrize("package", sorted(PUBLIC["modules"]))
def test_every_exported_name_still_imports(package):
    module = importlib.import_module(package)
    missing = [name for name in PUBLIC["modules"][package] if not hasattr(module, name)]
    assert not missing, f"{package} lost {missing}"
    assert set(PUBLIC["modules"][package]) <= set(module.__all__)


@pytest.mark.parametrize("qualified", sorted(PUBLIC["members"]))
def test_every_public_attribute_of_an_exported_class_is_still_there(qualified):
    package, name = qualified.rsplit(".", 1)
    cls = getattr(importlib.import_module(package), name)
    missing = [attr for attr in PUBLIC["members"][qualified] if not hasattr(cls, attr)]
    assert not missing, f"{qualified} lost {missing}"


def test_every_cli_command_keeps_every_flag():
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command, flags in PUBLIC["cli"].items():
        assert command in commands, f"the CLI lost the command {command}"
        missing = [flag for flag in flags if flag not in commands[command]._option_string_actions]
        assert not missing, f"mst-clipiqa {command} lost {missing}"
