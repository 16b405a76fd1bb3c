"""Preference pairs, Diffusion-DPO and the hacking monitor, offline on tiny pipelines."""
