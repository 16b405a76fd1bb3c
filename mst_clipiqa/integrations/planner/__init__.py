"""Memory and cost of a fine-tuning step before the run: the real architectures' configs (no weights), built
on the meta device, one step of each method traced with torch's FLOP counter and an allocation tracker."""

from .architectures import ARCHITECTURES, architecture, meta_pipeline
from .plan import Plan, paper_reward, parse_bytes, plan
from .steps import STEPS, StepSettings
from .tracker import AllocationTracker, resident_bytes

__all__ = ["ARCHITECTURES", "AllocationTracker", "Plan", "STEPS", "StepSettings", "architecture", "meta_pipeline",
           "paper_reward", "parse_bytes", "plan", "resident_bytes"]
