"""``mst-clipiqa demo``: the whole library end to end (see ``mst_clipiqa.demo``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .. import demo


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("demo", help="run the whole library end to end (offline by default)",
                                   description=demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    parser.add_argument("--offline", action="store_true", help="never touch the network; tiny backbones "
                        "unless the real weights are cached")
    parser.add_argument("--dataset", default="synthetic", help="synthetic, or a loader name (agiqa3k, csv, ...)")
    parser.add_argument("--data", type=Path, help="data set path (default for synthetic: OUT/data)")
    parser.add_argument("--pipeline", help="diffusers text-to-image pipeline id or folder for steps 3-4 "
                        "(default: a tiny random SD pipeline)")
    parser.add_argument("--fast", action="store_true", help="smallest settings (used by the test suite)")
    parser.set_defaults(func=demo.run_demo)
    return parser
