"""``mst-clipiqa demo``: the whole library end to end (see ``mst_clipiqa.cli.demo``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..output import check_output_folder

HELP = "run the whole library end to end (offline by default) and write a report"
DESCRIPTION = """\
The whole library end to end, offline by default, with real weights when it can, in about three minutes
on two CPU cores:

1. data: the 48-image AGIQA-3K sample shipped in examples/data (or --dataset/--data);
2. MST-CLIPIQA heads trained on it with the demo recipe, test SRCC / PLCC against the untrained model;
3. the real sample images ranked by the trained scorer (contact sheet);
4. best-of-N with a diffusers pipeline, ranked by the trained reward;
5. a short DRaFT-K LoRA fine-tuning run, reward before / after on the same held-out prompts and seeds;
6. OUT/report.html (and report.md): one section per step, every figure captioned.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("demo", help=HELP, description=DESCRIPTION,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    parser.add_argument("--offline", action="store_true", help="never touch the network; tiny backbones "
                        "unless the real weights are cached")
    parser.add_argument("--dataset", default="agiqa3k", help="a loader name (agiqa3k, csv, synthetic, ...) "
                        "(default: agiqa3k, with the sample in examples/data)")
    parser.add_argument("--data", type=Path, help="data set path (default: the AGIQA-3K sample; for synthetic: "
                        "OUT/data)")
    parser.add_argument("--pipeline", help="diffusers text-to-image pipeline id or folder for the generation steps "
                        "(default: a tiny random SD pipeline)")
    parser.add_argument("--fast", action="store_true", help="smallest settings, about half a minute (the test "
                        "suite's)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    check_output_folder(args.out, what="the demo")
    from ..demo import run_demo

    return run_demo(args)
