"""Preference optimisation from a reward: pairs, Diffusion-DPO and a reward-hacking monitor."""

from .pairs import PAIR_RULES, PairsWritten, load_pairs, preference_pairs, select_pairs, shard_path

__all__ = ["PAIR_RULES", "PairsWritten", "load_pairs", "preference_pairs", "select_pairs", "shard_path"]
