"""Settings of a Diffusion-DPO run, as data: no torch here, so ``mst-clipiqa finetune --help`` needs none."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mst_clipiqa.reward.utils.options import option

from .config import RunConfig, composed, require
from .pair_rows import CHECK_ALL_UP_TO, check_rows_option

__all__ = ["BETA_DIFFUSERS", "BETA_SD15", "DPOConfig"]

# SalesforceAIResearch/DiffusionDPO trains SD 1.5 with --beta_dpo 5000 (launchers/sd15.sh, the paper's
# setting); diffusers' examples/research_projects/diffusion_dpo defaults to 2500.
BETA_SD15 = 5000.0
BETA_DIFFUSERS = 2500.0


@composed
@dataclass
class DPOConfig:
    """Settings of a Diffusion-DPO run: ``beta``, :data:`BETA_SD15` (5000, the paper's SD 1.5 run), the
    strength of the pull back to the reference; the sampling settings of its sample grids and monitor; and
    the shared run settings as ``run`` (a :class:`RunConfig`; ``run.batch_size`` counts pairs per
    micro-batch and process). The pairs are checked before training (``pair_rows.check_pairs``: every
    row, or the images of a sample of ``check_rows`` rows); ``drop_invalid`` / ``drop_ties`` drop malformed rows /
    ties instead of refusing them."""

    beta: float = option(BETA_SD15, "Diffusion-DPO: strength of the pull to the reference (the paper's SD 1.5 "
                                    "run: 5000; diffusers' example: 2500)")
    drop_invalid: bool = option(False, "Diffusion-DPO: drop malformed pairs (a label other than 0 / 1, a missing "
                                       "value, an unreadable or repeated image) with a count, instead of refusing")
    drop_ties: bool = option(False, "Diffusion-DPO: drop ties (label_0 = 0.5) with a count, instead of refusing")
    check_rows: int | str | None = option(
        None, f"Diffusion-DPO: rows whose images are read before training: 'all', or N (a fixed random sample; "
              f"labels and captions are always all checked) (default: all up to {CHECK_ALL_UP_TO:,} rows, a sample "
              "of that many above, with a notice)", type=check_rows_option, metavar="N|all")
    num_inference_steps: int = option(20, "sampling steps per image of the sample grids and the monitor")
    guidance_scale: float = option(1.0, "classifier-free guidance scale of the loss's noise predictions and of "
                                        "the samples")
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "the shared run settings", "cli": False})

    def __post_init__(self) -> None:
        require(self.num_inference_steps >= 1, f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        self.check_rows = check_rows_option(self.check_rows)
        require(self.beta > 0 and self.beta != float("inf"), f"beta must be a finite number > 0, got {self.beta!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
