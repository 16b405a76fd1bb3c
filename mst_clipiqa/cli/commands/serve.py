"""``mst-clipiqa serve``: the reward as a service on Ray Serve (the HTTP protocol of docs/serving.md)."""
from __future__ import annotations

import argparse
import os
import time

from ..options import EPILOG_MODELS, resolve_device, split_list
from ..remote_reward import TOKEN_ENV

HELP = "serve the reward over HTTP and to Ray callers (Ray Serve)"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve", help=HELP,
        description="Serve a reward (a model name, a trained folder or a Hub id, with adapters and outputs) on Ray "
                    "Serve: POST /v1/score with images and prompts, GET /v1/info for its outputs and limits "
                    "(docs/serving.md). Needs pip install 'mst-clipiqa[serve]'. Listens on 127.0.0.1 unless "
                    "--host says otherwise, and then only with a bearer token.",
        epilog=EPILOG_MODELS + "\nexamples:\n  mst-clipiqa serve --model runs/agiqa3k/model --port 8000\n"
                               "  mst-clipiqa serve --model paper-A --replicas 4 --num-gpus 0.25\n"
                               "  MST_CLIPIQA_TOKEN=... mst-clipiqa serve --model paper-A --host 0.0.0.0 "
                               "--address auto\n",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    model = parser.add_argument_group("model")
    model.add_argument("--model", required=True, help="tiny | tiny-hf | paper-A | paper-B | DIR | HUB_ID")
    model.add_argument("--variant", help="head kind for built-in models: A (template) or B (prompt)")
    model.add_argument("--outputs", help="comma-separated outputs the score combines, e.g. quality,correspondence")
    model.add_argument("--adapter", action="append", default=[], metavar="DIR",
                       help="load a LoRA adapter (repeatable; the last one is active)")
    where = parser.add_argument_group("where")
    where.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                                                           "only; any other needs --token)")
    where.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    where.add_argument("--address", help="join this Ray cluster ('auto' or HOST:PORT; default: start a local Ray)")
    where.add_argument("--token", default=os.environ.get(TOKEN_ENV),
                       help=f"bearer token every request must carry (default: ${TOKEN_ENV})")
    where.add_argument("--file-root", metavar="DIR",
                       help="requests may name image files under DIR by path instead of sending them (never a file "
                            "outside it, links included; default: none)")
    scale = parser.add_argument_group("scale")
    scale.add_argument("--replicas", type=int, default=1, help="copies of the reward (default: 1)")
    scale.add_argument("--num-gpus", type=float, default=None,
                       help="GPUs per replica, fractions share one (0.25: four on a GPU); default: 1 when a GPU "
                            "is present, else 0")
    scale.add_argument("--num-cpus", type=float, default=1.0, help="CPUs per replica (default: 1)")
    scale.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    scale.add_argument("--max-batch-requests", type=int, default=16,
                       help="requests batched together (default: 16)")
    scale.add_argument("--batch-wait-ms", type=float, default=5.0,
                       help="how long a batch waits for more requests (default: 5)")
    scale.add_argument("--max-queued", type=int, default=64,
                       help="requests waiting per replica before 503 (default: 64)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-body-mb", type=float, default=256.0, help="request body size (default: 256)")
    limits.add_argument("--max-images", type=int, default=256, help="images per request (default: 256)")
    limits.add_argument("--max-pixels", type=int, default=4096 * 4096,
                        help="pixels per image, checked before decoding (default: 4096*4096)")
    limits.add_argument("--request-timeout", type=float, default=120.0,
                        help="seconds a request may wait and be scored before it gets 504 (default: 120)")
    parser.set_defaults(func=run)
    return parser


def options_from_args(args: argparse.Namespace):
    from mst_clipiqa.integrations.serving import Limits
    from mst_clipiqa.integrations.serving.options import ServeOptions

    num_gpus = args.num_gpus
    if num_gpus is None:
        num_gpus = 1.0 if resolve_device("auto").type == "cuda" else 0.0
    limits = Limits(max_body_bytes=int(args.max_body_mb * 2**20), max_images=args.max_images,
                    max_pixels=args.max_pixels, request_timeout_s=args.request_timeout)
    return ServeOptions(host=args.host, port=args.port, address=args.address, token=args.token,
                        replicas=args.replicas, num_gpus=num_gpus, num_cpus=args.num_cpus, batch_size=args.batch_size,
                        max_batch_requests=args.max_batch_requests, batch_wait_s=args.batch_wait_ms / 1000,
                        max_queued_requests=args.max_queued, limits=limits, file_root=args.file_root)


def run(args: argparse.Namespace) -> int:
    options = options_from_args(args)  # bad flags are refused before Ray starts
    try:
        from mst_clipiqa.integrations.serving import ray_app
    except ImportError as error:
        raise ValueError(f"serving needs Ray Serve ({error}): pip install 'mst-clipiqa[serve]'") from None
    load = {"variant": args.variant, "adapters": args.adapter}
    if args.outputs:
        load["outputs"] = split_list(args.outputs)
    ray_app.serve_reward(args.model, options, **load)
    print(f"mst-clipiqa serve: {args.model} on http://{options.host}:{options.port} (POST /v1/score, GET /v1/info); "
          "Ctrl-C stops", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        ray_app.shutdown()
