"""How sure a score is: three sources of spread read from one encoder pass (with the quality maps, when asked,
from the same pass), and the result they make."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ..model import MSTCLIPIQA

SOURCES = ("head", "streams", "ensemble")
_MARK = "\x00"  # joins output and source in the flat dict the batched scoring loop concatenates
MAPS = _MARK + "maps"  # the combined quality maps' entry in that dict
EMBEDDINGS = _MARK + "embeddings"  # the coarse stream's image embeddings' entry


@dataclass
class ScoresWithUncertainty:
    """Scores and how sure each is, per image.

    ``scores`` (B,) is what the reward returns; ``sigma`` (B,) the square root of the sum of the sources'
    variances (``sources``: each source's sigma alone, (B,)); ``outputs`` / ``output_sigma`` hold the same
    per named output of the model, and ``output_sources`` each output's sigma per source. Outputs are
    combined as the reward combines them (weights ``w_o``), treated as independent:
    ``sigma^2 = sum_o w_o^2 sigma_o^2``. Differentiable where the scores are. ``maps`` (B, h, w): the quality
    maps, read from the same encoder pass, when asked for (``score(..., return_maps=True)``), else None.
    ``embeddings`` (B, D): the coarse stream's projected image embeddings from that pass, from the
    differentiable call (``reward(images, prompts, return_uncertainty=True)``; None from ``score``).
    """

    scores: torch.Tensor
    sigma: torch.Tensor
    sources: dict[str, torch.Tensor]
    outputs: dict[str, torch.Tensor]
    output_sigma: dict[str, torch.Tensor]
    output_sources: dict[str, dict[str, torch.Tensor]]
    maps: torch.Tensor | None = None
    embeddings: torch.Tensor | None = None


def uncertainty_parts(model: MSTCLIPIQA, f_coarse: torch.Tensor, f_fine: torch.Tensor,
                      text: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """Each output's score and the variance each source gives it, (B,) each, in the model's units:

    - ``head``: the level distribution's ``sum_k p_k (k - score)^2`` (template heads; an ensemble's mean of it);
    - ``streams``: ``((s_coarse - s_fine) / 2)^2``, the scores with the fusion gate forced to 1 and to 0;
    - ``ensemble``: the members' variance (population form), models with ``config.ensemble > 1``.
    """
    scores, spreads = model.member_scores(f_coarse, f_fine, text=text, spread=True)
    coarse = model.member_scores(f_coarse, f_fine, text=text, gate=1.0)[0]
    fine = model.member_scores(f_coarse, f_fine, text=text, gate=0.0)[0]
    parts = {}
    for name, members in scores.items():
        parts[name] = members.mean(0)
        if name in spreads:
            parts[name + _MARK + "head"] = spreads[name].mean(0)
        parts[name + _MARK + "streams"] = ((coarse[name].mean(0) - fine[name].mean(0)) / 2) ** 2
        if len(members) > 1:
            parts[name + _MARK + "ensemble"] = members.var(0, unbiased=False)
    return parts


def assemble(parts: Mapping[str, torch.Tensor], weights: Mapping[str, float],
             to_units: Callable[[str, torch.Tensor], torch.Tensor]) -> ScoresWithUncertainty:
    """The result from ``uncertainty_parts`` (possibly concatenated over batches); ``to_units(output, score)``
    is the affine map the reward applies to that output (identity, or onto [0, 1] with ``normalize``). Every
    output of the model is in ``outputs``; those in ``weights`` make ``scores`` and ``sigma``."""
    names = [name for name in parts if _MARK not in name]
    outputs = {name: to_units(name, parts[name]) for name in names}
    factor = {name: float(to_units(name, torch.tensor(1.0)) - to_units(name, torch.tensor(0.0))) for name in names}
    variances = {name: {source: parts[name + _MARK + source] * factor[name] ** 2
                        for source in SOURCES if name + _MARK + source in parts} for name in names}
    combined = {source: sum(w ** 2 * variances[n][source] for n, w in weights.items() if source in variances[n])
                for source in SOURCES if any(source in variances[n] for n in weights)}
    return ScoresWithUncertainty(
        scores=sum(w * outputs[n] for n, w in weights.items()),
        sigma=safe_sqrt(sum(combined.values())),
        sources={source: safe_sqrt(v) for source, v in combined.items()},
        outputs=outputs, output_sigma={n: safe_sqrt(sum(v.values())) for n, v in variances.items()},
        output_sources={n: {source: safe_sqrt(var) for source, var in v.items()} for n, v in variances.items()},
        maps=parts.get(MAPS), embeddings=parts.get(EMBEDDINGS))


def safe_sqrt(variance: torch.Tensor) -> torch.Tensor:
    """sqrt with a zero (not NaN) gradient where the variance is exactly 0 (identical ensemble members)."""
    positive = variance > 0
    return torch.where(positive, variance.clamp_min(torch.finfo(variance.dtype).tiny).sqrt(),
                       torch.zeros_like(variance))
