"""Pipelines by name for the commands: tiny offline ones built from configs, short names of the real ones, or
any diffusers pipeline, loaded in the precision and with the options the command line names."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TinyPipeline:
    """An offline pipeline of ``integrations.pipelines.tiny`` (random weights), with the sampler settings its
    real counterpart uses (None: the command's own default) and the encoder options it needs."""

    builder: str
    steps: int | None = None
    guidance_scale: float | None = None
    encode_kwargs: dict[str, Any] = field(default_factory=dict)


TINY = {
    "tiny": TinyPipeline("tiny_sd_pipeline"),
    "tiny-turbo": TinyPipeline("tiny_sd_turbo_pipeline", steps=1, guidance_scale=0.0),
    "tiny-sdxl": TinyPipeline("tiny_sdxl_pipeline"),
    "tiny-sd3": TinyPipeline("tiny_sd3_pipeline", encode_kwargs={"max_sequence_length": 8}),  # short T5 padding
    "tiny-flux": TinyPipeline("tiny_flux_pipeline", encode_kwargs={"max_sequence_length": 16}),
    "tiny-lcm": TinyPipeline("tiny_lcm_pipeline", steps=4, guidance_scale=1.0),
    "tiny-pixart": TinyPipeline("tiny_pixart_pipeline",
                                encode_kwargs={"max_sequence_length": 16, "clean_caption": False}),
}
# The planner's shipped architectures (integrations/planner/configs) under the same names, as Hub ids.
HUB_IDS = {
    "sd1.5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "sd3.5-medium": "stabilityai/stable-diffusion-3.5-medium",
    "sd3.5-large": "stabilityai/stable-diffusion-3.5-large",
    "flux.1-dev": "black-forest-labs/FLUX.1-dev",
    "flux.1-schnell": "black-forest-labs/FLUX.1-schnell",
}
HELP = (f"{' | '.join(TINY)} (offline, random weights) | {' | '.join(HUB_IDS)} (their Hub ids) | a diffusers "
        "pipeline folder or Hub id")
DTYPES = ("bf16", "fp16", "fp32")


@dataclass(frozen=True)
class LoadOptions:
    """How a downloaded (or saved) pipeline is loaded. ``dtype`` None: bf16 on a GPU that has it, fp16 on one
    that does not, fp32 on the CPU. ``vae``: another VAE (folder or Hub id, e.g. the fp16-fixed SDXL VAE
    ``madebyollin/sdxl-vae-fp16-fix``); ``upcast_vae``: keep the VAE in fp32 under a half-precision pipeline
    (and its decode out of autocast, as its config's ``force_upcast`` asks).
    ``quantize``: the denoiser's frozen linear weights in ``int8`` (torchao) or ``nf4`` (bitsandbytes; on a GPU
    quantized by diffusers as the weights load), the LoRA on top in full precision;
    ``gradient_checkpointing``: diffusers' per-block checkpointing of the denoiser; ``compile``:
    ``torch.compile`` of the denoiser; ``tf32``: TF32 matmuls on Ampere and newer GPUs."""

    dtype: str | None = None
    vae: str | None = None
    upcast_vae: bool = False
    variant: str | None = None
    revision: str | None = None
    quantize: str | None = None
    gradient_checkpointing: bool = False
    compile: bool = False
    tf32: bool = True


def add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    """The loading flags of :class:`LoadOptions`, in their own group."""
    group = parser.add_argument_group("pipeline loading (a downloaded or saved pipeline)")
    group.add_argument("--dtype", choices=DTYPES, help="weights' precision (default: bf16 on a GPU that has it, "
                                                       "else fp16; fp32 on the CPU)")
    group.add_argument("--vae", metavar="ID_OR_PATH", help="replace the pipeline's VAE, e.g. "
                                                           "madebyollin/sdxl-vae-fp16-fix for SDXL in fp16")
    group.add_argument("--upcast-vae", action="store_true", help="keep the VAE in fp32 (SDXL's VAE overflows in "
                                                                 "fp16)")
    group.add_argument("--pipeline-variant", dest="pipeline_variant", metavar="NAME",
                       help="weights variant to download, e.g. fp16 (half the download)")
    group.add_argument("--revision", help="Hub branch, tag or commit of the pipeline")
    group.add_argument("--quantize", choices=("int8", "nf4"),
                       help="store the denoiser's frozen linear weights in int8 (torchao) or 4-bit NF4 "
                            "(bitsandbytes); the LoRA trains on top in full precision")
    group.add_argument("--compile", action="store_true", help="torch.compile the denoiser (finetune: the reward too)")
    group.add_argument("--no-tf32", dest="tf32", action="store_false",
                       help="do not allow TF32 matmuls (on by default on Ampere and newer GPUs)")


def options_from_args(args: argparse.Namespace, **extra: Any) -> LoadOptions:
    return LoadOptions(dtype=args.dtype, vae=args.vae, upcast_vae=args.upcast_vae, variant=args.pipeline_variant,
                       revision=args.revision, quantize=args.quantize, compile=args.compile, tf32=args.tf32,
                       **extra)


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """``--dtype`` on ``device``: None picks the best the device has; one it cannot run is an error."""
    import torch

    cuda = device.type == "cuda"
    if name is None:
        name = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
    if name == "fp16" and device.type == "cpu":
        raise ValueError("--dtype fp16 needs a GPU and this runs on the CPU (no fp16 kernels for most layers); "
                         "use --dtype bf16 or fp32")
    if name == "bf16" and cuda and not torch.cuda.is_bf16_supported():
        raise ValueError(f"--dtype bf16: {torch.cuda.get_device_name(device)} has no bf16; use --dtype fp16 "
                         "(with --upcast-vae or --vae for SDXL) or fp32")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


def load_pipeline(name: str, device: torch.device | str | None = None, options: LoadOptions | None = None,
                  place: bool = True) -> tuple[Any, TinyPipeline | None]:
    """The pipeline ``name`` loaded as ``options`` say for ``device`` (default: the CPU) and placed there
    (``place=False``: left on the CPU, for a trainer that places it), and its tiny settings when it is a tiny
    one (random fp32 weights unless ``options.dtype`` names another). diffusers is imported only here, never
    to print ``--help``."""
    import torch

    device, options = torch.device(device or "cpu"), options or LoadOptions()
    dtype = resolve_dtype(options.dtype, device)
    quantize_as_loaded = options.quantize == "nf4" and device.type == "cuda"  # diffusers' bnb loader: GPUs only
    if not place:
        device = torch.device("cpu")
    _allow_tf32(options.tf32, device)
    if name in TINY:
        from mst_clipiqa.integrations.pipelines import tiny as tiny_pipelines

        tiny = TINY[name]
        pipe = getattr(tiny_pipelines, tiny.builder)(device=device)
        if options.dtype is not None:
            pipe.to(dtype=dtype)
        return _finish(pipe, options), tiny
    from diffusers import DiffusionPipeline
    from diffusers.utils import deprecation_utils
    from huggingface_hub import constants

    from mst_clipiqa.reward.utils.quiet import loggers_quiet

    source = HUB_IDS.get(name, name)
    cached = _hub_cached(source)
    if cached is False and constants.HF_HUB_OFFLINE:
        raise ValueError(f"--pipeline {name}: not in the local Hugging Face cache and HF_HUB_OFFLINE=1 is set; "
                         f"download it once with network access, or use an offline one ({', '.join(TINY)})")
    dtype_key = "dtype" if hasattr(deprecation_utils, "_TORCH_DTYPE_DEPRECATION_MESSAGE") else "torch_dtype"
    kwargs = {k: v for k, v in (("variant", options.variant), ("revision", options.revision)) if v is not None}
    if options.vae:
        kwargs["vae"] = _load_vae(options.vae, dtype, dtype_key)
    if quantize_as_loaded:  # the denoiser never whole on the GPU; quantize_denoiser then readies it for training
        from mst_clipiqa.integrations.pipelines.quantization import nf4_loading

        kwargs["quantization_config"] = nf4_loading(_denoiser_name(source, options.revision), dtype)
    try:
        with loggers_quiet("diffusers", "transformers"):  # "Couldn't connect to the Hub", weight-loading notices
            pipe = DiffusionPipeline.from_pretrained(source, **{dtype_key: dtype}, **kwargs)
    except (OSError, ValueError) as error:
        if cached is False:  # diffusers' own account is several sentences long and points at a hidden stack trace
            raise ValueError(f"--pipeline {name}: not in the local Hugging Face cache, and the Hub did not give it "
                             f"({type(error).__name__}: no network, or no such repository); download it once with "
                             f"network access, or use an offline one ({', '.join(TINY)})") from None
        raise ValueError(f"--pipeline {name}: cannot load it ({error}); expected {HELP}") from None
    return _finish(pipe.to(device), options), None


def _denoiser_name(source: str, revision: str | None) -> str:
    """The pipeline's denoiser component, read from its ``model_index.json`` before any weight loads."""
    from diffusers import DiffusionPipeline

    try:
        components = DiffusionPipeline.load_config(source, revision=revision)
    except (OSError, ValueError) as error:
        raise ValueError(f"--pipeline {source}: cannot load it ({error}); expected {HELP}") from None
    return "transformer" if "transformer" in components else "unet"


def _hub_cached(name: str) -> bool | None:
    """Whether the Hub id ``name`` is in the local cache; None for a folder or a name that is no Hub id (diffusers
    names what is wrong with it)."""
    from pathlib import Path

    from huggingface_hub import try_to_load_from_cache

    if Path(name).exists():
        return None
    try:
        return isinstance(try_to_load_from_cache(name, "model_index.json"), str)
    except ValueError:
        return None


def _load_vae(source: str, dtype: torch.dtype, dtype_key: str) -> Any:
    from diffusers import AutoencoderKL

    for subfolder in (None, "vae"):  # a VAE repo, or a pipeline's VAE
        try:
            return AutoencoderKL.from_pretrained(source, subfolder=subfolder, **{dtype_key: dtype})
        except (OSError, ValueError):
            continue
    raise ValueError(f"--vae {source}: no AutoencoderKL there (nor in its vae/ folder); expected a VAE folder or "
                     "Hub id such as madebyollin/sdxl-vae-fp16-fix")


def _finish(pipe: Any, options: LoadOptions) -> Any:
    import torch

    from mst_clipiqa.integrations.pipelines.families import denoiser_family

    if options.upcast_vae:  # the config flag the decode reads: fp32 under the trainers' autocast too
        pipe.vae.to(dtype=torch.float32)
        pipe.vae.register_to_config(force_upcast=True)
    denoiser = denoiser_family(pipe).denoiser
    if options.quantize:
        from mst_clipiqa.integrations.pipelines.quantization import quantize_denoiser

        quantize_denoiser(denoiser, options.quantize)
    if options.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    if options.compile:
        denoiser.compile()
    return pipe


def _allow_tf32(allow: bool, device: torch.device) -> None:
    import torch

    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:  # Ampere and newer
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
