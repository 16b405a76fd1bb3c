"""Every reward form at the one boundary (``named_rewards``): same numbers, gradients kept, clear errors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from mst_clipiqa.integrations import from_trl, named_rewards, objective
from mst_clipiqa.integrations.rewards import reward_arity


def score(images: torch.Tensor) -> torch.Tensor:
    """A differentiable stand-in reward: per-image weighted channel means."""
    return (images * torch.tensor([0.2, 0.5, 0.3]).view(1, 3, 1, 1)).mean(dim=(1, 2, 3))


class ImageOnly(nn.Module):
    def forward(self, images):
        return score(images)[:, None]  # (B, 1), as pyiqa-style metrics return


class WithPrompts(nn.Module):
    def forward(self, images, prompts=None):
        return {"quality": score(images), "length": score(images) * 0 + torch.tensor([len(p) for p in prompts])}


def trl_tensor(images, prompts, metadata):
    return score(images), {}


def trl_numpy(images, prompts, metadata):  # ddpo-pytorch reward functions return numpy arrays
    return score(images).detach().numpy(), {"note": "numpy"}


FORMS = {"plain": lambda images, prompts: score(images), "image_only": ImageOnly(), "trl": from_trl(trl_tensor),
         "trl_numpy": from_trl(trl_numpy), "list": lambda images, prompts: score(images).tolist()}


def test_arity_is_read_from_the_signature():
    assert [reward_arity(f) for f in (FORMS["plain"], FORMS["image_only"], trl_tensor, FORMS["trl"])] == [2, 1, 3, 2]
    assert reward_arity(WithPrompts()) == 2 and reward_arity(lambda *args: None) == 2


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 4), form=st.sampled_from(sorted(FORMS)), seed=st.integers(0, 2**16))
def test_every_form_gives_the_same_rewards(batch, form, seed):
    images = torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        out = named_rewards(FORMS[form], images, ["a cat"] * batch)
    assert list(out) == ["reward"]
    torch.testing.assert_close(out["reward"], score(images), atol=1e-6, rtol=0)


def test_dict_of_forms_names_outputs_and_keeps_gradients():
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    rewards = {"a": ImageOnly(), "b": WithPrompts(), "c": from_trl(trl_tensor)}
    out = named_rewards(rewards, images, ["a cat", "a big dog"])
    assert sorted(out) == ["a", "b.length", "b.quality", "c"]
    assert out["b.length"].tolist() == [5.0, 9.0]
    total = objective(out, {"a": 1.0, "b.quality": 0.5, "c": 2.0})
    (grad,) = torch.autograd.grad(total.sum(), images)
    assert torch.isfinite(grad).all() and grad.abs().max() > 0


def test_a_trl_function_passed_as_it_is_still_scores_with_a_deprecation_naming_its_adapter():
    images = torch.rand(2, 3, 8, 8)
    with pytest.warns(DeprecationWarning, match=r"'c' is a function whose form was guessed; pass from_trl\(reward\)"):
        out = named_rewards({"c": trl_numpy}, images, ["a", "b"])
    torch.testing.assert_close(out["c"], score(images))


def test_a_trl_adapter_refuses_what_is_not_the_trl_return():
    with pytest.raises(ValueError, match="trl reward_fn returned Tensor; expected \\(rewards, metadata dict\\)"):
        named_rewards(from_trl(lambda images, prompts, metadata: score(images)), torch.rand(1, 3, 8, 8), ["a"])


def test_lower_better_rewards_are_negated():
    fn = ImageOnly()
    fn.lower_better = True
    images = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(named_rewards(fn, images, None)["reward"], -score(images))


@pytest.mark.parametrize("form", ["trl_numpy", "list"])
def test_a_reward_without_gradient_where_one_is_needed_says_how_to_fix_it(form):
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    with pytest.raises(ValueError, match="returned no gradient with respect to the images.*torch.no_grad"):
        named_rewards(FORMS[form], images, ["a", "b"])


@pytest.mark.parametrize("bad, message", [
    (lambda images, prompts: score(images).mean(), r"returned \(\) .*expected a float tensor of shape \(2,\)"),
    (lambda images, prompts: "good", "returned str"),
    (lambda images, prompts: np.zeros((2, 3)), r"returned \(2, 3\)"),
    (42, "expected a callable"),
])
def test_bad_rewards_are_clear_value_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        named_rewards(bad, torch.rand(2, 3, 8, 8), None)


def test_a_reward_declaring_another_input_range_gets_the_images_mapped_onto_it(tiny_models):
    from mst_clipiqa.reward import MSTCLIPIQAReward

    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    unit = named_rewards(MSTCLIPIQAReward(tiny_models("A")), images, None)["reward"]
    signed = named_rewards(MSTCLIPIQAReward(tiny_models("A"), input_range=(-1, 1)), images, None)["reward"]
    torch.testing.assert_close(signed, unit, atol=1e-5, rtol=0)  # not [0, 1] read as [-1, 1]
    (grad,) = torch.autograd.grad(signed.sum(), images)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
