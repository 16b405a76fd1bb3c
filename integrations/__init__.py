"""Adapters that connect the MST-CLIPIQA reward to diffusers pipelines."""
