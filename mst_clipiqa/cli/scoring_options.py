"""What ``score`` and ``rank`` share: the images, their prompts, the output format and file."""
from __future__ import annotations

import argparse
from pathlib import Path

from .output import FORMATS


def add_scoring_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", type=Path, help="image files and/or folders of images")
    group = parser.add_argument_group("scoring")
    group.add_argument("--prompt", "-p", help="one generation prompt for every image")
    group.add_argument("--prompts", type=Path, help="text file: one prompt per line, one line per image "
                                                    "(in the order the images are listed; folders expand to "
                                                    "sorted names)")
    group.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    group.add_argument("--output", "-o", type=Path, help="write the table / CSV / JSON to this file "
                                                         "instead of standard output")
    group.add_argument("--batch-size", type=int, default=32, help="images per batch (default: 32)")


def prompts_from_args(args: argparse.Namespace, n: int, required: bool) -> list[str] | None:
    """One prompt per image from ``--prompt`` or ``--prompts FILE``; None when neither is given."""
    if args.prompt is not None and args.prompts is not None:
        raise ValueError("pass --prompt (one for all) or --prompts FILE (one per image), not both")
    if args.prompt is not None:
        return [args.prompt] * n
    if args.prompts is None:
        if required:
            raise ValueError("this model has a prompt-anchored head (variant B): pass --prompt TEXT or "
                             "--prompts FILE")
        return None
    if not args.prompts.is_file():
        raise ValueError(f"--prompts {args.prompts} does not exist; expected a text file with one prompt per line")
    lines = [line.strip() for line in args.prompts.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    if len(lines) != n:
        raise ValueError(f"{args.prompts} has {len(lines)} prompts for {n} images; expected one line per image")
    return lines
