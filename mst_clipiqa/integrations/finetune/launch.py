"""The fine-tuner's Accelerator: it joins the processes ``torchrun`` / ``accelerate launch`` started, on CPU too."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

import torch

from mst_clipiqa.runtime.processes import launcher_precision, new_accelerator

from .config import TrainerConfig
from .tracking import check_trackers_installed, tracker_names

T = TypeVar("T", bound=TrainerConfig)

__all__ = ["finetune_accelerator", "resolved_config", "pipeline_precision"]

_HALF = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def finetune_accelerator(config: TrainerConfig) -> Any:
    """An Accelerator for ``config`` (a ``RewardFinetuneConfig``); under a launcher without CUDA it runs on the
    CPU (gloo) backend, as ``mst_clipiqa.runtime.processes.new_accelerator`` arranges."""
    names = tracker_names(config.run.log_with)
    check_trackers_installed(names)
    return new_accelerator(cpu=config.run.cpu, mixed_precision=config.run.mixed_precision,
                           gradient_accumulation_steps=config.run.gradient_accumulation_steps,
                           log_with=names or None, project_dir=config.run.output_dir)


def resolved_config(config: T, accelerator: Any) -> T:
    """``config`` with the precision ``accelerator`` runs (the launcher's, when the config left it at None), so
    that what is logged and checkpointed is what ran. A precision the config names that the Accelerator does not
    run is an error."""
    used, asked = accelerator.mixed_precision, config.run.mixed_precision
    if asked not in (None, used):
        raise ValueError(f"mixed_precision={asked!r} in the config, but the Accelerator passed in runs "
                         f"mixed_precision={used!r}; leave the config's at None (it then follows the Accelerator) "
                         "or build the Accelerator with the same precision")
    return replace(config, run=replace(config.run, mixed_precision=used))

def pipeline_precision(config: T, pipe: Any, accelerator: Any | None = None) -> T:
    """``config`` with the autocast precision of ``pipe``'s weights when nothing else names one: a pipeline
    loaded in bf16 / fp16 trains its fp32 LoRA under that autocast, with no setting to add. The config's own
    ``mixed_precision``, the launcher's (``accelerate launch --mixed_precision``) or a passed-in Accelerator's
    win; fp16 weights on the CPU are an error (torch has no fp16 kernels there for most layers)."""
    half = _HALF.get(getattr(pipe, "dtype", None))
    if half is None or accelerator is not None or launcher_precision(config.run.mixed_precision) is not None:
        return config
    if half == "fp16" and (config.run.cpu or not torch.cuda.is_available()):
        raise ValueError("the pipeline's weights are fp16 and this run is on the CPU, which has no fp16 kernels for "
                         "most layers; load it in bf16 or fp32 (torch_dtype=torch.bfloat16, --dtype bf16)")
    return replace(config, run=replace(config.run, mixed_precision=half))


def check_weight_precision(pipe: Any, accelerator: Any) -> None:
    """Half-precision frozen weights need autocast in a half precision: a run without it (an Accelerator built
    with ``mixed_precision="no"``) would stop at the first layer on mixed dtypes."""
    half = _HALF.get(getattr(pipe, "dtype", None))
    if half is not None and accelerator.mixed_precision == "no":
        raise ValueError(f"the pipeline's weights are {half} but the Accelerator runs mixed_precision='no'; build it "
                         f"with mixed_precision={half!r} (the LoRA stays fp32) or load the pipeline in fp32")
