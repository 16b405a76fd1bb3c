"""The denoiser modules that get a LoRA unless told otherwise (no torch here: configs read it)."""

__all__ = ["DEFAULT_TARGET_MODULES"]

DEFAULT_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")  # attention projections, as diffusers' scripts
