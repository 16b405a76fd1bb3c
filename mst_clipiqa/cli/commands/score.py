"""``mst-clipiqa score``: every output of a model for image files and folders."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..options import EPILOG_MODELS, add_model_options, model_from_args, split_list
from ..output import check_output_file, emit, format_rows, print_written
from ..scoring_options import add_scoring_options, prompts_from_args, readable_images, report_skipped

HELP = "score image files or folders"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "score", help=HELP,
        description="Score images with every output of a model (or those in --outputs). Prompt-anchored "
                    "models (variant B) need prompts: --prompt for all images, or --prompts FILE.",
        epilog=EPILOG_MODELS + "\nexamples:\n  mst-clipiqa score --model runs/agiqa3k/model photos/\n"
                               "  mst-clipiqa score --model tiny --variant B a.png b.png --prompt 'a cat' "
                               "--format json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    add_scoring_options(parser)
    group = parser.add_argument_group("uncertainty and quality maps")
    group.add_argument("--uncertainty", action="store_true",
                       help="add OUTPUT_sigma and one OUTPUT_sigma_SOURCE column per source (head, streams, "
                            "ensemble; docs/uncertainty.md)")
    group.add_argument("--maps", type=Path, metavar="DIR",
                       help="write each image's quality map to DIR/NAME_map.png (grey: the reward's range, "
                            "black low, white high; one square per fine-stream patch)")
    add_model_options(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    check_output_file(args.output)  # before the slow part, not after it
    from mst_clipiqa.reward import MSTCLIPIQAReward, collect_images

    model = model_from_args(args)
    paths = collect_images(args.images)
    prompts = prompts_from_args(args, len(paths), required=model.config.needs_prompts)
    skipped = []
    if args.skip_unreadable:
        paths, prompts, skipped = readable_images(paths, prompts)
    outputs = split_list(args.outputs) or list(model.outputs)
    reward = MSTCLIPIQAReward(model, outputs=outputs)
    maps = None
    if args.uncertainty or args.maps is not None:  # one encoder pass gives the scores, sigma and maps
        result = reward.score(paths, prompts, args.batch_size, return_uncertainty=True,
                              return_maps=args.maps is not None)
        scores, maps = {o: result.outputs[o] for o in outputs}, result.maps
        if args.uncertainty:
            scores.update({f"{o}_sigma": result.output_sigma[o] for o in outputs})
            scores.update({f"{o}_sigma_{s}": v for o in outputs for s, v in result.output_sources[o].items()})
    else:
        scores = reward.score_outputs(paths, prompts, args.batch_size)
    rows = [{"image": str(p), **{c: float(v[i]) for c, v in scores.items()}} for i, p in enumerate(paths)]
    emit(format_rows(rows, ["image", *scores], args.format), args.output)
    written = [args.output] if args.output else []
    if maps is not None:
        written += write_maps(reward, paths, maps, args.maps)
    print_written(written, data_on_stdout=args.format != "table" and not args.output)
    return report_skipped("score", skipped)


def write_maps(reward, paths: list[Path], maps, folder: Path) -> list[Path]:
    """One grey PNG per image: its quality map (N, h, w) over the reward's range, each region a 16-pixel square;
    returns the files written."""
    import torch
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    low, high = reward.score_range
    written = []
    for path, values in zip(paths, maps):
        grey = ((values - low) / (high - low)).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
        target = folder / f"{path.stem}_map.png"
        Image.fromarray(grey, "L").resize((16 * grey.shape[1], 16 * grey.shape[0]), Image.NEAREST).save(target)
        written.append(target)
    return written
