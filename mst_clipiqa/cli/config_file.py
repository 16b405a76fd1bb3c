"""``--config FILE.yaml``: a command's options from a file (``reward.utils.config_files``), flags overriding it.

The file's options become command-line words placed before the user's own, so argparse checks their types,
choices and required options as it does for typed ones, and a flag typed later wins. The options a command
has are read from its usage line (argparse's public output), which also says how many values each takes."""
from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FLAG = "--config"
HELP = ("options from a YAML file, one 'option: value' per line named as the flags are (dashes or underscores; "
        "true / false for on / off flags, a list for several values), e.g. a run folder's config.yaml; flags "
        "given here override it")
_OPTION = re.compile(r"(--[\w-]+)((?: (?![-|])[^\s\[\]]+| \[(?!-)[^\[\]]*\.\.\.\])*)")  # "|": --x | --no-x


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(FLAG, type=Path, metavar="FILE.yaml", help=HELP)


def config_path(argv: Sequence[str]) -> str | None:
    """The file ``--config FILE`` / ``--config=FILE`` names on the command line (the last one), if any."""
    path = None
    for i, word in enumerate(argv):
        if word == FLAG and i + 1 < len(argv):
            path = argv[i + 1]
        elif word.startswith(FLAG + "="):
            path = word[len(FLAG) + 1:]
    return path


def option_arities(usage: str) -> dict[str, int | None]:
    """``{option name: number of values}`` from a usage line; None for a list of any length (``nargs='+'``)."""
    arities = {}
    for flag, values in _OPTION.findall(" ".join(usage.split())):
        arities[flag[2:]] = None if " [" in values else len(values.split())  # "X [X ...]": nargs="+"
    return arities


def config_words(path: str, usage: str) -> list[str]:
    """The command-line words the settings file at ``path`` stands for; an option the command does not have is a
    ``ValueError`` naming it and the ones it has."""
    from mst_clipiqa.reward.utils.config_files import read_config

    arities = option_arities(usage)
    valid = sorted(set(arities) - {"help", FLAG[2:]})
    words: list[str] = []
    for name, value in read_config(path).items():
        if name not in valid:
            raise ValueError(f"{path}: unknown option {name!r}; this command's options are {', '.join(valid)}")
        words += _words(name, value, arities[name])
    return words


def _words(name: str, value: Any, arity: int | None) -> list[str]:
    flag = f"--{name}"
    if value is None or (value is False and arity == 0):  # the default / a flag left off
        return []
    if value is True and arity == 0:
        return [flag]
    if isinstance(value, list):
        if arity == 1:  # a repeatable option (--adapter): once per value
            return [f"{flag}={item}" for item in value]
        return [flag, *map(str, value)]
    return [f"{flag}={value}"]  # one word: a value that starts with "-" stays a value


def with_config(argv: list[str], command: str, parser: argparse.ArgumentParser) -> list[str]:
    """``argv`` with the words of its ``--config`` file inserted right after the command word."""
    path = config_path(argv)
    if path is None:
        return argv
    try:
        words = config_words(path, parser.format_usage())
    except ValueError as error:
        parser.error(str(error))
    at = argv.index(command) + 1
    return [*argv[:at], *words, *argv[at:]]
