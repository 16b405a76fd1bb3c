"""The ``mst-clipiqa`` command line.

The console script lives here, in the outermost layer, rather than in ``reward``: a command such as
``demo`` needs diffusers through ``integrations``, and ``reward`` must not import upward. Each command
is a module of ``mst_clipiqa.commands`` with ``add_parser(subparsers)``; add one by listing it in
``COMMANDS``. Heavy libraries (diffusers) are imported only where a command runs, never to print help.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .commands import demo, eval, finetune, optimize, pairs, rank, score, train
from .options import EPILOG_MODELS

COMMANDS = {"train": train, "eval": eval, "score": score, "rank": rank, "finetune": finetune, "optimize": optimize,
            "pairs": pairs, "demo": demo}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mst-clipiqa",
        description="MST-CLIPIQA image-quality model: train it, evaluate it, score images with it, "
                    "fine-tune diffusion models against it, optimise a generated image for it. "
                    "Run 'mst-clipiqa COMMAND --help' for each command.",
        epilog=EPILOG_MODELS, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        command.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``mst-clipiqa``; returns the exit status (2 for bad input)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as error:
        print(f"mst-clipiqa {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
