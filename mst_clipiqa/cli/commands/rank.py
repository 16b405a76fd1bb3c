"""``mst-clipiqa rank``: image files ranked by score, best first, with a contact sheet (no generation)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..options import EPILOG_MODELS, add_model_options, model_from_args, split_list
from ..output import check_output_file, check_output_folder, emit, format_rows, print_written, written_files
from ..scoring_options import add_scoring_options, prompts_from_args, readable_images, report_skipped

HELP = "rank images (files or folders) by MST-CLIPIQA score"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "rank", help=HELP,
        description="Score images with MST-CLIPIQA and print them ranked, best first. --outputs with several "
                    "names ranks by their mean (each output's score is listed too).",
        epilog=EPILOG_MODELS + "\nexample:\n  mst-clipiqa rank outputs/ --prompt 'a lighthouse at dusk' "
                               "--model runs/agiqa3k/model --out ranked/\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_scoring_options(parser)
    add_model_options(parser)
    parser.add_argument("--top", type=int, default=None, help="print only the best N, N >= 1 (default: all)")
    parser.add_argument("--out", type=Path, help="write ranking.csv, ranking.json, contact_sheet.png and the "
                        "best images into this folder")
    parser.add_argument("--maps", type=Path, metavar="DIR",
                        help="write each image with its quality map overlaid to DIR/NAME_map.png (magma: dark low, "
                             "bright high; one block per fine-stream patch), read from the pass that scores it; "
                             "with --out, the contact sheet shows the overlays too")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.top is not None and args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    check_output_folder(args.out, what="the ranking")
    check_output_folder(args.maps, flag="--maps", what="the quality maps")
    check_output_file(args.output)
    from mst_clipiqa.integrations import rank_images
    from mst_clipiqa.reward import MSTCLIPIQAReward, collect_images

    model = model_from_args(args)
    paths = collect_images(args.images)
    prompts = prompts_from_args(args, len(paths), required=model.config.needs_prompts)
    skipped = []
    if args.skip_unreadable:
        paths, prompts, skipped = readable_images(paths, prompts)
    reward = MSTCLIPIQAReward(model, outputs=split_list(args.outputs))
    ranking = rank_images(paths, prompts, reward, batch_size=args.batch_size, top_k=min(args.top or 1, len(paths)),
                          maps=args.maps is not None)
    rows = [{"image" if k == "name" else k: v for k, v in row.items()} for row in ranking.records()[: args.top]]
    emit(format_rows(rows, list(rows[0]), args.format), args.output)
    if args.out:
        ranking.save(args.out)
    written = ([args.output] if args.output else []) + (written_files(args.out) if args.out else [])
    if args.maps is not None:
        written += write_overlays(ranking, args.maps)
    print_written(written, data_on_stdout=args.format != "table" and not args.output)
    return report_skipped("rank", skipped)


def write_overlays(ranking, folder: Path) -> list[Path]:
    """Each ranked image with its quality map overlaid, as ``folder/NAME_map.png``, best first; returns the
    files written."""
    from mst_clipiqa.integrations import overlay_map

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for candidate in ranking.candidates:
        target = folder / f"{Path(candidate.name).stem}_map.png"
        overlay_map(candidate.image, candidate.quality_map, ranking.map_range).save(target)
        written.append(target)
    return written
