"""What ``score`` and ``rank`` share: the images, their prompts, the output format and file."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .output import FORMATS

SKIPPED = 3  # exit status: done, but some images could not be read (--skip-unreadable)


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
    group.add_argument("--skip-unreadable", action="store_true",
                       help=f"leave out images that cannot be read instead of stopping at the first: they are named "
                            f"at the end and the exit status is {SKIPPED}")


def readable_images(paths: list[Path], prompts: list[str] | None) -> tuple[list[Path], list[str] | None, list[str]]:
    """The images that open and decode, their prompts, and one line per image that does not."""
    from PIL import Image

    keep, skipped = [], []
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                image.load()
            keep.append(i)
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            skipped.append(f"{path}: {' '.join(str(error).split()) or type(error).__name__}")
    if not keep:
        raise ValueError(f"none of the {len(paths)} images can be read (first: {skipped[0]})")
    return [paths[i] for i in keep], prompts and [prompts[i] for i in keep], skipped


def report_skipped(command: str, skipped: list[str]) -> int:
    """Name the images left out, on standard error; the exit status (0, or SKIPPED when some were)."""
    if not skipped:
        return 0
    print(f"mst-clipiqa {command}: skipped {len(skipped)} unreadable image(s):\n  " + "\n  ".join(skipped),
          file=sys.stderr)
    return SKIPPED


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
