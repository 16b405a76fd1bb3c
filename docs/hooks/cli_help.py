"""MkDocs hook: the command-line reference shows each command's real ``--help``, read from its parser."""
from __future__ import annotations

import os
import re

MARKER = re.compile(r"^<!-- cli-help:[ \t]*(?P<command>[a-z]*)[ \t]*-->$", re.M)


def _help(command: str) -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width; fix it for a stable page
    from mst_clipiqa.cli import build_parser

    parser = build_parser()
    if command:
        parser = parser._subparsers._group_actions[0].choices[command]
    return parser.format_help().rstrip()


def on_page_markdown(markdown: str, page, config, files) -> str:
    return MARKER.sub(lambda m: f"```text\n{_help(m['command'])}\n```", markdown)
