"""The run plumbing both trainers share (the IQA trainer in ``reward.training`` and the generator trainers in
``integrations.finetune``): what a run folder records of its settings."""

from .settings import write_yaml

__all__ = ["write_yaml"]
