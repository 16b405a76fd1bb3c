"""The one EMA of both trainers: torch's update of the trainable tensors, diffusers' warm-up for the fine-tuners,
and the fine-tuners' checkpoint part (as diffusers' EMAModel wrote it too)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from mst_clipiqa.integrations import LoraEMA
from mst_clipiqa.runtime.checkpoints import DamagedCheckpoint
from mst_clipiqa.runtime.ema import EMA


def test_the_average_follows_the_weights_and_leaves_them_alone():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    model[1].requires_grad_(False)
    ema = EMA({n: p for n, p in model.named_parameters() if p.requires_grad}, 0.9)
    assert set(ema.state()[0]) == {"0.weight", "0.bias"}  # frozen weights never change: not averaged
    start = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    ema.step()
    assert torch.allclose(ema.state()[0]["0.weight"], start + 0.1)
    with ema.applied():
        assert torch.allclose(model[0].weight, start + 0.1)
    assert torch.equal(model[0].weight, start + 1.0)
    with pytest.raises(ValueError, match="ema decay must be in"):
        EMA(dict(model.named_parameters()), 1.0)


def test_the_warm_up_follows_diffusers_ema_model_and_resumes_from_its_state():
    from diffusers.training_utils import EMAModel

    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 3)), nn.Parameter(torch.randn(3))]
    ours, theirs = LoraEMA(params, 0.9), EMAModel(params, decay=0.9)
    for _ in range(6):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn_like(p))
        ours.step()
        theirs.step(params)
        for mine, reference in zip(ours.average.values(), theirs.shadow_params):
            torch.testing.assert_close(mine, reference, rtol=1e-6, atol=1e-7)
    settings = theirs.state_dict()  # a checkpoint written while LoraEMA was diffusers' EMAModel
    tensors = {f"ema.{i}": t for i, t in enumerate(settings.pop("shadow_params"))}
    resumed = LoraEMA(params, 0.9)
    resumed.load_state(tensors, settings)
    assert resumed.updates == 6 and resumed.state()[1] == {"optimization_step": 6}
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn_like(p))
    resumed.step()  # with the 7th update's decay, min(0.9, 7 / 16), as EMAModel's
    theirs.step(params)
    for mine, reference in zip(resumed.average.values(), theirs.shadow_params):
        torch.testing.assert_close(mine, reference, rtol=1e-6, atol=1e-7)


def test_an_ema_state_lacking_a_tensor_is_a_damaged_checkpoint_naming_it():
    ema = EMA({"w": torch.zeros(2), "b": torch.zeros(1)}, 0.9)
    with pytest.raises(DamagedCheckpoint, match=r"lacks 1 tensor\(s\), first: \['b'\]"):
        ema.load_state({"w": torch.ones(2)})
