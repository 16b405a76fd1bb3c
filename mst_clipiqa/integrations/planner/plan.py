"""``plan``: peak memory per process and FLOPs of one step of a method on a pipeline, traced on meta tensors
with an allocation tracker and torch's FLOP formulas, and what to change when it does not fit."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from ..pipelines.families import pipeline_family
from ..pipelines.lora import DEFAULT_TARGET_MODULES, add_lora, lora_parameters
from ..pipelines.prompt_cache import PromptCache, text_encoders
from ..pipelines.quantization import quantize_denoiser
from .architectures import meta_pipeline
from .steps import STEPS, TRAINED, StepSettings
from .tracker import AllocationTracker, fused_attention, resident_bytes

__all__ = ["Plan", "plan", "paper_reward", "parse_bytes", "GiB"]

GiB = 1024**3
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_bytes(text: str) -> int:
    """``24GB`` / ``24GiB`` / ``80G`` -> bytes (GB is read as GiB, as GPUs are sold)."""
    number = text.strip().upper().removesuffix("B").removesuffix("I").removesuffix("G")
    try:
        return int(float(number) * GiB)
    except ValueError:
        raise ValueError(f"--gpu-memory {text!r}: expected a size in GB, e.g. 24GB or 80GB") from None


class _TowerReward(nn.Module):
    """The paper model's cost: its two CLIP image towers (ViT-B/32, ViT-B/16) on the image resized to 224 px;
    the heads are negligible."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        self.towers = nn.ModuleList(CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=224,
            patch_size=patch, projection_dim=512, hidden_act="quick_gelu")) for patch in (32, 16))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(images, size=(224, 224), mode="bilinear", antialias=False)
        return sum(tower(pixel_values=x).image_embeds.mean(1) for tower in self.towers)


def paper_reward() -> nn.Module:
    """The paper model's image towers with meta weights in fp32 (the trainers score outside autocast)."""
    with torch.device("meta"):
        return _TowerReward().eval().requires_grad_(False)


@dataclass
class Plan:
    """The predicted cost of one step; bytes per process. ``weights``: every frozen component and the reward
    (the text encoders only when ``text_encoders`` is ``"keep"``: the trainers and best-of-N encode each prompt
    once, then offload or free them before the first step); ``step``: what the step adds at its peak
    (activations, LoRA gradients, AdamW state, decoded images). With the denoiser sharded over
    ``shard_processes`` (FSDP2, one unit per block), ``weights`` holds 1/N of the denoiser and ``lora`` 1/N of
    the LoRA, and ``gathered`` (in ``weights``) the whole weights FSDP gathers at a time: the unit outside every
    block, and the two largest blocks (the one computing and the next, prefetched). The LoRA's gradients and
    AdamW state in ``step`` are counted whole."""

    pipeline: str
    method: str
    dtype: str
    settings: dict[str, Any]
    weights: int
    lora: int
    step: int
    flops: int
    gpu_memory: int | None = None
    advice: str | None = None
    text_encoders: str = "keep"
    quantize: str | None = None
    shard_processes: int = 1
    gathered: int = 0

    @property
    def peak(self) -> int:
        return self.weights + self.lora + self.step

    @property
    def fits(self) -> bool | None:
        return None if self.gpu_memory is None else self.peak <= self.gpu_memory

    def summary(self) -> str:
        s = self.settings
        dtype = f"{self.dtype} (denoiser {self.quantize})" if self.quantize else self.dtype
        shard = (f", denoiser sharded over {self.shard_processes} processes (FSDP2 per block, "
                 f"{self.gathered / GiB:.1f} GiB gathered at a time)" if self.shard_processes > 1 else "")
        head = (f"{self.pipeline} {self.method} {s['height']}x{s['width']} batch {s['batch_size']} "
                f"{s['num_inference_steps']} steps, {dtype}, text encoders {self.text_encoders}, checkpointing "
                f"{'on' if s['gradient_checkpointing'] else 'off'}{shard}: peak {self.peak / GiB:.1f} GiB per "
                f"process (weights {self.weights / GiB:.1f}, LoRA {self.lora / GiB:.2f}, step "
                f"{self.step / GiB:.1f}), {self.flops / 1e12:.1f} TFLOP per step")
        if self.gpu_memory is None:
            return head
        verdict = "fits" if self.fits else "does NOT fit"
        return f"{head}; {verdict} in {self.gpu_memory / GiB:.0f} GiB" + (f"; {self.advice}" if self.advice else "")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "peak": self.peak, "fits": self.fits}


def sharded_bytes(denoiser: nn.Module, processes: int) -> tuple[int, int]:
    """(bytes of ``denoiser`` resident per process, bytes gathered whole at a time) when FSDP2 shards it over
    ``processes`` with one unit per block of its ``_no_split_modules`` (accelerate's TRANSFORMER_BASED_WRAP
    default): the root unit (what no block holds) for the whole pass, and two blocks (one computing, the next
    prefetched)."""
    kinds = set(getattr(denoiser, "_no_split_modules", None) or ())
    units = [m for m in denoiser.modules() if type(m).__name__ in kinds]
    inner = {id(p) for unit in units for p in unit.parameters()}
    own = []
    for unit in units:  # a block's own weights: those of no block nested in it
        nested = {id(p) for m in unit.modules() if m is not unit and type(m).__name__ in kinds for p in m.parameters()}
        own.append(resident_bytes([p for p in unit.parameters() if id(p) not in nested]))
    root = resident_bytes([p for p in denoiser.parameters() if id(p) not in inner])
    whole = resident_bytes(denoiser)
    return -(-whole // processes), root + sum(sorted(own)[-2:])


def _trace(pipeline: str, method: str, s: StepSettings, dtype: str, reward: nn.Module | None,
           lora_rank: int, targets: tuple[str, ...], encoders: str = "keep",
           quantize: str | None = None, shard_processes: int = 1) -> Plan:
    pipe, _ = meta_pipeline(pipeline, DTYPES[dtype])
    family = pipeline_family(pipe)
    denoiser = family.denoiser
    if quantize:
        quantize_denoiser(denoiser, quantize)
    cache = None
    if encoders != "keep":  # encoded before the step, the encoders left out of the weights
        cache = PromptCache(family, "keep")
        cache.warm(["a photo"], guidance=family.uses_cfg(s.guidance_scale), **dict(s.encode_kwargs))
    if s.gradient_checkpointing and method not in ("draft", "refl", "alignprop"):
        denoiser.enable_gradient_checkpointing()  # the per-block checkpointing the other trainers get
    reward = reward if reward is not None else paper_reward()
    dropped = text_encoders(pipe).values() if cache is not None else ()
    modules = [m for m in pipe.components.values() if isinstance(m, nn.Module) and all(m is not d for d in dropped)]
    weights = resident_bytes(*modules, reward)
    gathered = 0
    if shard_processes > 1:
        resident, gathered = sharded_bytes(denoiser, shard_processes)
        weights += resident + gathered - resident_bytes(denoiser)
    params: list[torch.Tensor] = []
    optimizer = None
    if method in TRAINED:
        add_lora(denoiser, lora_rank, None, targets, seed=0)
        params = lora_parameters(denoiser)
        for p in params:
            p.data = p.data.float()
        optimizer = torch.optim.AdamW(params, lr=1e-4)
    lora = resident_bytes(params)
    with fused_attention(), AllocationTracker() as tracker:
        STEPS[method](pipe, denoiser, reward, params, optimizer, s=s, encoder=cache)
    return Plan(pipeline, method, dtype, asdict(s), weights, -(-lora // shard_processes), tracker.peak,
                tracker.flops, text_encoders=encoders, quantize=quantize, shard_processes=shard_processes,
                gathered=gathered)


def plan(pipeline: str, method: str, settings: StepSettings | None = None, *, dtype: str = "bf16",
         reward: nn.Module | None = None, lora_rank: int = 4, targets: tuple[str, ...] = DEFAULT_TARGET_MODULES,
         gpu_memory: int | None = None, text_encoders: str = "offload", quantize: str | None = None,
         shard_processes: int = 1) -> Plan:
    """Trace one ``method`` step on ``pipeline`` (a shipped name, tiny name, folder or Hub id) with meta weights
    in ``dtype``; ``reward``: a module on the meta device scoring (B, 3, H, W) images (default: the paper
    model's image towers); ``text_encoders``: the run's setting (``keep``, ``offload``, ``free``);
    ``quantize``: ``"int8"`` or ``"nf4"`` for a denoiser quantized as
    :func:`~mst_clipiqa.integrations.pipelines.quantization.quantize_denoiser` does it (int8 needs torchao);
    ``shard_processes``: the processes an FSDP2 run shards the denoiser over (see :class:`Plan`). With
    ``gpu_memory`` (bytes), a plan that does not fit names the first setting that makes it fit: releasing the
    text encoders, checkpointing, batch size 1, DRaFT-1, an NF4 denoiser, a lower resolution (each re-traced)."""
    if method not in STEPS:
        raise ValueError(f"method {method!r}: expected one of {', '.join(STEPS)}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    if text_encoders not in ("keep", "offload", "free"):
        raise ValueError(f"text_encoders {text_encoders!r}: expected keep, offload or free")
    if shard_processes < 1:
        raise ValueError(f"shard_processes must be >= 1, got {shard_processes}")

    def trace(settings: StepSettings, encoders: str = text_encoders, quantized: str | None = quantize) -> Plan:
        return _trace(pipeline, method, settings, dtype, reward, lora_rank, targets, encoders, quantized,
                      shard_processes)

    s = settings or StepSettings()
    result = trace(s)
    result.gpu_memory = gpu_memory
    if gpu_memory is not None and not result.fits:
        result.advice = _advice(trace, method, s, result.text_encoders, gpu_memory, quantize)
    return result


def _advice(trace: Any, method: str, s: StepSettings, encoders: str, gpu_memory: int,
            quantize: str | None) -> str:
    tries = []
    if encoders == "keep":
        tries.append(("--text-encoders offload", {}))
        encoders = "offload"
    if not s.gradient_checkpointing and method in TRAINED:
        tries.append(("--gradient-checkpointing", {"gradient_checkpointing": True}))
    if s.batch_size > 1:
        tries.append(("--batch-size 1 (and --gradient-accumulation-steps for the same batch)", {"batch_size": 1}))
    if method == "draft" and s.draft_k > 1:
        tries.append(("--draft-k 1", {"draft_k": 1}))
    changes: dict[str, Any] = {}
    said = []
    for text, change in tries:
        changes.update(change)
        said.append(text)
        if trace(replace(s, **changes), encoders).peak <= gpu_memory:
            return "change: " + ", ".join(said)
    if quantize != "nf4":
        said.append("--quantize nf4 (pip install bitsandbytes)")
        if trace(replace(s, **changes), encoders, "nf4").peak <= gpu_memory:
            return "change: " + ", ".join(said)
        quantize = "nf4"
    side = min(s.height, s.width)
    if side > 512:
        smaller = replace(s, **changes, height=s.height // 2, width=s.width // 2)
        if trace(smaller, encoders, quantize).peak <= gpu_memory:
            return "change: " + ", ".join(said + [f"--height {smaller.height} --width {smaller.width}"])
    return ("no single setting makes it fit: use more memory per process (a larger GPU), a smaller "
            "architecture, or shard the frozen base across GPUs")
