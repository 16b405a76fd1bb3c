"""The public API stays: each public package's ``__all__``, the public attributes of the classes they export, and
every CLI command with each of its flags, as pinned in ``public_api.json``. Names may be added, none may go;
after a deliberate change, ``python tests/test_public_api.py --write`` pins the tree as it is.

Internals (``reward.utils``, the trainers' parts, ``cli``'s modules) are not pinned: they may move."""

import argparse
import importlib
import inspect
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIN = Path(__file__).with_name("public_api.json")
PUBLIC_PACKAGES = ("mst_clipiqa", "mst_clipiqa.reward", "mst_clipiqa.reward.training", "mst_clipiqa.reward.datasets",
                   "mst_clipiqa.integrations", "mst_clipiqa.integrations.pipelines.families",
                   "mst_clipiqa.integrations.pipelines.tiny")


def class_members(cls: type) -> list[str]:
    """The public attributes a class of this library defines or inherits from another of its classes."""
    own = [klass for klass in cls.__mro__ if klass.__module__.startswith("mst_clipiqa")]
    return sorted({name for klass in own for name in vars(klass) if not name.startswith("_")})


def command_flags() -> dict[str, list[str]]:
    from mst_clipiqa.cli import build_parser

    parsers = build_parser().command_parsers
    return {name: sorted(flag for flag in _flags(parser) if flag.startswith("--")) for name, parser in parsers.items()}


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    # the pin is a test: it may read argparse's table of flags, which the command line itself never does
    return set(parser._option_string_actions)


def public_api() -> dict:
    modules = {package: sorted(importlib.import_module(package).__all__) for package in PUBLIC_PACKAGES}
    members = {f"{package}.{name}": class_members(value) for package, names in modules.items() for name in names
               if inspect.isclass(value := getattr(importlib.import_module(package), name))
               and value.__module__.startswith("mst_clipiqa")}
    return {"modules": modules, "members": members, "cli": command_flags()}


PUBLIC = json.loads(PIN.read_text()) if PIN.exists() else {"modules": {}, "members": {}, "cli": {}}


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
    flags = command_flags()
    for command, pinned in PUBLIC["cli"].items():
        assert command in flags, f"the CLI lost the command {command}"
        missing = sorted(set(pinned) - set(flags[command]))
        assert not missing, f"mst-clipiqa {command} lost {missing}"


def test_the_pin_covers_the_public_packages_and_no_internals():
    assert sorted(PUBLIC["modules"]) == sorted(PUBLIC_PACKAGES)
    assert not any(".utils" in name or ".cli" in name for name in [*PUBLIC["modules"], *PUBLIC["members"]])


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    sys.path.insert(0, str(ROOT))
    PIN.write_text(json.dumps(public_api(), indent=2, sort_keys=True) + "\n")
    print(f"wrote {PIN}")
