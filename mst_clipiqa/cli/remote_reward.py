"""What generating commands share to score against a served reward (``mst-clipiqa serve``) instead of a model loaded
in this process, and to score each chunk of samples while the next is generated."""
from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

TOKEN_ENV = "MST_CLIPIQA_TOKEN"


def add_remote_reward_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("scoring")
    group.add_argument("--reward-url", metavar="URL",
                       help="score with the reward served at URL (mst-clipiqa serve, e.g. http://127.0.0.1:8000) "
                            "instead of loading --model here")
    group.add_argument("--reward-token", default=os.environ.get(TOKEN_ENV),
                       help=f"bearer token of the served reward (default: ${TOKEN_ENV})")
    group.add_argument("--reward-timeout", type=float, default=60.0,
                       help="seconds a served reward may take per request (default: 60)")
    group.add_argument("--reward-retries", type=int, default=3,
                       help="tries again, backing off, when the served reward is busy or unreachable (default: 3)")
    group.add_argument("--async-scoring", action="store_true",
                       help="score each chunk of samples while the next is generated (on the server with "
                            "--reward-url, else on a background thread); same results")
    group.add_argument("--chunk-size", type=int, default=4,
                       help="samples per pipeline call, the unit --async-scoring overlaps (default: 4)")


def reward_from_args(args: argparse.Namespace, load: Callable[[], Any]) -> Any:
    """The reward the options name: a ``RemoteReward`` for ``--reward-url`` (asked for its description at once, so
    that a server not there is named before a pipeline loads), else ``load()`` (``--model``)."""
    if (args.model is None) == (args.reward_url is None):
        raise ValueError("pass --model MODEL (scored in this process) or --reward-url URL (a served reward), "
                         "exactly one of them")
    if args.reward_url is None:
        return load()
    local = [flag for flag, value in (("--variant", args.variant), ("--outputs", args.outputs),
                                      ("--adapter", args.adapter)) if value]
    if local:
        raise ValueError(f"{', '.join(local)} describe a model loaded here; with --reward-url the server's model "
                         "scores: set them on 'mst-clipiqa serve'")
    from mst_clipiqa.integrations.serving import RemoteReward

    reward = RemoteReward(args.reward_url, token=args.reward_token, timeout=args.reward_timeout,
                          retries=args.reward_retries)
    reward.info()
    return reward
