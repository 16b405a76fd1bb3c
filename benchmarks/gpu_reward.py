"""The reward rows of ``bench_gpu.py``: 224 px rates against the matmul rate (eager and compiled), the reward
over its bare encoders, and high-resolution inputs now and with the preprocessing the banded resize replaced."""
from __future__ import annotations

import contextlib
import copy
import importlib
import time
from collections.abc import Callable
from unittest import mock

import torch
import torch.nn.functional as F

from benchmarks.gpu_plan import GpuPlan
from benchmarks.harness.flops import count_flops
from benchmarks.harness.timing import MatmulStep, med, time_interleaved
from benchmarks.reward_workload import build_model, encoders_step, reward_step
from mst_clipiqa.reward import MSTCLIPIQA, MSTCLIPIQAConfig, MSTCLIPIQAReward, preprocess
from mst_clipiqa.reward.backbones import CLIPBackbone
from mst_clipiqa.reward.backbones.preprocess import ImageSpec, center_crop, normalize

_MODEL_MODULE = importlib.import_module("reward.model.mstclipiqa")  # where encode_images looks up `preprocess`


def legacy_resize_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The resize before the banded one, kept only to measure against: ``F.interpolate`` of the whole
    image to the short side, then the centre crop."""
    h, w = images.shape[-2:]
    short, long = min(h, w), max(h, w)
    if short != size:
        new_long = int(size * long / short)
        images = F.interpolate(images, size=(size, new_long) if h <= w else (new_long, size), mode="bicubic",
                               antialias=True, align_corners=False)
    return center_crop(images, size)


def legacy_preprocess(images: torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    return normalize(legacy_resize_crop(images, spec.size), spec)


def with_legacy_preprocess(step: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``step`` run with the model's preprocessing swapped for the legacy one."""
    def run() -> torch.Tensor:
        with mock.patch.object(_MODEL_MODULE, "preprocess", legacy_preprocess):
            return step()

    return run


def with_autocast_recasts(step: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``step`` run as before the weight-cast cache: autocast re-casts every frozen weight on every call."""
    def run() -> torch.Tensor:
        with mock.patch.object(CLIPBackbone, "image_weights_in", lambda self, dtype: contextlib.nullcontext()):
            return step()

    return run


def build_reward_model(plan: GpuPlan) -> MSTCLIPIQA:
    """The paper architecture with random weights, or the tiny model for --smoke; seed 0."""
    if plan.paper:
        return build_model(plan.device)
    torch.manual_seed(0)
    return MSTCLIPIQA(MSTCLIPIQAConfig.tiny()).to(plan.device).eval()


def compile_options(plan: GpuPlan, mode: str) -> dict:
    return {"mode": mode} if plan.compile_backend == "inductor" else {"backend": plan.compile_backend}


def no_grad_step(reward: MSTCLIPIQAReward, images: torch.Tensor) -> Callable[[], torch.Tensor]:
    def step() -> torch.Tensor:
        with torch.no_grad():
            return reward(images)

    return step


def encoder_inputs(model: MSTCLIPIQA, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two streams' preprocessed pixels, detached leaves (one tensor when the streams share a spec)."""
    coarse = preprocess(images.detach(), model.coarse.image_spec).clone().requires_grad_(True)
    same = model.fine.image_spec == model.coarse.image_spec
    return coarse, coarse if same else preprocess(images.detach(), model.fine.image_spec).clone().requires_grad_(True)


def _compiled_steps(plan: GpuPlan, model: MSTCLIPIQA, images: dict[int, torch.Tensor],
                    eager: MSTCLIPIQAReward) -> tuple[dict[str, Callable], dict]:
    """Per compile mode, a compiled copy of the reward; its first calls (compilation) timed, and its
    scores and pixel gradients compared with the eager reward's."""
    steps, info = {}, {}
    for mode in plan.compile_modes:
        compiled = MSTCLIPIQAReward(copy.deepcopy(model), dtype=plan.dtype, compile=compile_options(plan, mode))
        batches = (plan.batch, plan.small_batch) if mode == "default" else (plan.small_batch,)
        for batch in batches:
            steps[f"{mode} fwd+bwd b{batch}"] = reward_step(compiled, images[batch])
        if mode == "default":
            steps[f"{mode} no-grad b{plan.batch}"] = no_grad_step(compiled, images[plan.batch].detach())
        started = time.perf_counter()
        for name in [s for s in steps if s.startswith(mode)]:
            steps[name]()
        info[f"{mode} compile_s"] = time.perf_counter() - started
        info[f"{mode} max_score_diff"], info[f"{mode} max_grad_rel_diff"] = _difference(
            compiled, eager, images[plan.small_batch])
    return steps, info


def _difference(a: MSTCLIPIQAReward, b: MSTCLIPIQAReward, images: torch.Tensor) -> tuple[float, float]:
    out = []
    for reward in (a, b):
        x = images.detach().clone().requires_grad_(True)
        scores = reward(x)
        scores.sum().backward()
        out.append((scores.detach().float().clone(), x.grad.float().clone()))
    (sa, ga), (sb, gb) = out
    return float((sa - sb).abs().max()), float((ga - gb).abs().max() / gb.abs().max().clamp_min(1e-30))


def measure_reward(plan: GpuPlan, model: MSTCLIPIQA, matmul: MatmulStep) -> dict:
    """Rows 1-4: fwd+bwd at two batch sizes, the bare encoders, no-grad scoring; FLOPs per image and the
    matmul timed interleaved with them."""
    size = model.fit_size
    torch.manual_seed(0)
    images = {b: torch.rand(b, 3, size, size, device=plan.device, requires_grad=True)
              for b in (plan.batch, plan.small_batch)}
    eager = MSTCLIPIQAReward(model, dtype=plan.dtype)
    big, small = plan.batch, plan.small_batch
    steps = {f"eager fwd+bwd b{big}": reward_step(eager, images[big]),
             f"eager fwd+bwd b{small}": reward_step(eager, images[small]),
             f"encoders fwd+bwd b{big}": encoders_step(model, *encoder_inputs(model, images[big]), dtype=plan.dtype),
             f"eager no-grad b{big}": no_grad_step(eager, images[big].detach()),
             f"recast fwd+bwd b{small}": with_autocast_recasts(reward_step(eager, images[small])),
             f"recast no-grad b{big}": with_autocast_recasts(no_grad_step(eager, images[big].detach()))}
    flops = {"fwd+bwd": count_flops(steps[f"eager fwd+bwd b{big}"]) / big,
             "no-grad": count_flops(steps[f"eager no-grad b{big}"]) / big}
    compiled, info = _compiled_steps(plan, model, images, eager)
    times = time_interleaved({**steps, **compiled, "matmul": matmul}, plan.device, plan.warmup, plan.repeats)
    rate = matmul.flops / med(times["matmul"])
    seconds = {name: med(t) for name, t in times.items() if name != "matmul"}
    rows = {}
    for name, t in seconds.items():
        batch = int(name.rsplit("b", 1)[1])
        kind = "no-grad" if "no-grad" in name else "fwd+bwd"
        rows[name] = {"s": t, "images_per_s": batch / t, "fraction": flops[kind] * batch / t / rate}
    return {"size": size, "matmul_rate": rate, "flops_per_image": flops, "rows": rows, "compile": info,
            "reward_over_encoders": seconds[f"eager fwd+bwd b{big}"] / seconds[f"encoders fwd+bwd b{big}"]}


def measure_highres(plan: GpuPlan, model: MSTCLIPIQA) -> dict:
    """Row 5: the reward fwd+bwd at ``hr_size`` against its fit size, now and with the legacy preprocessing;
    the preprocessing alone too; and how far the two resizes' scores and gradients differ."""
    reward = MSTCLIPIQAReward(model, dtype=plan.dtype)
    size, spec = model.fit_size, model.coarse.image_spec
    torch.manual_seed(1)
    small = torch.rand(plan.hr_batch, 3, size, size, device=plan.device, requires_grad=True)
    large = torch.rand(plan.hr_batch, 3, plan.hr_size, plan.hr_size, device=plan.device, requires_grad=True)

    def resize_step(fn: Callable) -> Callable[[], torch.Tensor]:
        def step() -> torch.Tensor:
            large.grad = None
            fn(large, spec).sum().backward(inputs=[large])
            return large.grad

        return step

    fns = {"fit size": reward_step(reward, small), "large now": reward_step(reward, large),
           "large before": with_legacy_preprocess(reward_step(reward, large)),
           "resize now": resize_step(preprocess), "resize before": resize_step(legacy_preprocess)}
    rounds = time_interleaved(fns, plan.device, plan.warmup, plan.highres_repeats)
    times = {name: med(t) for name, t in rounds.items()}
    grad_now, grad_before = fns["resize now"]().clone(), fns["resize before"]().clone()
    fp32 = MSTCLIPIQAReward(model)
    with torch.no_grad():
        pixels = preprocess(large, spec) - legacy_preprocess(large, spec)
        scores = fp32(large) - with_legacy_preprocess(lambda: fp32(large))()
    return {"size": size, "seconds": times, "ratio_now": times["fit size"] / times["large now"],
            "ratio_before": times["fit size"] / times["large before"],
            "ratio_now_paired": med([f / n for f, n in zip(rounds["fit size"], rounds["large now"])]),
            "ratio_before_paired": med([f / b for f, b in zip(rounds["fit size"], rounds["large before"])]),
            "max_pixel_diff": float(pixels.abs().max()), "max_score_diff": float(scores.abs().max()),
            "max_grad_rel_diff": float((grad_now - grad_before).abs().max() / grad_before.abs().max())}
