"""Run ``mst-clipiqa finetune`` several times in a row as one process of a launch, each run as a plan says, and
send SIGTERM just before denoiser call 2 of the ``entry``-th run of a ``unit`` of a run ("step":
``PolicyTrainer.train_step``, "grid": ``after_step``), on the process of rank ``rank`` only.

    python unit_stop_worker.py PLAN.json RECORD_DIR

``PLAN.json``: a list of ``{"cli": [...], "unit": "step" | "grid", "entry": N, "rank": R}`` (entry 0: no signal).
Each process writes ``RECORD_DIR/rank<r>.json``, per run: its exit status, how many denoiser calls it made in that
unit (the signalled call included), and the wall-clock times of the signal (signalled process) and of the run's
end. Used by the tests under ``torchrun``; each process writes its own file, nothing is parsed out of interleaved
output, and the processes start once for every run of the plan."""
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from mst_clipiqa.cli import main  # noqa: E402
from mst_clipiqa.integrations.finetune import policy_gradient, trainer_parts  # noqa: E402
from mst_clipiqa.integrations.pipelines import stochastic  # noqa: E402


def instrument(seen: dict) -> None:
    rank = int(os.environ.get("RANK", "0"))

    def within(name, method):
        def wrapped(self, *a, **kw):
            outer, seen["unit"] = seen["unit"], name
            seen["entries"][name] = seen["entries"].get(name, 0) + 1
            try:
                return method(self, *a, **kw)
            finally:
                seen["unit"] = outer
        return wrapped

    prediction = stochastic.guided_prediction

    def counted(*a, **kw):
        plan = seen["plan"]
        if seen["unit"] == plan["unit"] and seen["entries"][plan["unit"]] == plan["entry"]:
            seen["calls"] += 1
            if seen["calls"] == 2 and rank == plan["rank"]:
                seen["sent"] = time.time()
                os.kill(os.getpid(), signal.SIGTERM)
        return prediction(*a, **kw)

    policy_gradient.PolicyTrainer.train_step = within("step", policy_gradient.PolicyTrainer.train_step)
    trainer_parts.TrainerParts.after_step = within("grid", trainer_parts.TrainerParts.after_step)
    stochastic.guided_prediction = counted


if __name__ == "__main__":
    plans, records = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
    seen: dict = {}
    instrument(seen)
    done = []
    for plan in plans:
        seen.update(plan=plan, unit=None, entries={}, calls=0, sent=None)
        status = main(plan["cli"])
        done.append({"status": status, "calls": seen["calls"], "sent": seen["sent"], "ended": time.time()})
    records.mkdir(parents=True, exist_ok=True)
    (records / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(done))
