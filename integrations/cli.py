"""``mst-clipiqa rank``: rank existing images for a prompt, best first (no generation)."""
from __future__ import annotations

import argparse
from pathlib import Path

from reward import MSTCLIPIQAReward
from reward.factory import create_model, resolve_device

__all__ = ["add_rank_command", "run_rank"]


def add_rank_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``rank`` sub-command; returns its parser."""
    parser = subparsers.add_parser(
        "rank", help="rank images (files or a folder) by MST-CLIPIQA score",
        description="Score images with MST-CLIPIQA and print them ranked, best first.",
        epilog="example:\n  mst-clipiqa rank outputs/ --prompt 'a lighthouse at dusk' --model runs/agiqa3k/model "
               "--out ranked/", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path, help="image files, or one folder of images")
    parser.add_argument("--model", required=True,
                        help="tiny, tiny-hf, paper-A, paper-B, a save_pretrained directory or a hub id")
    parser.add_argument("--variant", help="A or B, for tiny and paper models")
    parser.add_argument("--prompt", "-p", help="generation prompt (required by prompt-anchored models)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--top", type=int, default=None, help="print only the best N, N >= 1 (default: all)")
    parser.add_argument("--out", type=Path, help="write ranking.csv, ranking.json, contact_sheet.png and the "
                        "best images here")
    parser.set_defaults(func=run_rank)
    return parser


def _sources(paths: list[Path]) -> list[Path] | Path:
    if len(paths) == 1 and paths[0].is_dir():
        return paths[0]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"not image files: {missing[:3]}; pass image files or one folder")
    return paths


def run_rank(args: argparse.Namespace) -> int:
    """Handler of ``rank``: prints a ranked table; writes the ranking files with ``--out``."""
    from .best_of_n import rank_images

    if args.top is not None and args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    reward = MSTCLIPIQAReward(create_model(args.model, args.variant).to(resolve_device(args.device)).eval())
    ranking = rank_images(_sources(list(args.images)), args.prompt, reward, batch_size=args.batch_size,
                          top_k=args.top or 1)
    print(f"{'rank':>4}  {'score':>8}  image")
    for row in ranking.records()[: args.top]:
        print(f"{row['rank']:>4}  {row['score']:8.4f}  {row.get('name') or ''}")
    if args.out:
        ranking.save(args.out)
    return 0
