"""Run ``mst-clipiqa finetune`` (the arguments after ``--``) as one process of a launch, recording what it did.

    python finetune_worker.py --record DIR [--kill-in-step N] [--kill-publishing N]
                              [--signal-in-step N | --signal-after-loss N] [--signal TERM|INT]
                              [--signal-rank R] -- finetune ...

Per process, ``DIR/rank<r>.json`` lists every optimizer step: the prompts and seeds
it drew, its per-image rewards and a digest of the LoRA weights after the step.
``--kill-in-step N`` SIGKILLs the process while step N computes its loss;
``--kill-publishing N`` SIGKILLs it after checkpoint N is written but before it is
published. ``--signal-in-step N`` sends SIGTERM (or SIGINT) to the process of rank ``--signal-rank`` (default:
every process) as step N starts computing its loss (before its sampling), as Slurm or Ctrl-C would;
``--signal-after-loss N`` sends it once step N's loss is computed (its sampling done). Used by the tests under
``torchrun`` and as a subprocess.
"""
import argparse
import hashlib
import json
import os
import signal
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

from mst_clipiqa.cli import main  # noqa: E402
from mst_clipiqa.integrations import RewardFinetuner  # noqa: E402
from mst_clipiqa.integrations.pipelines.lora import named_lora_parameters  # noqa: E402
from mst_clipiqa.runtime import checkpoints  # noqa: E402


def lora_digest(finetuner: RewardFinetuner) -> str:
    digest = hashlib.sha256()
    for name, param in sorted(named_lora_parameters(finetuner.unwrapped).items()):
        digest.update(name.encode())
        digest.update(param.detach().cpu().numpy().tobytes())
    return digest.hexdigest()


def instrument(args: argparse.Namespace, steps: list[dict]) -> None:
    compute_loss, train_step = RewardFinetuner.compute_loss, RewardFinetuner.train_step
    fsync = checkpoints._fsync_folder
    sent: list[str] = []

    def recording_loss(self, prompts, seeds):
        if self.global_step + 1 == args.kill_in_step:
            os.kill(os.getpid(), signal.SIGKILL)
        rank = int(os.environ.get("RANK", "0"))
        def send(step: int) -> None:
            if self.global_step + 1 == step and args.signal_rank in (-1, rank) and not sent:
                sent.append(args.signal)
                os.kill(os.getpid(), getattr(signal, f"SIG{args.signal}"))

        send(args.signal_in_step)
        loss, stats = compute_loss(self, prompts, seeds)
        send(args.signal_after_loss)
        steps.append({"prompts": list(prompts), "seeds": list(seeds), "rewards": stats["reward"].tolist()})
        return loss, stats

    def recording_step(self):
        record = train_step(self)
        steps[-1].update(step=self.global_step, lora=lora_digest(self))
        return record

    def killing_fsync(path: Path) -> None:
        if path.name == f"step_{args.kill_publishing:08d}.tmp":
            os.kill(os.getpid(), signal.SIGKILL)
        fsync(path)

    RewardFinetuner.compute_loss, RewardFinetuner.train_step = recording_loss, recording_step
    checkpoints._fsync_folder = killing_fsync


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--kill-in-step", type=int, default=-1)
    parser.add_argument("--kill-publishing", type=int, default=-1)
    parser.add_argument("--signal-in-step", type=int, default=-1)
    parser.add_argument("--signal-after-loss", type=int, default=-1)
    parser.add_argument("--signal", choices=("TERM", "INT"), default="TERM")
    parser.add_argument("--signal-rank", type=int, default=-1)
    parser.add_argument("cli", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    steps: list[dict] = []
    instrument(args, steps)
    status = main(args.cli[1:] if args.cli[:1] == ["--"] else args.cli)
    args.record.mkdir(parents=True, exist_ok=True)
    (args.record / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(steps))
    sys.exit(status)
