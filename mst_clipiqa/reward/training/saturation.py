"""A check at the start of training: is a head's softmax saturated, or the gradient reaching the fusion negligible?

A template head scores ``sum_k k softmax(tau cos(z, t_k))``. When ``tau`` times the
gaps between an image's cosines to the level texts is large, the softmax is one-hot,
its gradient vanishes, and training ends where it started with nothing to show for
it. The check measures, on the training samples, each template head's mean softmax
entropy (as a fraction of ``log K``: 1 is uniform, 0 one-hot) and its mean largest
probability, and for every head the norm of the gradient its loss sends into the
fusion, next to the pull of weight decay on the same weights (Adam's L2 term: a loss
gradient below it only shrinks the weights). The numbers go to ``report.json``; a
saturated softmax or a negligible gradient is also a warning. The two are separate: in a
saturated softmax the few samples near a tie still send large gradients, so the norm
alone does not reveal it (measured: mean entropy 6e-4 of log K with a gradient norm of
288 against weight decay's 0.055).
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..model import MSTCLIPIQA
from ..model.heads import TemplateHead
from .features import CachedFeatures

MIN_ENTROPY = 0.05  # fraction of log K below which a softmax is called saturated
MIN_GRADIENT_RATIO = 1.0  # loss gradient / weight-decay gradient on the fusion below which it is negligible
ONE_HOT = 0.99  # a sample whose largest probability exceeds this sends (almost) no gradient back
MAX_SAMPLES = 512


def softmax_stats(head: TemplateHead, z: torch.Tensor, text_features: torch.Tensor) -> dict[str, float]:
    """Mean entropy / log K, mean largest probability, the fraction of samples whose softmax is one-hot
    (largest probability over ``ONE_HOT``) and mean logit range of a template head at ``z``."""
    logits = head.logits(z, text_features).detach().float()  # statistics only: no graph
    p = logits.softmax(dim=-1)
    entropy = -(p * p.clamp_min(1e-30).log()).sum(-1) / math.log(p.shape[-1])
    top = p.max(-1).values
    return {"entropy": float(entropy.mean()), "max_prob": float(top.mean()),
            "one_hot_fraction": float((top > ONE_HOT).float().mean()),
            "logit_range": float((logits.max(-1).values - logits.min(-1).values).mean()),
            "temperature": float(head.temperature.detach())}


def head_saturation(model: MSTCLIPIQA, inputs: dict[str, Any], targets: Mapping[str, torch.Tensor],
                    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], weight_decay: float,
                    outputs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per output: softmax statistics (template heads), the gradient its loss sends into the fusion,
    the weight-decay gradient on the fusion, and the verdicts ``saturated`` / ``negligible_gradient``.

    ``inputs`` are ``score_features`` keyword arguments for the samples whose ``targets`` are given.
    Gradients are computed with ``torch.autograd.grad`` and leave ``.grad`` untouched.
    """
    fusion = [p for p in model.fusion.parameters() if p.requires_grad]
    with torch.enable_grad():
        z = model.fusion(inputs["f_coarse"].to(model.fusion.W_h.weight.dtype),
                         inputs["f_fine"].to(model.fusion.W_h.weight.dtype))
        scores = model.score_features(**inputs)
        decay = weight_decay * _norm([p.detach() for p in fusion])
        result = {}
        for output in outputs:
            head, entry = model.heads[output], {"kind": model.config.heads[output]}
            if isinstance(head, TemplateHead):
                entry.update(softmax_stats(head, z.detach(), model.template_features))
                entry["saturated"] = entry["entropy"] < MIN_ENTROPY
            grads = torch.autograd.grad(loss(scores[output].float(), targets[output]), fusion,
                                        retain_graph=True, allow_unused=True) if fusion else []
            norm = _norm([g for g in grads if g is not None])
            entry.update(fusion_grad_norm=norm, weight_decay_grad_norm=decay,
                         negligible_gradient=bool(fusion) and norm < max(MIN_GRADIENT_RATIO * decay, 1e-12))
            result[output] = entry
    return result


def _norm(tensors: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((t.float() ** 2).sum() for t in tensors))) if tensors else 0.0


def warn_saturation(check: Mapping[str, Mapping[str, Any]]) -> None:
    """One warning per output whose softmax is saturated or whose gradient is negligible, with the numbers."""
    for output, entry in check.items():
        problems = []
        if entry.get("saturated"):
            problems.append(f"its softmax is saturated (mean entropy {entry['entropy']:.3g} of log K, mean largest "
                            f"probability {entry['max_prob']:.4f}, {entry['one_hot_fraction']:.0%} of samples "
                            f"one-hot, logits span {entry['logit_range']:.1f} at "
                            f"temperature {entry['temperature']:.1f})")
        if entry["negligible_gradient"]:
            problems.append(f"the gradient its loss sends into the fusion is negligible "
                            f"({entry['fusion_grad_norm']:.3g}, below weight decay's "
                            f"{entry['weight_decay_grad_norm']:.3g})")
        if problems:
            warnings.warn(f"output {output!r} ({entry['kind']} head) at the start of training: "
                          f"{'; and '.join(problems)}. "
                          "It will barely move from its start. Lower the template head's temperature_init, "
                          "start from init='zero_shot', or check the encoder features.", stacklevel=3)


def start_check(model: MSTCLIPIQA, features: CachedFeatures | None, targets: Mapping[str, torch.Tensor],
                loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], weight_decay: float,
                outputs: Sequence[str], warn: bool = True) -> dict[str, dict[str, Any]] | None:
    """:func:`head_saturation` on up to ``MAX_SAMPLES`` cached samples, with warnings; None without cached features."""
    if features is None:
        return None
    rows = list(range(min(len(features), MAX_SAMPLES)))
    check = head_saturation(model, features.inputs(rows), {o: targets[o][rows] for o in outputs}, loss,
                            weight_decay, outputs)
    if warn:
        warn_saturation(check)
    return check
