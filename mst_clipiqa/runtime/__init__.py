"""The run plumbing both trainers share (the IQA trainer in ``reward.training`` and the generator trainers in
``integrations.finetune``): processes and the Accelerator, the run folder and its lock, checkpoints and what a
resume checks, generator and optimizer state, the EMA, stop signals. Import from the submodules."""
