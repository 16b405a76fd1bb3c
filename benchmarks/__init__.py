"""Benchmark scripts for the reward, the feature cache and fine-tuning; shared pieces in ``benchmarks.harness``."""
