"""MkDocs hook: the command-line reference is read from the parsers, so it cannot drift from the code.

``<!-- cli-commands -->`` becomes the table of every command with its help line; ``<!-- cli-help: NAME -->`` the
real ``--help`` of one command (empty NAME: ``mst-clipiqa --help``); ``<!-- cli-help: * -->`` a section with the
``--help`` of every command.
"""
from __future__ import annotations

import os
import re

MARKER = re.compile(r"^<!-- cli-help:[ \t]*(?P<command>[a-z*]*)[ \t]*-->$", re.M)
TABLE = re.compile(r"^<!-- cli-commands -->$", re.M)
GUIDES = {  # the page that explains a command, where there is one
    "score": ("The reward as a loss", "guides/reward_as_loss.md"),
    "rank": ("Best-of-N", "guides/best_of_n.md"),
    "train": ("Training the scorer", "guides/training.md"),
    "eval": ("Training the scorer", "guides/training.md"),
    "finetune": ("Fine-tuning", "guides/finetuning.md"),
    "pairs": ("Preference data", "preference.md"),
    "optimize": ("Noise optimisation and guidance", "guides/guidance.md"),
    "demo": ("Command line: the demo", "command-line.md"),
}


def _commands() -> dict:
    from mst_clipiqa.cli import COMMANDS

    return COMMANDS


def _help(command: str) -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width; fix it for a stable page
    from mst_clipiqa.cli import build_parser

    parser = build_parser([command] if command else [])
    if command:
        parser = parser._subparsers._group_actions[0].choices[command]
    return parser.format_help().rstrip()


def _block(command: str) -> str:
    return f"```text\n{_help(command)}\n```"


def _table() -> str:
    rows = ["| Command | What it does | Guide |", "|---|---|---|"]
    for name, module in _commands().items():
        guide = f"[{GUIDES[name][0]}]({GUIDES[name][1]})" if name in GUIDES else "-"
        rows.append(f"| `{name}` | {module.HELP} | {guide} |")
    return "\n".join(rows)


def _expand(match: re.Match) -> str:
    if match["command"] != "*":
        return _block(match["command"])
    return "\n\n".join(f"## {name}\n\n{_block(name)}" for name in _commands())


def on_page_markdown(markdown: str, page, config, files) -> str:
    return MARKER.sub(_expand, TABLE.sub(lambda _: _table(), markdown))
