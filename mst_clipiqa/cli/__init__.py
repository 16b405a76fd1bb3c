"""The ``mst-clipiqa`` command line.

The console script lives here, in the outermost layer, rather than in ``reward``: a command such as
``demo`` needs diffusers through ``integrations``, and ``reward`` must not import upward. Each command
is a module of ``mst_clipiqa.cli.commands`` with ``HELP``, ``add_parser(subparsers)`` and a ``run`` function;
add one by listing it in ``COMMANDS`` (and in ``CONFIG_COMMANDS`` for ``--config FILE.yaml``). Only the
command named on the command line builds its full parser, and heavy libraries (torch, diffusers, open_clip)
are imported where a command runs, so ``--help`` and argument errors are fast.

Every user error ends in one line on standard error and exit status 2; Ctrl-C in exit status 130. A training
command stopped by SIGTERM / SIGINT checkpoints, says how to resume in one line and exits with 143 / 130.
"""
from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
from collections.abc import Collection, Sequence

from .commands import demo, eval, finetune, optimize, pairs, plan, rank, score, serve, train
from .config_file import add_config_option, with_config
from .options import EPILOG_MODELS

COMMANDS = {"train": train, "eval": eval, "score": score, "rank": rank, "finetune": finetune, "optimize": optimize,
            "pairs": pairs, "demo": demo, "plan": plan, "serve": serve}
CONFIG_COMMANDS = ("train", "finetune", "optimize", "pairs", "plan")  # those that read --config FILE.yaml
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
TERMINATED = 143  # 128 + SIGTERM
# one name for each setting (issue 28): a flag of one of them is refused naming the flag that took its place
RENAMED_FLAGS = {"--num-steps": "--num-inference-steps", "--inference-steps": "--num-inference-steps",
                 "--checkpointing": "--gradient-checkpointing"}


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line that says where the usage is, instead of the usage itself."""

    command_parsers: dict[str, argparse.ArgumentParser]  # build_parser's full parsers, by command

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but unknown options are blamed on the command they were given to."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "command", None)
            renamed = [f"{old} is {RENAMED_FLAGS[old]} now" for old in (e.split("=")[0] for e in extras)
                       if old in RENAMED_FLAGS]
            Parser(prog=f"{self.prog} {command}" if command else self.prog).error(
                "; ".join(renamed) if renamed else f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def build_parser(commands: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; with ``commands``, only those get their options (the others only their help
    line, which is all ``mst-clipiqa --help`` shows)."""
    parser = Parser(
        prog="mst-clipiqa",
        description="MST-CLIPIQA image-quality model: train it, evaluate it, score images with it, "
                    "fine-tune diffusion models against it, optimise a generated image for it. "
                    "Run 'mst-clipiqa COMMAND --help' for each command.",
        epilog=EPILOG_MODELS, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parser.command_parsers = {}
    for name, module in COMMANDS.items():
        if commands is None or name in commands:
            parser.command_parsers[name] = module.add_parser(subparsers)
            if name in CONFIG_COMMANDS:
                add_config_option(parser.command_parsers[name])
        else:
            subparsers.add_parser(name, help=module.HELP)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    """The command named on the command line (the first word that is not an option), if it is one."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in COMMANDS else None


def _one_line(error: BaseException) -> str:
    line = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        line += " (the disk is full: free some space, or write somewhere else)"
    return line


def _preempted(error: Exception) -> bool:
    """A trainer's stop at a safe point (the module is loaded only where a trainer ran: --help stays light)."""
    module = sys.modules.get("mst_clipiqa.runtime.preemption")
    return module is not None and isinstance(error, module.Preempted)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``mst-clipiqa``; returns the exit status (2 for bad input, 130 when interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _command(argv)
    parser = build_parser([command] if command else [])
    if command in CONFIG_COMMANDS:
        argv = with_config(argv, command, parser.command_parsers[command])
    args = parser.parse_args(argv)
    previous = _terminate_as_interrupt()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as stop:
        again = " (run the same command again with --resume to continue)" if "resume" in vars(args) else ""
        what = "stopped by SIGTERM" if isinstance(stop, _Terminated) else "interrupted"
        print(f"\nmst-clipiqa {args.command}: {what}{again}", file=sys.stderr)
        return TERMINATED if isinstance(stop, _Terminated) else INTERRUPTED
    except (ValueError, OSError) as error:  # bad input, or a file that cannot be read or written
        print(f"mst-clipiqa {args.command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:
        if not _preempted(error):
            raise
        print(f"mst-clipiqa {args.command}: {_one_line(error)}", file=sys.stderr)
        return error.exit_status
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class _Terminated(KeyboardInterrupt):
    """SIGTERM outside a trainer's safe points (loading, scoring, a held-out evaluation): stop as Ctrl-C does,
    with one line and exit status 143, instead of dying without a word. Trainers catch it at a safe point
    themselves (``runtime.preemption.StopSignals``) and checkpoint first."""


def _terminate_as_interrupt():
    """Route SIGTERM to :class:`_Terminated` (main thread only, as Python allows); the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum, frame):
        raise _Terminated()

    return signal.signal(signal.SIGTERM, stop)

