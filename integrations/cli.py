"""``mst-clipiqa rank``: rank existing images for a prompt (no generation).

Wire into a main parser with ``add_rank_command(subparsers)``; the parsed
arguments carry ``func=run_rank``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_rank_command", "run_rank"]


def add_rank_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``rank`` sub-command; returns its parser."""
    parser = subparsers.add_parser(
        "rank", help="rank images (files or a folder) by MST-CLIPIQA score",
        description="Score images with MST-CLIPIQA and print them ranked, best first.")
    parser.add_argument("images", nargs="+", type=Path, help="image files, or one folder of images")
    parser.add_argument("--prompt", "-p", help="generation prompt (required by prompt-anchored models)")
    parser.add_argument("--model", help="save_pretrained directory or hub id")
    parser.add_argument("--tiny", action="store_true", help="tiny random model: offline demo, meaningless scores")
    parser.add_argument("--variant", default="A", choices=("A", "B"), help="variant of the --tiny model")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--top", type=int, default=None, help="print only the best N (default: all)")
    parser.add_argument("--csv", type=Path, help="write the ranking as CSV")
    parser.add_argument("--json", type=Path, help="write the ranking as JSON")
    parser.add_argument("--contact-sheet", type=Path, help="write a PNG grid of the images with their scores")
    parser.set_defaults(func=run_rank)
    return parser


def _load_reward(args: argparse.Namespace):
    import torch

    from reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward

    if args.model and args.tiny:
        raise ValueError("pass either --model or --tiny, not both")
    if not args.model and not args.tiny:
        raise ValueError("pass --model DIR_OR_HUB_ID (or --tiny for an offline demo model)")
    if args.model:
        model = MSTCLIPIQA.from_pretrained(args.model)
    else:
        torch.manual_seed(0)
        model = MSTCLIPIQA(MSTCLIPIQAConfig.tiny(variant=args.variant))
    return MSTCLIPIQAReward(model.to(args.device).eval())


def _sources(paths: list[Path]) -> list[Path] | Path:
    if len(paths) == 1 and paths[0].is_dir():
        return paths[0]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"not image files: {missing[:3]}; pass image files or one folder")
    return paths


def run_rank(args: argparse.Namespace) -> int:
    """Handler of ``rank``: prints a ranked table; writes CSV / JSON / contact sheet when asked."""
    from .best_of_n import rank_images

    reward = _load_reward(args)
    ranking = rank_images(_sources(list(args.images)), args.prompt, reward, batch_size=args.batch_size)
    rows = ranking.records()
    print(f"{'rank':>4}  {'score':>8}  image")
    for row in rows[: args.top]:
        print(f"{row['rank']:>4}  {row['score']:8.4f}  {row.get('name') or ''}")
    if args.csv or args.json:
        for path in (args.csv, args.json):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
        if args.csv:
            import csv

            with open(args.csv, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
        if args.json:
            args.json.write_text(json.dumps({"prompt": args.prompt, "score_range": list(reward.score_range),
                                             "ranking": rows}, indent=2), encoding="utf-8")
    if args.contact_sheet:
        args.contact_sheet.parent.mkdir(parents=True, exist_ok=True)
        ranking.contact_sheet.save(args.contact_sheet)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m integrations.cli rank ...``) until the main CLI wires it."""
    parser = argparse.ArgumentParser(prog="mst-clipiqa")
    add_rank_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
